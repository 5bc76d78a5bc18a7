package task_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/embedded"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// funcTask adapts functions to the optional task interfaces.
type funcTask struct {
	process func(context.Context, stream.Message, task.Collector, task.Coordinator) error
	window  func(context.Context, task.Collector, task.Coordinator) error
	init    func(context.Context, task.Context) error
	close   func(context.Context) error
}

func (f *funcTask) Process(ctx context.Context, m stream.Message, out task.Collector, co task.Coordinator) error {
	if f.process == nil {
		return nil
	}
	return f.process(ctx, m, out, co)
}

func (f *funcTask) Window(ctx context.Context, out task.Collector, co task.Coordinator) error {
	if f.window == nil {
		return nil
	}
	return f.window(ctx, out, co)
}

func (f *funcTask) Init(ctx context.Context, tc task.Context) error {
	if f.init == nil {
		return nil
	}
	return f.init(ctx, tc)
}

func (f *funcTask) Close(ctx context.Context) error {
	if f.close == nil {
		return nil
	}
	return f.close(ctx)
}

// setup starts a broker with topic "in" of parts partitions holding n
// records, and returns it.
func setup(t *testing.T, parts int32, n int, opts ...kfake.Opt) *embedded.Broker {
	t.Helper()
	b := testkit.Broker(t, opts...)
	testkit.CreateTopic(t, b.Addrs(), "in", parts, nil)
	if n > 0 {
		testkit.Produce(t, b.Addrs(), "in", records(n))
	}
	return b
}

func newJob(b *embedded.Broker, name string, newTask func() task.StreamTask) *task.Job {
	return &task.Job{
		Name: name, Kafka: stream.KafkaConfig{Brokers: b.Addrs()}, Inputs: []string{"in"},
		NewTask: newTask, Logger: quiet(), CommitInterval: 100 * time.Millisecond,
	}
}

// start runs job in the background; the returned function cancels it and
// returns Run's error.
func start(t *testing.T, job *task.Job) (stop func() error, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- job.Run(ctx) }()
	t.Cleanup(cancel)
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-ch:
			case <-time.After(time.Minute):
				err = errors.New("Run did not return within a minute of cancel")
			}
		})
		return err
	}, ch
}

func total(job *task.Job, f func(task.TaskStats) uint64) uint64 {
	var n uint64
	for _, s := range job.Stats() {
		n += f(s)
	}
	return n
}

func processed(s task.TaskStats) uint64 { return s.Processed }

func TestWindowRunsWithoutInputAndNeverDuringProcess(t *testing.T) {
	b := setup(t, 1, 0)
	var busy, overlaps, windows atomic.Int32
	job := newJob(b, "win", func() task.StreamTask {
		return &funcTask{
			process: func(context.Context, stream.Message, task.Collector, task.Coordinator) error {
				busy.Add(1)
				defer busy.Add(-1)
				return nil
			},
			window: func(context.Context, task.Collector, task.Coordinator) error {
				if busy.Load() != 0 {
					overlaps.Add(1)
				}
				windows.Add(1)
				return nil
			},
		}
	})
	job.Window = 20 * time.Millisecond
	stop, _ := start(t, job)
	testkit.Eventually(t, 30*time.Second, func() bool { return windows.Load() >= 3 }, "Window not called 3 times without input")
	testkit.Produce(t, b.Addrs(), "in", records(2000))
	testkit.Eventually(t, 30*time.Second, func() bool { return total(job, processed) == 2000 }, "input not processed")
	w := windows.Load()
	testkit.Eventually(t, 30*time.Second, func() bool { return windows.Load() >= w+2 }, "Window stopped after input")
	require.NoError(t, stop())
	require.Zero(t, overlaps.Load())
	st := job.Stats()
	require.Nil(t, st, "Stats after Run returned")
}

