package task_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
)

// A task resumes from its checkpoint even when the process that wrote it
// died before mirroring it to the group: the new owner mirrors it at once,
// so lag tools do not show lag that is not there.
func TestGroupOffsetsMirrorTheCheckpointAtStart(t *testing.T) {
	b := setup(t, 2, 100)
	cps := checkpoint.NewMemory()
	ends := map[int32]int64{}
	adm := kadm.NewClient(testkit.Client(t, b.Addrs()))
	end := testkit.EndOffsets(t, adm, "in")
	for p := range int32(2) {
		ends[p] = end[p]
		require.NoError(t, cps.Write(context.Background(), checkpoint.Checkpoint{
			ID: 1, Task: fmt.Sprintf("task-%d", p), Inputs: map[stream.Partition]int64{{Topic: "in", Partition: p}: end[p]},
		}))
	}
	job := newJob(b, "mirror", func() task.StreamTask { return &funcTask{} })
	job.Checkpoints = cps
	stop, _ := start(t, job)
	testkit.Eventually(t, 30*time.Second, func() bool {
		committed, _, err := testkit.GroupOffsets(adm, "mirror", "in")
		return err == nil && committed[0] == ends[0] && committed[1] == ends[1]
	}, "the checkpoints were not mirrored to the group")
	require.Zero(t, total(job, processed), "nothing was left to process")
	require.NoError(t, stop())
}

// Two processes of one job share its tasks; when one stops gracefully,
// the other takes its tasks over from their checkpoints at once, and every
// message is processed exactly once across the handover (each process
// commits before giving a task away).
func TestTwoProcessesShareTasksAndHandOver(t *testing.T) {
	b := setup(t, 4, 0)
	var mu sync.Mutex
	seen := map[string]int{}
	mk := func(id string) *task.Job {
		job := newJob(b, "share", func() task.StreamTask {
			return &funcTask{process: func(_ context.Context, m stream.Message, _ task.Collector, _ task.Coordinator) error {
				mu.Lock()
				seen[fmt.Sprintf("%d/%d", m.Partition, m.Offset)]++
				mu.Unlock()
				return nil
			}}
		})
		job.InstanceID = id
		return job
	}
	a, c := mk("a"), mk("c")
	stopA, _ := start(t, a)
	testkit.Eventually(t, 30*time.Second, func() bool { return running(a, 4) }, "a did not take all tasks")
	stopC, _ := start(t, c)
	testkit.Eventually(t, time.Minute, func() bool { return running(a, 2) && running(c, 2) }, "the tasks were not shared")
	ma, _ := a.Member()
	mc, _ := c.Member()
	require.Len(t, slices.Concat(ma.Tasks, mc.Tasks), 4)
	require.EqualValues(t, 2, ma.Revoked, "a handed over exactly the 2 tasks balance needs")

	testkit.Produce(t, b.Addrs(), "in", records(2000))
	testkit.Eventually(t, time.Minute, func() bool { return total(a, processed)+total(c, processed) >= 1000 }, "no progress")
	require.NoError(t, stopA())
	testkit.Eventually(t, time.Minute, func() bool { return running(c, 4) }, "c did not take a's tasks over")
	testkit.Eventually(t, time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 2000
	}, "not every message was processed")
	require.NoError(t, stopC())
	for k, n := range seen {
		require.Equal(t, 1, n, "message %s processed %d times", k, n)
	}
}

