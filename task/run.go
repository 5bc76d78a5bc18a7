package task

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/stream"
)

// container is one running process of a job: its Kafka connections, its
// producer, its checkpoint manager, its group membership, and the tasks the
// group gave it.
type container struct {
	job  *Job
	log  *slog.Logger
	conn *kafka.Conn // admin, metadata and group coordinator look-ups
	// out is the producer's connection: its metadata look-ups wait for a
	// broker that restarts (see kafka.PatientProducer), which the others
	// must not.
	out *kafka.Conn
	// input is a separate connection for consumers. Sarama sends one
	// request at a time per broker connection, and a fetch waits up to
	// Consumer.MaxWaitTime for data: sharing it would hold produce
	// requests (and so commits) behind idle fetches.
	input      *kafka.Conn
	restoreSem chan struct{} // bounds the tasks restoring at once
	producer   *kafka.Producer
	cps        checkpoint.Manager
	ownCPs     bool
	grp        *group
	lock       io.Closer // the process's hold on <DataDir>/<Name>

	// hardCtx is cancelled when the job must stop at once; Process and
	// Send see it.
	hardCtx    context.Context
	hardCancel context.CancelFunc

	tasks      int32
	known      sync.Map   // output topics known to exist (AutoCreateOutputs)
	createMu   sync.Mutex // serialises topic creation
	stopOnce   sync.Once
	stop       chan struct{} // closed to ask every runner to stop gracefully
	shutdownRq chan struct{} // a task called Coordinator.Shutdown
	shutOnce   sync.Once
	failMu     sync.Mutex
	failures   []error
	failed     chan struct{} // closed on the first task failure
	failOnce   sync.Once
}

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
func (j *Job) Run(ctx context.Context) (err error) {
	if err := j.Validate(); err != nil {
		return err
	}
	log := j.logger().With("job", j.Name)
	c := &container{job: j, log: log, stop: make(chan struct{}), shutdownRq: make(chan struct{}), failed: make(chan struct{})}
	c.hardCtx, c.hardCancel = context.WithCancel(context.WithoutCancel(ctx))
	defer c.hardCancel()
	defer func() { err = errors.Join(err, c.close()) }()
	if err := c.start(ctx); err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while starting", "err", err)
			return nil
		}
		if ue := (*kafka.UnreachableError)(nil); errors.As(err, &ue) {
			return unreachableError{err}
		}
		return err
	}
	if !j.running.CompareAndSwap(nil, c) {
		return fmt.Errorf("task: job %q is already running", j.Name)
	}
	defer j.running.Store(nil)
	return c.run(ctx)
}

