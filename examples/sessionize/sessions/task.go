package sessions

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/grete-go/grete/window"
)

// StoreName is the store that holds the open sessions; its changelog is
// "<job>-sessions-changelog".
const StoreName = "sessions"

// Stores are the stores a task needs: the job declares them, and a test
// driver (tasktest.Stores) or a hand-built task.Job must too.
func Stores() []store.Spec { return []store.Spec{{Name: StoreName}} }

// Settings are what every task of the job shares.
type Settings struct {
	Output    string        // topic of the snapshots
	LateTopic string        // side output for late events; "" drops them
	Gap       time.Duration // a session ends after Gap without events
	Grace     time.Duration // how long a session stays open after its end, for late events
}

// Config is everything NewJob needs: the tasks' Settings, and fields that
// NewJob passes on to the task.Job as they are.
type Config struct {
	Settings
	Name           string             // consumer group and topic prefix
	Kafka          stream.KafkaConfig // how to reach the cluster
	Input          string             // topic of the events
	Window         time.Duration      // period of the snapshot emits
	CommitInterval time.Duration      // period of commits; default 5 s
	DataDir        string             // where the stores live
	InstanceID     string             // this process's id among the job's processes
	Standbys       int                // other processes that keep a standby copy of each task
	Logger         *slog.Logger
}

// NewJob returns the sessionize job; stats, when non-nil, counts what its
// tasks emit. Bad input goes to the dead-letter topic "<name>-dlq". The
// snapshot topic (and the late topic) are ordinary delete-policy topics: a
// compacted topic would keep the last snapshot of every session for ever,
// since the job never deletes one.
func NewJob(c Config, stats *Stats) *task.Job {
	outputs := []task.OutputTopic{{Name: c.Output}}
	if c.LateTopic != "" {
		outputs = append(outputs, task.OutputTopic{Name: c.LateTopic})
	}
	set := c.Settings
	return &task.Job{
		Name:           c.Name,
		Kafka:          c.Kafka,
		Inputs:         []string{c.Input},
		Stores:         Stores(),
		DataDir:        c.DataDir,
		InstanceID:     c.InstanceID,
		Standbys:       c.Standbys,
		Window:         c.Window,
		CommitInterval: c.CommitInterval,
		OnError:        task.DeadLetter,
		Outputs:        outputs,
		Logger:         c.Logger,
		NewTask:        func() task.StreamTask { return NewTask(set, stats) },
	}
}

// Task is the job's task: it folds each event into the session of its
// session_id with a window.Aggregator over session windows, and emits a
// snapshot of every session that changed on every Window, and a final
// snapshot when a session closes. It needs the store StoreName. Create it
// with NewTask.
type Task struct {
	set   Settings
	stats *Stats
	agg   *window.Aggregator[string, *Event, state]

	// Per call: where emits go, and the message being processed (for the
	// late topic).
	out task.Collector
	cur stream.Message
	ev  Event // decoded into for every message
	// Reused by every snapshot.
	items []Item
	buf   []byte

	log       *slog.Logger
	partition int32
	// events counts Process calls, eventsAtWindow the count at the last
	// Window: equal at a Window, the previous Window came after every
	// event so far, and its snapshots are current.
	events, eventsAtWindow uint64

	emitFn window.EmitFunc[string, state]
	lateFn window.LateFunc[string, *Event]
}

// NewTask returns a task of the job. stats, when non-nil, counts what
// every task made with it emits: pass one Stats to all of a job's tasks.
func NewTask(set Settings, stats *Stats) *Task {
	if stats == nil {
		stats = &Stats{}
	}
	s := &Task{set: set, stats: stats}
	s.emitFn = s.emit
	if set.LateTopic != "" {
		s.lateFn = s.late
	}
	return s
}

// Init implements task.InitableTask.
func (s *Task) Init(_ context.Context, tc task.Context) error {
	s.log, s.partition = tc.Logger(), tc.Partition()
	st, err := tc.Store(StoreName)
	if err != nil {
		return err
	}
	s.agg, err = window.New(st, window.Options[string, *Event, state]{
		Windows:     window.Sessions(s.set.Gap),
		Grace:       s.set.Grace,
		Keys:        stream.String(),
		Values:      stateSerde{},
		Add:         func(acc state, e *Event, _ time.Time) state { return addEvent(acc, e) },
		Merge:       mergeStates,
		EmitUpdates: true,
	})
	if err != nil {
		return err
	}
	s.stats.register(s)
	return nil
}