// A task stuck in Process when the group takes it away is fenced: once
// half the rebalance timeout has passed it may no longer commit, so its
// new owner resumes from the last checkpoint and processes the stuck
// message again, instead of the two owners' writes interleaving.
func TestStuckTaskIsFencedOnHandover(t *testing.T) {
	b := setup(t, 4, 0)
	cps := checkpoint.NewMemory()
	var (
		mu      sync.Mutex
		seen    = map[string]int{}
		blockOn = int32(-1) // partition whose next message blocks
		stuckAt string      // that message
		stuck   = make(chan struct{})
		unblock = make(chan struct{})
	)
	mk := func(id string) *task.Job {
		job := newJob(b, "fence", func() task.StreamTask {
			return &funcTask{process: func(_ context.Context, m stream.Message, _ task.Collector, _ task.Coordinator) error {
				mu.Lock()
				seen[fmt.Sprintf("%d/%d", m.Partition, m.Offset)]++
				block := m.Partition == blockOn
				if block {
					blockOn, stuckAt = -1, fmt.Sprintf("%d/%d", m.Partition, m.Offset)
				}
				mu.Unlock()
				if block {
					close(stuck)
					<-unblock
				}
				return nil
			}}
		})
		job.InstanceID = id
		job.Checkpoints = cps
		job.RebalanceTimeout = 4 * time.Second
		return job
	}
	a := mk("a")
	stopA, _ := start(t, a)
	testkit.Eventually(t, 30*time.Second, func() bool { return running(a, 4) }, "a did not take all tasks")
	// A joining member takes tasks 2 and 3 from a; block task 3.
	mu.Lock()
	blockOn = 3
	mu.Unlock()
	testkit.Produce(t, b.Addrs(), "in", records(200))
	<-stuck
	c := mk("c")
	stopC, _ := start(t, c)
	testkit.Eventually(t, 30*time.Second, func() bool { m, _ := a.Member(); return m.Revoked == 2 }, "a was not asked to hand over")
	// The fence is half the rebalance timeout after the revocation.
	time.Sleep(2*time.Second + 500*time.Millisecond)
	close(unblock)
	testkit.Eventually(t, 30*time.Second, func() bool { m, _ := a.Member(); return m.Fenced == 1 }, "the stuck task was not fenced")
	testkit.Eventually(t, time.Minute, func() bool { return running(a, 2) && running(c, 2) }, "c did not get its share")
	testkit.Eventually(t, time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 200 && seen[stuckAt] == 2
	}, "not every message was processed, or the stuck one not again")
	require.NoError(t, stopC())
	require.NoError(t, stopA())
	twice := 0
	for _, n := range seen {
		if n > 1 {
			twice++
		}
	}
	require.Equal(t, 1, twice, "only the stuck message, whose progress was not committed, is processed again")
}

