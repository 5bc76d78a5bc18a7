package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// runner drives one task on its own goroutine: every call into the task,
// and every commit of it, happens on that goroutine, so they never overlap.
type runner struct {
	c         *container
	name      string
	partition int32
	parts     []stream.Partition
	log       *slog.Logger
	task      StreamTask
	tracker   *kafka.Tracker
	queue     chan stream.Message
	stores    []*taskStore
	inputDown <-chan error // the task's subscription lost a partition
	lease     *lease       // the group's lease of this task
	standby   bool         // keeps a standby copy of the stores; runs no task

	// offs[i] is the next offset to process in parts[i]; only the runner
	// goroutine touches it. A slice scanned from the last hit beats a map
	// keyed by topic name on the per-message path.
	offs      []int64
	lastPart  int
	lastTopic string                // last output topic known to exist (AutoCreateOutputs)
	last      checkpoint.Checkpoint // last checkpoint written or loaded
	dirty     bool                  // progress since the last checkpoint
	commitRq  bool
	shutdown  bool
	sentAtCkp int64

	counters counters
}

type counters struct {
	processed, sent, windows, commits, skipped, dead atomic.Uint64
	processNs, windowNs, commitNs, restoreNs         atomic.Int64
	lastCheckpoint                                   atomic.Pointer[checkpoint.Checkpoint]
}

func (r *runner) stats() TaskStats {
	k := &r.counters
	s := TaskStats{
		Task:         r.name,
		Processed:    k.processed.Load(),
		ProcessTime:  time.Duration(k.processNs.Load()),
		Sent:         k.sent.Load(),
		WindowCalls:  k.windows.Load(),
		WindowTime:   time.Duration(k.windowNs.Load()),
		Commits:      k.commits.Load(),
		CommitTime:   time.Duration(k.commitNs.Load()),
		Skipped:      k.skipped.Load(),
		DeadLettered: k.dead.Load(),
		RestoreTime:  time.Duration(k.restoreNs.Load()),
	}
	if cp := k.lastCheckpoint.Load(); cp != nil {
		s.LastCheckpoint = cp.Clone()
	}
	if len(r.stores) > 0 {
		s.Stores = make(map[string]store.Stats, len(r.stores))
		for _, st := range r.stores {
			s.Stores[st.spec.Name] = st.local.Stats()
		}
	}
	return s
}

// Context implementation, handed to Init.
func (r *runner) JobName() string            { return r.c.job.Name }
func (r *runner) TaskName() string           { return r.name }
func (r *runner) Partition() int32           { return r.partition }
func (r *runner) Inputs() []stream.Partition { return append([]stream.Partition(nil), r.parts...) }
func (r *runner) Logger() *slog.Logger       { return r.log }

// Coordinator implementation.
func (r *runner) Commit()   { r.commitRq = true }
func (r *runner) Shutdown() { r.shutdown = true }

// Collector implementation.
func (r *runner) Send(m stream.Outgoing) error {
	if m.Topic == "" {
		return errors.New("task: Send: message has no topic")
	}
	if r.c.job.AutoCreateOutputs && m.Topic != r.lastTopic {
		if err := r.c.ensureOutput(m.Topic); err != nil {
			return fmt.Errorf("task: Send: %w", err)
		}
		r.lastTopic = m.Topic
	}
	if err := r.c.producer.Send(r.c.hardCtx, r.tracker, &m, 0); err != nil {
		if r.c.hardCtx.Err() != nil {
			return ErrStopping
		}
		return fmt.Errorf("task: Send: %w", err)
	}
	r.counters.sent.Add(1)
	return nil
}

func (r *runner) run() error {
	j := r.c.job
	interval := j.commitInterval()
	now := time.Now()
	nextCommit := now.Add(interval)
	var nextWindow time.Time
	wt, windowable := r.task.(WindowableTask)
	windowable = windowable && j.Window > 0
	deadline := nextCommit
	if windowable {
		nextWindow = now.Add(j.Window)
		deadline = minTime(nextCommit, nextWindow)
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()

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
			return r.finish(fmt.Errorf("task %s: input: %w", r.name, err))
		case m := <-r.queue:
			// Take what is already queued, up to a bound, before looking
			// at timers again: one select and one clock read per batch.
			start := time.Now()
			err := r.process(m)
			for n := 1; err == nil && n < maxBatch && !r.commitRq && !r.shutdown && r.lease.fence.Load() == 0; n++ {
				if len(r.stores) > 0 && r.storesFull() {
					break
				}
				select {
				case m = <-r.queue:
					err = r.process(m)
					continue
				default:
				}
				break
			}
			r.counters.processNs.Add(int64(time.Since(start)))
			if err != nil {
				return r.finish(err)
			}
			if len(r.stores) > 0 && r.storesFull() {
				r.commitRq = true
			}
		case <-timer.C:
		}
		now := time.Now()
		if windowable && !now.Before(nextWindow) {
			start := now
			r.savepoint()
			err := safeCall(func() error { return wt.Window(r.c.hardCtx, r, r) })
			if err != nil {
				r.rollback()
			}
			now = time.Now()
			r.counters.windows.Add(1)
			r.counters.windowNs.Add(int64(now.Sub(start)))
			if err != nil {
				return r.finish(fmt.Errorf("task %s: window: %w", r.name, err))
			}
			// What Window sent or wrote makes the next commit needed;
			// an idle Window alone does not.
			nextWindow = now.Add(j.Window)
		}
		if r.commitRq || !now.Before(nextCommit) {
			ctx, cancel := r.commitContext(r.c.hardCtx, j.commitTimeout())
			err := r.commit(ctx)
			cancel()
			if err != nil {
				return r.finish(err)
			}
			now = time.Now()
			nextCommit = now.Add(interval)
		}
		if r.shutdown {
			r.shutdown = false
			r.c.requestShutdown()
		}
		d := nextCommit
		if windowable {
			d = minTime(d, nextWindow)
		}
		if d != deadline {
			deadline = d
			timer.Reset(time.Until(deadline))
		}
	}
}

