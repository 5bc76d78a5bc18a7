package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// The task loop: what happens to one task's messages, windows and commits,
// whoever drives it. A job's runner feeds it from Kafka on the task's
// goroutine, with timers; tasktest's Driver feeds it what a test gives,
// with a fake clock. Both plug in where outputs, changelog records and
// checkpoints go.

// Sender sends a task's outputs and dead-letter copies.
type Sender interface {
	// Send hands m on; it may return before m is acknowledged. (By
	// value: a pointer through the interface would move every message to
	// the heap.)
	Send(ctx context.Context, m stream.Outgoing) error
	// Wait waits until everything sent so far is acknowledged or failed,
	// and returns the first failure.
	Wait(ctx context.Context) error
	// Sent is the number of messages sent so far.
	Sent() int64
	// Err is the first failure so far: the outputs it stands for are
	// lost, so nothing past them may be checkpointed.
	Err() error
}

// CheckpointWriter writes a task's checkpoints.
type CheckpointWriter interface {
	Write(ctx context.Context, cp checkpoint.Checkpoint) error
}

// ChangelogSink is where one store's changelog records go.
type ChangelogSink interface {
	state.Sink
	// Err is the first failure so far (see Sender.Err).
	Err() error
}

// Store is one store of a task, restored: its Local, the sink of its
// changelog records (nil without a changelog) and the last changelog
// offset its committed state covers (-1: none).
type Store struct {
	Local  *state.Local
	Sink   ChangelogSink
	Offset int64
	view   store.Store
}

// LoopConfig is what a Loop needs from its driver.
type LoopConfig struct {
	Job       string
	Name      string // "task-N"
	Partition int32
	// Inputs are the partitions the task reads, and Offsets the next
	// offset of each: where the task resumes.
	Inputs  []stream.Partition
	Offsets []int64
	// Last is the checkpoint the task resumes from (ID 0: none).
	Last checkpoint.Checkpoint
	// Dirty makes the first commit write a checkpoint even with no
	// progress (start positions pinned, a trim to cover).
	Dirty           bool
	Policy          ErrorPolicy
	DeadLetterTopic string
	// Window is the period of Window calls (zero: none), CommitInterval
	// that of commits; both run on the loop's clock (see Tick).
	Window         time.Duration
	CommitInterval time.Duration
	Log            *slog.Logger
	Stores         []*Store
	Out            Sender
	Checkpoints    CheckpointWriter
	// Fenced, when set, says that the task may no longer commit.
	Fenced func() bool
	// Committed, when set, learns of every checkpoint written.
	Committed func(cp checkpoint.Checkpoint)
	// Now is the clock of checkpoints; nil means time.Now.
	Now func() time.Time
}

// Loop runs one task. Its methods must be called from one goroutine, or
// never at once; Stats is safe from any goroutine.
type Loop struct {
	cfg  LoopConfig
	task Task
	api  *API

	offs      []int64
	lastPart  int
	last      checkpoint.Checkpoint
	dirty     bool
	sentAtCkp int64
	inited    bool // Init succeeded (or there was none to call)

	nextWindow, nextCommit time.Time

	inCall     atomic.Bool     // a Process or Window call is under way
	callCtx    context.Context // the context of that call
	commitRq   atomic.Bool
	shutdownRq atomic.Bool

	counters counters
}

type counters struct {
	processed, sent, windows, commits, skipped, dead, commitCalls atomic.Uint64
	processNs, windowNs, commitNs, restoreNs                      atomic.Int64
	lastCheckpoint                                                atomic.Pointer[checkpoint.Checkpoint]
}

// NewLoop returns the loop of a task.
func NewLoop(cfg LoopConfig, t Task) *Loop {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	l := &Loop{cfg: cfg, task: t, api: theAPI(), offs: slices.Clone(cfg.Offsets), last: cfg.Last, dirty: cfg.Dirty}
	for _, s := range cfg.Stores {
		s.view = s.Local.View()
	}
	if cfg.Last.ID != 0 {
		cp := cfg.Last.Clone()
		l.counters.lastCheckpoint.Store(&cp)
	}
	l.sentAtCkp = cfg.Out.Sent()
	return l
}

