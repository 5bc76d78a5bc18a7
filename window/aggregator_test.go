package window

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
)

func openTestStore(t testing.TB, eng store.Engine) *state.Local {
	t.Helper()
	s, err := state.Open(t.TempDir(), store.Spec{Name: "w", Engine: eng}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func stringOptions(spec Spec) Options[string, string, string] {
	return Options[string, string, string]{
		Windows: spec,
		Add:     func(acc, v string, _ time.Time) string { return joinValues(acc, v) },
		Merge:   func(a, b string) string { return a + "|" + b },
	}
}

// emits records emitted windows as strings.
type emits []string

func (e *emits) fn(kind Kind) EmitFunc[string, string] {
	return func(em Emit[string, string]) error {
		f := "update "
		if em.Final {
			f = "final "
		}
		*e = append(*e, f+em.Key+" "+fmtWindow(kind, em.Window)+" "+em.Value)
		return nil
	}
}

func at(s string) time.Time {
	v, err := msOf(s)
	if err != nil {
		panic(err)
	}
	return time.UnixMilli(v)
}

func TestNewRefusesBadOptions(t *testing.T) {
	s := openTestStore(t, store.Memory)
	good := stringOptions(Sessions(time.Second))
	for _, c := range []struct {
		name string
		edit func(*Options[string, string, string])
		want string
	}{
		{"no kind", func(o *Options[string, string, string]) { o.Windows = Spec{} }, "no window kind"},
		{"no add", func(o *Options[string, string, string]) { o.Add = nil }, "Options.Add is nil"},
		{"no merge", func(o *Options[string, string, string]) { o.Merge = nil }, "need Options.Merge"},
		{"negative grace", func(o *Options[string, string, string]) { o.Grace = -time.Second }, "must not be negative"},
		{"negative idle", func(o *Options[string, string, string]) { o.IdleTimeout = -time.Second }, "must not be negative"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := good
			c.edit(&o)
			_, err := New(s.View(), o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, want an error containing %q", err, c.want)
			}
		})
	}
	// Merge is not needed by tumbling windows.
	o := stringOptions(Tumbling(time.Second))
	o.Merge = nil
	if _, err := New(s.View(), o); err != nil {
		t.Fatal(err)
	}
}

// A final whose emit fails is not lost: the window stays in the store and
// the next Flush emits it.
func TestFinalEmitErrorIsRetriedByFlush(t *testing.T) {
	for _, eng := range []store.Engine{store.Pebble, store.Memory} {
		t.Run(eng.String(), func(t *testing.T) {
			s := openTestStore(t, eng)
			agg, err := New(s.View(), stringOptions(Tumbling(10*time.Second)))
			if err != nil {
				t.Fatal(err)
			}
			var got emits
			if err := agg.Add("a", "x", at("1s"), got.fn(KindTumbling), nil); err != nil {
				t.Fatal(err)
			}
			refuse := errors.New("sink refused")
			err = agg.Add("a", "y", at("10s"), func(Emit[string, string]) error { return refuse }, nil)
			if !errors.Is(err, refuse) {
				t.Fatalf("Add: %v, want %v", err, refuse)
			}
			// [0s,10s) is closed by stream time: no event may join it.
			if err := agg.Add("a", "l", at("5s"), got.fn(KindTumbling), nil); err != nil {
				t.Fatal(err)
			}
			if st := agg.Stats(); st.Late != 1 {
				t.Fatalf("late %d, want 1", st.Late)
			}
			if err := agg.Flush(got.fn(KindTumbling)); err != nil {
				t.Fatal(err)
			}
			want := []string{"final a [0s,10s) x"}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("emitted %q, want %q", got, want)
			}
			checkInvariants(t, agg, "after Flush")
		})
	}
}

