package experiments

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
)

// partitionKey places every partial in one partition of the partial topic,
// whatever its partition count, so that they all meet in one merging task.
var partitionKey = []byte("top-experiments")

// Counters are shared by every task of a counting job, for a program's
// reports (events per second, cost of the window flushes); safe for
// concurrent use.
type Counters struct {
	Counted    atomic.Uint64 // events counted
	Flushes    atomic.Uint64 // Window flushes
	Visited    atomic.Uint64 // changed keys the flushes visited, in total
	FlushNanos atomic.Int64  // time in Window flushes, in total
}

// countTask counts events per experiment in a changelog-backed store, and
// every window emits its own top-N to the partial topic when it changed
// (and in the first window after every start, so that the merging task
// learns the top of a restored store).
//
// The store is declared with TrackChanges, so that the window flush visits
// only the experiments counted since the last flush (TakeChanges) and keeps
// the top-N up to date from them (Leaders): its cost follows the traffic of
// one window, not the number of experiments. Init, once per start, scans
// the store to rebuild the top-N, which is not stored.
type countTask struct {
	n        int
	partial  string // topic
	counters *Counters
	now      func() time.Time

	name       string
	log        *slog.Logger
	changes    store.ChangeTracker // the counts store, declared with TrackChanges
	counts     *store.Typed[string, int64]
	leaders    *Leaders
	sent       []Entry // the last top sent since Init
	wrongKeyed bool    // warned about input not keyed by experiment
}

func newCountTask(n int, partialTopic string, counters *Counters) *countTask {
	if counters == nil {
		counters = &Counters{}
	}
	return &countTask{n: n, partial: partialTopic, counters: counters, now: time.Now}
}

// Init implements task.InitableTask.
func (t *countTask) Init(_ context.Context, tc task.Context) error {
	t.name, t.log = tc.TaskName(), tc.Logger()
	s, err := tc.Store(CountsStore)
	if err != nil {
		return err
	}
	ct, ok := s.(store.ChangeTracker)
	if !ok {
		return fmt.Errorf("store %q does not track changes: declare it with TrackChanges", CountsStore)
	}
	t.changes, t.counts = ct, store.StringKeys[int64](s)
	// The one full scan: rebuild the top-N of the restored counts.
	start := time.Now()
	t.leaders = NewLeaders(t.n)
	it := t.counts.All()
	defer it.Close()
	keys := 0
	for it.Next() {
		keys++
		if err := t.leaders.Update(Entry{Experiment: it.Key(), Count: it.Value()}); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("rebuild top-%d: %w", t.n, err)
	}
	t.log.Info("rebuilt top experiments from the store", "experiments", keys, "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// Process implements task.StreamTask: one event, one increment.
func (t *countTask) Process(_ context.Context, m stream.Message, _ task.Collector, _ task.Coordinator) error {
	exp, err := experimentOf(m.Value)
	if err != nil {
		return err
	}
	if !t.wrongKeyed && m.Key != nil && string(m.Key) != exp {
		// Not an error, but the global top-N is exact only when every
		// experiment is counted by one task.
		t.wrongKeyed = true
		t.log.Warn("input is not keyed by experiment: an experiment counted by several tasks makes the global top-N approximate; key events by experiment (or repartition them)",
			"key", string(m.Key), "experiment", exp, "topic", m.Topic, "partition", m.Partition, "offset", m.Offset)
	}
	c, _, err := t.counts.Get(exp)
	if err != nil {
		return err
	}
	if err := t.counts.Put(exp, c+1); err != nil {
		return err
	}
	t.counters.Counted.Add(1)
	return nil
}

// Window implements task.WindowableTask: it folds the experiments counted
// since the last window into the top-N, and emits the top-N if it changed.
// A window that changes nothing sends nothing, so an idle task does not
// keep writing partials (or checkpoints).
func (t *countTask) Window(_ context.Context, out task.Collector, _ task.Coordinator) error {
	start := time.Now()
	decode := stream.Msgpack[int64]()
	visited, err := t.changes.TakeChanges(0, func(key, value []byte) error {
		if value == nil {
			return nil // deleted: counters never are
		}
		c, err := decode.Decode(value)
		if err != nil {
			return fmt.Errorf("count of %q: %w", key, err)
		}
		return t.leaders.Update(Entry{Experiment: string(key), Count: c})
	})
	if err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	t.counters.Flushes.Add(1)
	t.counters.Visited.Add(uint64(visited))
	defer func() { t.counters.FlushNanos.Add(int64(time.Since(start))) }()
	top := t.leaders.Top()
	if len(top) == 0 || slices.Equal(top, t.sent) {
		return nil // nothing counted yet, or nothing new to say
	}
	p := Partial{Task: t.name, At: t.now().UnixMilli(), Top: top}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := out.Send(stream.Outgoing{Topic: t.partial, Key: []byte(t.name), PartitionKey: partitionKey, Value: b}); err != nil {
		return err
	}
	t.sent = top
	return nil
}
