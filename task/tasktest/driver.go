package tasktest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/runtime"
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

// Driver runs one task in memory on the job's own task loop: it hands the
// task the messages given to Feed, calls Window as its clock advances,
// records what the task sends and asks for, and keeps the checkpoints and
// changelogs the job would write. What happens to a message, a failure or
// a commit is decided by the code a job runs, not by a copy of it; only
// where outputs, changelog records and checkpoints go (memory) and the
// clock (the driver's) differ. Methods may be called from any goroutine;
// calls into the task never overlap.
type Driver struct {
	cfg       *config
	task      task.StreamTask
	name      string
	parts     []stream.Partition
	partition map[string]bool  // partitioned input topics
	bcast     map[string]int32 // broadcast input topics and their partition counts
	setupErr  error            // a configuration error, reported by the first call

	loop       *runtime.Loop // nil when the configuration is wrong
	out        *runtime.MemOutputs
	cps        *checkpoint.Memory
	changelogs map[string]*runtime.MemChangelog
	stores     []*runtime.Store
	windowed   bool // the task has a Window and a period for it

	call sync.Mutex // serialises calls into the task
	mu   sync.Mutex // guards everything below
	now  time.Time

	started, stopped, closed bool
	initErr                  error
	stopReason               string
	nextWindow               time.Time // of a stopped task: the schedule it keeps
	offsets                  map[stream.Partition]int64
	shutdownSeen             bool
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
		out: &runtime.MemOutputs{}, cps: checkpoint.NewMemory(), changelogs: map[string]*runtime.MemChangelog{},
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
	var last checkpoint.Checkpoint
	if cp := cfg.resume; cp != nil {
		last = *cp
		if last.Task == "" {
			last.Task = d.name
		}
	}
	offs := make([]int64, len(d.parts))
	for i, p := range d.parts {
		offs[i] = last.Inputs[p]
		d.offsets[p] = offs[i]
	}
	if cfg.resume != nil {
		_ = d.cps.Write(context.Background(), last)
	}
	_, windowable := t.(task.WindowableTask)
	d.windowed = windowable && cfg.window > 0
	d.nextWindow = d.now.Add(cfg.window)
	for _, spec := range cfg.stores {
		spec.Engine = store.Memory
		l, err := state.Open("", spec, d.Now)
		if err != nil {
			if d.setupErr == nil {
				d.setupErr = fmt.Errorf("tasktest: %w", err)
			}
			continue
		}
		cl := runtime.NewMemChangelog(spec.Name)
		d.changelogs[spec.Name] = cl
		d.stores = append(d.stores, &runtime.Store{Local: l, Sink: cl, Offset: -1})
	}
	var rt runtime.Task
	if d.setupErr == nil && t != nil {
		rt, d.setupErr = runtime.Adapt(t)
	}
	if d.setupErr != nil {
		return d
	}
	log := cfg.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d.loop = runtime.NewLoop(runtime.LoopConfig{
		Job: cfg.job, Name: d.name, Partition: cfg.partition,
		Inputs: d.parts, Offsets: offs, Last: last,
		Policy: runtime.ErrorPolicy(cfg.policy), DeadLetterTopic: cfg.deadLetterTopic(),
		Window: cfg.window, CommitInterval: cfg.commit,
		Log:    log.With("job", cfg.job).With("task", d.name),
		Stores: d.stores, Out: d.out, Checkpoints: d.cps,
		Now: d.Now,
	}, rt)
	d.loop.StartClock()
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
	}
	d.mu.Unlock()
	if err != nil {
		d.stop(ctx, "not started: "+err.Error(), err)
		return err
	}
	if err := d.loop.Init(ctx); err != nil {
		d.mu.Lock()
		d.initErr = err
		d.mu.Unlock()
		d.stop(ctx, "init failed", err)
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
		if d.Stopped() {
			return d.undone(nil, len(ms)-i, "message(s) not delivered")
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("tasktest: %d message(s) not delivered: %w", len(ms)-i, err)
		}
		if err := d.loop.Process(ctx, m); err != nil {
			return d.stop(ctx, "failed: "+err.Error(), err)
		}
		if err := d.afterCall(ctx); err != nil {
			return err
		}
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

// afterCall does what a job's runner does after a call: what is due
// (Tick: a commit the task asked for, or a periodic one; Window when
// Advance moved the clock), then a shutdown the task asked for.
func (d *Driver) afterCall(ctx context.Context) error {
	if err := d.loop.Tick(ctx, func() error { return d.loop.Commit(ctx) }); err != nil {
		return d.stop(ctx, "failed: "+err.Error(), err)
	}
	d.mu.Lock()
	d.offsets = d.loop.Offsets()
	d.mu.Unlock()
	if d.loop.TakeShutdown() {
		d.mu.Lock()
		d.shutdownSeen = true
		d.mu.Unlock()
		d.stop(ctx, "shutdown requested", nil)
	}
	return nil
}

// stop stops the task, once, with the final commit a job's runner makes
// when a task fails or the job stops (unless the task never started), and
// returns cause joined with the commit's error. Callers hold d.call.
func (d *Driver) stop(ctx context.Context, reason string, cause error) error {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return cause
	}
	d.stopped, d.stopReason = true, reason
	initErr := d.initErr
	d.mu.Unlock()
	if d.loop == nil || initErr != nil {
		return cause
	}
	err := d.loop.FinalCommit(ctx, cause)
	d.mu.Lock()
	d.offsets = d.loop.Offsets()
	d.nextWindow = d.loop.NextWindow()
	d.mu.Unlock()
	if err == nil {
		return cause
	}
	return errors.Join(cause, err)
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
	for !d.Stopped() {
		next := d.loop.NextDue()
		if next.After(target) {
			return startErr
		}
		d.mu.Lock()
		d.now = next
		d.mu.Unlock()
		if d.loop.WindowDue(next) {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("tasktest: Window call due at %v not made: %w", next, err)
			}
		}
		if err := d.afterCall(ctx); err != nil {
			return err
		}
	}
	// Count the Window calls that fall due in (now, target]; the schedule
	// keeps its phase, as if the task were still running.
	d.mu.Lock()
	due := 0
	if w := d.cfg.window; d.windowed {
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
	d.mu.Unlock()
	err := d.stop(ctx, "closed", nil)
	if d.loop == nil {
		return errors.Join(err, runtime.CloseStores(d.name, d.stores))
	}
	return errors.Join(err, d.loop.Close(ctx))
}