// An update whose emit fails is emitted again by the next Flush; those
// emitted before it are not.
func TestUpdateEmitErrorIsRetried(t *testing.T) {
	s := openTestStore(t, store.Pebble)
	o := stringOptions(Sessions(10 * time.Second))
	o.EmitUpdates = true
	agg, err := New(s.View(), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if err := agg.Add(k, k+"1", at("1s"), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	var got emits
	refuse := errors.New("sink refused")
	err = agg.Flush(func(e Emit[string, string]) error {
		if e.Key == "b" {
			return refuse
		}
		return got.fn(KindSession)(e)
	})
	if !errors.Is(err, refuse) {
		t.Fatalf("Flush: %v, want %v", err, refuse)
	}
	if err := agg.Flush(got.fn(KindSession)); err != nil {
		t.Fatal(err)
	}
	want := "update a [1s,1s] a1\nupdate b [1s,1s] b1\nupdate c [1s,1s] c1"
	if strings.Join(got, "\n") != want {
		t.Fatalf("emitted\n%s\nwant\n%s", strings.Join(got, "\n"), want)
	}
}

// Once the wall clock has closed a window of an idle partition (its final
// emitted and its state deleted), a later event for that window must not
// start it again: that would emit a second "final" for the same window
// holding only the new events, replacing the complete value downstream.
// The documentation says idle closing acts "as if stream time had advanced
// with the wall clock", so the event should be late.
func TestIdleCloseIsFinal(t *testing.T) {
	for _, c := range []struct {
		name string
		spec Spec
		win  string
	}{
		{"tumbling", Tumbling(10 * time.Second), "[0s,10s)"},
		{"session", Sessions(10 * time.Second), "[5s,5s]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := openTestStore(t, store.Memory)
			now := wall0
			o := stringOptions(c.spec)
			o.IdleTimeout = time.Minute
			o.Now = func() time.Time { return now }
			agg, err := New(s.View(), o)
			if err != nil {
				t.Fatal(err)
			}
			var got emits
			if err := agg.Add("a", "x", at("5s"), got.fn(c.spec.Kind), nil); err != nil {
				t.Fatal(err)
			}
			now = now.Add(time.Minute)
			if err := agg.Flush(got.fn(c.spec.Kind)); err != nil {
				t.Fatal(err)
			}
			if want := "final a " + c.win + " x"; strings.Join(got, "\n") != want {
				t.Fatalf("after idle Flush: %q, want %q", got, want)
			}
			// The partition wakes up with an event for the closed window.
			if err := agg.Add("a", "y", at("5s"), got.fn(c.spec.Kind), nil); err != nil {
				t.Fatal(err)
			}
			if err := agg.Add("a", "z", at("2m"), got.fn(c.spec.Kind), nil); err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Errorf("the closed window was emitted final again: %q", got)
			}
			if st := agg.Stats(); st.Late != 1 {
				t.Errorf("late %d, want 1 (the event for the window the wall clock closed)", st.Late)
			}
		})
	}
}

// Windows work in whole milliseconds (Kafka timestamps), so durations with
// a fraction of a millisecond cannot be honoured: New should refuse them
// rather than truncate them silently (Tumbling(1500µs) now makes 1ms
// windows, and a Grace of 999µs is no grace at all).
func TestSubMillisecondDurationsRefused(t *testing.T) {
	s := openTestStore(t, store.Memory)
	for _, c := range []struct {
		name  string
		spec  Spec
		grace time.Duration
	}{
		{"tumbling size", Tumbling(1500 * time.Microsecond), 0},
		{"hopping advance", Hopping(10*time.Millisecond, 2500*time.Microsecond), 0},
		{"session gap", Sessions(1500 * time.Microsecond), 0},
		{"grace", Tumbling(time.Second), 999 * time.Microsecond},
	} {
		o := stringOptions(c.spec)
		o.Grace = c.grace
		if _, err := New(s.View(), o); err == nil {
			t.Errorf("%s: New accepted durations that are not whole milliseconds", c.name)
		}
	}
}

