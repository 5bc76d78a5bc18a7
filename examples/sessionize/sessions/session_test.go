package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/grete-go/grete/examples/sessionize/internal/reference"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/grete-go/grete/task/tasktest"
	"github.com/stretchr/testify/require"
)

// The unit tests run the task in memory with tasktest, configured exactly
// as the job configures it (tasktest.FromJob: its store, Window and error
// policy), and read its snapshots back with the reference's strict decoder.

const (
	unitWindow = time.Minute
	unitGap    = 10 * time.Second
	unitGrace  = 2 * time.Second
)

// t0 is the event time the unit tests start at.
var t0 = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC).UnixMilli()

func unitDriver(t *testing.T, set Settings) (*tasktest.Driver, *Stats) {
	t.Helper()
	if set.Output == "" {
		set.Output = "sessions"
	}
	if set.Gap == 0 {
		set.Gap, set.Grace = unitGap, unitGrace
	}
	stats := &Stats{}
	job := NewJob(Config{Settings: set, Name: "sessionize", Input: "events", Window: unitWindow}, stats)
	d := tasktest.FromJob(job)
	t.Cleanup(func() { require.NoError(t, d.Close(context.Background())) })
	return d, stats
}

// ev is a compact way to write an event: session, id, ts offset from t0 in
// ms, type; the rest is filled in.
func ev(session, id string, dt int64, typ string) Event {
	return Event{EventID: id, VisitorID: "v-" + session, SessionID: session, TS: t0 + dt, Type: typ, Browser: "chrome", Country: "US", IP: "10.0.0.1"}
}

func msg(t *testing.T, e Event) stream.Message {
	t.Helper()
	b, err := json.Marshal(e)
	require.NoError(t, err)
	return stream.Message{Key: []byte(e.VisitorID), Value: b}
}

func feed(t *testing.T, d *tasktest.Driver, evs ...Event) {
	t.Helper()
	for _, e := range evs {
		require.NoError(t, d.Feed(context.Background(), msg(t, e)))
	}
}

// snapshots decodes and takes the snapshots sent so far.
func snapshots(t *testing.T, d *tasktest.Driver) []reference.Snapshot {
	t.Helper()
	var out []reference.Snapshot
	for _, m := range d.OutputsTo("sessions") {
		s, err := reference.DecodeSnapshot(m.Value)
		require.NoError(t, err, "%s", m.Value)
		require.Equal(t, s.SessionID, string(m.Key), "a snapshot's key is its session_id")
		out = append(out, s)
	}
	d.TakeOutputs()
	return out
}

func TestSnapshotOrderMetadataAndRevenue(t *testing.T) {
	d, _ := unitDriver(t, Settings{})
	a := ev("s1", "e-a", 2000, "purchase")
	a.Revenue, a.Experiment, a.Browser = 12_990_000, "checkout_flow:b", "firefox"
	b := ev("s1", "e-c", 1000, "pageview") // ties with e-b on ts; e-b sorts first
	b.Country = "DE"
	c := ev("s1", "e-b", 1000, "click")
	c.Browser, c.Country, c.IP = "safari", "FR", "10.9.9.9"
	e := ev("s1", "e-d", 3000, "purchase")
	e.Revenue = 1 // a millionth
	feed(t, d, a, b, c, e)
	require.Empty(t, d.Outputs(), "nothing is emitted before the window")
	require.NoError(t, d.Advance(context.Background(), unitWindow))
	got := snapshots(t, d)
	want := reference.Snapshot{
		SessionID: "s1", VisitorID: "v-s1", Start: t0 + 1000, End: t0 + 3000, EventCount: 4, Revenue: "12990001/1000000",
		Browser: "safari", Country: "FR", IP: "10.9.9.9", // the first event is e-b: ts 1000, and "e-b" < "e-c"
		Events: []reference.Item{
			{EventID: "e-b", TS: t0 + 1000, Type: "click", Revenue: "0"},
			{EventID: "e-c", TS: t0 + 1000, Type: "pageview", Revenue: "0"},
			{EventID: "e-a", TS: t0 + 2000, Type: "purchase", Experiment: "checkout_flow:b", Revenue: "1299/100"},
			{EventID: "e-d", TS: t0 + 3000, Type: "purchase", Revenue: "1/1000000"},
		},
	}
	require.Equal(t, []reference.Snapshot{want}, got)
}

