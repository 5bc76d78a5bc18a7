package tasktest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
)

// ErrStopped is wrapped by the error of [Driver.Feed] and [Driver.Advance]
// when they leave something undone (a message not delivered, a Window call
// not made) because the task has stopped: it failed, it asked for shutdown,
// or the driver was closed. A stopped task is never called again, except
// for its Close.
var ErrStopped = errors.New("tasktest: task stopped")

// Driver runs one task in memory, the way a job's runner would: it hands
// the task the messages given to Feed, calls Window as its clock advances,
// records what the task sends and asks for, and tracks the checkpoint the
// job would write. Methods may be called from any goroutine; calls into the
// task never overlap.
type Driver struct {
	cfg        *config
	task       task.StreamTask
	wt         task.WindowableTask // nil unless the task is windowable and a Window period is set
	name       string
	parts      []stream.Partition
	partition  map[string]bool  // partitioned input topics
	bcast      map[string]int32 // broadcast input topics and their partition counts
	log        *slog.Logger
	setupErr   error // a configuration error, reported by the first call
	call       sync.Mutex
	mu         sync.Mutex // guards everything below
	started    bool
	initErr    error
	stopped    bool
	stopReason string
	closed     bool

	now        time.Time
	nextWindow time.Time
	nextCommit time.Time

	offsets   map[stream.Partition]int64
	outputs   []stream.Outgoing
	stats     task.TaskStats
	last      checkpoint.Checkpoint
	hasLast   bool
	dirty     bool
	sentAll   uint64 // Collector sends and dead letters
	sentAtCkp uint64

	commitRq     bool
	commitCalls  int
	shutdownRq   bool
	shutdownSeen bool

	stores    []*state.Local
	changelog map[string][]store.Record
}

// New returns a driver for t, configured by opts. The driver's clock stands
// at the start time; nothing is called on t until the first call of Init,
// Feed or Advance.
func New(t task.StreamTask, opts ...Option) *Driver {
	cfg := newConfig()
	for _, o := range opts {
		o.apply(cfg)
	}
	d := newDriver(cfg, t)
	if t == nil && d.setupErr == nil {
		d.setupErr = errors.New("tasktest: task is nil")
	}
	return d
}

// FromJob returns a driver for a task made by j.NewTask, configured like j:
// its name, inputs, Window, CommitInterval, OnError, DeadLetterTopic and
// Logger. Broadcast inputs get one partition each unless opts declare
// their count with [Broadcast]. opts are applied after j's settings, so
// they override them. Fields that concern Kafka (brokers, checkpoints,
// outputs, queue sizes) are ignored.
func FromJob(j *task.Job, opts ...Option) *Driver {
	cfg := newConfig()
	var t task.StreamTask
	var err error
	switch {
	case j == nil:
		err = errors.New("tasktest: FromJob: job is nil")
	case j.NewTask == nil:
		err = fmt.Errorf("tasktest: FromJob: job %q has no NewTask", j.Name)
	default:
		cfg.job = j.Name
		cfg.inputs, cfg.inputsSet = slices.Clone(j.Inputs), true
		for _, b := range j.Broadcast {
			Broadcast(b, 1).apply(cfg)
		}
		cfg.window, cfg.policy, cfg.dlq, cfg.log = j.Window, j.OnError, j.DeadLetterTopic, j.Logger
		cfg.stores = slices.Clone(j.Stores)
		CommitInterval(j.CommitInterval).apply(cfg)
		if t = j.NewTask(); t == nil {
			err = fmt.Errorf("tasktest: FromJob: NewTask of job %q returned nil", j.Name)
		}
	}
	for _, o := range opts {
		o.apply(cfg)
	}
	d := newDriver(cfg, t)
	if err != nil {
		d.setupErr = err
	}
	return d
}