// Context implementation, handed to Init.

func (l *Loop) JobName() string            { return l.cfg.Job }
func (l *Loop) TaskName() string           { return l.cfg.Name }
func (l *Loop) Partition() int32           { return l.cfg.Partition }
func (l *Loop) Inputs() []stream.Partition { return slices.Clone(l.cfg.Inputs) }
func (l *Loop) Logger() *slog.Logger       { return l.cfg.Log }

// Store implements Context.
func (l *Loop) Store(name string) (store.Store, error) {
	for _, s := range l.cfg.Stores {
		if s.Local.Name() == name {
			return s.view, nil
		}
	}
	return nil, fmt.Errorf("task %s: no store %q (declare it in Job.Stores)", l.cfg.Name, name)
}

// coordinator is the loop's Coordinator.
type coordinator struct{ l *Loop }

func (c coordinator) Commit() {
	c.l.counters.commitCalls.Add(1)
	c.l.commitRq.Store(true)
}

func (c coordinator) Shutdown() { c.l.shutdownRq.Store(true) }

// Send implements Collector.
func (l *Loop) Send(m stream.Outgoing) error {
	if !l.inCall.Load() {
		return ErrSendOutsideCall
	}
	if m.Topic == "" {
		return errNoTopic
	}
	ctx := l.callCtx
	if err := l.cfg.Out.Send(ctx, m); err != nil {
		if ctx.Err() != nil {
			return l.api.Stopping
		}
		return wrapSend(err)
	}
	l.counters.sent.Add(1)
	return nil
}

// Init calls the task's Init, if it has one.
func (l *Loop) Init(ctx context.Context) error {
	if l.task.Init == nil {
		l.inited = true
		return nil
	}
	if err := SafeCall(func() error { return l.task.Init(ctx, l) }); err != nil {
		return fmt.Errorf("task %s: init: %w", l.cfg.Name, err)
	}
	l.inited = true
	return nil
}

// Windowable reports whether the task has a Window and a period for it.
func (l *Loop) Windowable() bool { return l.task.Window != nil && l.cfg.Window > 0 }

// StartClock starts the schedule of Window calls and commits at the
// loop's clock: the first of each falls due one period from now.
func (l *Loop) StartClock() {
	now := l.cfg.Now()
	l.nextCommit = now.Add(l.cfg.CommitInterval)
	l.nextWindow = now.Add(l.cfg.Window)
}

// NextDue is when the next Window call or periodic commit falls due.
func (l *Loop) NextDue() time.Time {
	if l.Windowable() && l.nextWindow.Before(l.nextCommit) {
		return l.nextWindow
	}
	return l.nextCommit
}

// NextWindow is when the next Window call falls due.
func (l *Loop) NextWindow() time.Time { return l.nextWindow }

// WindowDue reports whether a Window call is due at now.
func (l *Loop) WindowDue(now time.Time) bool { return l.Windowable() && !now.Before(l.nextWindow) }

// Tick makes the calls due by the loop's clock, in order: Window, when its
// period has passed since the last one (what Window sends or writes makes
// the next commit needed; an idle Window alone does not); then a commit,
// through commit (the driver's bounds around Commit), when the task asked
// for one, a store's write buffer is full, or the commit interval has
// passed since the last. An error means the task must stop.
func (l *Loop) Tick(ctx context.Context, commit func() error) error {
	now := l.cfg.Now()
	if l.WindowDue(now) {
		if err := l.Window(ctx); err != nil {
			return err
		}
		now = l.cfg.Now()
		l.nextWindow = now.Add(l.cfg.Window)
	}
	if l.WantsCommit() || !now.Before(l.nextCommit) {
		if err := commit(); err != nil {
			return err
		}
		l.nextCommit = l.cfg.Now().Add(l.cfg.CommitInterval)
	}
	return nil
}