// Store returns the task's store of that name, for inspection between
// calls; nil when there is none.
func (d *Driver) Store(name string) store.Store {
	for _, s := range d.stores {
		if s.Local.Name() == name {
			return s.Local.View()
		}
	}
	return nil
}

// Changelog returns every record the driver's commits wrote to the
// changelog of the named store, oldest first: one per key written since
// the previous commit, with a nil Value for a delete.
func (d *Driver) Changelog(name string) []store.Record {
	if cl := d.changelogs[name]; cl != nil {
		return cl.Records()
	}
	return nil
}

// Outputs returns every message sent so far, in order: those the task sent
// through its Collector and the dead-letter copies made by the DeadLetter
// policy. Messages are recorded as sent: a zero Timestamp stays zero, and
// no partition is chosen.
func (d *Driver) Outputs() []stream.Outgoing { return d.out.Messages() }

// TakeOutputs returns the messages sent since the last TakeOutputs (or
// since the start) and forgets them, so that a test can check the outputs
// of each step on its own. Stats are not affected.
func (d *Driver) TakeOutputs() []stream.Outgoing { return d.out.Take() }

// OutputsTo returns the messages sent to topic and not yet taken, in order.
func (d *Driver) OutputsTo(topic string) []stream.Outgoing {
	var out []stream.Outgoing
	for _, m := range d.out.Messages() {
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
	if d.loop == nil {
		return 0
	}
	return d.loop.CommitCalls()
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
// task (or the [ResumeFrom] one), and false when there is none yet. Like
// the job's runner, the driver writes a checkpoint after a call in which
// the task asked for a commit, every CommitInterval of its clock, and when
// the task stops; only when there is progress to record.
func (d *Driver) Checkpoint() (checkpoint.Checkpoint, bool) {
	cp, ok, _ := d.cps.Load(context.Background(), d.name)
	return cp.Clone(), ok
}

// Stats returns the task's counters, as [task.Job.Stats] reports them for
// a running job. Sent counts only messages sent through the Collector;
// ProcessTime, WindowTime and CommitTime stay zero, since calls take no
// time on the driver's clock.
func (d *Driver) Stats() task.TaskStats {
	if d.loop == nil {
		return task.TaskStats{Task: d.name}
	}
	return task.TaskStats(d.loop.Stats())
}

// Now returns the driver's clock.
func (d *Driver) Now() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now
}