func TestPanicIsAProcessErrorUnderFail(t *testing.T) {
	b := setup(t, 1, 10)
	job := newJob(b, "panic", func() task.StreamTask {
		return &funcTask{process: func(_ context.Context, m stream.Message, _ task.Collector, _ task.Coordinator) error {
			if m.Offset == 4 {
				panic("boom")
			}
			return nil
		}}
	})
	cps := checkpoint.NewMemory()
	job.Checkpoints = cps
	_, done := start(t, job)
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("job did not fail")
	}
	var pe *task.ProcessError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "in", pe.Topic)
	require.EqualValues(t, 0, pe.Partition)
	require.EqualValues(t, 4, pe.Offset)
	require.Contains(t, err.Error(), "offset 4")
	var panicErr *task.PanicError
	require.ErrorAs(t, err, &panicErr)
	require.Equal(t, "boom", panicErr.Value)
	require.Contains(t, string(panicErr.Stack), "behaviour_test.go")
	// The checkpoint stops at the bad message, so a restart begins there.
	cp, ok, _ := cps.Load(context.Background(), "task-0")
	require.True(t, ok)
	require.EqualValues(t, 4, cp.Inputs[stream.Partition{Topic: "in", Partition: 0}])
}

func TestSkipCountsFailuresAndGoesOn(t *testing.T) {
	b := setup(t, 2, 1000)
	job := newJob(b, "skip", func() task.StreamTask {
		return &funcTask{process: func(_ context.Context, m stream.Message, _ task.Collector, _ task.Coordinator) error {
			v, _ := strconv.Atoi(string(m.Value))
			switch {
			case v%10 == 0:
				return errors.New("bad")
			case v%10 == 1:
				panic("worse")
			}
			return nil
		}}
	})
	job.OnError = task.Skip
	stop, _ := start(t, job)
	testkit.Eventually(t, 30*time.Second, func() bool {
		return total(job, func(s task.TaskStats) uint64 { return s.Processed + s.Skipped }) == 1000
	}, "not all handled")
	require.EqualValues(t, 200, total(job, func(s task.TaskStats) uint64 { return s.Skipped }))
	require.EqualValues(t, 800, total(job, processed))
	require.NoError(t, stop())
}

func TestCoordinatorShutdownStopsTheJobCleanly(t *testing.T) {
	b := setup(t, 2, 100)
	var closed atomic.Int32
	job := newJob(b, "shut", func() task.StreamTask {
		return &funcTask{
			process: func(_ context.Context, m stream.Message, _ task.Collector, co task.Coordinator) error {
				if string(m.Value) == "50" {
					co.Shutdown()
				}
				return nil
			},
			close: func(context.Context) error { closed.Add(1); return nil },
		}
	})
	job.CommitInterval = time.Hour
	_, done := start(t, job)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("Shutdown did not stop the job")
	}
	require.EqualValues(t, 2, closed.Load(), "every task closed")
}

func TestCoordinatorCommitWritesACheckpointAtOnce(t *testing.T) {
	b := setup(t, 1, 10)
	cps := checkpoint.NewMemory()
	job := newJob(b, "commit", func() task.StreamTask {
		return &funcTask{process: func(_ context.Context, m stream.Message, _ task.Collector, co task.Coordinator) error {
			if m.Offset == 6 {
				co.Commit()
			}
			return nil
		}}
	})
	job.CommitInterval = time.Hour
	job.Checkpoints = cps
	stop, _ := start(t, job)
	testkit.Eventually(t, 30*time.Second, func() bool { return len(cps.History()) > 0 }, "no checkpoint after Commit")
	h := cps.History()
	require.EqualValues(t, 7, h[0].Inputs[stream.Partition{Topic: "in", Partition: 0}], "checkpoint right after offset 6")
	require.EqualValues(t, 1, h[0].ID)
	require.NoError(t, stop())
	h = cps.History()
	last := h[len(h)-1]
	require.EqualValues(t, 10, last.Inputs[stream.Partition{Topic: "in", Partition: 0}])
	require.Equal(t, uint64(len(h)), last.ID, "ids count up by one")
}

// Cancelling mid-stream returns nil with a checkpoint covering exactly the
// messages processed, whose outputs all landed.
func TestCancelMidStreamCheckpointsEverythingProcessed(t *testing.T) {
	b := setup(t, 4, 20000)
	testkit.CreateTopic(t, b.Addrs(), "out", 4, nil)
	cps := checkpoint.NewMemory()
	job := newJob(b, "cancel", func() task.StreamTask { return &copyTask{out: "out"} })
	job.Checkpoints = cps
	job.CommitInterval = time.Hour
	job.QueueSize = 16
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return total(job, processed) >= 3000 }, "no progress")
	var stats []task.TaskStats
	require.NoError(t, stopAndKeepStats(stop, job, &stats))
	var done uint64
	var offsets int64
	for i, s := range stats {
		done += s.Processed
		cp, ok, err := cps.Load(context.Background(), fmt.Sprintf("task-%d", i))
		require.NoError(t, err)
		require.True(t, ok)
		offsets += cp.Inputs[stream.Partition{Topic: "in", Partition: int32(i)}]
	}
	require.Less(t, done, uint64(20000), "cancel was not mid-stream")
	require.EqualValues(t, done, offsets, "checkpoints cover exactly what was processed")
	out := testkit.ReadAll(t, b.Addrs(), time.Minute, "out")
	require.Len(t, out, int(done), "every processed message's output landed")
}

