package group

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The membership tests run members against the embedded broker. A member
// is "killed" by stopping it without leaving the group and closing its
// connections at once, which is what the broker sees of a process that
// got SIGKILL, also in the middle of a join.

const (
	testTopic      = "in"
	testPartitions = 4
	testSession    = 6 * time.Second // the embedded broker's minimum
	testRebalance  = 3 * time.Second
)

// spread is a Handler that gives partition p of the test topic to the p-th
// member (by member id, round robin) and records what it was given.
type spread struct {
	mu    sync.Mutex
	parts []int32
	lost  int
}

func (s *spread) UserData() ([]byte, error) { return []byte("spread"), nil }

func (s *spread) Plan(_ int32, members []kafka.GroupMember) (map[string]kafka.GroupAssignment, error) {
	ids := make([]string, len(members))
	for i, m := range members {
		if string(m.UserData) != "spread" {
			return nil, fmt.Errorf("member %s sent user data %q", m.MemberID, m.UserData)
		}
		ids[i] = m.MemberID
	}
	slices.Sort(ids)
	out := map[string]kafka.GroupAssignment{}
	for _, id := range ids {
		out[id] = kafka.GroupAssignment{Topics: map[string][]int32{}}
	}
	for p := range int32(testPartitions) {
		id := ids[int(p)%len(ids)]
		out[id].Topics[testTopic] = append(out[id].Topics[testTopic], p)
	}
	return out, nil
}

func (s *spread) Assigned(_ Generation, a kafka.GroupAssignment) {
	s.mu.Lock()
	s.parts = slices.Clone(a.Topics[testTopic])
	s.mu.Unlock()
}

func (s *spread) Lost(error) {
	s.mu.Lock()
	s.parts = nil
	s.lost++
	s.mu.Unlock()
}

func (s *spread) held() []int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.parts)
}

func (s *spread) losses() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// testMember is one running member.
type testMember struct {
	m      *Member
	h      *spread
	conn   *kafka.GroupConn
	slot   *Slot
	cancel context.CancelFunc
	done   chan error
}

// startMember starts a member; with slotDir set it takes a slot there.
func startMember(t *testing.T, addrs []string, group, slotDir string) *testMember {
	t.Helper()
	conn, err := kafka.Dial(context.Background(), stream.KafkaConfig{Brokers: addrs}, kafka.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	tm := &testMember{h: &spread{}, done: make(chan error, 1)}
	clientID := "test"
	if slotDir != "" {
		tm.slot, err = AcquireSlot(slotDir)
		require.NoError(t, err)
		clientID = tm.slot.ClientID(clientID)
	}
	tm.conn = conn.NewGroupConn(group, clientID, testRebalance+testSession+5*time.Second)
	tm.m = New(tm.conn, Config{
		Group: group, Slot: tm.slot, Protocol: "spread", Topics: []string{testTopic},
		SessionTimeout: testSession, RebalanceTimeout: testRebalance, HeartbeatInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, tm.h)
	ctx, cancel := context.WithCancel(context.Background())
	tm.cancel = cancel
	go func() { tm.done <- tm.m.Run(ctx) }()
	t.Cleanup(tm.kill)
	return tm
}

// kill stops the member the way SIGKILL would: no leave, connections cut.
func (tm *testMember) kill() {
	if tm.cancel == nil {
		return
	}
	tm.cancel()
	<-tm.done
	tm.conn.Close()
	if tm.slot != nil {
		_ = tm.slot.Release()
	}
	tm.cancel = nil
}

// stop stops the member gracefully: it leaves the group.
func (tm *testMember) stop(t *testing.T) {
	t.Helper()
	tm.cancel()
	require.NoError(t, <-tm.done)
	require.NoError(t, tm.m.Leave(context.Background()))
	tm.conn.Close()
	if tm.slot != nil {
		require.NoError(t, tm.slot.Release())
	}
	tm.cancel = nil
}

func holdsAll(tm *testMember) bool { return len(tm.h.held()) == testPartitions }

func setup(t *testing.T, opts ...kfake.Opt) []string {
	t.Helper()
	b := testkit.Broker(t, opts...)
	testkit.CreateTopic(t, b.Addrs(), testTopic, testPartitions, nil)
	return b.Addrs()
}

func TestMembersShareAndALeaveMovesPartitionsAtOnce(t *testing.T) {
	addrs := setup(t)
	a := startMember(t, addrs, "share", "")
	testkit.Eventually(t, 20*time.Second, func() bool { return holdsAll(a) }, "a got nothing")
	b := startMember(t, addrs, "share", "")
	testkit.Eventually(t, 20*time.Second, func() bool {
		return len(a.h.held()) == 2 && len(b.h.held()) == 2
	}, "a and b do not share: a %v, b %v", testkit.Lazy(func() string { return fmt.Sprint(a.h.held(), b.h.held()) }))
	left := time.Now()
	b.stop(t)
	testkit.Eventually(t, 20*time.Second, func() bool { return holdsAll(a) }, "a did not take b's partitions")
	require.Less(t, time.Since(left), testSession, "a leave must not wait for the session timeout")
	require.Zero(t, a.h.losses())
}

// crashLoop starts members and kills each of them after delays[i]: some
// while they wait to join, some after. Then it starts one more and returns
// it with the time it started.
func crashLoop(t *testing.T, addrs []string, group string, slotDir func(i int) string, delays []time.Duration) (*testMember, time.Time) {
	t.Helper()
	for i, d := range delays {
		tm := startMember(t, addrs, group, slotDir(i))
		time.Sleep(d) // the kill point is the point of the test
		tm.kill()
	}
	return startMember(t, addrs, group, slotDir(len(delays))), time.Now()
}

var crashDelays = []time.Duration{1200 * time.Millisecond, 300 * time.Millisecond, 900 * time.Millisecond, 500 * time.Millisecond, 50 * time.Millisecond, 700 * time.Millisecond}

// A process restarted again and again in the same slot removes what each
// dead predecessor left in the group: the last one holds every partition
// at once, not after a session timeout.
func TestCrashLoopInOneSlotRecoversAtOnce(t *testing.T) {
	addrs := setup(t)
	dir := t.TempDir()
	last, started := crashLoop(t, addrs, "loop", func(int) string { return dir }, crashDelays)
	testkit.Eventually(t, testSession, func() bool { return holdsAll(last) }, "the last member does not hold every partition")
	t.Logf("the last member held every partition %s after it started", time.Since(started).Round(time.Millisecond))
}

// Without a shared slot (processes on other machines, say), the dead
// members are dropped by the broker: the last member holds every partition
// within a session timeout and a rebalance timeout or two, whatever state
// the dead ones died in, including members the embedded broker never
// expires (killed while they waited for their first join).
func TestCrashLoopAcrossSlotsRecoversWithinTheSessionTimeout(t *testing.T) {
	addrs := setup(t)
	last, started := crashLoop(t, addrs, "loop", func(int) string { return t.TempDir() }, crashDelays)
	testkit.Eventually(t, testSession+2*testRebalance+2*time.Second, func() bool { return holdsAll(last) }, "the last member does not hold every partition")
	t.Logf("the last member held every partition %s after it started", time.Since(started).Round(time.Millisecond))
}

// A member that cannot reach its coordinator for longer than the session
// timeout reports its membership lost (the coordinator has given its
// partitions away), and once it can again it joins as a new member and is
// given partitions again.
func TestUnreachableCoordinatorLosesTheMembership(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), testTopic, testPartitions, nil)
	a := startMember(t, b.Addrs(), "cut", "")
	testkit.Eventually(t, 20*time.Second, func() bool { return holdsAll(a) }, "a got nothing")
	// Every group request of a's fails: its connections are cut.
	var mu sync.Mutex
	cut := true
	for _, k := range []kmsg.Key{kmsg.Heartbeat, kmsg.JoinGroup, kmsg.SyncGroup, kmsg.OffsetCommit} {
		b.Cluster.ControlKey(int16(k), func(kmsg.Request) (kmsg.Response, error, bool) {
			b.Cluster.KeepControl()
			mu.Lock()
			defer mu.Unlock()
			if cut {
				return nil, errors.New("cut"), true
			}
			return nil, nil, false
		})
	}
	cutAt := time.Now()
	testkit.Eventually(t, 2*testSession, func() bool { return a.h.losses() == 1 }, "a did not report its membership lost")
	require.GreaterOrEqual(t, time.Since(cutAt), testSession*9/10, "lost before a session timeout passed")
	require.True(t, a.m.ValidUntil().IsZero(), "a lost membership is not valid")
	mu.Lock()
	cut = false
	mu.Unlock()
	testkit.Eventually(t, 30*time.Second, func() bool { return holdsAll(a) }, "a did not join again")
	require.Equal(t, 1, a.h.losses())
	require.True(t, time.Until(a.m.ValidUntil()) > 0)
}