// process hands one message to the task and applies the error policy.
func (r *runner) process(m stream.Message) error {
	r.savepoint()
	err := safeCall(func() error { return r.task.Process(r.c.hardCtx, m, r, r) })
	if err != nil {
		// A failed message leaves no writes behind: whatever the policy,
		// its state changes must not be committed with the messages that
		// succeeded (under Fail it is processed again after a restart).
		r.rollback()
		switch r.c.job.OnError {
		case Skip:
			r.log.Warn("skipping message that failed", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
			r.counters.skipped.Add(1)
		case DeadLetter:
			if derr := r.deadLetter(m, err); derr != nil {
				return derr
			}
			r.counters.dead.Add(1)
		default:
			return &ProcessError{Task: r.name, Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Err: err}
		}
	} else {
		r.counters.processed.Add(1)
	}
	r.setOffset(m.Topic, m.Partition, m.Offset+1)
	r.dirty = true
	return nil
}

// savepoint and rollback bracket one call into the task, for every store.
func (r *runner) savepoint() {
	for _, s := range r.stores {
		s.local.Savepoint()
	}
}

func (r *runner) rollback() {
	for _, s := range r.stores {
		s.local.Rollback()
	}
}

// maxBatch bounds the messages processed between two looks at the stop
// signal and the timers.
const maxBatch = 256

// setOffset records the next offset of a partition, starting the search at
// the partition of the previous message.
func (r *runner) setOffset(topic string, partition int32, next int64) {
	n := len(r.parts)
	for k := range n {
		i := (r.lastPart + k) % n
		if p := &r.parts[i]; p.Partition == partition && p.Topic == topic {
			r.offs[i] = next
			r.lastPart = i
			return
		}
	}
	panic(fmt.Sprintf("grete: message of %s/%d, which task %s does not read", topic, partition, r.name))
}

// inputOffsets returns the next offset of every partition, for a checkpoint.
func (r *runner) inputOffsets() map[stream.Partition]int64 {
	m := make(map[stream.Partition]int64, len(r.parts))
	for i, p := range r.parts {
		m[p] = r.offs[i]
	}
	return m
}

func (r *runner) deadLetter(m stream.Message, cause error) error {
	h := make([]stream.Header, 0, len(m.Headers)+5)
	h = append(h, m.Headers...)
	h = append(h,
		stream.Header{Key: HeaderError, Value: []byte(cause.Error())},
		stream.Header{Key: HeaderTopic, Value: []byte(m.Topic)},
		stream.Header{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(m.Partition), 10)},
		stream.Header{Key: HeaderOffset, Value: strconv.AppendInt(nil, m.Offset, 10)},
		stream.Header{Key: HeaderTask, Value: []byte(r.name)},
	)
	out := stream.Outgoing{Topic: r.c.job.deadLetterTopic(), Key: m.Key, Value: m.Value, Headers: h, Timestamp: m.Timestamp}
	if err := r.c.producer.Send(r.c.hardCtx, r.tracker, &out, 0); err != nil {
		return fmt.Errorf("task %s: dead-letter message at %s/%d offset %d: %w", r.name, m.Topic, m.Partition, m.Offset, err)
	}
	r.log.Warn("dead-lettered message that failed", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", cause)
	return nil
}

// commit runs the commit protocol of DESIGN.md: flush every store's
// buffered writes as changelog records, wait until Kafka has acknowledged
// every output and changelog record sent so far, write the checkpoint (next
// input offsets and last changelog offsets), and only then apply the
// buffered writes to the stores together with the checkpoint's identity. A
// failure anywhere stops before the stores change, so they are never ahead
// of the checkpoint; a failed output fails the commit, since its input must
// be processed again.
func (r *runner) commit(ctx context.Context) error {
	r.commitRq = false
	if !r.dirty && r.tracker.Sent() == r.sentAtCkp && !r.storesDirty() {
		return nil
	}
	if r.lease.fenced() {
		return errFenced
	}
	start := time.Now()
	if err := r.flushStores(ctx); err != nil {
		return fmt.Errorf("task %s: commit: %w", r.name, err)
	}
	if err := r.tracker.Wait(ctx); err != nil {
		if kafka.Transient(err) {
			// Lost to a broken connection or a broker that restarted: the
			// task starts again from its checkpoint and sends it again.
			return &rewindError{task: r.name, err: err}
		}
		return fmt.Errorf("task %s: commit: output not acknowledged: %w", r.name, r.c.unreachable(err))
	}
	cp := checkpoint.Checkpoint{
		ID:         r.last.ID + 1,
		Task:       r.name,
		Inputs:     r.inputOffsets(),
		Changelogs: make(map[string]int64, len(r.stores)),
		WrittenAt:  time.Now(),
	}
	for _, s := range r.stores {
		if s.topic == "" {
			continue
		}
		s.offset = max(s.offset, r.tracker.ChangelogOffset(s.idx))
		cp.Changelogs[s.spec.Name] = s.offset
	}
	if err := r.writeCheckpoint(ctx, cp); err != nil {
		if errors.Is(err, errFenced) {
			// Changelog records written above lie past the last
			// checkpoint: the next owner's restore trims them.
			return err
		}
		return fmt.Errorf("task %s: commit: %w", r.name, err)
	}
	r.c.grp.mark(cp.Inputs)
	for _, s := range r.stores {
		if err := s.local.Commit(state.Meta{CheckpointID: cp.ID, Offset: s.offset}); err != nil {
			// The checkpoint is written; the store is behind it and the
			// next start replays the changelog. Stop here.
			return fmt.Errorf("task %s: commit: %w", r.name, err)
		}
	}
	r.last = cp
	r.dirty = false
	r.sentAtCkp = r.tracker.Sent()
	r.counters.lastCheckpoint.Store(&cp)
	r.counters.commits.Add(1)
	r.counters.commitNs.Add(int64(time.Since(start)))
	return nil
}

// commitContext bounds a commit by timeout, and ends it at once when the
// process loses its membership: the task may be someone else's then, and
// waiting for acknowledgements would only delay its stop.
func (r *runner) commitContext(parent context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, timeout)
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

// writeCheckpoint writes cp while the task's lease is valid: the process's
// group membership confirmed recently enough that no other process can
// have been given the task (see group.waitValid). A write that cannot
// finish in that time is tried again once the membership is confirmed
// again, or given up once the task is fenced.
func (r *runner) writeCheckpoint(ctx context.Context, cp checkpoint.Checkpoint) error {
	for {
		until, err := r.c.grp.waitValid(ctx, r.lease)
		if err != nil {
			return r.c.unreachable(err)
		}
		wctx, cancel := context.WithDeadline(ctx, until)
		err = r.c.cps.Write(wctx, cp)
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if ctx.Err() != nil {
			return r.c.unreachable(err)
		}
	}
}

// finish ends the task: a final commit of the progress made (also after a
// failure, so that a restart resumes at the failed message), then Close.
func (r *runner) finish(cause error) error {
	ctx, cancel := r.commitContext(r.c.hardCtx, r.c.job.shutdownTimeout())
	defer cancel()
	if f := r.lease.fence.Load(); f != 0 {
		// Handing over: the commit must be done before the fence.
		var cancelFence context.CancelFunc
		ctx, cancelFence = context.WithDeadline(ctx, time.Unix(0, f))
		defer cancelFence()
	}
	var errs []error
	if cause != nil {
		errs = append(errs, cause)
	}
	if r.tracker.Err() == nil {
		if err := r.commit(ctx); err != nil {
			if r.lease.fenced() {
				err = errFenced
			}
			errs = append(errs, err)
		}
	} else if cause == nil {
		if err := r.tracker.Err(); kafka.Transient(err) {
			errs = append(errs, &rewindError{task: r.name, err: err})
		} else {
			errs = append(errs, fmt.Errorf("task %s: final commit: output not acknowledged: %w", r.name, err))
		}
	}
	if ct, ok := r.task.(ClosableTask); ok {
		if err := safeCall(func() error { return ct.Close(ctx) }); err != nil {
			errs = append(errs, fmt.Errorf("task %s: close: %w", r.name, err))
		}
	}
	if err := r.closeStores(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// rewindError ends a task whose outputs (or changelog records) were lost
// for a reason that may pass: a connection broke and the producer gave
// them up. Nothing past the last checkpoint may be checkpointed now, but
// nothing is lost either: the task starts again from its checkpoint, as
// after a crash, and sends them again.
type rewindError struct {
	task string
	err  error
}

func (e *rewindError) Error() string {
	return fmt.Sprintf("task %s: output not acknowledged (%v); restarting the task from its last checkpoint", e.task, e.err)
}

func (e *rewindError) Unwrap() error { return e.err }

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func stack() []byte { return debug.Stack() }
