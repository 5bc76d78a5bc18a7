package experiments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/grete-go/grete/task/tasktest"
	"github.com/stretchr/testify/require"
)

// lastTop keeps the last global top a merging task handed to onTop, as
// the program's board does.
type lastTop struct {
	mu sync.Mutex
	g  Global
	ok bool
}

func (l *lastTop) set(g Global) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.g, l.ok = g, true
}

func (l *lastTop) get() (Global, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.g, l.ok
}

func newMergeDriver(t *testing.T, n int, opts ...tasktest.Option) (*tasktest.Driver, *lastTop) {
	t.Helper()
	b := &lastTop{}
	job := MergeJob("topexperiments", stream.KafkaConfig{}, "top-experiments", n, b.set)
	d := tasktest.FromJob(job, opts...)
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d, b
}

func partialMsg(t *testing.T, p Partial) stream.Message {
	t.Helper()
	b, err := json.Marshal(p)
	require.NoError(t, err)
	return stream.Message{Key: []byte(p.Task), Value: b}
}

// globals decodes what a merging driver sent since the last call.
func globals(t *testing.T, d *tasktest.Driver) []Global {
	t.Helper()
	var out []Global
	for _, m := range d.TakeOutputs() {
		require.Equal(t, "top-experiments", m.Topic)
		var g Global
		require.NoError(t, json.Unmarshal(m.Value, &g))
		out = append(out, g)
	}
	return out
}

func TestMergeTaskKeepsTheLatestPartialOfEveryTask(t *testing.T) {
	ctx := context.Background()
	d, b := newMergeDriver(t, 3)
	// Nothing counted yet: no global top.
	require.NoError(t, d.Feed(ctx, partialMsg(t, Partial{Task: "task-0", At: 90, Top: []Entry{}})))
	require.Empty(t, globals(t, d))
	_, ok := b.get()
	require.False(t, ok)

	require.NoError(t, d.Feed(ctx, partialMsg(t, Partial{Task: "task-0", At: 100, Top: []Entry{{"a", 9}, {"b", 4}}})))
	require.Equal(t, []Global{{At: 100, Top: []Entry{{"a", 9}, {"b", 4}}}}, globals(t, d))

	require.NoError(t, d.Feed(ctx, partialMsg(t, Partial{Task: "task-1", At: 110, Top: []Entry{{"c", 5}, {"d", 1}}})))
	require.Equal(t, []Global{{At: 110, Top: []Entry{{"a", 9}, {"c", 5}, {"b", 4}}}}, globals(t, d))

	// task-0's newer partial replaces its older one: nothing is added up
	// over time.
	require.NoError(t, d.Feed(ctx, partialMsg(t, Partial{Task: "task-0", At: 200, Top: []Entry{{"a", 12}, {"e", 6}}})))
	require.Equal(t, []Global{{At: 200, Top: []Entry{{"a", 12}, {"e", 6}, {"c", 5}}}}, globals(t, d))

	// The same partial again (a duplicate after a crash, or a window
	// without traffic) changes nothing and emits nothing.
	require.NoError(t, d.Feed(ctx, partialMsg(t, Partial{Task: "task-0", At: 200, Top: []Entry{{"a", 12}, {"e", 6}}})))
	require.NoError(t, d.Feed(ctx, partialMsg(t, Partial{Task: "task-1", At: 210, Top: []Entry{{"c", 5}, {"d", 1}}})))
	require.Empty(t, globals(t, d))

	g, ok := b.get()
	require.True(t, ok)
	require.Equal(t, Global{At: 200, Top: []Entry{{"a", 12}, {"e", 6}, {"c", 5}}}, g)

	// The store holds the latest partial of each task, for a restart.
	require.NoError(t, d.Close(ctx))
	latest := map[string]Partial{}
	for _, r := range d.Changelog(PartialsStore) {
		require.Equal(t, byte('d'), r.Key[0])
		require.Equal(t, byte(0), r.Value[0])
		var p Partial
		require.NoError(t, json.Unmarshal(r.Value[1:], &p))
		latest[string(r.Key[1:])] = p
	}
	require.Equal(t, map[string]Partial{
		"task-0": {Task: "task-0", At: 200, Top: []Entry{{"a", 12}, {"e", 6}}},
		"task-1": {Task: "task-1", At: 210, Top: []Entry{{"c", 5}, {"d", 1}}},
	}, latest)
}

func TestMergeTaskRestartsFromItsStore(t *testing.T) {
	ctx := context.Background()
	d, _ := newMergeDriver(t, 2)
	partials := store.NewTyped(d.Store(PartialsStore), stream.String(), stream.JSON[Partial]())
	require.NoError(t, partials.Put("task-0", Partial{Task: "task-0", At: 5, Top: []Entry{{"a", 30}, {"b", 20}}}))
	require.NoError(t, partials.Put("task-1", Partial{Task: "task-1", At: 6, Top: []Entry{{"c", 25}}}))

	require.NoError(t, d.Feed(ctx, partialMsg(t, Partial{Task: "task-2", At: 7, Top: []Entry{{"d", 21}}})))
	require.Equal(t, []Global{{At: 7, Top: []Entry{{"a", 30}, {"c", 25}}}}, globals(t, d))
}

func TestMergeTaskBadPartials(t *testing.T) {
	ctx := context.Background()
	for _, v := range []string{`nope`, `{"at":1,"top":[]}`, `{"task":"task-0","top":[{"experiment":"a","count":"x"}]}`} {
		d, _ := newMergeDriver(t, 2)
		err := d.Feed(ctx, stream.Message{Value: []byte(v)})
		var pe *task.ProcessError
		require.True(t, errors.As(err, &pe), "%s: got %v", v, err)
		var de *stream.DecodeError
		require.True(t, errors.As(err, &de), "%s: got %v", v, err)
	}
}

// TestPipeline runs the logic of both jobs without a broker: keyed events
// split over counting tasks by Kafka's partitioner, their partials fed to
// the merging task window after window, and the global top compared with
// the reference after every window.
func TestPipeline(t *testing.T) {
	ctx := context.Background()
	const tasks, n, windows = 4, 5, 6
	rng := rand.New(rand.NewPCG(11, 12))
	counts := make([]*tasktest.Driver, tasks)
	for i := range counts {
		counts[i] = newCountDriver(t, n, int32(i), nil)
	}
	merge, _ := newMergeDriver(t, n)
	g := NewTraffic(3, 60)
	want := map[string]int64{}
	var last Global
	for w := range windows {
		batches := make([][]stream.Message, tasks)
		for range 200 + rng.IntN(400) {
			k, v := g.Next(counts[0].Now())
			want[string(k)]++
			p := kafka.PartitionFor(k, tasks)
			batches[p] = append(batches[p], stream.Message{Key: k, Value: v, Partition: p})
		}
		var ps []stream.Message
		for i, d := range counts {
			require.NoError(t, d.Feed(ctx, batches[i]...))
			require.NoError(t, d.Advance(ctx, testWindow))
			for _, m := range d.TakeOutputs() {
				ps = append(ps, stream.Message{Key: m.Key, Value: m.Value})
			}
		}
		require.Len(t, ps, tasks)
		require.NoError(t, merge.Feed(ctx, ps...))
		if gs := globals(t, merge); len(gs) > 0 {
			last = gs[len(gs)-1]
		}
		require.Equal(t, refTop(n, want), last.Top, fmt.Sprintf("after window %d", w))
	}
}