// A member killed while it waits for its first join may stay in the
// embedded broker's group for good, with the partitions the leader gives it
// (Kafka drops it after a session timeout). The leader's probe rebalance
// drops it within a rebalance timeout: the live member soon holds every
// partition again.
func TestAMemberKilledInItsFirstJoinIsDropped(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), testTopic, testPartitions, nil)
	a := startMember(t, b.Addrs(), "ghost", "")
	testkit.Eventually(t, 20*time.Second, func() bool { return holdsAll(a) }, "a got nothing")
	aID := a.m.MemberID()

	// Hold a's join until g, joining with its member id, has been killed:
	// g dies waiting, and the rebalance completes with it.
	gWaiting, aHeld, gKilled := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once1, once2 sync.Once
	b.Cluster.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster.KeepControl()
		switch id := req.(*kmsg.JoinGroupRequest).MemberID; {
		case id == aID:
			once1.Do(func() {
				close(aHeld)
				b.Cluster.SleepControl(func() { <-gKilled })
			})
		case id != "":
			once2.Do(func() { close(gWaiting) })
		}
		return nil, nil, false
	})
	g := startMember(t, b.Addrs(), "ghost", "")
	for _, ch := range []chan struct{}{gWaiting, aHeld} {
		select {
		case <-ch:
		case <-time.After(20 * time.Second):
			t.Fatal("g did not join, or a did not rejoin")
		}
	}
	g.kill()
	close(gKilled)
	killed := time.Now()
	testkit.Eventually(t, 10*time.Second, func() bool { return len(a.h.held()) == testPartitions/2 }, "the rebalance with g did not complete")
	// Within a rebalance timeout, not a session timeout: a dead member
	// that the broker would expire is dropped as fast.
	testkit.Eventually(t, testRebalance+2*time.Second, func() bool { return holdsAll(a) }, "a does not hold every partition: %v", testkit.Lazy(func() string { return fmt.Sprint(a.h.held()) }))
	t.Logf("a held every partition %s after g was killed", time.Since(killed).Round(time.Millisecond))
}