// stopAndKeepStats stops the job while sampling its final counters.
func stopAndKeepStats(stop func() error, job *task.Job, stats *[]task.TaskStats) error {
	var mu sync.Mutex
	done := make(chan struct{})
	last := map[int]task.TaskStats{} // tasks stop one by one: keep each one's last sample
	go func() {
		defer close(done)
		for {
			s := job.Stats()
			if s == nil {
				return
			}
			mu.Lock()
			for _, ts := range s {
				i, _ := strconv.Atoi(strings.TrimPrefix(ts.Task, "task-"))
				last[i] = ts
			}
			mu.Unlock()
		}
	}()
	err := stop()
	<-done
	*stats = make([]task.TaskStats, len(last))
	for i, ts := range last {
		(*stats)[i] = ts
	}
	return err
}

// running reports whether the job runs n tasks.
func running(job *task.Job, n int) bool { return len(job.Stats()) == n }

func TestResumesFromCheckpointWithoutDuplicatesAfterGracefulStop(t *testing.T) {
	b := setup(t, 3, 3000)
	testkit.CreateTopic(t, b.Addrs(), "out", 3, nil)
	mk := func() *task.Job {
		return newJob(b, "resume", func() task.StreamTask { return &copyTask{out: "out"} })
	}
	job := mk()
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return total(job, processed) == 3000 }, "first run")
	require.NoError(t, stop())

	testkit.Produce(t, b.Addrs(), "in", records(2000))
	job = mk()
	stop, _ = start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return total(job, processed) == 2000 }, "second run processed only the new messages")
	require.NoError(t, stop())
	require.Len(t, testkit.ReadAll(t, b.Addrs(), time.Minute, "out"), 5000)
}

func TestStartNewestSkipsTheBacklog(t *testing.T) {
	b := setup(t, 2, 500)
	testkit.CreateTopic(t, b.Addrs(), "out", 2, nil)
	job := newJob(b, "newest", func() task.StreamTask { return &copyTask{out: "out"} })
	job.StartAt = task.StartNewest
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return len(job.Stats()) == 2 }, "job did not start")
	testkit.Produce(t, b.Addrs(), "in", records(300))
	testkit.Eventually(t, time.Minute, func() bool { return total(job, processed) == 300 }, "new messages not processed")
	require.NoError(t, stop())
	require.Len(t, testkit.ReadAll(t, b.Addrs(), time.Minute, "out"), 300)
}

func TestBroadcastInputReachesEveryTask(t *testing.T) {
	b := setup(t, 3, 30)
	testkit.CreateTopic(t, b.Addrs(), "rules", 2, nil)
	testkit.Produce(t, b.Addrs(), "rules", records(10))
	var mu sync.Mutex
	seen := map[string]map[string]int{} // task -> topic -> count
	job := newJob(b, "bcast", nil)
	job.Broadcast = []string{"rules"}
	var names atomic.Int32
	job.NewTask = func() task.StreamTask {
		var name string
		return &funcTask{
			init: func(_ context.Context, tc task.Context) error {
				name = tc.TaskName()
				names.Add(1)
				require.Len(t, tc.Inputs(), 3, "one partition of in, two of rules")
				return nil
			},
			process: func(_ context.Context, m stream.Message, _ task.Collector, _ task.Coordinator) error {
				mu.Lock()
				defer mu.Unlock()
				if seen[name] == nil {
					seen[name] = map[string]int{}
				}
				seen[name][m.Topic]++
				return nil
			},
		}
	}
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return total(job, processed) == 30+3*10 }, "not all processed")
	require.NoError(t, stop())
	require.EqualValues(t, 3, names.Load())
	for _, n := range []string{"task-0", "task-1", "task-2"} {
		require.Equal(t, 10, seen[n]["rules"], "%s read all of the broadcast input", n)
	}
	require.Equal(t, 30, seen["task-0"]["in"]+seen["task-1"]["in"]+seen["task-2"]["in"])
}