func TestOnlyChangedSessionsAreEmitted(t *testing.T) {
	ctx := context.Background()
	d, stats := unitDriver(t, Settings{})
	feed(t, d, ev("s1", "e1", 0, "pageview"), ev("s2", "e2", 10, "pageview"))
	require.NoError(t, d.Advance(ctx, unitWindow))
	require.Len(t, snapshots(t, d), 2)

	feed(t, d, ev("s1", "e3", 20, "click"))
	require.NoError(t, d.Advance(ctx, unitWindow))
	got := snapshots(t, d)
	require.Len(t, got, 1)
	require.Equal(t, "s1", got[0].SessionID)
	require.Equal(t, 2, got[0].EventCount)

	require.NoError(t, d.Advance(ctx, 3*unitWindow))
	require.Empty(t, snapshots(t, d), "no session changed")
	require.Equal(t, 2, stats.Totals().Open)
}

func TestSessionClosesAfterGapPlusGrace(t *testing.T) {
	ctx := context.Background()
	d, stats := unitDriver(t, Settings{LateTopic: "late"})
	closeAt := (unitGap + unitGrace).Milliseconds() // s1's last event is at 0
	feed(t, d, ev("s1", "e1", 0, "pageview"), ev("s2", "e2", closeAt-1, "pageview"))
	require.Empty(t, snapshots(t, d), "s1 is open until stream time reaches its close")

	// Stream time reaches s1's close: its final snapshot goes out at once,
	// not at the next window.
	feed(t, d, ev("s2", "e3", closeAt, "click"))
	got := snapshots(t, d)
	require.Len(t, got, 1)
	require.Equal(t, "s1", got[0].SessionID)
	require.True(t, got[0].Final)
	require.Equal(t, 1, stats.Totals().Open)

	// An event of s1 whose own session would already be closed is late:
	// sent to the late topic as it came.
	late := msg(t, ev("s1", "e4", 0, "click"))
	require.NoError(t, d.Feed(ctx, late))
	require.Equal(t, uint64(1), stats.Totals().Late)
	lateOut := d.OutputsTo("late")
	require.Len(t, lateOut, 1)
	require.Equal(t, late.Value, lateOut[0].Value)
	require.Equal(t, late.Key, lateOut[0].Key)
	require.Empty(t, snapshots(t, d))

	// An event of s1 that s1 no longer accepts, but recent enough for a
	// session of its own, starts a second session under the same key.
	feed(t, d, ev("s1", "e5", 5000, "click"))
	require.NoError(t, d.Advance(ctx, unitWindow))
	got = snapshots(t, d)
	require.Len(t, got, 2)
	slices.SortFunc(got, func(a, b reference.Snapshot) int { return int(a.Start - b.Start) })
	require.Equal(t, []string{"e5"}, eventIDs(got[0]))
	require.Equal(t, []string{"e2", "e3"}, eventIDs(got[1]))
	require.False(t, got[0].Final)
}