func (c *container) start(ctx context.Context) error {
	j := c.job
	if len(j.Stores) > 0 {
		dir := filepath.Join(j.dataDir(), j.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("task: job %q: data dir: %w", j.Name, err)
		}
		lock, err := vfs.Default.Lock(filepath.Join(dir, "LOCK"))
		if err != nil {
			return fmt.Errorf("task: job %q: data dir %s is in use by another process of the job (give each process its own DataDir): %w", j.Name, dir, err)
		}
		c.lock = lock
	}
	// Every step below waits for a cluster that cannot be reached (yet),
	// for up to CommitTimeout: a job started with its cluster, or while a
	// broker restarts, must not give up at once.
	dial := func(o kafka.Options) (conn *kafka.Conn, err error) {
		err = c.retry(ctx, "connect", func() error {
			conn, err = kafka.Dial(ctx, j.Kafka, o)
			if err != nil && j.Kafka.SASL != nil && errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNREFUSED) {
				// Some brokers answer a failed SASL authentication by
				// closing the connection: a restart looks the same, but
				// a wrong password is far likelier at start.
				return kafka.Permanent(fmt.Errorf("%w (the broker closed the connection while authenticating: check the SASL mechanism, user and password)", err))
			}
			return err
		})
		return conn, err
	}
	var err error
	if c.conn, err = dial(kafka.Options{ReadPatience: j.commitTimeout()}); err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	if c.input, err = dial(kafka.Options{}); err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	c.restoreSem = make(chan struct{}, 4)
	var tasks int
	if err := c.retry(ctx, "read input metadata", func() (err error) {
		tasks, err = c.taskCount(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	c.tasks = int32(tasks)
	ensure := func(s kafka.TopicSpec) error {
		return c.retry(ctx, "create topic "+s.Name, func() error { return c.conn.EnsureTopic(ctx, s) })
	}
	if j.OnError == DeadLetter {
		if err := ensure(kafka.TopicSpec{Name: j.deadLetterTopic(), Partitions: int32(tasks)}); err != nil {
			return fmt.Errorf("task: job %q: dead-letter topic: %w", j.Name, err)
		}
	}
	if err := c.ensureChangelogs(ensure); err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	for _, o := range j.Outputs {
		spec := kafka.TopicSpec{Name: o.Name, Partitions: o.Partitions, Compact: o.Compacted, Configs: o.Configs}
		if spec.Partitions == 0 {
			spec.Partitions = int32(tasks)
		}
		if err := ensure(spec); err != nil {
			return fmt.Errorf("task: job %q: output: %w", j.Name, err)
		}
	}
	if c.cps = j.Checkpoints; c.cps == nil {
		// The group's members mirror checkpoints to the group's offsets
		// themselves: only a member may commit offsets of a live group.
		err := c.retry(ctx, "open the checkpoint topic", func() (err error) {
			c.cps, err = checkpoint.NewKafka(ctx, j.Kafka, j.Name, checkpoint.KafkaOptions{Logger: c.log, NoMirror: true})
			return err
		})
		if err != nil {
			return fmt.Errorf("task: job %q: %w", j.Name, err)
		}
		c.ownCPs = true
	}
	// The producer has a client of its own that waits for a broker that
	// restarts: records sent meanwhile must not fail.
	if c.out, err = dial(kafka.Options{ProducerPatience: j.commitTimeout()}); err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	if c.producer, err = c.out.NewProducer(); err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	if c.grp, err = newGroup(c); err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	return nil
}

// taskCount checks that the partitioned inputs are co-partitioned and that
// every input exists, and returns the number of tasks.
func (c *container) taskCount(ctx context.Context) (int, error) {
	j := c.job
	n := int32(-1)
	var first string
	for _, t := range j.Inputs {
		p, err := c.conn.Partitions(ctx, t)
		if err != nil {
			return 0, fmt.Errorf("input %w", err)
		}
		if n >= 0 && p != n {
			return 0, fmt.Errorf("inputs are not co-partitioned: %q has %d partitions but %q has %d (all partitioned inputs must have the same count; mark small tables as Broadcast)", first, n, t, p)
		}
		n, first = p, t
	}
	for _, t := range j.Broadcast {
		if _, err := c.conn.Partitions(ctx, t); err != nil {
			return 0, fmt.Errorf("broadcast input %w", err)
		}
	}
	if n < 0 {
		return 1, nil
	}
	return int(n), nil
}

// newRunner loads task i's checkpoint and resolves where each of its
// partitions starts.
func (c *container) newRunner(ctx context.Context, i int32) (*runner, error) {
	j := c.job
	name := fmt.Sprintf("task-%d", i)
	var parts []stream.Partition
	if len(j.Inputs) > 0 {
		for _, t := range j.Inputs {
			parts = append(parts, stream.Partition{Topic: t, Partition: i})
		}
	}
	for _, t := range j.Broadcast {
		var n int32
		err := c.retry(ctx, "read metadata of "+t, func() (err error) {
			n, err = c.conn.Partitions(ctx, t)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("task: job %q: broadcast input %w", j.Name, err)
		}
		for p := range n {
			parts = append(parts, stream.Partition{Topic: t, Partition: p})
		}
	}
	var cp checkpoint.Checkpoint
	var ok bool
	err := c.retry(ctx, "load checkpoint", func() (err error) {
		cp, ok, err = c.cps.Load(ctx, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("task: job %q: load checkpoint of %s: %w", j.Name, name, err)
	}
	r := &runner{
		c: c, name: name, partition: i, parts: parts,
		log:     c.log.With("task", name),
		tracker: kafka.NewTracker(),
		offs:    make([]int64, len(parts)),
		queue:   make(chan stream.Message, j.queueSize()),
	}
	r.task = j.NewTask()
	if r.task == nil {
		return nil, fmt.Errorf("task: job %q: NewTask returned nil", j.Name)
	}
	if ok {
		r.last = cp
		r.counters.lastCheckpoint.Store(&cp)
		r.log.Info("resuming from checkpoint", "id", cp.ID, "written_at", cp.WrittenAt)
	}
	for i, p := range parts {
		if off, ok := cp.Inputs[p]; ok {
			r.offs[i] = off
			continue
		}
		// Pin a concrete offset so the first checkpoint records it: a
		// restart must not move "newest" forward past unread messages.
		err := c.retry(ctx, "find start of "+p.String(), func() (err error) {
			if j.StartAt == StartNewest {
				r.offs[i], err = c.conn.HighWatermark(ctx, p)
			} else {
				r.offs[i], err = c.conn.OldestOffset(ctx, p)
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("task: job %q: find start of %s: %w", j.Name, p, err)
		}
		r.dirty = true // checkpoint the pinned position even if nothing comes
	}
	return r, nil
}

// runTask runs a task the group gave this process: load its checkpoint,
// restore its stores, Init it, read its inputs from the checkpoint, and
// process until the group takes it back or the job stops. Stopping while
// starting is not an error: nothing was processed, and a partial restore
// is redone by the next owner.
func (c *container) runTask(l *lease) error {
	ctx, cancel := c.leaseContext(l)
	defer cancel()
	starting := func(err error) error {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	r, err := c.newRunner(ctx, l.id)
	if err != nil {
		return starting(err)
	}
	r.lease = l
	// The checkpoint is where the task resumes: mirror it to the group at
	// once, since the process that wrote it may have died before its own
	// mirror reached the group.
	c.grp.mark(r.inputOffsets())
	if err := r.openStores(); err != nil {
		return errors.Join(starting(err), r.closeStores())
	}
	if len(r.stores) > 0 {
		select {
		case c.restoreSem <- struct{}{}:
		case <-ctx.Done():
			return r.closeStores()
		}
		start := time.Now()
		err = r.restore(ctx)
		<-c.restoreSem
		r.counters.restoreNs.Store(int64(time.Since(start)))
		if err != nil {
			return errors.Join(starting(err), r.closeStores())
		}
	}
	if it, ok := r.task.(InitableTask); ok {
		if err := safeCall(func() error { return it.Init(c.hardCtx, r) }); err != nil {
			return errors.Join(fmt.Errorf("task %s: init: %w", r.name, err), r.closeStores())
		}
	}
	inputs := make([]kafka.Input, 0, len(r.parts))
	for i, p := range r.parts {
		inputs = append(inputs, kafka.Input{Partition: p, Offset: r.offs[i]})
	}
	var sub *kafka.Subscription
	err = c.retry(ctx, "start reading inputs", func() (err error) {
		sub, err = c.input.Subscribe(inputs, r.queue, r.log)
		return err
	})
	if err != nil {
		err = fmt.Errorf("task %s: %w", r.name, err)
		if ct, ok := r.task.(ClosableTask); ok {
			err = errors.Join(err, safeCall(func() error { return ct.Close(c.hardCtx) }))
		}
		return errors.Join(err, r.closeStores())
	}
	defer sub.Close()
	defer sub.Stop()
	r.inputDown = sub.Failed()
	c.grp.mu.Lock()
	l.r = r
	c.grp.mu.Unlock()
	c.grp.pausedNs.Add(int64(time.Since(l.started)))
	r.log.Info("task started", "after", time.Since(l.started).Round(time.Millisecond))
	return r.run()
}

// leaseContext returns a context that ends when lease l is revoked or the
// job stops.
func (c *container) leaseContext(l *lease) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(c.hardCtx)
	go func() {
		select {
		case <-l.revoke:
		case <-c.stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

// fail records a task's failure and stops the job.
func (c *container) fail(err error) {
	c.failMu.Lock()
	c.failures = append(c.failures, err)
	c.failMu.Unlock()
	c.failOnce.Do(func() { close(c.failed) })
}

func (c *container) run(ctx context.Context) error {
	gctx, gcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer gcancel()
	grpErr := make(chan error, 1)
	go func() { grpErr <- c.grp.participate(gctx) }()
	c.log.Info("job started", "instance", c.grp.instance, "tasks", c.tasks, "inputs", c.job.Inputs, "broadcast", c.job.Broadcast)

	var gerr error
	grpDone := false
	select {
	case <-ctx.Done():
		c.log.Info("stopping: context cancelled")
	case <-c.shutdownRq:
		c.log.Info("stopping: a task asked for shutdown")
	case <-c.failed:
		c.log.Error("stopping: task failed", "err", c.firstFailure())
	case gerr = <-grpErr:
		grpDone = true
		c.log.Error("stopping: group membership failed", "err", gerr)
	}
	// Every task finishes its current message, commits and closes while
	// the process is still a member (so its commits are valid); then it
	// leaves the group, and the tasks move at once.
	c.grp.stopAcquiring()
	c.stopAll()
	// Bound the graceful stop: past the timeout, cancel in-flight work.
	timer := time.AfterFunc(c.job.shutdownTimeout()+5*time.Second, c.hardCancel)
	defer timer.Stop()
	c.waitTasks()
	gcancel()
	if !grpDone {
		gerr = <-grpErr
	}
	c.failMu.Lock()
	all := append([]error{gerr}, c.failures...)
	c.failMu.Unlock()
	for i, e := range all {
		if ue := (*kafka.UnreachableError)(nil); errors.As(e, &ue) {
			all[i] = unreachableError{e}
		}
	}
	err := errors.Join(all...)
	if err == nil {
		c.log.Info("job stopped cleanly")
	}
	return err
}

// waitTasks waits until every task and standby has stopped.
func (c *container) waitTasks() {
	for _, l := range c.grp.all() {
		<-l.done
	}
}

func (c *container) firstFailure() error {
	c.failMu.Lock()
	defer c.failMu.Unlock()
	return c.failures[0]
}

// ensureOutput creates topic, once, when AutoCreateOutputs is set.
func (c *container) ensureOutput(topic string) error {
	if _, ok := c.known.Load(topic); ok {
		return nil
	}
	c.createMu.Lock()
	defer c.createMu.Unlock()
	if _, ok := c.known.Load(topic); ok {
		return nil
	}
	err := c.retry(c.hardCtx, "create topic "+topic, func() error {
		return c.conn.EnsureTopic(c.hardCtx, kafka.TopicSpec{Name: topic, Partitions: c.tasks})
	})
	if err != nil {
		return err
	}
	c.known.Store(topic, true)
	return nil
}

func (c *container) stopAll() { c.stopOnce.Do(func() { close(c.stop) }) }

func (c *container) requestShutdown() { c.shutOnce.Do(func() { close(c.shutdownRq) }) }

// close releases everything start opened, in dependency order.
func (c *container) close() error {
	var errs []error
	if c.grp != nil {
		errs = append(errs, c.grp.leave())
	}
	if c.producer != nil {
		errs = append(errs, c.producer.Close())
	}
	if c.out != nil {
		errs = append(errs, c.out.Close())
	}
	if c.ownCPs && c.cps != nil {
		errs = append(errs, c.cps.Close())
	}
	if c.input != nil {
		errs = append(errs, c.input.Close())
	}
	if c.conn != nil {
		errs = append(errs, c.conn.Close())
	}
	if c.lock != nil {
		errs = append(errs, c.lock.Close())
	}
	return errors.Join(errs...)
}

// unreachable turns a commit that timed out while the group's coordinator
// did not answer either into an *kafka.UnreachableError that says since
// when the cluster is unreachable.
func (c *container) unreachable(err error) error {
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	// The coordinator kept silent for most of the commit too.
	since := c.grp.member.LastAck()
	if since.IsZero() || time.Since(since) < c.job.commitTimeout()/2 {
		return err
	}
	return &kafka.UnreachableError{Since: since, Err: err}
}

// retry runs fn until it succeeds, fails for good, ctx ends, or the
// cluster has been unreachable for CommitTimeout (see kafka.Retry).
func (c *container) retry(ctx context.Context, what string, fn func() error) error {
	return kafka.Retry(ctx, c.log, c.job.commitTimeout(), what, fn)
}

// safeCall runs f and turns a panic into a *PanicError.
func safeCall(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: stack()}
		}
	}()
	return f()
}