func newDriver(cfg *config, t task.StreamTask) *Driver {
	if !cfg.inputsSet && len(cfg.broadcast) == 0 {
		cfg.inputs = []string{DefaultInput}
	}
	d := &Driver{
		cfg: cfg, task: t, name: cfg.taskName(),
		partition: map[string]bool{}, bcast: map[string]int32{},
		now: cfg.start, offsets: map[stream.Partition]int64{},
		setupErr: cfg.validate(),
	}
	if d.setupErr == nil && len(cfg.inputs)+len(cfg.broadcast) == 0 {
		d.setupErr = errors.New("tasktest: no inputs: set Inputs or Broadcast")
	}
	for _, topic := range cfg.inputs {
		d.partition[topic] = true
		d.parts = append(d.parts, stream.Partition{Topic: topic, Partition: cfg.partition})
	}
	for _, topic := range cfg.broadcast {
		n := cfg.bcastParts[topic]
		d.bcast[topic] = n
		for p := range max(n, 0) {
			d.parts = append(d.parts, stream.Partition{Topic: topic, Partition: p})
		}
	}
	for _, p := range d.parts {
		d.offsets[p] = 0
	}
	if cp := cfg.resume; cp != nil {
		for _, p := range d.parts {
			if off, ok := cp.Inputs[p]; ok {
				d.offsets[p] = off
			}
		}
		d.last, d.hasLast = *cp, true
		d.stats.LastCheckpoint = cp.Clone()
	}
	d.stats.Task = d.name
	log := cfg.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d.log = log.With("job", cfg.job).With("task", d.name)
	if wt, ok := t.(task.WindowableTask); ok && cfg.window > 0 {
		d.wt = wt
		d.nextWindow = d.now.Add(cfg.window)
	}
	d.nextCommit = d.now.Add(cfg.commit)
	d.changelog = map[string][]store.Record{}
	for _, spec := range cfg.stores {
		spec.Engine = store.Memory
		l, err := state.Open("", spec, func() time.Time { return d.now })
		if err != nil {
			if d.setupErr == nil {
				d.setupErr = fmt.Errorf("tasktest: %w", err)
			}
			continue
		}
		d.stores = append(d.stores, l)
	}
	return d
}

// Task returns the task the driver runs, e.g. to inspect its state in a
// test of a driver made by [FromJob].
func (d *Driver) Task() task.StreamTask { return d.task }

// Init calls the task's Init, if it implements [task.InitableTask], with a
// [task.Context] describing the task. Feed and Advance call Init
// themselves when it has not been called, so calling it is needed only to
// test Init on its own. A failed Init (error or panic, which is returned
// as a *task.PanicError) stops the task, like it stops a job; Close then
// does not call the task's Close. Init fails when called a second time.
func (d *Driver) Init(ctx context.Context) error {
	d.call.Lock()
	defer d.call.Unlock()
	d.mu.Lock()
	started := d.started
	d.mu.Unlock()
	if started {
		return errors.New("tasktest: Init called twice")
	}
	return d.start(ctx)
}

