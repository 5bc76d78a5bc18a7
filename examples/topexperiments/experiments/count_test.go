package experiments

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/grete-go/grete/task/tasktest"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

const (
	testWindow  = 10 * time.Second
	testPartial = "top-experiments-partial"
)

// newCountDriver runs a counting task of partition p the way the job
// declares it.
func newCountDriver(t *testing.T, n int, p int32, counters *Counters, opts ...tasktest.Option) *tasktest.Driver {
	t.Helper()
	job := CountJob("topexperiments", stream.KafkaConfig{}, "events", "top-experiments", n, testWindow, counters)
	d := tasktest.FromJob(job, append([]tasktest.Option{tasktest.Partition(p)}, opts...)...)
	d.Task().(*countTask).now = d.Now // partials carry the driver's time
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}

func event(exp string) stream.Message {
	return stream.Message{Key: []byte(exp), Value: fmt.Appendf(nil, `{"user":"u1","experiment":%q,"variation":"a"}`, exp)}
}

func events(exps ...string) []stream.Message {
	ms := make([]stream.Message, len(exps))
	for i, e := range exps {
		ms[i] = event(e)
	}
	return ms
}

// partials decodes the partial tops a driver sent, checking how they are
// addressed.
func partials(t *testing.T, d *tasktest.Driver) []Partial {
	t.Helper()
	var out []Partial
	for _, m := range d.TakeOutputs() {
		if m.Topic == d.DeadLetterTopic() {
			continue
		}
		require.Equal(t, testPartial, m.Topic)
		require.Equal(t, partitionKey, m.PartitionKey, "every partial must meet in one merging task")
		var p Partial
		require.NoError(t, json.Unmarshal(m.Value, &p))
		require.Equal(t, string(m.Key), p.Task)
		out = append(out, p)
	}
	return out
}

// changelogCounts reads a counts changelog as a restore would: the last
// record of every key wins. Change markers ('c' keys) are left out.
func changelogCounts(t *testing.T, recs []store.Record) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, r := range recs {
		if len(r.Key) == 0 || r.Key[0] != 'd' {
			continue
		}
		name := string(r.Key[1:])
		if r.Value == nil {
			delete(out, name)
			continue
		}
		require.Equal(t, byte(0), r.Value[0], "plain value header of %s", name)
		var c int64
		require.NoError(t, msgpack.Unmarshal(r.Value[1:], &c))
		out[name] = c
	}
	return out
}

func TestCountTaskEmitsItsTopWhenItChanges(t *testing.T) {
	ctx := context.Background()
	counters := &Counters{}
	d := newCountDriver(t, 3, 2, counters)
	require.NoError(t, d.Feed(ctx, events("a", "b", "a", "c", "d", "a", "b", "d")...))
	require.NoError(t, d.Advance(ctx, testWindow))
	ps := partials(t, d)
	require.Len(t, ps, 1)
	require.Equal(t, "task-2", ps[0].Task)
	require.Equal(t, d.Now().UnixMilli(), ps[0].At)
	require.Equal(t, []Entry{{"a", 3}, {"b", 2}, {"d", 2}}, ps[0].Top)

	// A window without traffic, or whose traffic leaves the top as it
	// was, sends nothing.
	require.NoError(t, d.Advance(ctx, testWindow))
	require.NoError(t, d.Feed(ctx, events("e", "e")...)) // ties with b and d, ranks after them
	require.NoError(t, d.Advance(ctx, testWindow))
	require.Empty(t, partials(t, d))

	require.NoError(t, d.Feed(ctx, events("c", "c", "c")...))
	require.NoError(t, d.Advance(ctx, testWindow))
	require.Equal(t, []Entry{{"c", 4}, {"a", 3}, {"b", 2}}, partials(t, d)[0].Top)
	require.Equal(t, uint64(13), counters.Counted.Load())
	require.Equal(t, uint64(4), counters.Flushes.Load())
	require.Equal(t, uint64(4+0+1+1), counters.Visited.Load(), "each flush visits the experiments counted since the last one")
}

func TestCountTaskSendsNothingBeforeItCounts(t *testing.T) {
	ctx := context.Background()
	d := newCountDriver(t, 3, 0, nil)
	require.NoError(t, d.Advance(ctx, 3*testWindow))
	require.Empty(t, d.Outputs())
}

