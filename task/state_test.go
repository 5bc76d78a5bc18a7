package task_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/embedded"
	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// counter counts messages per key in store "counts". At Close it reports
// the store's whole content to sink, so tests can compare state.
type counter struct {
	counts *store.Typed[string, int64]
	name   string
	sink   *stateSink
}

type stateSink struct {
	mu    sync.Mutex
	state map[string]map[string]int64 // task -> key -> count
	// atInit is the state each task found at Init, after restore.
	atInit map[string]map[string]int64
}

func newSink() *stateSink {
	return &stateSink{state: map[string]map[string]int64{}, atInit: map[string]map[string]int64{}}
}

func dump(t *store.Typed[string, int64]) (map[string]int64, error) {
	out := map[string]int64{}
	it := t.All()
	defer it.Close()
	for it.Next() {
		out[it.Key()] = it.Value()
	}
	return out, it.Err()
}

func (c *counter) Init(_ context.Context, tc task.Context) error {
	s, err := tc.Store("counts")
	if err != nil {
		return err
	}
	c.counts, c.name = store.StringKeys[int64](s), tc.TaskName()
	st, err := dump(c.counts)
	c.sink.mu.Lock()
	c.sink.atInit[c.name] = st
	c.sink.mu.Unlock()
	return err
}

func (c *counter) Process(_ context.Context, m stream.Message, _ task.Collector, _ task.Coordinator) error {
	n, _, err := c.counts.Get(string(m.Key))
	if err != nil {
		return err
	}
	return c.counts.Put(string(m.Key), n+1)
}

func (c *counter) Close(context.Context) error {
	st, err := dump(c.counts)
	c.sink.mu.Lock()
	c.sink.state[c.name] = st
	c.sink.mu.Unlock()
	return err
}

func merged(m map[string]map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for _, st := range m {
		for k, v := range st {
			out[k] += v
		}
	}
	return out
}

// expectedCounts counts keys of records, independently of the job.
func expectedCounts(recs []*kgo.Record) map[string]int64 {
	out := map[string]int64{}
	for _, r := range recs {
		out[string(r.Key)]++
	}
	return out
}

func countingJob(b *embedded.Broker, dir string, sink *stateSink, cps checkpoint.Manager) *task.Job {
	job := newJob(b, "count", func() task.StreamTask { return &counter{sink: sink} })
	job.Stores = []store.Spec{{Name: "counts"}}
	job.DataDir = dir
	job.Checkpoints = cps
	return job
}

// runUntil runs job until its tasks (one per partition of "in") have
// processed n messages.
func runUntil(t *testing.T, job *task.Job, n uint64) {
	t.Helper()
	parts := testkit.Partitions(t, job.Kafka.Brokers, "in")
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return running(job, parts) && total(job, processed) == n }, "job did not process %d", n)
	require.NoError(t, stop())
}

func TestStateSurvivesRestartsAndNewMachines(t *testing.T) {
	b := setup(t, 3, 3000)
	dir := t.TempDir()
	cps := checkpoint.NewMemory()
	sink := newSink()
	runUntil(t, countingJob(b, dir, sink, cps), 3000)
	want := expectedCounts(records(3000))
	require.Equal(t, want, merged(sink.state))

	// Restart on the same machine: the local stores are current.
	testkit.Produce(t, b.Addrs(), "in", records(600))
	sink = newSink()
	job := countingJob(b, dir, sink, cps)
	runUntil(t, job, 600)
	require.Equal(t, want, merged(sink.atInit), "state at restart")
	for k, v := range expectedCounts(records(600)) {
		want[k] += v
	}
	require.Equal(t, want, merged(sink.state))

	// A new machine: no local data. The changelog rebuilds the same state.
	sink = newSink()
	runUntil(t, countingJob(b, t.TempDir(), sink, cps), 0)
	require.Equal(t, want, merged(sink.atInit), "state rebuilt from the changelog")

	// The changelog itself holds, per key, the final count last.
	last := map[string]int64{}
	for _, r := range testkit.ReadAll(t, b.Addrs(), time.Minute, "count-counts-changelog") {
		require.Equal(t, byte('d'), r.Key[0])
		if r.Value == nil {
			delete(last, string(r.Key[1:]))
			continue
		}
		v, err := stream.Msgpack[int64]().Decode(r.Value[1:])
		require.NoError(t, err)
		last[string(r.Key[1:])] = v
	}
	require.Equal(t, want, last)
}