func TestBridgingEventMergesSessions(t *testing.T) {
	ctx := context.Background()
	d, stats := unitDriver(t, Settings{})
	gap := unitGap.Milliseconds()
	a := ev("s1", "e1", 0, "pageview")
	a.Browser = "edge"
	feed(t, d, a, ev("s1", "e2", gap+1000, "click"))
	require.NoError(t, d.Advance(ctx, unitWindow))
	require.Len(t, snapshots(t, d), 2, "two events more than gap apart are two sessions")
	require.Equal(t, 2, stats.Totals().Open)

	feed(t, d, ev("s1", "e3", gap/2, "click")) // within gap of both
	require.NoError(t, d.Advance(ctx, unitWindow))
	got := snapshots(t, d)
	require.Len(t, got, 1)
	require.Equal(t, []string{"e1", "e3", "e2"}, eventIDs(got[0]))
	require.Equal(t, "edge", got[0].Browser, "metadata of the earliest event")
	require.Equal(t, Totals{Snapshots: 3, Added: 3, Merged: 1, Open: 1}, stats.Totals())
}

// Bad input goes to the dead-letter topic with an error that says what is
// wrong with it; decimal revenue, however written, is not bad input.
func TestBadInputIsDeadLettered(t *testing.T) {
	ctx := context.Background()
	d, _ := unitDriver(t, Settings{})
	noSession := ev("", "e1", 0, "click")
	bad := map[string]string{
		"not json":                            "json",
		string(must(json.Marshal(noSession))): "session_id",
		`{"event_id":"e2","session_id":"s","ts":1,"revenue":"12.50"}`:    `field "revenue": want a number, got a string "12.50"`,
		`{"event_id":"e4","session_id":12,"ts":1}`:                       `field "session_id": want a string, got a number 12`,
		`{"event_id":"e5","session_id":"s","ts":"2026-12-04T10:00:00Z"}`: `field "ts"`,
		`{"event_id":"e6","session_id":"s"}`:                             "ts",
	}
	good := []string{
		`{"event_id":"g1","session_id":"s2","ts":1,"revenue":12.5,"extra":{"ignored":true}}`,
		`{"event_id":"g2","session_id":"s2","ts":2,"revenue":12.50}`,
		`{"event_id":"g3","session_id":"s2","ts":3,"revenue":1.25e1}`,
		`{"event_id":"g4","session_id":"s2","ts":4,"revenue":0.0}`,
		`{"event_id":"g5","session_id":"s2","ts":5,"revenue":151.57}`,
		`{"event_id":"g6","session_id":"s2","ts":6,"revenue":12}`,
	}
	for v := range bad {
		require.NoError(t, d.Feed(ctx, stream.Message{Value: []byte(v)}))
	}
	for _, v := range good {
		require.NoError(t, d.Feed(ctx, stream.Message{Value: []byte(v)}))
	}
	dead := d.OutputsTo(d.DeadLetterTopic())
	require.Len(t, dead, len(bad))
	for _, m := range dead {
		var cause string
		for _, h := range m.Headers {
			if h.Key == task.HeaderError {
				cause = string(h.Value)
			}
		}
		require.Contains(t, cause, bad[string(m.Value)], "the error of %s", m.Value)
	}
	require.NoError(t, d.Advance(ctx, unitWindow))
	got := snapshots(t, d)
	require.Len(t, got, 1)
	require.Equal(t, reference.Decimal("20107/100"), got[0].Revenue, "12.5 + 12.5 + 12.5 + 0 + 151.57 + 12 = 201.07")
	require.Len(t, got[0].Events, len(good))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestCorruptStateIsAnError(t *testing.T) {
	_, err := snapshot("s", state{stateVersion, 0x02, 0x05, 'a'}, false, nil)
	require.True(t, errors.Is(err, errCorrupt), "%v", err)
	_, err = snapshot("s", state{9}, false, nil)
	require.True(t, errors.Is(err, errCorrupt), "%v", err)
}

// TestMatchesReference feeds generated traffic (out of order, late events,
// sessions that close, merge and reopen) through the task, with windows in
// between, and checks every session's last snapshot against the
// reference.
func TestMatchesReference(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			ctx := context.Background()
			set := Settings{Output: "sessions", LateTopic: "late", Gap: 20 * time.Second, Grace: 8 * time.Second}
			cfg := Traffic{Seed: seed, Gap: set.Gap, Grace: set.Grace, Active: 100, Visitors: 500, OutOfOrder: 0.1, Late: 0.03}
			evs := Simulate(cfg, 6000, time.UnixMilli(t0), 100*time.Millisecond)
			d, stats := unitDriver(t, set)
			var inputs []reference.Input
			for i, e := range evs {
				m := msg(t, e)
				require.NoError(t, d.Feed(ctx, m))
				inputs = append(inputs, reference.Input{Offset: int64(i), Value: m.Value})
				if i%500 == 499 {
					require.NoError(t, d.Advance(ctx, unitWindow))
				}
			}
			require.NoError(t, d.Advance(ctx, unitWindow))
			ref, err := reference.Sessionize(inputs, set.Gap.Milliseconds(), set.Grace.Milliseconds())
			require.NoError(t, err)

			var outs []reference.Output
			var late [][]byte
			for i, m := range d.Outputs() {
				switch m.Topic {
				case "sessions":
					outs = append(outs, reference.Output{Offset: int64(i), Key: m.Key, Value: m.Value})
				case "late":
					late = append(late, m.Value)
				default:
					t.Fatalf("output to %s", m.Topic)
				}
			}
			res := reference.VerifySnapshots(t, outs, ref, true)
			reference.VerifyLate(t, late, ref, true)
			tot := stats.Totals()
			require.Equal(t, uint64(len(ref.Late)), tot.Late)
			require.Equal(t, uint64(len(evs)-len(ref.Late)), tot.Added)
			t.Logf("%d events: %d sessions (%d closed, %d merges, %d keys with several sessions), %d late; %d snapshots",
				len(evs), res.Sessions, res.Finals, tot.Merged, res.MultiKeys, len(ref.Late), res.Snapshots)
			// The input exercises what it should.
			require.NotZero(t, res.Finals)
			require.NotZero(t, len(ref.Late))
			require.NotZero(t, tot.Merged)
		})
	}
}