// TestCountTaskWindowVisitsOnlyChangedKeys is the point of TrackChanges:
// with 2000 experiments in the store, a window after events of two
// experiments visits two keys, not 2000.
func TestCountTaskWindowVisitsOnlyChangedKeys(t *testing.T) {
	ctx := context.Background()
	counters := &Counters{}
	d := newCountDriver(t, 5, 0, counters)
	var all []stream.Message
	want := map[string]int64{}
	for i := range 2000 {
		name := fmt.Sprintf("exp-%04d", i)
		for range 1 + i%7 {
			all = append(all, event(name))
			want[name]++
		}
	}
	require.NoError(t, d.Feed(ctx, all...))
	require.NoError(t, d.Advance(ctx, testWindow))
	require.Equal(t, uint64(2000), counters.Visited.Load())
	require.Equal(t, refTop(5, want), partials(t, d)[0].Top)

	more := events("exp-0003")
	for range 10 {
		more = append(more, event("exp-1500"))
	}
	require.NoError(t, d.Feed(ctx, more...))
	want["exp-1500"] += 10
	want["exp-0003"]++
	require.NoError(t, d.Advance(ctx, testWindow))
	require.Equal(t, uint64(2002), counters.Visited.Load(), "the second window visits the two changed experiments only")
	top := partials(t, d)[0].Top
	require.Equal(t, refTop(5, want), top)
	require.Equal(t, Entry{"exp-1500", 13}, top[0])
}

// TestCountTaskChangelog checks what a commit logs: the count of every
// experiment counted since the last commit, in the store's changelog
// format, so that a restore rebuilds the exact counts.
func TestCountTaskChangelog(t *testing.T) {
	ctx := context.Background()
	d := newCountDriver(t, 3, 0, nil, tasktest.CommitInterval(time.Second))
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[string]int64{}
	for range 20 {
		var batch []stream.Message
		for range rng.IntN(50) {
			name := fmt.Sprintf("exp-%d", rng.IntN(30))
			want[name]++
			batch = append(batch, event(name))
		}
		require.NoError(t, d.Feed(ctx, batch...))
		require.NoError(t, d.Advance(ctx, time.Second)) // a commit; every 10th, a window too
	}
	require.NoError(t, d.Close(ctx))
	require.Equal(t, want, changelogCounts(t, d.Changelog(CountsStore)))
	cp, ok := d.Checkpoint()
	require.True(t, ok)
	require.Equal(t, int64(len(d.Changelog(CountsStore))-1), cp.Changelogs[CountsStore])
}

// TestCountTaskInitRebuildsTopFromStore starts a task on a store that
// already holds counts whose changes were taken before (as after a restart):
// only Init's scan can know them.
func TestCountTaskInitRebuildsTopFromStore(t *testing.T) {
	ctx := context.Background()
	d := newCountDriver(t, 3, 0, nil)
	s := d.Store(CountsStore)
	counts := store.StringKeys[int64](s)
	for name, c := range map[string]int64{"old-a": 50, "old-b": 40, "old-c": 5} {
		require.NoError(t, counts.Put(name, c))
	}
	n, err := s.(store.ChangeTracker).TakeChanges(0, func(_, _ []byte) error { return nil })
	require.NoError(t, err)
	require.Equal(t, 3, n)

	require.NoError(t, d.Feed(ctx, events("new", "new", "new", "new", "new", "new", "old-c")...))
	require.NoError(t, d.Advance(ctx, testWindow))
	require.Equal(t, []Entry{{"old-a", 50}, {"old-b", 40}, {"new", 6}}, partials(t, d)[0].Top)
	c, _, err := counts.Get("old-c")
	require.NoError(t, err)
	require.Equal(t, int64(6), c)
}

func TestCountTaskBadEvents(t *testing.T) {
	ctx := context.Background()
	d := newCountDriver(t, 3, 0, nil)
	err := d.Feed(ctx, stream.Message{Value: []byte(`{"user":"u1"}`)})
	var pe *task.ProcessError
	require.True(t, errors.As(err, &pe), "got %v", err)
	require.ErrorIs(t, err, errNoExperiment)

	d = newCountDriver(t, 3, 0, nil, tasktest.OnError(task.DeadLetter))
	require.NoError(t, d.Feed(ctx, stream.Message{Value: []byte(`not json`)}, event("a"), stream.Message{Value: []byte(`{"experiment":7}`)}))
	require.Equal(t, uint64(2), d.Stats().DeadLettered)
	require.NoError(t, d.Advance(ctx, testWindow))
	require.Equal(t, []Entry{{"a", 1}}, partials(t, d)[0].Top)
}

func TestCountTaskWarnsOnceWhenNotKeyedByExperiment(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	d := newCountDriver(t, 3, 0, nil, tasktest.Logger(log))
	require.NoError(t, d.Feed(ctx, event("a"), event("b")))
	require.NotContains(t, logs.String(), "not keyed by experiment")
	bad := event("a")
	bad.Key = []byte("user-7")
	require.NoError(t, d.Feed(ctx, bad, bad))
	require.Equal(t, 1, strings.Count(logs.String(), "not keyed by experiment"), logs.String())
}