// Every write is a changelog record and a write to the engine at commit,
// so the aggregator writes only what changed: an event writes its window
// and nothing else (not stream time, not a change marker), however many
// events there were; a Flush of updates writes one key, however many
// windows it emitted.
func TestWrites(t *testing.T) {
	s := openTestStore(t, store.Memory)
	o := stringOptions(Sessions(10 * time.Second))
	o.EmitUpdates = true
	agg, err := New(s.View(), o)
	if err != nil {
		t.Fatal(err)
	}
	var ckpt uint64
	// commit commits the store and returns the number of its changelog
	// records: the keys written since the last commit.
	commit := func() (n int) {
		if err := s.Flush(func(_, _ []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		ckpt++
		if err := s.Commit(state.Meta{CheckpointID: ckpt, Offset: int64(ckpt)}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i, k := range []string{"a", "a", "b", "a", "b"} {
		if err := agg.Add(k, "x", time.UnixMilli(int64(1000*i)), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := commit(); n != 2 {
		t.Errorf("5 events into 2 sessions wrote %d keys, want 2 (the sessions)", n)
	}
	var updates int
	if err := agg.Flush(func(Emit[string, string]) error { updates++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n := commit(); updates != 2 || n != 1 {
		t.Errorf("a Flush of %d updates wrote %d keys, want 2 updates and 1 key", updates, n)
	}
}

// A store written in an earlier layout (the end, then the accumulator) is
// refused, not misread.
func TestEarlierLayoutRefused(t *testing.T) {
	s := openTestStore(t, store.Memory)
	old := binary.BigEndian.AppendUint64(nil, flip(1000))
	if err := s.Put(storeKey(nil, "\xa1a", 0), append(old, "\xa1x"...)); err != nil {
		t.Fatal(err)
	}
	_, err := New(s.View(), stringOptions(Sessions(10*time.Second)))
	if err == nil || !strings.Contains(err.Error(), "unknown layout") {
		t.Fatalf("New: %v, want an error about the layout", err)
	}
}

// When a task's Process fails, Grete rolls its stores back to before the
// message. The aggregator then rebuilds its memory from the store, so the
// task can go on (Skip, DeadLetter) as if the message had never come: here
// the failed event had moved stream time far ahead, which would have made
// the next event late.
func TestRollbackOfTheStoreRewindsTheAggregator(t *testing.T) {
	for _, eng := range []store.Engine{store.Pebble, store.Memory} {
		t.Run(eng.String(), func(t *testing.T) {
			s := openTestStore(t, eng)
			agg, err := New(s.View(), stringOptions(Tumbling(10*time.Second)))
			if err != nil {
				t.Fatal(err)
			}
			var got emits
			if err := agg.Add("a", "x", at("1s"), got.fn(KindTumbling), nil); err != nil {
				t.Fatal(err)
			}
			s.Savepoint()
			if err := agg.Add("a", "far", at("1h"), got.fn(KindTumbling), nil); err != nil {
				t.Fatal(err)
			}
			s.Rollback() // the message that carried "far" failed after all
			if err := agg.Add("a", "y", at("5s"), got.fn(KindTumbling), nil); err != nil {
				t.Fatal(err)
			}
			if st := agg.Stats(); st.Late != 0 || st.Open != 1 {
				t.Fatalf("late %d, open %d; want 0 late and 1 open window", st.Late, st.Open)
			}
			if err := agg.Add("a", "z", at("20s"), got.fn(KindTumbling), nil); err != nil {
				t.Fatal(err)
			}
			if err := agg.Flush(got.fn(KindTumbling)); err != nil {
				t.Fatal(err)
			}
			// The failed message's emit had gone out (outputs are at least
			// once); the window it closed came back with the rollback, and
			// its last emit is complete.
			want := []string{"final a [0s,10s) x", "final a [0s,10s) x,y"}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("emitted %q, want %q", got, want)
			}
			checkInvariants(t, agg, "after Flush")
		})
	}
}