// start initialises the task once; callers hold d.call.
func (d *Driver) start(ctx context.Context) error {
	d.mu.Lock()
	if d.started {
		err := d.initErr
		d.mu.Unlock()
		return err
	}
	d.started = true
	err := d.setupErr
	if err == nil && d.closed {
		err = errors.New("tasktest: driver is closed")
	}
	if err != nil {
		d.initErr = err
		d.stopLocked("not started: " + err.Error())
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	it, ok := d.task.(task.InitableTask)
	if !ok {
		return nil
	}
	if err := safeCall(func() error { return it.Init(ctx, &taskContext{d}) }); err != nil {
		err = fmt.Errorf("task %s: init: %w", d.name, err)
		d.mu.Lock()
		d.initErr = err
		d.stopLocked("init failed")
		d.mu.Unlock()
		return err
	}
	return nil
}

// Feed hands msgs to the task's Process, one at a time and in order, and
// applies the error policy to each failure, like a job's runner:
//
//   - Fail: Feed returns a *task.ProcessError naming the message's topic,
//     partition and offset; the task stops.
//   - Skip: the message is counted in Stats().Skipped.
//   - DeadLetter: a copy of the message goes to the dead-letter topic with
//     the error and its origin in headers ([task.HeaderError] etc.), and is
//     counted in Stats().DeadLettered.
//
// A panic in Process is a failure like an error; its value and stack are
// in a *task.PanicError (the Err of the ProcessError under Fail).
//
// Messages are completed before any is delivered: an empty Topic means
// the first input (and its partition); for a partitioned input, a zero
// Partition means the task's partition; a zero Offset means the next
// offset of the partition; a zero Timestamp means the driver's clock. A
// message of a partition the task does not read, or with an offset behind
// the partition's next offset, is refused, and then no message is
// delivered. Offsets may leave gaps, as in a compacted topic.
//
// Feed returns an error wrapping ErrStopped when the task stopped before
// every message was delivered (it failed, or a message asked for shutdown),
// and ctx's error when ctx ended before; undelivered messages are not
// processed and their offsets stay unconsumed.
func (d *Driver) Feed(ctx context.Context, msgs ...stream.Message) error {
	d.call.Lock()
	defer d.call.Unlock()
	if err := d.start(ctx); err != nil {
		if len(msgs) == 0 {
			return err
		}
		return d.undone(err, len(msgs), "message(s) not delivered")
	}
	ms, err := d.complete(msgs)
	if err != nil {
		return err
	}
	for i, m := range ms {
		d.mu.Lock()
		stopped := d.stopped
		d.mu.Unlock()
		if stopped {
			return d.undone(nil, len(ms)-i, "message(s) not delivered")
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("tasktest: %d message(s) not delivered: %w", len(ms)-i, err)
		}
		if err := d.process(ctx, m); err != nil {
			return err
		}
		d.afterCall()
	}
	return nil
}

// undone reports work not done because the task stopped.
func (d *Driver) undone(cause error, n int, what string) error {
	d.mu.Lock()
	reason := d.stopReason
	d.mu.Unlock()
	if cause != nil {
		return fmt.Errorf("%w (%s): %d %s: %w", ErrStopped, reason, n, what, cause)
	}
	return fmt.Errorf("%w (%s): %d %s", ErrStopped, reason, n, what)
}

// complete fills in the defaults of msgs and checks them against the
// task's inputs and the offsets consumed so far.
func (d *Driver) complete(msgs []stream.Message) ([]stream.Message, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := maps.Clone(d.offsets)
	out := make([]stream.Message, len(msgs))
	for i, m := range msgs {
		switch n, bcast := d.bcast[m.Topic]; {
		case m.Topic == "":
			m.Topic, m.Partition = d.parts[0].Topic, d.parts[0].Partition
		case d.partition[m.Topic]:
			if m.Partition == 0 {
				m.Partition = d.cfg.partition
			} else if m.Partition != d.cfg.partition {
				return nil, fmt.Errorf("tasktest: message %d: %s reads partition %d of %q, not partition %d", i, d.name, d.cfg.partition, m.Topic, m.Partition)
			}
		case bcast:
			if m.Partition < 0 || m.Partition >= n {
				return nil, fmt.Errorf("tasktest: message %d: broadcast input %q has partitions 0 to %d, not %d", i, m.Topic, n-1, m.Partition)
			}
		default:
			return nil, fmt.Errorf("tasktest: message %d: %q is not an input of %s (inputs: %s)", i, m.Topic, d.name, d.inputList())
		}
		p := m.Position()
		switch {
		case m.Offset < 0:
			return nil, fmt.Errorf("tasktest: message %d: negative offset %d", i, m.Offset)
		case m.Offset == 0:
			m.Offset = next[p]
		case m.Offset < next[p]:
			return nil, fmt.Errorf("tasktest: message %d: offset %d of %s is behind the next offset %d (offsets increase in a partition)", i, m.Offset, p, next[p])
		}
		next[p] = m.Offset + 1
		if m.Timestamp.IsZero() {
			m.Timestamp = d.now
		}
		out[i] = m
	}
	return out, nil
}

func (d *Driver) inputList() string {
	names := make([]string, 0, len(d.cfg.inputs)+len(d.cfg.broadcast))
	names = append(names, d.cfg.inputs...)
	for _, b := range d.cfg.broadcast {
		names = append(names, b+" (broadcast)")
	}
	return strings.Join(names, ", ")
}

// process hands m to the task and applies the error policy.
func (d *Driver) process(ctx context.Context, m stream.Message) error {
	p := &port{d: d, ctx: ctx}
	d.savepoint()
	err := safeCall(func() error { return d.task.Process(ctx, m, p, p) })
	p.done.Store(true)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		// As in a job: a failed message leaves no writes behind, whatever
		// the policy.
		d.rollback()
		switch d.cfg.policy {
		case task.Skip:
			d.log.Warn("skipping message that failed", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
			d.stats.Skipped++
		case task.DeadLetter:
			d.outputs = append(d.outputs, d.deadLetter(m, err))
			d.sentAll++
			d.stats.DeadLettered++
			d.log.Warn("dead-lettered message that failed", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
		default:
			perr := &task.ProcessError{Task: d.name, Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Err: err}
			d.stopLocked("failed: " + perr.Error())
			return perr
		}
	} else {
		d.stats.Processed++
	}
	d.offsets[m.Position()] = m.Offset + 1
	d.dirty = true
	return nil
}

// savepoint and rollback bracket one call into the task, for every store,
// as the job's runner does.
func (d *Driver) savepoint() {
	for _, s := range d.stores {
		s.Savepoint()
	}
}

func (d *Driver) rollback() {
	for _, s := range d.stores {
		s.Rollback()
	}
}

// deadLetter builds the dead-letter copy of m, with the same headers the
// job's runner adds.
func (d *Driver) deadLetter(m stream.Message, cause error) stream.Outgoing {
	h := make([]stream.Header, 0, len(m.Headers)+5)
	h = append(h, m.Headers...)
	h = append(h,
		stream.Header{Key: task.HeaderError, Value: []byte(cause.Error())},
		stream.Header{Key: task.HeaderTopic, Value: []byte(m.Topic)},
		stream.Header{Key: task.HeaderPartition, Value: strconv.AppendInt(nil, int64(m.Partition), 10)},
		stream.Header{Key: task.HeaderOffset, Value: strconv.AppendInt(nil, m.Offset, 10)},
		stream.Header{Key: task.HeaderTask, Value: []byte(d.name)},
	)
	return stream.Outgoing{Topic: d.cfg.deadLetterTopic(), Key: m.Key, Value: m.Value, Headers: h, Timestamp: m.Timestamp}
}

// afterCall applies what the task asked for during a Process or Window
// call that succeeded: a commit, then a shutdown.
func (d *Driver) afterCall() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.commitRq || !d.now.Before(d.nextCommit) {
		d.commitLocked()
		d.nextCommit = d.now.Add(d.cfg.commit)
	}
	if d.shutdownRq {
		d.shutdownRq = false
		d.stopLocked("shutdown requested")
	}
}

// commitLocked writes a checkpoint when there is progress to record, like
// the runner's commit. Callers hold d.mu.
func (d *Driver) commitLocked() {
	d.commitRq = false
	buffered := false
	for _, s := range d.stores {
		buffered = buffered || s.Buffered() > 0
	}
	if !d.dirty && d.sentAll == d.sentAtCkp && !buffered {
		return
	}
	cp := checkpoint.Checkpoint{
		ID:         d.last.ID + 1,
		Task:       d.name,
		Inputs:     maps.Clone(d.offsets),
		Changelogs: map[string]int64{},
		WrittenAt:  d.now,
	}
	for _, s := range d.stores {
		name := s.Name()
		err := s.Flush(func(key, value []byte) error {
			d.changelog[name] = append(d.changelog[name], store.Record{Key: slices.Clone(key), Value: slices.Clone(value)})
			return nil
		})
		off := int64(len(d.changelog[name])) - 1
		if err == nil {
			err = s.Commit(state.Meta{CheckpointID: cp.ID, Offset: off})
		}
		if err != nil {
			d.log.Error("store commit failed", "store", name, "err", err)
			return
		}
		cp.Changelogs[name] = off
	}
	d.last, d.hasLast = cp, true
	d.dirty = false
	d.sentAtCkp = d.sentAll
	d.stats.Commits++
	d.stats.LastCheckpoint = cp.Clone()
}

// stopLocked stops the task with a final commit, as the runner does when a
// task fails or the job stops. Callers hold d.mu.
func (d *Driver) stopLocked(reason string) {
	if d.stopped {
		return
	}
	d.stopped, d.stopReason = true, reason
	if d.initErr == nil {
		d.commitLocked()
	}
}

// Advance moves the driver's clock forward by dt and makes the calls that
// fall due on the way, in time order: Window every Window period (at
// start+period, start+2·period, ...), when the task implements
// [task.WindowableTask] and a [Window] period is set; and the periodic
// commit every [CommitInterval]. So Advance(2.5·period) calls Window twice,
// and a following Advance(0.5·period) once more.
//
// An error or panic in Window stops the task and is returned (there is no
// message to skip or dead-letter). Advance returns an error wrapping
// ErrStopped when a Window call fell due after the task stopped, and
// ctx's error when ctx ended before a due call. The clock moves by dt in
// every case.
func (d *Driver) Advance(ctx context.Context, dt time.Duration) error {
	if dt < 0 {
		return fmt.Errorf("tasktest: Advance(%v): the clock does not go back", dt)
	}
	d.call.Lock()
	defer d.call.Unlock()
	startErr := d.start(ctx)
	d.mu.Lock()
	target := d.now.Add(dt)
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.now = target
		d.mu.Unlock()
	}()
	for {
		d.mu.Lock()
		next := d.nextCommit
		windowDue := d.wt != nil && !d.nextWindow.After(next)
		if windowDue {
			next = d.nextWindow
		}
		if next.After(target) {
			d.mu.Unlock()
			return startErr
		}
		if d.stopped {
			// Count the Window calls that fall due in (now, target]; the
			// schedule keeps its phase, as if the task were still running.
			due := 0
			if w := d.cfg.window; d.wt != nil {
				nw := d.nextWindow
				if !nw.After(d.now) {
					nw = nw.Add((d.now.Sub(nw)/w + 1) * w)
				}
				if !nw.After(target) {
					due = int(target.Sub(nw)/w) + 1
					nw = nw.Add(time.Duration(due) * w)
				}
				d.nextWindow = nw
			}
			d.mu.Unlock()
			if due > 0 {
				return d.undone(startErr, due, "Window call(s) not made")
			}
			return startErr
		}
		d.now = next
		d.mu.Unlock()
		if windowDue {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("tasktest: Window call due at %v not made: %w", next, err)
			}
			if err := d.window(ctx); err != nil {
				return err
			}
		}
		d.afterCall()
	}
}

