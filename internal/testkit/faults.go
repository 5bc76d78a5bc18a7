package testkit

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A fault soak fails a share of the requests a job depends on with errors
// a real cluster answers while leaders move, coordinators fail over and
// brokers restart, and drops a few connections, for as long as a test
// runs. Every client must retry through them: the clients of the test
// itself (franz-go) do.

// soakErrors are the retriable answers of each request kind.
var soakErrors = map[kmsg.Key][]*kerr.Error{
	kmsg.Produce:      {kerr.NotLeaderForPartition, kerr.LeaderNotAvailable},
	kmsg.Fetch:        {kerr.NotLeaderForPartition, kerr.LeaderNotAvailable},
	kmsg.OffsetCommit: {kerr.CoordinatorNotAvailable, kerr.NotCoordinator},
	kmsg.Heartbeat:    {kerr.CoordinatorNotAvailable, kerr.NotCoordinator},
	kmsg.JoinGroup:    {kerr.CoordinatorNotAvailable, kerr.NotCoordinator},
	kmsg.SyncGroup:    {kerr.CoordinatorNotAvailable, kerr.NotCoordinator},
}

// Soak is a running fault soak.
type Soak struct {
	mu      sync.Mutex
	rng     *rand.Rand
	seen    map[string]int // requests looked at, by kind
	rate    float64        // share of requests of each kind failed
	drops   float64        // share of requests whose connection is dropped instead
	faulted map[string]int
	dropped int
	handles []*kfake.FaultHandle
	off     bool
}

// StartSoak fails rate (e.g. 0.01) of the Produce, Fetch, OffsetCommit,
// Heartbeat, JoinGroup and SyncGroup requests on c with retriable errors,
// and drops the connection of one in every 1/drops of them, until the
// test ends or Stop is called. The choice is random, from seed.
func StartSoak(t testing.TB, c *kfake.Cluster, seed uint64, rate, drops float64) *Soak {
	s := &Soak{rng: rand.New(rand.NewPCG(seed, 0x50a7)), rate: rate, drops: drops, faulted: map[string]int{}, seen: map[string]int{}}
	keys := make([]kmsg.Key, 0, len(soakErrors))
	for k := range soakErrors {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for i, e := range soakErrors[k] {
			key, e, n := k, e, len(soakErrors[k])
			f := kfake.Fault{Keys: []kmsg.Key{key}, Err: e, Count: -1, When: func(kmsg.Request) bool {
				// Each kind's errors share its rate.
				return s.pick(s.rate/float64(n), key.Name(), fmt.Sprintf("%s %s", key.Name(), e.Message), i)
			}}
			if key == kmsg.JoinGroup || key == kmsg.SyncGroup || key == kmsg.Heartbeat {
				f.TopLevel = true
			}
			s.handles = append(s.handles, c.Fault(f))
		}
		key := k
		c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			if s.pick(s.drops, key.Name()+" (drop)", "", -1) {
				s.mu.Lock()
				s.dropped++
				s.mu.Unlock()
				return nil, fmt.Errorf("soak: drop the connection of a %s request", key.Name()), true
			}
			return nil, nil, false
		})
	}
	t.Cleanup(s.Stop)
	return s
}

// pick draws whether to fault the request of a kind, counting a fault
// under name. Besides the random share, the variant-th of the first few
// requests of each kind (and its 50th, 500th, ...) is faulted, so that
// even a kind a test sends only a few dozen of (joins) is faulted.
func (s *Soak) pick(p float64, kind, name string, variant int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.off {
		return false
	}
	s.seen[kind]++
	n := s.seen[kind]
	forced := n == 3+variant || n == 20+variant || n%500 == 50+variant
	if !forced && s.rng.Float64() >= p {
		return false
	}
	if name != "" {
		s.faulted[name]++
	}
	return true
}

// Stop ends the soak.
func (s *Soak) Stop() {
	s.mu.Lock()
	s.off = true
	s.mu.Unlock()
	for _, h := range s.handles {
		h.Remove()
	}
}

// Total is the number of requests faulted so far, dropped connections
// included.
func (s *Soak) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.dropped
	for _, c := range s.faulted {
		n += c
	}
	return n
}

// String says how many requests of each kind were faulted.
func (s *Soak) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.faulted))
	for n := range s.faulted {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s: %d; ", n, s.faulted[n])
	}
	fmt.Fprintf(&b, "connections dropped: %d", s.dropped)
	return b.String()
}