// With Standbys, a second process keeps a copy of the task's store up to
// its latest checkpoint; when the task moves there, its restore replays
// nothing, and the state is the same as the first process's. A process
// without a standby replays the whole changelog instead.
func TestStandbyTakesOverWithoutReplay(t *testing.T) {
	b := setup(t, 1, 3000)
	cps := checkpoint.NewMemory()
	want := expectedCounts(records(3000))
	mk := func(id string, sink *stateSink, logs io.Writer) *task.Job {
		job := countingJob(b, t.TempDir(), sink, cps)
		job.InstanceID, job.Standbys = id, 1
		if logs != nil {
			job.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		return job
	}
	a := mk("a", newSink(), nil)
	stopA, _ := start(t, a)
	testkit.Eventually(t, time.Minute, func() bool { return running(a, 1) && total(a, processed) == 3000 }, "a did not count: %v", testkit.Lazy(func() string { m, _ := a.Member(); return fmt.Sprintf("%d %+v", total(a, processed), m) }))
	testkit.Eventually(t, time.Minute, func() bool {
		cp, ok, _ := cps.Load(context.Background(), "task-0")
		return ok && cp.Inputs[stream.Partition{Topic: "in"}] == 3000
	}, "a did not checkpoint everything")
	cp, _, _ := cps.Load(context.Background(), "task-0")
	target := cp.Changelogs["counts"]
	require.Positive(t, target)

	logs := &testkit.Buffer{}
	sinkB := newSink()
	bJob := mk("b", sinkB, logs)
	stopB, _ := start(t, bJob)
	testkit.Eventually(t, time.Minute, func() bool {
		m, _ := bJob.Member()
		return slices.Equal(m.Standbys, []int32{0}) && m.StandbyLag == 0 && m.StandbyCheckpoints[0] == cp.ID &&
			strings.Contains(logs.String(), fmt.Sprintf("to=%d", target))
	}, "b's standby did not catch up with the checkpoint: %v", testkit.Lazy(func() string { return logs.Tail(2000) }))

	require.NoError(t, stopA())
	testkit.Eventually(t, time.Minute, func() bool { return running(bJob, 1) }, "b did not take the task over")
	st := bJob.Stats()[0].Stores["counts"]
	require.Zero(t, st.RestoreRecords, "the standby was current: nothing to replay")
	require.Equal(t, want, merged(sinkB.atInit), "the standby's state")

	// Without a standby, a process replays the whole changelog.
	sinkC := newSink()
	c := mk("c", sinkC, nil)
	c.Standbys = 0
	bJob.Standbys = 0 // unused from here: b is stopped below
	require.NoError(t, stopB())
	stopC, _ := start(t, c)
	testkit.Eventually(t, time.Minute, func() bool { return running(c, 1) }, "c did not start the task")
	require.EqualValues(t, target+1, c.Stats()[0].Stores["counts"].RestoreRecords, "c replayed the whole changelog")
	require.Equal(t, want, merged(sinkC.atInit))
	require.NoError(t, stopC())
}

// Stickiness with real members: a fourth member joining a balanced group
// of three takes exactly one task from each; when it leaves, each task
// goes back to the member that ran it before (it still has its state).
func TestJoinMovesOnlyWhatBalanceNeedsAndLeaveGivesTasksBack(t *testing.T) {
	b := setup(t, 12, 0)
	cps := checkpoint.NewMemory()
	mk := func(id string) *task.Job {
		job := countingJob(b, t.TempDir(), newSink(), cps)
		job.InstanceID = id
		return job
	}
	tasksOf := func(job *task.Job) []int32 { m, _ := job.Member(); return m.Tasks }
	var jobs []*task.Job
	// Ids in the reverse order of joining: a task going back by id order
	// instead of by warmth would go to the wrong member.
	for _, id := range []string{"z", "y", "x"} {
		job := mk(id)
		jobs = append(jobs, job)
		_, _ = start(t, job)
		testkit.Eventually(t, time.Minute, func() bool {
			n := 0
			for _, j := range jobs {
				n += len(tasksOf(j))
			}
			return n == 12
		}, "the members did not take all tasks")
	}
	testkit.Eventually(t, time.Minute, func() bool {
		return running(jobs[0], 4) && running(jobs[1], 4) && running(jobs[2], 4)
	}, "three members did not balance")
	before := map[string][]int32{}
	revoked := map[string]uint64{}
	for i, j := range jobs {
		before[fmt.Sprint(i)] = tasksOf(j)
		m, _ := j.Member()
		revoked[fmt.Sprint(i)] = m.Revoked
	}

	d := mk("w")
	stopD, _ := start(t, d)
	testkit.Eventually(t, time.Minute, func() bool {
		return running(d, 3) && running(jobs[0], 3) && running(jobs[1], 3) && running(jobs[2], 3)
	}, "four members did not balance")
	for i, j := range jobs {
		m, _ := j.Member()
		require.Equal(t, revoked[fmt.Sprint(i)]+1, m.Revoked, "member %d handed over exactly one task", i)
		require.Subset(t, before[fmt.Sprint(i)], m.Tasks, "member %d kept the rest of its tasks", i)
	}

	require.NoError(t, stopD())
	testkit.Eventually(t, time.Minute, func() bool {
		return running(jobs[0], 4) && running(jobs[1], 4) && running(jobs[2], 4)
	}, "three members did not balance again")
	for i, j := range jobs {
		require.Equal(t, before[fmt.Sprint(i)], tasksOf(j), "member %d got its own task back", i)
	}
}