// window calls the task's Window once.
func (d *Driver) window(ctx context.Context) error {
	p := &port{d: d, ctx: ctx}
	d.savepoint()
	err := safeCall(func() error { return d.wt.Window(ctx, p, p) })
	p.done.Store(true)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats.WindowCalls++
	d.nextWindow = d.now.Add(d.cfg.window)
	if err != nil {
		d.rollback()
		err = fmt.Errorf("task %s: window: %w", d.name, err)
		d.stopLocked("window failed")
		return err
	}
	// Like the runner: what Window sent or wrote makes a commit needed,
	// an idle Window alone does not.
	return nil
}

// Close stops the task the way a job stops it: a final commit of the
// progress made (see [Driver.Checkpoint]), then the task's Close, if it
// implements [task.ClosableTask], whose error or panic (a
// *task.PanicError) is returned. The task's Close is not called when the
// task never started (no Init, Feed or Advance) or its Init failed.
// Closing again does nothing and returns nil.
func (d *Driver) Close(ctx context.Context) error {
	d.call.Lock()
	defer d.call.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	started, initOK := d.started, d.initErr == nil
	d.stopLocked("closed")
	d.mu.Unlock()
	var errs []error
	if ct, ok := d.task.(task.ClosableTask); ok && started && initOK {
		if err := safeCall(func() error { return ct.Close(ctx) }); err != nil {
			errs = append(errs, fmt.Errorf("task %s: close: %w", d.name, err))
		}
	}
	for _, s := range d.stores {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// Store returns the task's store of that name, for inspection between
// calls; nil when there is none.
func (d *Driver) Store(name string) store.Store {
	for _, s := range d.stores {
		if s.Name() == name {
			return s.View()
		}
	}
	return nil
}

// Changelog returns every record the driver's commits wrote to the
// changelog of the named store, oldest first: one per key written since
// the previous commit, with a nil Value for a delete.
func (d *Driver) Changelog(name string) []store.Record {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.changelog[name])
}

// Outputs returns every message sent so far, in order: those the task sent
// through its Collector and the dead-letter copies made by the DeadLetter
// policy. Messages are recorded as sent: a zero Timestamp stays zero, and
// no partition is chosen.
func (d *Driver) Outputs() []stream.Outgoing {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.outputs)
}