// failAfter is a checkpoint manager whose writes fail after the first n:
// the task has then flushed its changelog but not written its checkpoint,
// exactly the state a crash between steps 3 and 4 leaves.
type failAfter struct {
	checkpoint.Manager
	n atomic.Int64
}

func (f *failAfter) Write(ctx context.Context, c checkpoint.Checkpoint) error {
	if f.n.Add(-1) < 0 {
		return errors.New("injected: checkpoint lost")
	}
	return f.Manager.Write(ctx, c)
}

func TestUncheckpointedChangelogRecordsAreTrimmed(t *testing.T) {
	b := setup(t, 1, 1000)
	dir := t.TempDir()
	mem := checkpoint.NewMemory()
	sink := newSink()
	runUntil(t, countingJob(b, dir, sink, mem), 1000)
	want := expectedCounts(records(1000))

	// The second run's first checkpoint fails after its changelog records
	// were acknowledged.
	testkit.Produce(t, b.Addrs(), "in", records(500))
	failing := &failAfter{Manager: mem}
	job := countingJob(b, dir, newSink(), failing)
	_, done := start(t, job)
	select {
	case err := <-done:
		require.ErrorContains(t, err, "injected: checkpoint lost")
	case <-time.After(time.Minute):
		t.Fatal("job did not fail")
	}
	end, err := highWatermark(t, b, "count-counts-changelog")
	require.NoError(t, err)
	cp, _, _ := mem.Load(context.Background(), "task-0")
	require.Greater(t, end-1, cp.Changelogs["counts"], "records beyond the checkpoint exist")

	// Restart with the same data dir: the uncheckpointed writes are not
	// applied, and are trimmed from the changelog.
	sink = newSink()
	job = countingJob(b, dir, sink, mem)
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return total(job, processed) == 500 }, "reprocessing")
	require.NoError(t, stop())
	require.Equal(t, want, merged(sink.atInit), "restore ignores uncheckpointed records")
	for k, v := range expectedCounts(records(500)) {
		want[k] += v
	}
	require.Equal(t, want, merged(sink.state), "nothing counted twice")

	// A later full restore from scratch also sees the right state.
	sink = newSink()
	runUntil(t, countingJob(b, t.TempDir(), sink, mem), 0)
	require.Equal(t, want, merged(sink.atInit))
}

// A crash before the first checkpoint leaves changelog records that no
// checkpoint covers at all: a full restore must trim every one of them.
func TestChangelogWithoutAnyCheckpointIsTrimmedEntirely(t *testing.T) {
	b := setup(t, 1, 300)
	failing := &failAfter{Manager: checkpoint.NewMemory()}
	job := countingJob(b, t.TempDir(), newSink(), failing)
	_, done := start(t, job)
	select {
	case err := <-done:
		require.ErrorContains(t, err, "injected")
	case <-time.After(time.Minute):
		t.Fatal("job did not fail")
	}
	sink := newSink()
	failing.n.Store(1 << 30)
	runUntil(t, countingJob(b, t.TempDir(), sink, failing), 300)
	require.Empty(t, merged(sink.atInit), "no state without a checkpoint")
	require.Equal(t, expectedCounts(records(300)), merged(sink.state))
}

func highWatermark(t *testing.T, b *embedded.Broker, topic string) (int64, error) {
	t.Helper()
	recs := testkit.ReadAll(t, b.Addrs(), time.Minute, topic)
	if len(recs) == 0 {
		return 0, nil
	}
	return recs[len(recs)-1].Offset + 1, nil
}

func TestBadChangelogTopicsStopTheJobAtStart(t *testing.T) {
	b := setup(t, 3, 0)
	del := "delete"
	testkit.CreateTopic(t, b.Addrs(), "bad-counts-changelog", 3, map[string]*string{"cleanup.policy": &del})
	job := countingJob(b, t.TempDir(), newSink(), checkpoint.NewMemory())
	job.Name = "bad"
	err := job.Run(context.Background())
	require.ErrorContains(t, err, `store "counts" changelog: topic "bad-counts-changelog" has cleanup.policy=delete, must be exactly compact`)

	compact := "compact"
	testkit.CreateTopic(t, b.Addrs(), "small-counts-changelog", 2, map[string]*string{"cleanup.policy": &compact})
	job = countingJob(b, t.TempDir(), newSink(), checkpoint.NewMemory())
	job.Name = "small"
	err = job.Run(context.Background())
	require.ErrorContains(t, err, `topic "small-counts-changelog" has 2 partitions, needs at least 3`)
}

