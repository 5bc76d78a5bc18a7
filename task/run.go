package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/stream"
)

// container is one running process of a job: its Kafka connection, its
// producer, its checkpoint manager, and its tasks.
type container struct {
	job  *Job
	log  *slog.Logger
	conn *kafka.Conn // admin, metadata and the producer
	// input is a separate connection for consumers. Sarama sends one
	// request at a time per broker connection, and a fetch waits up to
	// Consumer.MaxWaitTime for data: sharing it would hold produce
	// requests (and so commits) behind idle fetches.
	input *kafka.Conn
	// restore reads changelogs at start, with short fetch waits: a read
	// stops at a known offset, and a fetch waiting for data past it would
	// hold every other task's restore behind it.
	restore  *kafka.Conn
	producer *kafka.Producer
	cps      checkpoint.Manager
	ownCPs   bool
	runners  []*runner
	subs     []*kafka.Subscription

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
}

// Run runs the job until ctx is cancelled, a task calls
// Coordinator.Shutdown, or a task fails.
//
// On cancellation or Shutdown every task finishes its current message,
// commits (outputs acknowledged, then checkpoint written), closes, and Run
// returns nil. If a task fails, the other tasks stop the same way and Run
// returns the failure; a *ProcessError names the message. Run never returns
// nil after an output was lost: a failed send fails the next commit.
//
// Run returns at once with an error when the configuration is invalid or
// the cluster does not match it (e.g. inputs that are not co-partitioned).
func (j *Job) Run(ctx context.Context) (err error) {
	if err := j.Validate(); err != nil {
		return err
	}
	log := j.logger().With("job", j.Name)
	c := &container{job: j, log: log, stop: make(chan struct{}), shutdownRq: make(chan struct{})}
	c.hardCtx, c.hardCancel = context.WithCancel(context.WithoutCancel(ctx))
	defer c.hardCancel()
	defer func() { err = errors.Join(err, c.close()) }()
	if err := c.start(ctx); err != nil {
		if ctx.Err() != nil {
			// Cancelled while starting (e.g. during a long restore):
			// nothing was processed, so this is a clean stop. A partial
			// restore is redone at the next start.
			log.Info("stopped while starting", "err", err)
			return nil
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
	cfg, err := kafka.Config(j.Kafka)
	if err != nil {
		return err
	}
	if c.conn, err = kafka.Dial(cfg, j.Kafka.Brokers); err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	if c.input, err = kafka.Dial(cfg, j.Kafka.Brokers); err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	if len(j.Stores) > 0 {
		rcfg := *cfg
		rcfg.Consumer.MaxWaitTime = 10 * time.Millisecond
		if c.restore, err = kafka.Dial(&rcfg, j.Kafka.Brokers); err != nil {
			return fmt.Errorf("task: job %q: %w", j.Name, err)
		}
	}
	tasks, err := c.taskCount()
	if err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	c.tasks = int32(tasks)
	if j.OnError == DeadLetter {
		if err := c.conn.EnsureTopic(kafka.TopicSpec{Name: j.deadLetterTopic(), Partitions: int32(tasks)}); err != nil {
			return fmt.Errorf("task: job %q: dead-letter topic: %w", j.Name, err)
		}
	}
	if err := c.ensureChangelogs(); err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	for _, o := range j.Outputs {
		spec := kafka.TopicSpec{Name: o.Name, Partitions: o.Partitions, Compact: o.Compacted, Configs: o.Configs}
		if spec.Partitions == 0 {
			spec.Partitions = int32(tasks)
		}
		if err := c.conn.EnsureTopic(spec); err != nil {
			return fmt.Errorf("task: job %q: output: %w", j.Name, err)
		}
	}
	if c.cps = j.Checkpoints; c.cps == nil {
		c.cps, err = checkpoint.NewKafka(j.Kafka, j.Name, checkpoint.KafkaOptions{Logger: c.log})
		if err != nil {
			return fmt.Errorf("task: job %q: %w", j.Name, err)
		}
		c.ownCPs = true
	}
	if c.producer, err = kafka.NewProducer(c.conn.Client); err != nil {
		return fmt.Errorf("task: job %q: %w", j.Name, err)
	}
	for i := range tasks {
		r, err := c.newRunner(ctx, int32(i))
		if err != nil {
			return err
		}
		c.runners = append(c.runners, r)
		if err := r.openStores(); err != nil {
			return err
		}
	}
	err = c.restoreAll(ctx)
	if c.restore != nil {
		err = errors.Join(err, c.restore.Close())
		c.restore = nil
	}
	return err
}

// taskCount checks that the partitioned inputs are co-partitioned and that
// every input exists, and returns the number of tasks.
func (c *container) taskCount() (int, error) {
	j := c.job
	n := int32(-1)
	var first string
	for _, t := range j.Inputs {
		p, err := c.conn.Partitions(t)
		if err != nil {
			return 0, fmt.Errorf("input %w", err)
		}
		if n >= 0 && p != n {
			return 0, fmt.Errorf("inputs are not co-partitioned: %q has %d partitions but %q has %d (all partitioned inputs must have the same count; mark small tables as Broadcast)", first, n, t, p)
		}
		n, first = p, t
	}
	for _, t := range j.Broadcast {
		if _, err := c.conn.Partitions(t); err != nil {
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
		n, err := c.conn.Partitions(t)
		if err != nil {
			return nil, fmt.Errorf("task: job %q: broadcast input %w", j.Name, err)
		}
		for p := range n {
			parts = append(parts, stream.Partition{Topic: t, Partition: p})
		}
	}
	cp, ok, err := c.cps.Load(ctx, name)
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
		var err error
		if j.StartAt == StartNewest {
			r.offs[i], err = c.conn.HighWatermark(p)
		} else {
			r.offs[i], err = c.conn.Client.GetOffset(p.Topic, p.Partition, kafka.Oldest)
		}
		if err != nil {
			return nil, fmt.Errorf("task: job %q: find start of %s: %w", j.Name, p, err)
		}
		r.dirty = true // checkpoint the pinned position even if nothing comes
	}
	return r, nil
}

func (c *container) run(ctx context.Context) error {
	// Init every task before any of them consumes. If one fails, the tasks
	// already initialised are closed: they may hold resources.
	for i, r := range c.runners {
		if it, ok := r.task.(InitableTask); ok {
			if err := safeCall(func() error { return it.Init(c.hardCtx, r) }); err != nil {
				errs := []error{fmt.Errorf("task %s: init: %w", r.name, err)}
				for _, done := range c.runners[:i] {
					if ct, ok := done.task.(ClosableTask); ok {
						if err := safeCall(func() error { return ct.Close(c.hardCtx) }); err != nil {
							errs = append(errs, fmt.Errorf("task %s: close: %w", done.name, err))
						}
					}
				}
				return errors.Join(errs...)
			}
		}
	}
	for _, r := range c.runners {
		inputs := make([]kafka.Input, 0, len(r.parts))
		for i, p := range r.parts {
			inputs = append(inputs, kafka.Input{Partition: p, Offset: r.offs[i]})
		}
		sub, err := c.input.Subscribe(inputs, r.queue, r.log)
		if err != nil {
			return fmt.Errorf("task %s: %w", r.name, err)
		}
		r.inputDown = sub.Failed()
		c.subs = append(c.subs, sub)
	}
	c.log.Info("job started", "tasks", len(c.runners), "inputs", c.job.Inputs, "broadcast", c.job.Broadcast)

	errs := make(chan error, len(c.runners))
	var wg sync.WaitGroup
	for _, r := range c.runners {
		wg.Add(1)
		r.started = true
		go func() {
			defer wg.Done()
			errs <- r.run()
		}()
	}
	var first error
	select {
	case <-ctx.Done():
		c.log.Info("stopping: context cancelled")
	case <-c.shutdownRq:
		c.log.Info("stopping: a task asked for shutdown")
	case first = <-errs:
		if first != nil {
			c.log.Error("stopping: task failed", "err", first)
		} // a nil here is impossible: runners return only when stopped or failed
	}
	c.stopAll()
	// Bound the graceful stop: past the timeout, cancel in-flight work.
	timer := time.AfterFunc(c.job.shutdownTimeout()+5*time.Second, c.hardCancel)
	defer timer.Stop()
	wg.Wait()
	close(errs)
	var all []error
	if first != nil {
		all = append(all, first)
	}
	for err := range errs {
		if err != nil {
			all = append(all, err)
		}
	}
	if len(all) == 0 {
		c.log.Info("job stopped cleanly")
	}
	return errors.Join(all...)
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
	if err := c.conn.EnsureTopic(kafka.TopicSpec{Name: topic, Partitions: c.tasks}); err != nil {
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
	for _, r := range c.runners {
		if !r.started {
			errs = append(errs, r.closeStores())
		}
	}
	for _, s := range c.subs {
		s.Stop()
	}
	for _, s := range c.subs {
		s.Close()
	}
	if c.producer != nil {
		errs = append(errs, c.producer.Close())
	}
	if c.ownCPs && c.cps != nil {
		errs = append(errs, c.cps.Close())
	}
	if c.input != nil {
		errs = append(errs, c.input.Close())
	}
	if c.restore != nil {
		errs = append(errs, c.restore.Close())
	}
	if c.conn != nil {
		errs = append(errs, c.conn.Close())
	}
	return errors.Join(errs...)
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