// TakeOutputs returns the messages sent since the last TakeOutputs (or
// since the start) and forgets them, so that a test can check the outputs
// of each step on its own. Stats are not affected.
func (d *Driver) TakeOutputs() []stream.Outgoing {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.outputs
	d.outputs = nil
	return out
}

// OutputsTo returns the messages sent to topic and not yet taken, in order.
func (d *Driver) OutputsTo(topic string) []stream.Outgoing {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []stream.Outgoing
	for _, m := range d.outputs {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// DeadLetterTopic is the topic the DeadLetter policy copies failed
// messages to.
func (d *Driver) DeadLetterTopic() string { return d.cfg.deadLetterTopic() }

// CommitRequests is how many times the task called Coordinator.Commit.
func (d *Driver) CommitRequests() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.commitCalls
}

// ShutdownRequested reports whether the task called Coordinator.Shutdown.
func (d *Driver) ShutdownRequested() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.shutdownSeen
}

// Stopped reports whether the task has stopped: it failed (in Init,
// Process under the Fail policy, or Window), asked for shutdown, or the
// driver was closed.
func (d *Driver) Stopped() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stopped
}

// Offsets returns the next offset to process in every input partition of
// the task: what a checkpoint written now would record. A partition starts
// at 0, or at its offset in the [ResumeFrom] checkpoint. A message counts
// as consumed once it is processed, skipped or dead-lettered; a message
// that failed under Fail is not consumed.
func (d *Driver) Offsets() map[stream.Partition]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.offsets)
}