// Pending reports whether the task asked for a commit or a shutdown, or a
// store's write buffer is full: a driver taking a batch of messages stops
// there and ticks.
func (l *Loop) Pending() bool { return l.commitRq.Load() || l.shutdownRq.Load() || l.StoresFull() }

// Process hands m to the task and applies the error policy. It returns an
// error only when the task must stop: a message that failed under Fail
// (the API's ProcessError), or a dead-letter copy that could not be sent.
// A message counts as consumed once it is processed, skipped or
// dead-lettered.
func (l *Loop) Process(ctx context.Context, m stream.Message) error {
	l.savepoint()
	l.callCtx = ctx
	l.inCall.Store(true)
	err := SafeCall(func() error { return l.task.Process(ctx, m, l, coordinator{l}) })
	l.inCall.Store(false)
	if err != nil {
		// A failed message leaves no writes behind: whatever the policy,
		// its state changes must not be committed with the messages that
		// succeeded (under Fail it is processed again after a restart).
		l.rollback()
		switch l.cfg.Policy {
		case Skip:
			l.cfg.Log.Warn("skipping message that failed", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
			l.counters.skipped.Add(1)
		case DeadLetter:
			if derr := l.deadLetter(ctx, m, err); derr != nil {
				return derr
			}
			l.counters.dead.Add(1)
		default:
			return l.api.ProcessError(l.cfg.Name, m.Topic, m.Partition, m.Offset, err)
		}
	} else {
		l.counters.processed.Add(1)
	}
	l.setOffset(m.Topic, m.Partition, m.Offset+1)
	l.dirty = true
	return nil
}

// Window calls the task's Window once; its failure stops the task.
func (l *Loop) Window(ctx context.Context) error {
	start := l.cfg.Now()
	l.savepoint()
	l.callCtx = ctx
	l.inCall.Store(true)
	err := SafeCall(func() error { return l.task.Window(ctx, l, coordinator{l}) })
	l.inCall.Store(false)
	if err != nil {
		l.rollback()
	}
	l.counters.windows.Add(1)
	l.counters.windowNs.Add(int64(l.cfg.Now().Sub(start)))
	if err != nil {
		return fmt.Errorf("task %s: window: %w", l.cfg.Name, err)
	}
	return nil
}

// AddProcessTime counts time spent in Process calls (a driver measures a
// batch of them at once).
func (l *Loop) AddProcessTime(d time.Duration) { l.counters.processNs.Add(int64(d)) }

// AddRestoreTime records how long restoring the task's stores took.
func (l *Loop) AddRestoreTime(d time.Duration) { l.counters.restoreNs.Store(int64(d)) }

// WantsCommit reports whether the task asked for a commit, or a store's
// write buffer is full.
func (l *Loop) WantsCommit() bool { return l.commitRq.Load() || l.StoresFull() }

// StoresFull reports whether a store's write buffer asks for a commit.
func (l *Loop) StoresFull() bool {
	for _, s := range l.cfg.Stores {
		if s.Local.Full() {
			return true
		}
	}
	return false
}

// TakeShutdown reports whether the task asked for a shutdown since the
// last call.
func (l *Loop) TakeShutdown() bool { return l.shutdownRq.Swap(false) }

func (l *Loop) savepoint() {
	for _, s := range l.cfg.Stores {
		s.Local.Savepoint()
	}
}

func (l *Loop) rollback() {
	for _, s := range l.cfg.Stores {
		s.Local.Rollback()
	}
}

// setOffset records the next offset of a partition, starting the search at
// the partition of the previous message: a slice scanned from the last hit
// beats a map keyed by topic name on the per-message path.
func (l *Loop) setOffset(topic string, partition int32, next int64) {
	n := len(l.cfg.Inputs)
	for k := range n {
		i := (l.lastPart + k) % n
		if p := &l.cfg.Inputs[i]; p.Partition == partition && p.Topic == topic {
			l.offs[i] = next
			l.lastPart = i
			return
		}
	}
	panic(fmt.Sprintf("grete: message of %s/%d, which task %s does not read", topic, partition, l.cfg.Name))
}

// Offsets returns the next offset of every partition: what a checkpoint
// written now would record.
func (l *Loop) Offsets() map[stream.Partition]int64 {
	m := make(map[stream.Partition]int64, len(l.cfg.Inputs))
	for i, p := range l.cfg.Inputs {
		m[p] = l.offs[i]
	}
	return m
}

// Last returns the last checkpoint written or resumed from.
func (l *Loop) Last() checkpoint.Checkpoint { return l.last }

func (l *Loop) deadLetter(ctx context.Context, m stream.Message, cause error) error {
	h := make([]stream.Header, 0, len(m.Headers)+5)
	h = append(h, m.Headers...)
	h = append(h,
		stream.Header{Key: HeaderError, Value: []byte(cause.Error())},
		stream.Header{Key: HeaderTopic, Value: []byte(m.Topic)},
		stream.Header{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(m.Partition), 10)},
		stream.Header{Key: HeaderOffset, Value: strconv.AppendInt(nil, m.Offset, 10)},
		stream.Header{Key: HeaderTask, Value: []byte(l.cfg.Name)},
	)
	out := stream.Outgoing{Topic: l.cfg.DeadLetterTopic, Key: m.Key, Value: m.Value, Headers: h, Timestamp: m.Timestamp}
	if err := l.cfg.Out.Send(ctx, out); err != nil {
		return fmt.Errorf("task %s: dead-letter message at %s/%d offset %d: %w", l.cfg.Name, m.Topic, m.Partition, m.Offset, err)
	}
	l.cfg.Log.Warn("dead-lettered message that failed", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", cause)
	return nil
}

// Commit runs the commit protocol of DESIGN.md: flush every store's
// buffered writes as changelog records, wait until everything sent so far
// (outputs and changelog records) is acknowledged, write the checkpoint
// (next input offsets and last changelog offsets), and only then apply the
// buffered writes to the stores together with the checkpoint's identity. A
// failure anywhere stops before the stores change, so they are never ahead
// of the checkpoint; a failed output fails the commit, since its input must
// be processed again. A commit with nothing to record writes nothing.
func (l *Loop) Commit(ctx context.Context) error {
	l.commitRq.Store(false)
	if !l.dirty && l.cfg.Out.Sent() == l.sentAtCkp && !l.storesDirty() {
		return nil
	}
	if l.fenced() {
		return ErrFenced
	}
	start := l.cfg.Now()
	for _, s := range l.cfg.Stores {
		if s.Sink == nil {
			continue
		}
		err := s.Local.Flush(func(key, value []byte) error { return s.Sink.Send(ctx, key, value) })
		if err != nil {
			return fmt.Errorf("task %s: commit: store %q: flush: %w", l.cfg.Name, s.Local.Name(), err)
		}
	}
	if err := l.cfg.Out.Wait(ctx); err != nil {
		return fmt.Errorf("task %s: commit: output not acknowledged: %w", l.cfg.Name, err)
	}
	cp := checkpoint.Checkpoint{
		ID:         l.last.ID + 1,
		Task:       l.cfg.Name,
		Inputs:     l.Offsets(),
		Changelogs: make(map[string]int64, len(l.cfg.Stores)),
		WrittenAt:  l.cfg.Now(),
	}
	for _, s := range l.cfg.Stores {
		if s.Sink == nil {
			continue
		}
		off, err := s.Sink.Wait(ctx)
		if err != nil {
			return fmt.Errorf("task %s: commit: store %q: changelog not acknowledged: %w", l.cfg.Name, s.Local.Name(), err)
		}
		s.Offset = max(s.Offset, off)
		cp.Changelogs[s.Local.Name()] = s.Offset
	}
	if err := l.cfg.Checkpoints.Write(ctx, cp); err != nil {
		if errors.Is(err, ErrFenced) {
			// Changelog records written above lie past the last
			// checkpoint: the next owner's restore trims them.
			return err
		}
		return fmt.Errorf("task %s: commit: %w", l.cfg.Name, err)
	}
	if l.cfg.Committed != nil {
		l.cfg.Committed(cp)
	}
	for _, s := range l.cfg.Stores {
		if err := s.Local.Commit(state.Meta{CheckpointID: cp.ID, Offset: s.Offset}); err != nil {
			// The checkpoint is written; the store is behind it and the
			// next start replays the changelog. Stop here.
			return fmt.Errorf("task %s: commit: %w", l.cfg.Name, err)
		}
	}
	l.last = cp
	l.dirty = false
	l.sentAtCkp = l.cfg.Out.Sent()
	l.counters.lastCheckpoint.Store(&cp)
	l.counters.commits.Add(1)
	l.counters.commitNs.Add(int64(l.cfg.Now().Sub(start)))
	return nil
}

// FinalCommit commits the progress made before the task stops, also
// after a failure (cause), so that a restart resumes at the failed
// message. A task whose outputs or changelog records were lost cannot
// commit: the loss is the error, unless cause already stops the task. A
// commit that fails once the task is fenced is ErrFenced.
func (l *Loop) FinalCommit(ctx context.Context, cause error) error {
	if err := l.lost(); err != nil {
		if cause != nil {
			return nil
		}
		return fmt.Errorf("task %s: final commit: output not acknowledged: %w", l.cfg.Name, err)
	}
	err := l.Commit(ctx)
	if err != nil && l.fenced() {
		return ErrFenced
	}
	return err
}

// lost is the first failure of an output or changelog record.
func (l *Loop) lost() error {
	if err := l.cfg.Out.Err(); err != nil {
		return err
	}
	for _, s := range l.cfg.Stores {
		if s.Sink != nil {
			if err := s.Sink.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *Loop) fenced() bool { return l.cfg.Fenced != nil && l.cfg.Fenced() }

func (l *Loop) storesDirty() bool {
	for _, s := range l.cfg.Stores {
		if s.Local.Buffered() > 0 {
			return true
		}
	}
	return false
}

// Close calls the task's Close, when its Init succeeded, and closes its
// stores.
func (l *Loop) Close(ctx context.Context) error {
	var errs []error
	if l.task.Close != nil && l.inited {
		if err := SafeCall(func() error { return l.task.Close(ctx) }); err != nil {
			errs = append(errs, fmt.Errorf("task %s: close: %w", l.cfg.Name, err))
		}
	}
	errs = append(errs, CloseStores(l.cfg.Name, l.cfg.Stores))
	return errors.Join(errs...)
}

// CloseStores closes a task's stores.
func CloseStores(task string, stores []*Store) error {
	var errs []error
	for _, s := range stores {
		if err := s.Local.Close(); err != nil {
			errs = append(errs, fmt.Errorf("store %q: close: %w", s.Local.Name(), err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("task %s: %w", task, errors.Join(errs...))
	}
	return nil
}

// TaskStats are the counters of one task; task.TaskStats has the same
// fields, so one converts to the other.
type TaskStats struct {
	Task           string
	Processed      uint64
	ProcessTime    time.Duration
	Sent           uint64
	WindowCalls    uint64
	WindowTime     time.Duration
	Commits        uint64
	CommitTime     time.Duration
	Skipped        uint64
	DeadLettered   uint64
	LastCheckpoint checkpoint.Checkpoint
	Stores         map[string]store.Stats
	RestoreTime    time.Duration
}

// Stats returns the task's counters; safe from any goroutine.
func (l *Loop) Stats() TaskStats {
	k := &l.counters
	s := TaskStats{
		Task:         l.cfg.Name,
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
	if len(l.cfg.Stores) > 0 {
		s.Stores = make(map[string]store.Stats, len(l.cfg.Stores))
		for _, st := range l.cfg.Stores {
			s.Stores[st.Local.Name()] = st.Local.Stats()
		}
	}
	return s
}

// CommitCalls is how many times the task called Coordinator.Commit.
func (l *Loop) CommitCalls() int { return int(l.counters.commitCalls.Load()) }