func TestFullWriteBufferForcesACommit(t *testing.T) {
	b := setup(t, 1, 2000)
	cps := checkpoint.NewMemory()
	job := countingJob(b, t.TempDir(), newSink(), cps)
	job.CommitInterval = time.Hour
	job.Stores[0].WriteBuffer = 200 // bytes: a few dozen keys
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return total(job, processed) == 2000 }, "not processed")
	require.NoError(t, stop())
	require.Greater(t, len(cps.History()), 5, "a small write buffer commits often")
}

func TestStoreCountersAndDataDirLayout(t *testing.T) {
	b := setup(t, 2, 100)
	dir := t.TempDir()
	job := countingJob(b, dir, newSink(), checkpoint.NewMemory())
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return total(job, processed) == 100 }, "not processed")
	var puts, gets uint64
	for _, s := range job.Stats() {
		puts += s.Stores["counts"].Puts
		gets += s.Stores["counts"].Gets
	}
	require.EqualValues(t, 100, puts)
	require.EqualValues(t, 100, gets)
	require.NoError(t, stop())
	for i := range 2 {
		_, err := os.Stat(filepath.Join(dir, "count", "task-"+strconv.Itoa(i), "counts"))
		require.NoError(t, err, "pebble store of task-%d", i)
	}
}

// A local store behind its checkpoint (a crash between writing the
// checkpoint and applying the store's batch leaves one) replays only the
// changelog tail.
func TestStoreBehindCheckpointReplaysTheTail(t *testing.T) {
	b := setup(t, 1, 1000)
	dir := t.TempDir()
	cps := checkpoint.NewMemory()
	runUntil(t, countingJob(b, dir, newSink(), cps), 1000)
	old := t.TempDir()
	require.NoError(t, os.CopyFS(old, os.DirFS(dir)))
	cp1, _, _ := cps.Load(context.Background(), "task-0")

	testkit.Produce(t, b.Addrs(), "in", records(500))
	runUntil(t, countingJob(b, dir, newSink(), cps), 500)
	want := expectedCounts(records(1000))
	for k, v := range expectedCounts(records(500)) {
		want[k] += v
	}

	sink := newSink()
	job := countingJob(b, old, sink, cps)
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return running(job, 1) }, "job did not start")
	restored := job.Stats()[0].Stores["counts"].RestoreRecords
	require.NoError(t, stop())
	require.Equal(t, want, merged(sink.atInit), "the tail brought the old store up to the checkpoint")
	cp2, _, _ := cps.Load(context.Background(), "task-0")
	var tail uint64
	for _, r := range testkit.ReadAll(t, b.Addrs(), time.Minute, "count-counts-changelog") {
		if r.Offset > cp1.Changelogs["counts"] && r.Offset <= cp2.Changelogs["counts"] {
			tail++
		}
	}
	require.Positive(t, tail)
	require.Equal(t, tail, restored, "exactly the records after the old store's offset were replayed")
}

// failAfterWrite counts like counter, then fails the message at offset
// failAt once, after its write: the write must not survive the failure.
type failAfterWrite struct {
	counter
	failAt *atomic.Int64
	panics bool
}

func (c *failAfterWrite) Process(ctx context.Context, m stream.Message, o task.Collector, co task.Coordinator) error {
	if err := c.counter.Process(ctx, m, o, co); err != nil {
		return err
	}
	if m.Offset == c.failAt.Load() {
		c.failAt.Store(-1)
		if c.panics {
			panic("after the write")
		}
		return errors.New("failed after the write")
	}
	return nil
}