// Checkpoint returns the last checkpoint the job would have written for the
// task, and false when there is none yet. Like the job's runner, the driver
// writes a checkpoint after a call in which the task asked for a commit,
// every CommitInterval of its clock, and when the task stops; only when
// there is progress to record.
func (d *Driver) Checkpoint() (checkpoint.Checkpoint, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last.Clone(), d.hasLast
}

// Stats returns the task's counters, as [task.Job.Stats] reports them for
// a running job. Sent counts only messages sent through the Collector;
// ProcessTime, WindowTime and CommitTime stay zero, since calls take no
// time on the driver's clock.
func (d *Driver) Stats() task.TaskStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stats
	s.LastCheckpoint = s.LastCheckpoint.Clone()
	return s
}

// Now returns the driver's clock.
func (d *Driver) Now() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now
}

// port is the Collector and Coordinator of one Process or Window call.
type port struct {
	d    *Driver
	ctx  context.Context
	done atomic.Bool
}

// errSendOutsideCall reports a Collector used after its call returned,
// which a job's runner could not deliver safely.
var errSendOutsideCall = errors.New("tasktest: Send called after the Process or Window call that received the Collector returned")

func (p *port) Send(m stream.Outgoing) error {
	if p.done.Load() {
		return errSendOutsideCall
	}
	if m.Topic == "" {
		return errors.New("task: Send: message has no topic")
	}
	if p.ctx.Err() != nil {
		return task.ErrStopping
	}
	d := p.d
	d.mu.Lock()
	defer d.mu.Unlock()
	d.outputs = append(d.outputs, m)
	d.sentAll++
	d.stats.Sent++
	return nil
}

func (p *port) Commit() {
	p.d.mu.Lock()
	defer p.d.mu.Unlock()
	p.d.commitCalls++
	p.d.commitRq = true
}

func (p *port) Shutdown() {
	p.d.mu.Lock()
	defer p.d.mu.Unlock()
	p.d.shutdownSeen = true
	p.d.shutdownRq = true
}

// taskContext is the task.Context handed to Init.
type taskContext struct{ d *Driver }

func (c *taskContext) JobName() string            { return c.d.cfg.job }
func (c *taskContext) TaskName() string           { return c.d.name }
func (c *taskContext) Partition() int32           { return c.d.cfg.partition }
func (c *taskContext) Inputs() []stream.Partition { return slices.Clone(c.d.parts) }
func (c *taskContext) Logger() *slog.Logger       { return c.d.log }
func (c *taskContext) Store(name string) (store.Store, error) {
	if s := c.d.Store(name); s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("task %s: no store %q (declare it with tasktest.Stores)", c.d.name, name)
}

// safeCall runs f and turns a panic into a *task.PanicError, as the job's
// runner does.
func safeCall(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &task.PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return f()
}