func TestTransientProduceErrorsAreRetried(t *testing.T) {
	b := setup(t, 2, 2000)
	testkit.CreateTopic(t, b.Addrs(), "out", 2, nil)
	f := b.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "out", Err: kerr.NotLeaderForPartition, Count: 6})
	job := newJob(b, "retry", func() task.StreamTask { return &copyTask{out: "out"} })
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return total(job, processed) == 2000 }, "not all processed")
	require.NoError(t, stop())
	require.Equal(t, 6, f.Hits(), "the faults were hit")
	require.Len(t, testkit.ReadAll(t, b.Addrs(), time.Minute, "out"), 2000)
}

func TestTransientCheckpointErrorsAreRetried(t *testing.T) {
	b := setup(t, 1, 200)
	testkit.CreateTopic(t, b.Addrs(), "out", 1, nil)
	f := b.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "ckr-checkpoints", Err: kerr.NotEnoughReplicas, Count: 4})
	job := newJob(b, "ckr", func() task.StreamTask { return &copyTask{out: "out"} })
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return total(job, processed) == 200 }, "not all processed")
	testkit.Eventually(t, time.Minute, func() bool {
		s := job.Stats()
		return len(s) == 1 && s[0].LastCheckpoint.Inputs[stream.Partition{Topic: "in"}] == 200
	}, "checkpoint not written despite retries")
	require.NoError(t, stop())
	require.Equal(t, 4, f.Hits())
}

// A permanent produce failure must fail the job, and no checkpoint may
// cover the input whose output was lost.
func TestLostOutputFailsTheJobAndHoldsTheCheckpoint(t *testing.T) {
	b := setup(t, 1, 0)
	testkit.CreateTopic(t, b.Addrs(), "out", 1, nil)
	cps := checkpoint.NewMemory()
	job := newJob(b, "lost", func() task.StreamTask { return &copyTask{out: "out"} })
	job.Checkpoints = cps
	stop, done := start(t, job)
	testkit.Produce(t, b.Addrs(), "in", records(100))
	testkit.Eventually(t, time.Minute, func() bool {
		s := job.Stats()
		return len(s) == 1 && s[0].LastCheckpoint.Inputs[stream.Partition{Topic: "in"}] == 100
	}, "first batch not checkpointed")
	f := b.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "out", Err: kerr.TopicAuthorizationFailed, Count: -1})
	defer f.Remove()
	testkit.Produce(t, b.Addrs(), "in", records(50))
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		_ = stop()
		t.Fatal("job did not fail on a lost output")
	}
	require.ErrorContains(t, err, "not acknowledged")
	require.ErrorContains(t, err, "authoriz")
	h := cps.History()
	require.EqualValues(t, 100, h[len(h)-1].Inputs[stream.Partition{Topic: "in"}], "checkpoint never covers the lost outputs")
}

func TestInitErrorStopsTheJobAndClosesInitialisedTasks(t *testing.T) {
	b := setup(t, 3, 0)
	var closed, inited sync.Map
	job := newJob(b, "initerr", func() task.StreamTask {
		var name string
		return &funcTask{
			init: func(_ context.Context, tc task.Context) error {
				name = tc.TaskName()
				if tc.Partition() == 1 {
					return errors.New("no database")
				}
				inited.Store(name, true)
				return nil
			},
			close: func(context.Context) error { closed.Store(name, true); return nil },
		}
	})
	err := job.Run(context.Background())
	require.ErrorContains(t, err, "task-1: init: no database")
	_, ok := closed.Load("task-1")
	require.False(t, ok, "task-1's Init failed, so it is not closed")
	// Tasks start independently: the others may or may not have been
	// initialised before the job stopped, but none is left open.
	for _, name := range []string{"task-0", "task-2"} {
		_, wasInit := inited.Load(name)
		_, wasClosed := closed.Load(name)
		require.Equal(t, wasInit, wasClosed, "%s: initialised tasks are closed", name)
	}
}