// Process implements task.StreamTask. A value that is not an event is an
// error, handled by the job's policy (dead-letter).
func (s *Task) Process(_ context.Context, m stream.Message, out task.Collector, _ task.Coordinator) error {
	s.events++
	if err := parseEvent(m.Value, &s.ev); err != nil {
		return err
	}
	if err := s.ev.validate(); err != nil {
		return err
	}
	s.out, s.cur = out, m
	err := s.agg.Add(s.ev.SessionID, &s.ev, time.UnixMilli(s.ev.TS), s.emitFn, s.lateFn)
	s.cur = stream.Message{} // hold on to no input
	return err
}

// Window implements task.WindowableTask: close what is due and emit every
// session that changed since the last Window.
func (s *Task) Window(_ context.Context, out task.Collector, _ task.Coordinator) error {
	s.out = out
	if err := s.agg.Flush(s.emitFn); err != nil {
		return err
	}
	if s.events == s.eventsAtWindow {
		s.log.Debug("idle window: the snapshots sent cover every event processed")
	}
	s.eventsAtWindow = s.events
	return nil
}

// Close implements task.ClosableTask.
func (s *Task) Close(context.Context) error {
	s.stats.unregister(s)
	return nil
}

func (s *Task) emit(e window.Emit[string, state]) error {
	snap, err := snapshot(e.Key, e.Value, e.Final, s.items)
	if err != nil {
		return err
	}
	s.items = snap.Events
	s.buf = snap.appendJSON(s.buf[:0])
	// The producer keeps the value until Kafka has it: a copy of its size.
	if err := s.out.Send(stream.Outgoing{Topic: s.set.Output, Key: []byte(e.Key), Value: bytes.Clone(s.buf)}); err != nil {
		return err
	}
	s.stats.snapshots.Add(1)
	if e.Final {
		s.stats.finals.Add(1)
	}
	return nil
}

// late copies a late event, as it came, to the late topic.
func (s *Task) late(string, *Event, time.Time) error {
	m := &s.cur
	return s.out.Send(stream.Outgoing{Topic: s.set.LateTopic, Key: m.Key, Value: m.Value, Headers: m.Headers, Timestamp: m.Timestamp})
}

// stateSerde stores a state as it is: it is already bytes.
type stateSerde struct{}

func (stateSerde) Encode(v state) ([]byte, error) { return v, nil }
func (stateSerde) Decode(b []byte) (state, error) { return state(b), nil }

// Stats counts what the tasks of a job emit; safe for concurrent use.
type Stats struct {
	snapshots, finals atomic.Uint64

	mu    sync.Mutex
	tasks map[*Task]struct{}
	gone  window.Stats // counters of tasks that closed (Open aside)
	// goneOpen is, for each partition whose task closed and has not come
	// back, the sessions it held open when it closed.
	goneOpen map[int32]int
}

func (st *Stats) register(s *Task) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.tasks == nil {
		st.tasks = map[*Task]struct{}{}
	}
	st.tasks[s] = struct{}{}
	delete(st.goneOpen, s.partition) // back: it counts its sessions itself
}

func (st *Stats) unregister(s *Task) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.tasks[s]; !ok {
		return
	}
	delete(st.tasks, s)
	a := s.agg.Stats()
	st.gone.Added += a.Added
	st.gone.Late += a.Late
	st.gone.Closed += a.Closed
	st.gone.Merged += a.Merged
	if st.goneOpen == nil {
		st.goneOpen = map[int32]int{}
	}
	st.goneOpen[s.partition] = a.Open
}

// Totals are a job's counters at one moment.
type Totals struct {
	Snapshots uint64 // snapshots emitted, finals included
	Finals    uint64 // final snapshots: sessions closed
	Added     uint64 // events folded into sessions (again, when reprocessed)
	Late      uint64 // events dropped (or sent to the late topic) as late
	Merged    uint64 // sessions merged into others by a bridging event
	// Open is the sessions open now: in the running tasks, and in the
	// tasks that closed (when they closed) and did not come back.
	Open int
}

// Totals sums the counters of every task.
func (st *Stats) Totals() Totals {
	st.mu.Lock()
	defer st.mu.Unlock()
	t := Totals{
		Snapshots: st.snapshots.Load(), Finals: st.finals.Load(),
		Added: st.gone.Added, Late: st.gone.Late, Merged: st.gone.Merged,
	}
	for _, n := range st.goneOpen {
		t.Open += n
	}
	for s := range st.tasks {
		a := s.agg.Stats()
		t.Added += a.Added
		t.Late += a.Late
		t.Merged += a.Merged
		t.Open += a.Open
	}
	return t
}
