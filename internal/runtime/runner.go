package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/stream"
)

// runner drives one task's Loop on its own goroutine, from Kafka: every
// call into the task, and every commit of it, happens on that goroutine,
// so they never overlap.
type runner struct {
	c         *Container
	partition int32
	log       *slog.Logger
	lease     *lease
	loop      *Loop
	queue     chan stream.Message
	inputDown <-chan error // the task's subscription lost a partition
}

// maxBatch bounds the messages processed between two looks at the stop
// signal and the timers.
const maxBatch = 256

// runTask runs a task the group gave this process: load its checkpoint,
// restore its stores, Init it, read its inputs from the checkpoint, and
// process until the group takes it back or the job stops. Stopping while
// starting is not an error: nothing was processed, and a partial restore
// is redone by the next owner.
func (c *Container) runTask(l *lease) error {
	ctx, cancel := c.leaseContext(l)
	defer cancel()
	r, err := c.newRunner(ctx, l)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := r.loop.Init(c.hardCtx); err != nil {
		return errors.Join(err, r.loop.Close(c.hardCtx))
	}
	parts, offs := r.loop.cfg.Inputs, r.loop.offs
	inputs := make([]kafka.Input, len(parts))
	for i, p := range parts {
		inputs[i] = kafka.Input{Partition: p, Offset: offs[i]}
	}
	var sub *kafka.Subscription
	err = c.retry(ctx, "start reading inputs", func() (err error) {
		sub, err = c.input.Subscribe(inputs, r.queue, r.log)
		return err
	})
	if err != nil {
		return errors.Join(fmt.Errorf("task %s: %w", TaskName(l.id), err), r.loop.Close(c.hardCtx))
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

// newRunner loads task l.id's checkpoint, resolves where each of its
// partitions starts, and opens and restores its stores.
func (c *Container) newRunner(ctx context.Context, l *lease) (*runner, error) {
	cfg := &c.cfg
	name := TaskName(l.id)
	parts, err := c.partitions(ctx, l.id)
	if err != nil {
		return nil, err
	}
	var cp checkpoint.Checkpoint
	var ok bool
	err = c.retry(ctx, "load checkpoint", func() (err error) {
		cp, ok, err = c.cps.Load(ctx, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("task: job %q: load checkpoint of %s: %w", cfg.Name, name, err)
	}
	r := &runner{c: c, partition: l.id, lease: l, log: c.log.With("task", name), queue: make(chan stream.Message, cfg.QueueSize)}
	if ok {
		r.log.Info("resuming from checkpoint", "id", cp.ID, "written_at", cp.WrittenAt)
	}
	offs := make([]int64, len(parts))
	dirty := false
	for i, p := range parts {
		if off, ok := cp.Inputs[p]; ok {
			offs[i] = off
			continue
		}
		// Pin a concrete offset so the first checkpoint records it: a
		// restart must not move "newest" forward past unread messages.
		err := c.retry(ctx, "find start of "+p.String(), func() (err error) {
			if cfg.StartNewest {
				offs[i], err = c.conn.HighWatermark(ctx, p)
			} else {
				offs[i], err = c.conn.OldestOffset(ctx, p)
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("task: job %q: find start of %s: %w", cfg.Name, p, err)
		}
		dirty = true // checkpoint the pinned position even if nothing comes
	}
	t, err := cfg.NewTask()
	if err != nil {
		return nil, fmt.Errorf("task: job %q: %w", cfg.Name, err)
	}
	// The checkpoint is where the task resumes: mirror it to the group at
	// once, since the process that wrote it may have died before its own
	// mirror reached the group.
	pos := make(map[stream.Partition]int64, len(parts))
	for i, p := range parts {
		pos[p] = offs[i]
	}
	c.grp.mark(pos)
	stores, err := c.openStores(l.id, true)
	if err != nil {
		return nil, err
	}
	var restoreTime time.Duration
	if len(stores) > 0 {
		select {
		case c.restoreSem <- struct{}{}:
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), CloseStores(name, stores))
		}
		start := time.Now()
		trimmed, err := c.restore(ctx, l.id, stores, cp, false, r.log)
		<-c.restoreSem
		restoreTime = time.Since(start)
		if err != nil {
			return nil, errors.Join(err, CloseStores(name, stores))
		}
		dirty = dirty || trimmed
	}
	r.loop = NewLoop(LoopConfig{
		Job: cfg.Name, Name: name, Partition: l.id,
		Inputs: parts, Offsets: offs, Last: cp, Dirty: dirty,
		Policy: cfg.OnError, DeadLetterTopic: cfg.DeadLetterTopic,
		Window: cfg.Window, CommitInterval: cfg.CommitInterval,
		Log: r.log, Stores: stores,
		Out:         newSender(c),
		Checkpoints: leaseWriter{c: c, lease: l},
		Fenced:      l.fenced,
		Committed:   func(cp checkpoint.Checkpoint) { c.grp.mark(cp.Inputs) },
	}, t)
	r.loop.AddRestoreTime(restoreTime)
	return r, nil
}

// partitions lists the partitions task i reads: partition i of every
// input, and every partition of every broadcast input.
func (c *Container) partitions(ctx context.Context, i int32) ([]stream.Partition, error) {
	var parts []stream.Partition
	for _, t := range c.cfg.Inputs {
		parts = append(parts, stream.Partition{Topic: t, Partition: i})
	}
	for _, t := range c.cfg.Broadcast {
		var n int32
		err := c.retry(ctx, "read metadata of "+t, func() (err error) {
			n, err = c.conn.Partitions(ctx, t)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("task: job %q: broadcast input %w", c.cfg.Name, err)
		}
		for p := range n {
			parts = append(parts, stream.Partition{Topic: t, Partition: p})
		}
	}
	return parts, nil
}

// openStores opens task i's stores under <DataDir>/<job>/task-i/<store>,
// with a sink for the changelog records of each that has a changelog
// (when sinks is set).
func (c *Container) openStores(i int32, sinks bool) ([]*Store, error) {
	var stores []*Store
	for _, spec := range c.cfg.Stores {
		l, err := state.Open(StoreDir(c.cfg.DataDir, c.cfg.Name, i, spec.Name), spec, nil)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("task %s: %w", TaskName(i), err), CloseStores(TaskName(i), stores))
		}
		s := &Store{Local: l, Offset: -1}
		if t := ChangelogTopic(c.cfg.Name, spec); t != "" && sinks {
			s.Sink = &changelogSink{c: c, p: stream.Partition{Topic: t, Partition: i}, tracker: kafka.NewTracker()}
		}
		stores = append(stores, s)
	}
	return stores, nil
}

// restore brings task i's stores to checkpoint cp (see state.Restore) and
// reports whether a trim wrote changelog records that the task's next
// checkpoint must cover. A standby trims nothing.
func (c *Container) restore(ctx context.Context, i int32, stores []*Store, cp checkpoint.Checkpoint, standby bool, log *slog.Logger) (trimmed bool, err error) {
	for k, s := range stores {
		target := int64(-1)
		if off, ok := cp.Changelogs[s.Local.Name()]; ok {
			target = off
		}
		s.Offset = target
		topic := ChangelogTopic(c.cfg.Name, c.cfg.Stores[k])
		if topic == "" {
			continue
		}
		var sink state.Sink
		if s.Sink != nil {
			sink = s.Sink
		}
		cl := changelogReader{c: c, p: stream.Partition{Topic: topic, Partition: i}}
		off, err := state.Restore(ctx, s.Local, cl, sink, state.Meta{CheckpointID: cp.ID, Offset: target},
			state.RestoreOptions{Standby: standby, Log: log})
		if err != nil {
			return false, fmt.Errorf("task %s: restore store %q: %w", TaskName(i), s.Local.Name(), err)
		}
		if off > target {
			s.Offset, trimmed = off, true
		}
	}
	return trimmed, nil
}

// leaseContext returns a context that ends when lease l is revoked or the
// job stops.
func (c *Container) leaseContext(l *lease) (context.Context, context.CancelFunc) {
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

func (r *runner) run() error {
	l := r.loop
	l.StartClock()
	deadline := l.NextDue()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	ctx := r.c.hardCtx
	for {
		select {
		case <-r.c.stop:
			return r.finish(nil)
		case <-r.lease.revoke:
			r.log.Info("handing the task over")
			return r.finish(nil)
		case err := <-r.inputDown:
			// Restarting resumes from the checkpoint, and a position no
			// longer in the log restarts at the oldest retained message.
			return r.finish(fmt.Errorf("task %s: input: %w", l.cfg.Name, err))
		case m := <-r.queue:
			// Take what is already queued, up to a bound, before looking
			// at timers again: one select and one clock read per batch.
			start := time.Now()
			err := l.Process(ctx, m)
			for n := 1; err == nil && n < maxBatch && !l.Pending() && r.lease.fence.Load() == 0; n++ {
				select {
				case m = <-r.queue:
					err = l.Process(ctx, m)
					continue
				default:
				}
				break
			}
			l.AddProcessTime(time.Since(start))
			if err != nil {
				return r.finish(err)
			}
		case <-timer.C:
		}
		if err := l.Tick(ctx, r.commit); err != nil {
			return r.finish(err)
		}
		if l.TakeShutdown() {
			r.c.requestShutdown()
		}
		if d := l.NextDue(); d != deadline {
			deadline = d
			timer.Reset(time.Until(deadline))
		}
	}
}

// commit runs one commit, bounded by CommitTimeout.
func (r *runner) commit() error {
	ctx, cancel := r.commitContext(r.c.cfg.CommitTimeout)
	defer cancel()
	return r.loop.Commit(ctx)
}

// commitContext bounds a commit by timeout, and ends it at once when the
// process loses its membership: the task may be someone else's then, and
// waiting for acknowledgements would only delay its stop.
func (r *runner) commitContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(r.c.hardCtx, timeout)
	go func() {
		select {
		case <-r.lease.revoke:
			if r.lease.fenceNow.Load() {
				cancel()
			}
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// finish ends the task: a final commit of the progress made (also after a
// failure, so that a restart resumes at the failed message), then Close.
// A handover must commit before its fence.
func (r *runner) finish(cause error) error {
	ctx, cancel := r.commitContext(r.c.cfg.ShutdownTimeout)
	defer cancel()
	if f := r.lease.fence.Load(); f != 0 {
		var cancelFence context.CancelFunc
		ctx, cancelFence = context.WithDeadline(ctx, time.Unix(0, f))
		defer cancelFence()
	}
	return errors.Join(cause, r.loop.FinalCommit(ctx, cause), r.loop.Close(ctx))
}
