package sessions

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	localstate "github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task/tasktest"
	"github.com/grete-go/grete/window"
)

// The pieces of the job's per-event cost, without Kafka. The end-to-end
// comparison with a raw sarama copy is the benchmark program's sessionize
// command (go run ./examples/bench sessionize, examples/bench/sessionize.go);
// these locate where its time goes. BenchmarkAggregatorPebble opens the
// store as a task's container does, with internal/state, which only a test
// of the module may use: the job itself uses public packages only.

// benchEvents are realistic events of a dense hour: sessions open, grow,
// merge and close.
func benchEvents(b *testing.B, n int) ([]Event, [][]byte) {
	b.Helper()
	evs := Simulate(Traffic{Seed: 1, Gap: 30 * time.Minute, Grace: time.Minute, Active: 3000, Visitors: 30000, OutOfOrder: 0.05, Late: 0.005},
		n, time.UnixMilli(t0), 10*time.Millisecond)
	vals := make([][]byte, len(evs))
	for i := range evs {
		vals[i], _ = json.Marshal(&evs[i])
	}
	return evs, vals
}

func BenchmarkParseEvent(b *testing.B) {
	_, vals := benchEvents(b, 10000)
	var e Event
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := parseEvent(vals[i%len(vals)], &e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseEventEncodingJSON is the baseline of BenchmarkParseEvent:
// the event decoded by encoding/json. Amount has no UnmarshalJSON (events
// are decoded by parseEvent), so revenue goes to a json.Number that
// shadows Event's.
func BenchmarkParseEventEncodingJSON(b *testing.B) {
	_, vals := benchEvents(b, 10000)
	var e struct {
		Event
		Revenue json.Number `json:"revenue"`
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		e.Event, e.Revenue = Event{}, ""
		if err := json.Unmarshal(vals[i%len(vals)], &e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddEvent is the accumulator alone: a session of 20 events.
func BenchmarkAddEvent(b *testing.B) {
	evs, _ := benchEvents(b, 20)
	b.ReportAllocs()
	var st state
	for i := range b.N {
		if i%len(evs) == 0 {
			st = nil
		}
		st = addEvent(st, &evs[i%len(evs)])
	}
}

// BenchmarkSnapshotJSON is one emit of a 20-event session: decode, sort,
// encode, as the task does it.
func BenchmarkSnapshotJSON(b *testing.B) {
	evs, _ := benchEvents(b, 20)
	var st state
	for i := range evs {
		st = addEvent(st, &evs[i])
	}
	s := NewTask(Settings{Output: "sessions"}, nil)
	s.out = discard{}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := s.emit(window.Emit[string, state]{Key: "s", Value: st}); err != nil {
			b.Fatal(err)
		}
	}
}

// discard is a task.Collector that drops what it is sent.
type discard struct{}

func (discard) Send(stream.Outgoing) error { return nil }

// BenchmarkProcess is the task's Process per event (parse, Aggregator.Add
// on the in-memory store, finals), with a Window every 1000 events and a
// commit every 5000, through tasktest.
func BenchmarkProcess(b *testing.B) {
	_, vals := benchEvents(b, b.N) // event time moves on throughout
	ctx := context.Background()
	job := NewJob(Config{Settings: Settings{Output: "sessions", Gap: 30 * time.Minute, Grace: time.Minute},
		Name: "sessionize", Input: "events", Window: time.Second, CommitInterval: 5 * time.Second}, nil)
	d := tasktest.FromJob(job)
	defer d.Close(ctx)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := d.Feed(ctx, stream.Message{Value: vals[i]}); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			if err := d.Advance(ctx, time.Second); err != nil {
				b.Fatal(err)
			}
			d.TakeOutputs()
		}
	}
}

// BenchmarkAggregatorPebble is the library's share of an event alone:
// window.Aggregator.Add with the job's accumulator on a Pebble store as a
// task has it (the store's View, without change tracking: the aggregator
// tracks the windows that changed itself), with a Flush every 1000 events
// and a commit (changelog flush and engine write, no Kafka) every 5000.
func BenchmarkAggregatorPebble(b *testing.B) {
	evs, _ := benchEvents(b, b.N)
	st, err := localstate.Open(b.TempDir(), store.Spec{Name: StoreName}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	agg, err := window.New(st.View(), window.Options[string, *Event, state]{
		Windows: window.Sessions(30 * time.Minute), Grace: time.Minute, Keys: stream.String(), Values: stateSerde{},
		Add:   func(acc state, e *Event, _ time.Time) state { return addEvent(acc, e) },
		Merge: mergeStates, EmitUpdates: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	emit := func(window.Emit[string, state]) error { return nil }
	var commits uint64
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		e := &evs[i]
		if err := agg.Add(e.SessionID, e, time.UnixMilli(e.TS), emit, nil); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			if err := agg.Flush(emit); err != nil {
				b.Fatal(err)
			}
		}
		if i%5000 == 4999 {
			if err := st.Flush(func(k, v []byte) error { return nil }); err != nil {
				b.Fatal(err)
			}
			commits++
			if err := st.Commit(localstate.Meta{CheckpointID: commits, Offset: int64(commits)}); err != nil {
				b.Fatal(err)
			}
		}
	}
}
