package window

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
)

// The reference model of session windows, written from the documented
// semantics (doc.go, Sessions, Options.Grace), not from the aggregator's
// code:
//
//   - Stream time is the largest event timestamp seen.
//   - A session is open while its last event + gap + grace > stream time,
//     judged at the stream time before the event being added moves it.
//   - An event joins every open session of its key that it falls within gap
//     of (first-gap <= ts <= last+gap); joining two or more merges them.
//   - An event that joins no open session starts one, unless that session
//     would already be closed (ts + gap + grace <= stream time): then it is
//     late, counted and dropped.
//   - When stream time moves, every session it closes emits its final value
//     and is gone.
//   - With EmitUpdates, Flush emits each open session changed since the
//     previous Flush, once.
//
// The model keeps plain lists per key and scans them; it never sorts and
// has no index. Accumulators are the ids of the events folded in, so a
// value says exactly which events a session holds.

type refSession struct {
	first, last int64
	ids         []int
	dirty       bool // changed since the last flush
}

type refModel struct {
	gap, grace int64
	seen       bool // any event yet
	st         int64
	open       map[string][]refSession
}

// refEmit is an emitted session, its ids sorted.
type refEmit struct {
	key         string
	first, last int64
	ids         []int
}

func (e refEmit) String() string {
	return fmt.Sprintf("%s [%d,%d] %v", e.key, e.first, e.last, e.ids)
}

func newRefModel(gap, grace int64) *refModel {
	return &refModel{gap: gap, grace: grace, open: map[string][]refSession{}}
}

func (m *refModel) clone() *refModel {
	c := *m
	c.open = map[string][]refSession{}
	for k, ss := range m.open {
		cs := make([]refSession, len(ss))
		for i, s := range ss {
			s.ids = slices.Clone(s.ids)
			cs[i] = s
		}
		c.open[k] = cs
	}
	return &c
}

func (m *refModel) isOpen(s refSession) bool {
	return !m.seen || s.last+m.gap+m.grace > m.st
}

func sortedIDs(ids []int) []int {
	c := slices.Clone(ids)
	slices.Sort(c)
	return c
}

// add folds an event in; it returns whether the event was late, how many
// merges it made, and the finals of the sessions it closed.
func (m *refModel) add(key string, ts int64, id int) (late bool, merges int, finals []refEmit) {
	var keep, joined []refSession
	for _, s := range m.open[key] {
		if m.isOpen(s) && ts >= s.first-m.gap && ts <= s.last+m.gap {
			joined = append(joined, s)
		} else {
			keep = append(keep, s)
		}
	}
	switch {
	case len(joined) == 0 && m.seen && ts+m.gap+m.grace <= m.st:
		late = true
	case len(joined) == 0:
		keep = append(keep, refSession{first: ts, last: ts, ids: []int{id}, dirty: true})
	default:
		n := refSession{first: ts, last: ts, dirty: true}
		for _, s := range joined {
			n.first, n.last = min(n.first, s.first), max(n.last, s.last)
			n.ids = append(n.ids, s.ids...)
		}
		n.ids = append(n.ids, id)
		merges = len(joined) - 1
		keep = append(keep, n)
	}
	m.open[key] = keep
	if !m.seen || ts > m.st {
		m.seen, m.st = true, ts
		for k, ss := range m.open {
			var still []refSession
			for _, s := range ss {
				if m.isOpen(s) {
					still = append(still, s)
				} else {
					finals = append(finals, refEmit{k, s.first, s.last, sortedIDs(s.ids)})
				}
			}
			m.open[k] = still
		}
	}
	return late, merges, finals
}

// flush returns the open sessions changed since the last flush and marks
// them unchanged.
func (m *refModel) flush() []refEmit {
	var out []refEmit
	for k, ss := range m.open {
		for i := range ss {
			if ss[i].dirty {
				out = append(out, refEmit{k, ss[i].first, ss[i].last, sortedIDs(ss[i].ids)})
				ss[i].dirty = false
			}
		}
	}
	return out
}

func (m *refModel) openCount() int {
	n := 0
	for _, ss := range m.open {
		n += len(ss)
	}
	return n
}

type modelEvent struct {
	key string
	ts  int64
	id  int
}

// genEvents makes n events over keys: mostly near the front of time, some
// within a few gaps behind it, a few far behind (late).
func genEvents(rng *rand.Rand, n, keys int, gap, grace int64) []modelEvent {
	evs := make([]modelEvent, n)
	front := int64(-300)
	for i := range evs {
		front += rng.Int64N(4)
		var lag int64
		switch r := rng.IntN(100); {
		case r < 70:
			lag = rng.Int64N(6)
		case r < 93:
			lag = rng.Int64N(2*gap + grace + 5)
		default:
			lag = rng.Int64N(200)
		}
		evs[i] = modelEvent{key: fmt.Sprintf("k%d", rng.IntN(keys)), ts: front - lag, id: i}
	}
	return evs
}