func eventIDs(s reference.Snapshot) []string {
	var ids []string
	for _, it := range s.Events {
		ids = append(ids, it.EventID)
	}
	return ids
}

// TestStoreDeclaredByHand runs the task with tasktest.New and an explicit
// store, as a user would wire it by hand, and checks that a session's state
// leaves the store when it closes.
func TestStoreDeclaredByHand(t *testing.T) {
	ctx := context.Background()
	set := Settings{Output: "sessions", Gap: unitGap, Grace: unitGrace}
	d := tasktest.New(NewTask(set, nil), tasktest.Inputs("events"), tasktest.Window(unitWindow),
		tasktest.Stores(store.Spec{Name: StoreName}))
	defer d.Close(ctx)
	st := func() store.Store { return d.Store(StoreName) }
	feed(t, d, ev("s1", "e1", 0, "pageview"))
	n := countKeys(t, st())
	feed(t, d, ev("s2", "e2", 1000, "pageview"))
	require.Equal(t, n+1, countKeys(t, st()), "two sessions")
	feed(t, d, ev("s3", "e3", (unitGap+unitGrace).Milliseconds(), "pageview"))
	got := snapshots(t, d)
	require.Len(t, got, 1)
	require.True(t, got[0].Final)
	require.Equal(t, "s1", got[0].SessionID)
	require.Equal(t, n+1, countKeys(t, st()), "s1 left, s3 came")

	require.NoError(t, d.Advance(ctx, unitWindow))
	got = snapshots(t, d)
	require.Len(t, got, 2, "the sessions that changed and are still open: s2 and s3")
	require.ElementsMatch(t, []string{"s2", "s3"}, []string{got[0].SessionID, got[1].SessionID})
}

func countKeys(t *testing.T, s store.Store) int {
	t.Helper()
	it := s.Range(nil, nil)
	defer it.Close()
	n := 0
	for it.Next() {
		n++
	}
	require.NoError(t, it.Err())
	return n
}