func TestFailedMessageLeavesNoStateBehind(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy task.ErrorPolicy
		panics bool
	}{
		{"fail then restart", task.Fail, false},
		{"fail by panic then restart", task.Fail, true},
		{"skip", task.Skip, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t, 1, 100)
			dir := t.TempDir()
			cps := checkpoint.NewMemory()
			var failAt atomic.Int64
			failAt.Store(50)
			mk := func(sink *stateSink) *task.Job {
				job := countingJob(b, dir, sink, cps)
				job.OnError = tc.policy
				job.NewTask = func() task.StreamTask {
					return &failAfterWrite{counter: counter{sink: sink}, failAt: &failAt, panics: tc.panics}
				}
				return job
			}
			want := expectedCounts(records(100))
			failed := records(100)[50]
			if tc.policy == task.Skip {
				// The skipped message counts for nothing.
				if want[string(failed.Key)]--; want[string(failed.Key)] == 0 {
					delete(want, string(failed.Key))
				}
				sink := newSink()
				job := mk(sink)
				stop, _ := start(t, job)
				testkit.Eventually(t, time.Minute, func() bool {
					return running(job, 1) && total(job, func(s task.TaskStats) uint64 { return s.Processed + s.Skipped }) == 100
				}, "not all handled")
				require.NoError(t, stop())
				require.Equal(t, want, merged(sink.state))
				return
			}
			_, done := start(t, mk(newSink()))
			select {
			case err := <-done:
				require.ErrorContains(t, err, "offset 50")
			case <-time.After(time.Minute):
				t.Fatal("the job did not fail")
			}
			// The restart processes message 50 again: it must count once.
			sink := newSink()
			runUntil(t, mk(sink), 50)
			require.Equal(t, want, merged(sink.state))
		})
	}
}

// A restore from scratch that was interrupted leaves data without
// metadata. The next restore starts from an empty store: the partial data
// could hold keys whose tombstones compaction has since dropped from the
// changelog, which would come back.
func TestInterruptedRestoreStartsOver(t *testing.T) {
	b := setup(t, 1, 100)
	cps := checkpoint.NewMemory()
	first := t.TempDir()
	runUntil(t, countingJob(b, first, newSink(), cps), 100)
	path := func(dir string) string { return filepath.Join(dir, "count", "task-0", "counts") }
	// A changelog record is an engine key ('d' + key) and value: borrow
	// a real value for the ghost keys.
	l, err := state.Open(path(first), store.Spec{Name: "counts"}, nil)
	require.NoError(t, err)
	value, err := l.EngineValue([]byte("dk0"))
	require.NoError(t, err)
	require.NotNil(t, value)
	require.NoError(t, l.Close())

	dir := t.TempDir()
	l, err = state.Open(path(dir), store.Spec{Name: "counts"}, nil)
	require.NoError(t, err)
	// Over the store's restore chunk size, so they reach the engine
	// before the (never called) FinishRestore.
	var recs []store.Record
	for i := range 200_000 {
		recs = append(recs, store.Record{Key: fmt.Appendf(nil, "dghost-%08d-of-an-interrupted-restore", i), Value: value})
	}
	require.NoError(t, l.Restore(recs))
	require.NoError(t, l.Close())

	sink := newSink()
	runUntil(t, countingJob(b, dir, sink, cps), 0)
	require.Equal(t, expectedCounts(records(100)), merged(sink.atInit), "no key of the interrupted restore survives")
}

// OpenStore reads what a stopped job left on disk, read only; a running
// job's stores cannot be opened.
func TestOpenStoreInspectsAStoppedJob(t *testing.T) {
	b := setup(t, 2, 500)
	dir := t.TempDir()
	cps := checkpoint.NewMemory()
	sink := newSink()
	job := countingJob(b, dir, sink, cps)
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return running(job, 2) && total(job, processed) == 500 }, "the job did not process its input")
	_, _, err := job.OpenStore(0, "counts")
	require.Error(t, err, "a running job holds its stores")
	require.NoError(t, stop())

	got := map[string]int64{}
	for p := range int32(2) {
		s, closer, err := job.OpenStore(p, "counts")
		require.NoError(t, err)
		it := store.StringKeys[int64](s).All()
		for it.Next() {
			got[it.Key()] += it.Value()
		}
		require.NoError(t, it.Err())
		require.NoError(t, it.Close())
		require.ErrorIs(t, s.Put([]byte("k"), []byte("v")), store.ErrReadOnly)
		require.NoError(t, closer.Close())
	}
	require.Equal(t, expectedCounts(records(500)), got)

	_, _, err = job.OpenStore(0, "nope")
	require.ErrorContains(t, err, `no store "nope"`)
	_, _, err = job.OpenStore(7, "counts")
	require.ErrorContains(t, err, "task-7")
}
