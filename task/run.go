package task

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/grete-go/grete/internal/runtime"
	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// Run runs the job until ctx is cancelled, a task calls
// Coordinator.Shutdown, or a task fails.
//
// The process joins the job's consumer group (named after the job) and runs
// the tasks the group gives it; start more processes with the same Job to
// share the tasks (see InstanceID). Tasks move between processes as they
// come and go, each committed by its old owner before its new owner starts
// it.
//
// On cancellation or Shutdown every task finishes its current message,
// commits (outputs acknowledged, then checkpoint written), closes, and Run
// returns nil after handing the tasks over to the rest of the group. If a
// task fails, the other tasks stop the same way and Run returns the
// failure; a *ProcessError names the message. Run never returns nil after
// an output was lost: a failed send fails the next commit.
//
// Run returns at once with an error when the configuration is invalid or
// the cluster does not match it (e.g. inputs that are not co-partitioned).
func (j *Job) Run(ctx context.Context) error {
	if err := j.Validate(); err != nil {
		return err
	}
	c := runtime.New(j.config())
	if !j.running.CompareAndSwap(nil, c) {
		return fmt.Errorf("task: job %q is already running", j.Name)
	}
	defer j.running.Store(nil)
	return c.Run(ctx)
}

// config is the job as the runtime runs it: defaults filled in.
func (j *Job) config() runtime.Config {
	c := runtime.Config{
		Name: j.Name, Kafka: j.Kafka, Inputs: j.Inputs, Broadcast: j.Broadcast,
		NewTask: func() (runtime.Task, error) { return adapt(j.NewTask()) },
		Stores:  j.Stores, DataDir: j.DataDir, Window: j.Window,
		CommitInterval: orDefault(j.CommitInterval, DefaultCommitInterval),
		StartNewest:    j.StartAt == StartNewest,
		OnError:        runtime.ErrorPolicy(j.OnError), DeadLetterTopic: j.DeadLetterTopic,
		AutoCreateOutputs: j.AutoCreateOutputs,
		QueueSize:         orDefault(j.QueueSize, DefaultQueueSize),
		ShutdownTimeout:   orDefault(j.ShutdownTimeout, DefaultShutdownTimeout),
		CommitTimeout:     orDefault(j.CommitTimeout, DefaultCommitTimeout),
		Checkpoints:       j.Checkpoints, Logger: j.Logger, InstanceID: j.InstanceID,
		SessionTimeout:   orDefault(j.SessionTimeout, DefaultSessionTimeout),
		RebalanceTimeout: orDefault(j.RebalanceTimeout, DefaultRebalanceTimeout),
		Standbys:         j.Standbys,
	}
	if c.DataDir == "" {
		c.DataDir = runtime.DefaultDataDir()
	}
	if c.DeadLetterTopic == "" {
		c.DeadLetterTopic = j.Name + "-dlq"
	}
	for _, o := range j.Outputs {
		c.Outputs = append(c.Outputs, runtime.OutputTopic{Name: o.Name, Partitions: o.Partitions, Compacted: o.Compacted, Configs: o.Configs})
	}
	return c
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Stats returns the counters of the tasks this process runs now (started:
// checkpoint loaded, stores restored, Init done), ordered by partition, or
// nil when the job is not running. A task's counters start again when it
// comes back to this process. It is safe to call from any goroutine.
func (j *Job) Stats() []TaskStats {
	c := j.running.Load()
	if c == nil {
		return nil
	}
	rs := c.Stats()
	if rs == nil {
		return nil
	}
	out := make([]TaskStats, len(rs))
	for i, s := range rs {
		out[i] = TaskStats(s)
	}
	return out
}

// Member returns this process's group counters, or false when the job is
// not running. It is safe to call from any goroutine.
func (j *Job) Member() (MemberStats, bool) {
	c := j.running.Load()
	if c == nil {
		return MemberStats{}, false
	}
	s, ok := c.Member()
	return MemberStats(s), ok
}

// OpenStore opens store name of task taskNum (task-N reads partition N of
// the inputs) as the job left it in this machine's DataDir, read only, for
// inspection: the state of the task's last commit here. Stop the job
// first: a running job holds its stores. Writes to the store fail with
// store.ErrReadOnly; close it with the returned Closer. A task whose store
// this machine does not hold (it ran elsewhere, or never committed) is an
// error: its state is in its changelog (see package store).
func (j *Job) OpenStore(taskNum int32, name string) (store.Store, io.Closer, error) {
	i := slices.IndexFunc(j.Stores, func(s store.Spec) bool { return s.Name == name })
	if i < 0 {
		return nil, nil, fmt.Errorf("task: job %q declares no store %q", j.Name, name)
	}
	dir := runtime.StoreDir(orDefault(j.DataDir, runtime.DefaultDataDir()), j.Name, taskNum, name)
	l, err := state.OpenReadOnly(dir, j.Stores[i])
	if err != nil {
		return nil, nil, fmt.Errorf("task: open store %q of %s of job %q: %w", name, runtime.TaskName(taskNum), j.Name, err)
	}
	return l.View(), l, nil
}

// adapt makes a StreamTask the runtime's Task: the optional interfaces it
// implements become the Task's functions.
func adapt(v any) (runtime.Task, error) {
	t, ok := v.(StreamTask)
	if !ok || t == nil {
		return runtime.Task{}, errors.New("NewTask returned nil")
	}
	rt := runtime.Task{
		Process: func(ctx context.Context, m stream.Message, out runtime.Collector, co runtime.Coordinator) error {
			return t.Process(ctx, m, out, co)
		},
	}
	if it, ok := t.(InitableTask); ok {
		rt.Init = func(ctx context.Context, tc runtime.Context) error { return it.Init(ctx, tc) }
	}
	if wt, ok := t.(WindowableTask); ok {
		rt.Window = func(ctx context.Context, out runtime.Collector, co runtime.Coordinator) error {
			return wt.Window(ctx, out, co)
		}
	}
	if ct, ok := t.(ClosableTask); ok {
		rt.Close = ct.Close
	}
	return rt, nil
}

// The runtime makes this package's error values.
func init() {
	runtime.Register(runtime.API{
		Adapt: adapt,
		ProcessError: func(task, topic string, partition int32, offset int64, err error) error {
			return &ProcessError{Task: task, Topic: topic, Partition: partition, Offset: offset, Err: err}
		},
		PanicError:  func(v any, stack []byte) error { return &PanicError{Value: v, Stack: stack} },
		Stopping:    ErrStopping,
		Unreachable: func(err error) error { return unreachableError{err} },
	})
}