// emitKey identifies an emitted session.
func emitKey(e refEmit) string { return fmt.Sprintf("%s [%d,%d]", e.key, e.first, e.last) }

func sameEmits(got, want []refEmit) bool {
	if len(got) != len(want) {
		return false
	}
	g := map[string][]int{}
	for _, e := range got {
		if _, dup := g[emitKey(e)]; dup {
			return false
		}
		g[emitKey(e)] = e.ids
	}
	for _, e := range want {
		ids, ok := g[emitKey(e)]
		if !ok || !slices.Equal(ids, e.ids) {
			return false
		}
	}
	return true
}

type modelTotals struct {
	added, late, merged, closed, finals, updates, crashes int
}

// runModel feeds seeded random events to a session aggregator and to the
// reference model, with random Flushes, commits and crashes (a crash loses
// what was not committed and reprocesses the input from the last commit,
// as a task does), and compares every emit, every late event, the
// counters, and the last final value of every session.
func runModel(t *testing.T, eng store.Engine, seed uint64, n int) modelTotals {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0x5e55))
	gap := []int64{5, 10, 20}[rng.IntN(3)]
	grace := []int64{0, 5, 30}[rng.IntN(3)]
	events := genEvents(rng, n, 4, gap, grace)
	// The last event closes every session: its key sorts after the others
	// and it is far ahead of them.
	events = append(events, modelEvent{key: "~end", ts: 1 << 20, id: n})
	where := fmt.Sprintf("seed %d (gap %dms, grace %dms)", seed, gap, grace)

	spec := store.Spec{Name: "sessions", Engine: eng}
	base := t.TempDir()
	dirs := 0
	newDir := func() string { dirs++; return fmt.Sprintf("%s/s%d", base, dirs) }
	dir := newDir()
	s, err := state.Open(dir, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	opts := Options[string, int, []int]{
		Windows:     Sessions(time.Duration(gap) * time.Millisecond),
		Grace:       time.Duration(grace) * time.Millisecond,
		Add:         func(acc []int, id int, _ time.Time) []int { return append(acc, id) },
		Merge:       func(a, b []int) []int { return append(a, b...) },
		EmitUpdates: true,
	}
	agg, err := New(s.View(), opts)
	if err != nil {
		t.Fatal(err)
	}

	var (
		tot       modelTotals
		aggTotals Stats // of the aggregators before the current one
		ref       = newRefModel(gap, grace)
		saved     = ref.clone() // the reference as of the last commit
		savedNext = 0           // the next event after the last commit
		changelog []store.Record
		ckpt      uint64
		lastFinal = map[string][]int{} // the last final emitted per session
		refFinal  = map[string][]int{}
		got       []refEmit
	)
	collect := func(final bool) EmitFunc[string, []int] {
		return func(e Emit[string, []int]) error {
			if e.Final != final {
				t.Fatalf("%s: unexpected emit (final %v) %s %v %v", where, e.Final, e.Key, e.Window, e.Value)
			}
			got = append(got, refEmit{e.Key, e.Window.Start.UnixMilli(), e.Window.End.UnixMilli(), sortedIDs(e.Value)})
			return nil
		}
	}
	for i := 0; i < len(events); {
		switch r := rng.IntN(100); {
		case r < 5: // Window: periodic updates
			got = got[:0]
			if err := agg.Flush(collect(false)); err != nil {
				t.Fatal(err)
			}
			want := ref.flush()
			if !sameEmits(got, want) {
				t.Fatalf("%s: before event %d: Flush emitted updates\n%v\nwant\n%v", where, i, got, want)
			}
			tot.updates += len(got)
		case r < 8: // commit
			err := s.Flush(func(k, v []byte) error {
				rec := store.Record{Key: bytes.Clone(k)}
				if v != nil {
					rec.Value = bytes.Clone(v)
				}
				changelog = append(changelog, rec)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			ckpt++
			if err := s.Commit(state.Meta{CheckpointID: ckpt, Offset: int64(len(changelog)) - 1}); err != nil {
				t.Fatal(err)
			}
			saved, savedNext = ref.clone(), i
		case r < 9 && tot.crashes < 8: // crash, restart, reprocess
			tot.crashes++
			st := agg.Stats()
			aggTotals.Added += st.Added
			aggTotals.Late += st.Late
			aggTotals.Merged += st.Merged
			aggTotals.Closed += st.Closed
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if eng == store.Pebble && rng.IntN(2) == 0 {
				s, err = state.Open(dir, spec, nil) // same machine
			} else {
				dir = newDir() // new machine, or memory: replay the changelog
				if s, err = state.Open(dir, spec, nil); err == nil {
					if err = s.Restore(changelog); err == nil {
						err = s.FinishRestore(state.Meta{CheckpointID: ckpt, Offset: int64(len(changelog)) - 1}, 0)
					}
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if agg, err = New(s.View(), opts); err != nil {
				t.Fatal(err)
			}
			ref, i = saved.clone(), savedNext
		default: // Process
			e := events[i]
			got = got[:0]
			late := false
			err := agg.Add(e.key, e.id, time.UnixMilli(e.ts), collect(true), func(key string, id int, ts time.Time) error {
				if late || key != e.key || id != e.id || ts.UnixMilli() != e.ts {
					t.Fatalf("%s: event %d: LateFunc called with %s %d %v", where, i, key, id, ts)
				}
				late = true
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			wantLate, merges, want := ref.add(e.key, e.ts, e.id)
			if late != wantLate {
				t.Fatalf("%s: event %d (%s at %d, stream time %d): late %v, want %v", where, i, e.key, e.ts, ref.st, late, wantLate)
			}
			if !sameEmits(got, want) {
				t.Fatalf("%s: event %d (%s at %d): finals\n%v\nwant\n%v", where, i, e.key, e.ts, got, want)
			}
			for _, f := range got {
				if prev, ok := lastFinal[emitKey(f)]; ok && !slices.Equal(prev, f.ids) {
					// A final repeats only after a crash, and then with the same value.
					t.Fatalf("%s: event %d: final %s again with another value (was %v)", where, i, f, prev)
				}
				lastFinal[emitKey(f)] = f.ids
			}
			for _, f := range want {
				refFinal[emitKey(f)] = f.ids
			}
			if late {
				tot.late++
			} else {
				tot.added++
			}
			tot.merged += merges
			tot.finals += len(got)
			i++
		}
		checkInvariants(t, agg, fmt.Sprintf("%s: before event %d", where, i))
		if agg.StreamTime().UnixMilli() != ref.st && ref.seen {
			t.Fatalf("%s: before event %d: stream time %v, want %d", where, i, agg.StreamTime(), ref.st)
		}
	}
	// Every session the reference closed was emitted final with the same
	// value, and nothing else was.
	if !maps.EqualFunc(lastFinal, refFinal, slices.Equal) {
		t.Fatalf("%s: finals differ from the reference:\n%v\nwant\n%v", where, lastFinal, refFinal)
	}
	st := agg.Stats()
	aggTotals.Added += st.Added
	aggTotals.Late += st.Late
	aggTotals.Merged += st.Merged
	aggTotals.Closed += st.Closed
	want := Stats{Added: uint64(tot.added), Late: uint64(tot.late), Merged: uint64(tot.merged), Closed: uint64(tot.finals)}
	if aggTotals != want {
		t.Fatalf("%s: counters %+v, want %+v", where, aggTotals, want)
	}
	if st.Open != ref.openCount() || st.Open != 1 {
		t.Fatalf("%s: %d windows open at the end, reference %d, want 1 (~end)", where, st.Open, ref.openCount())
	}
	tot.closed = len(refFinal)
	return tot
}

func TestSessionsMatchReferenceModel(t *testing.T) {
	for _, c := range []struct {
		eng          store.Engine
		seeds, evs   int
		minMerges    int
		minLate      int
		minFinals    int
		minCrashRuns int
	}{
		{store.Memory, 24, 1500, 100, 100, 1000, 10},
		{store.Pebble, 4, 600, 10, 10, 100, 1},
	} {
		t.Run(c.eng.String(), func(t *testing.T) {
			var sum modelTotals
			crashRuns := 0
			for seed := range c.seeds {
				tot := runModel(t, c.eng, uint64(seed), c.evs)
				sum.merged += tot.merged
				sum.late += tot.late
				sum.finals += tot.finals
				sum.updates += tot.updates
				if tot.crashes > 0 {
					crashRuns++
				}
			}
			// The events must exercise what the test is about.
			t.Logf("%d seeds: %d merges, %d late, %d finals, %d updates, %d runs with crashes",
				c.seeds, sum.merged, sum.late, sum.finals, sum.updates, crashRuns)
			if sum.merged < c.minMerges || sum.late < c.minLate || sum.finals < c.minFinals || crashRuns < c.minCrashRuns {
				t.Errorf("the random events exercise too little: %+v, %d runs with crashes", sum, crashRuns)
			}
		})
	}
}