func TestValidateExplainsEveryProblem(t *testing.T) {
	cases := []struct {
		name string
		job  *task.Job
		want []string
	}{
		{"empty", &task.Job{}, []string{"no Name", "no brokers", "no inputs", "NewTask is nil"}},
		{"bad name", &task.Job{Name: "a b"}, []string{`"a b" may contain only`}},
		{"dup input", &task.Job{Name: "x", Inputs: []string{"a", "a"}}, []string{`"a" is listed twice`}},
		{"negative", &task.Job{Name: "x", Window: -1, QueueSize: -1}, []string{"must not be negative", "QueueSize"}},
		{"compacted output", &task.Job{Name: "x", Outputs: []task.OutputTopic{{Name: "o", Compacted: true}}}, []string{`"o" is compacted but the job never deletes`}},
		{"policy", &task.Job{Name: "x", OnError: 7}, []string{"not a policy"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.job.Validate()
			require.Error(t, err)
			for _, w := range c.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
	ok := task.Job{Name: "ok", Kafka: stream.KafkaConfig{Brokers: []string{"h:1"}}, Inputs: []string{"a"}, NewTask: func() task.StreamTask { return &copyTask{} }}
	require.NoError(t, ok.Validate())
}

func TestErrorPolicyStrings(t *testing.T) {
	for _, p := range []task.ErrorPolicy{task.Fail, task.Skip, task.DeadLetter} {
		q, err := task.ParseErrorPolicy(p.String())
		require.NoError(t, err)
		require.Equal(t, p, q)
	}
	_, err := task.ParseErrorPolicy("ignore")
	require.Error(t, err)
}

// A checkpoint that cannot be written within CommitTimeout fails the job
// instead of retrying for ever.
func TestCommitTimeoutFailsTheJob(t *testing.T) {
	b := setup(t, 1, 10)
	testkit.CreateTopic(t, b.Addrs(), "out", 1, nil)
	job := newJob(b, "cto", func() task.StreamTask { return &copyTask{out: "out"} })
	job.CommitTimeout = time.Second
	job.ShutdownTimeout = time.Second
	// Let the checkpoint topic be created, then fail every write to it.
	f := b.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "cto-checkpoints", Err: kerr.NotEnoughReplicas, Count: -1})
	defer f.Remove()
	_, done := start(t, job)
	select {
	case err := <-done:
		require.ErrorContains(t, err, "commit")
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(time.Minute):
		t.Fatal("job kept retrying past CommitTimeout")
	}
	require.Positive(t, f.Hits())
}

// StartNewest pins the position where the job first started: an idle task
// checkpoints it, so messages produced while the job is down are processed
// after a restart instead of being skipped by a new "newest".
func TestStartNewestPositionSurvivesAnIdleRestart(t *testing.T) {
	b := setup(t, 1, 100)
	cps := checkpoint.NewMemory()
	mk := func() *task.Job {
		job := newJob(b, "pin", func() task.StreamTask { return &funcTask{} })
		job.StartAt = task.StartNewest
		job.Checkpoints = cps
		return job
	}
	job := mk()
	stop, _ := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return running(job, 1) }, "job did not start")
	require.NoError(t, stop())
	cp, ok, _ := cps.Load(context.Background(), "task-0")
	require.True(t, ok, "an idle task checkpoints its pinned start")
	require.EqualValues(t, 100, cp.Inputs[stream.Partition{Topic: "in"}])

	testkit.Produce(t, b.Addrs(), "in", records(40)) // while the job is down
	job = mk()
	stop, _ = start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return running(job, 1) && total(job, processed) == 40 }, "messages produced while down were skipped")
	require.NoError(t, stop())
}

// When sarama gives up on a partition (its offset fell out of the log), the
// job fails loudly instead of silently no longer reading it.
func TestLostInputPartitionFailsTheJob(t *testing.T) {
	b := setup(t, 1, 10)
	job := newJob(b, "lostin", func() task.StreamTask { return &funcTask{} })
	_, done := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return running(job, 1) && total(job, processed) == 10 }, "not started")
	f := b.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: "in", Err: kerr.OffsetOutOfRange, Count: -1})
	defer f.Remove()
	select {
	case err := <-done:
		require.ErrorContains(t, err, "consumer of in/0 stopped")
	case <-time.After(time.Minute):
		t.Fatal("the job kept running without its input partition")
	}
}
