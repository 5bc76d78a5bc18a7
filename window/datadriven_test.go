package window

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/ddtest"
	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
)

// The data-driven suite: every file in testdata/ is a list of commands and
// their expected output, in the manner of Pebble's testdata files:
//
//	# comment
//	new kind=session gap=10s grace=5s
//	----
//
//	add
//	a 12s x
//	a 40s y
//	----
//	final a [12s,12s] x
//
// A command is one line (a name, positional arguments and key=value
// options), optional input lines, a "----" line, then the expected output up
// to the next blank line. Every file runs against both store engines and
// must give the same output.
//
// Commands:
//
//	new kind=tumbling|hopping|session [size=] [advance=] [gap=] [grace=] [idle=] [updates] [late|latefail] [track]
//	    a fresh store and an Aggregator[string, string, string] over it;
//	    the accumulator joins values with ",", Merge joins two with "|".
//	    updates sets EmitUpdates; late passes a LateFunc that prints late
//	    events (otherwise they are dropped and only counted), latefail one
//	    that fails; track opens the store with TrackChanges.
//	add [key= ts= v=]    add one event, or one per input line "key ts value"
//	flush                Aggregator.Flush
//	advance-wall <d>     move the injected processing-time clock
//	state                stream time and the open windows, as the store holds them
//	stats                the aggregator's counters
//	commit               store Flush (records go to the test's changelog) + Commit
//	crash [fresh]        close the store without committing (buffered writes are
//	                     lost), reopen it and make a new Aggregator over it:
//	                     Pebble reuses its directory; Memory, or "fresh" on
//	                     either engine, replays the changelog into a new store.
//
// Timestamps and windows print as offsets from the Unix epoch ("12s",
// "-1ms"): tumbling and hopping windows as [start,end), sessions as
// [first,last] event. Emits print as "final|update <key> <window> <value>",
// late events as "late <key> <ts> <value>".
//
// After every command the harness checks the aggregator's invariants: its
// index of open windows and its windows changed since the last Flush match
// the store, every stored window is still open by stream time, and open
// sessions of a key are more than gap apart.
//
// go test ./window -run TestDataDriven -rewrite rewrites the expected output
// from the Pebble run; review the diff before committing it.

var rewrite = flag.Bool("rewrite", false, "rewrite testdata expectations from the Pebble engine's output")

func TestDataDriven(t *testing.T) {
	files, err := filepath.Glob("testdata/*")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata files")
	}
	for _, file := range files {
		for _, eng := range []store.Engine{store.Pebble, store.Memory} {
			t.Run(filepath.Base(file)+"/"+eng.String(), func(t *testing.T) {
				runDataFile(t, file, eng, *rewrite && eng == store.Pebble)
			})
		}
	}
}

// ddCase is one command of a data file.
func runDataFile(t *testing.T, path string, eng store.Engine, rewrite bool) {
	h := &ddHarness{t: t, eng: eng, base: t.TempDir(), now: wall0}
	defer h.close()
	ddtest.Run(t, path, rewrite, func(c *ddtest.Case) string {
		out := h.run(c)
		if h.agg != nil {
			checkInvariants(t, h.agg, fmt.Sprintf("%s:%d: after %s", path, c.Line, c.Cmd))
		}
		return out
	})
}

// wall0 is where the injected processing-time clock starts: far from the
// event times, which sit near the Unix epoch, so that nothing confuses them.
var wall0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

type strAgg = Aggregator[string, string, string]

type ddHarness struct {
	t    *testing.T
	eng  store.Engine
	base string
	dirs int
	dir  string
	spec store.Spec
	now  time.Time
	s    *state.Local
	opts Options[string, string, string]
	late string // "", "late" or "latefail"
	agg  *strAgg
	log  []store.Record // the changelog: records of every commit
	ckpt uint64         // checkpoint id of the last commit
}

func (h *ddHarness) clock() time.Time { return h.now }

func (h *ddHarness) newDir() string {
	h.dirs++
	return filepath.Join(h.base, fmt.Sprintf("store%d", h.dirs))
}

func (h *ddHarness) close() {
	if h.s != nil {
		_ = h.s.Close()
	}
}

// msOf parses an event time written as an offset from the Unix epoch.
func msOf(s string) (int64, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d%time.Millisecond != 0 {
		return 0, fmt.Errorf("%s is not a whole number of milliseconds", s)
	}
	return d.Milliseconds(), nil
}

// fmtMS prints milliseconds since the epoch as an offset: "12s", "-1ms".
func fmtMS(v int64) string { return (time.Duration(v) * time.Millisecond).String() }

func fmtTime(t time.Time) string { return fmtMS(t.UnixMilli()) }

// fmtWindow prints a window: [start,end) for tumbling and hopping windows,
// [first,last] for sessions.
func fmtWindow(k Kind, w Window) string {
	if k == KindSession {
		return "[" + fmtTime(w.Start) + "," + fmtTime(w.End) + "]"
	}
	return "[" + fmtTime(w.Start) + "," + fmtTime(w.End) + ")"
}

func joinValues(acc, v string) string {
	if acc == "" {
		return v
	}
	return acc + "," + v
}

func (h *ddHarness) emitTo(b *strings.Builder) EmitFunc[string, string] {
	return func(e Emit[string, string]) error {
		kind := "update"
		if e.Final {
			kind = "final"
		}
		fmt.Fprintf(b, "%s %s %s %s\n", kind, e.Key, fmtWindow(h.opts.Windows.Kind, e.Window), e.Value)
		return nil
	}
}

func (h *ddHarness) lateTo(b *strings.Builder) LateFunc[string, string] {
	switch h.late {
	case "late":
		return func(key, value string, ts time.Time) error {
			fmt.Fprintf(b, "late %s %s %s\n", key, fmtTime(ts), value)
			return nil
		}
	case "latefail":
		return func(key, value string, ts time.Time) error {
			return fmt.Errorf("side output refused %s %s", key, fmtTime(ts))
		}
	}
	return nil
}

func (h *ddHarness) optDur(c *ddtest.Case, name string) time.Duration {
	v, ok := c.Opts[name]
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		h.t.Fatalf("line %d: %s=%s: %v", c.Line, name, v, err)
	}
	return d
}

func (h *ddHarness) newAggregator() error {
	h.agg = nil
	agg, err := New(h.s.View(), h.opts)
	if err != nil {
		return err
	}
	h.agg = agg
	return nil
}

func (h *ddHarness) run(c *ddtest.Case) string {
	t := h.t
	var b strings.Builder
	if h.agg == nil && c.Cmd != "new" {
		t.Fatalf("line %d: %s before a successful new", c.Line, c.Cmd)
	}
	switch c.Cmd {
	case "new":
		if h.s != nil {
			if err := h.s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		h.log, h.ckpt = nil, 0
		h.spec = store.Spec{Name: "windows", Engine: h.eng, TrackChanges: c.HasArg("track")}
		h.dir = h.newDir()
		s, err := state.Open(h.dir, h.spec, h.clock)
		if err != nil {
			t.Fatal(err)
		}
		h.s = s
		var spec Spec
		switch c.Opts["kind"] {
		case "tumbling":
			spec = Tumbling(h.optDur(c, "size"))
		case "hopping":
			spec = Hopping(h.optDur(c, "size"), h.optDur(c, "advance"))
		case "session":
			spec = Sessions(h.optDur(c, "gap"))
		}
		h.late = ""
		for _, l := range []string{"late", "latefail"} {
			if c.HasArg(l) {
				h.late = l
			}
		}
		h.opts = Options[string, string, string]{
			Windows:     spec,
			Grace:       h.optDur(c, "grace"),
			Add:         func(acc, v string, _ time.Time) string { return joinValues(acc, v) },
			Merge:       func(a, b string) string { return a + "|" + b },
			EmitUpdates: c.HasArg("updates"),
			IdleTimeout: h.optDur(c, "idle"),
			Now:         h.clock,
		}
		if err := h.newAggregator(); err != nil {
			return "error: " + err.Error()
		}
	case "add":
		type ev struct{ key, ts, v string }
		var evs []ev
		if len(c.Opts) > 0 {
			evs = append(evs, ev{c.Opts["key"], c.Opts["ts"], c.Opts["v"]})
		}
		for _, l := range c.Input {
			f := strings.Fields(l)
			if len(f) != 3 {
				t.Fatalf("line %d: event %q is not \"key ts value\"", c.Line, l)
			}
			evs = append(evs, ev{f[0], f[1], f[2]})
		}
		for _, e := range evs {
			ts, err := msOf(e.ts)
			if err != nil {
				t.Fatalf("line %d: %v", c.Line, err)
			}
			if err := h.agg.Add(e.key, e.v, time.UnixMilli(ts), h.emitTo(&b), h.lateTo(&b)); err != nil {
				fmt.Fprintf(&b, "error: %v\n", err)
			}
		}
	case "flush":
		if err := h.agg.Flush(h.emitTo(&b)); err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
		}
	case "advance-wall":
		if len(c.Args) != 1 {
			t.Fatalf("line %d: advance-wall needs a duration", c.Line)
		}
		d, err := time.ParseDuration(c.Args[0])
		if err != nil {
			t.Fatalf("line %d: %v", c.Line, err)
		}
		h.now = h.now.Add(d)
	case "state":
		h.printState(&b)
	case "stats":
		st := h.agg.Stats()
		fmt.Fprintf(&b, "added=%d late=%d emitted=%d closed=%d merged=%d open=%d\n",
			st.Added, st.Late, st.Emitted, st.Closed, st.Merged, st.Open)
	case "commit":
		var recs []store.Record
		err := h.s.Flush(func(k, v []byte) error {
			r := store.Record{Key: bytes.Clone(k)}
			if v != nil {
				r.Value = bytes.Clone(v)
			}
			recs = append(recs, r)
			return nil
		})
		if err != nil {
			t.Fatalf("line %d: store flush: %v", c.Line, err)
		}
		h.log = append(h.log, recs...)
		h.ckpt++
		if err := h.s.Commit(state.Meta{CheckpointID: h.ckpt, Offset: int64(len(h.log)) - 1}); err != nil {
			t.Fatalf("line %d: commit: %v", c.Line, err)
		}
	case "crash":
		if err := h.s.Close(); err != nil {
			t.Fatalf("line %d: close: %v", c.Line, err)
		}
		h.agg = nil
		want := state.Meta{CheckpointID: h.ckpt, Offset: int64(len(h.log)) - 1}
		if h.eng == store.Pebble && !c.HasArg("fresh") {
			// A restart on the same machine: the local store is reused.
			s, err := state.Open(h.dir, h.spec, h.clock)
			if err != nil {
				t.Fatalf("line %d: reopen: %v", c.Line, err)
			}
			h.s = s
			m, ok, err := s.Meta()
			if err != nil {
				t.Fatalf("line %d: meta: %v", c.Line, err)
			}
			if h.ckpt > 0 && (!ok || m != want) {
				t.Fatalf("line %d: reopened store has meta %+v (found %v), want %+v", c.Line, m, ok, want)
			}
		} else {
			// A new machine, or a memory store: replay the changelog.
			h.dir = h.newDir()
			s, err := state.Open(h.dir, h.spec, h.clock)
			if err != nil {
				t.Fatalf("line %d: open: %v", c.Line, err)
			}
			h.s = s
			if err := s.Restore(h.log); err != nil {
				t.Fatalf("line %d: restore: %v", c.Line, err)
			}
			if err := s.FinishRestore(want, 0); err != nil {
				t.Fatalf("line %d: finish restore: %v", c.Line, err)
			}
		}
		if err := h.newAggregator(); err != nil {
			t.Fatalf("line %d: new aggregator after restart: %v", c.Line, err)
		}
	default:
		t.Fatalf("line %d: unknown command %q", c.Line, c.Cmd)
	}
	return b.String()
}

// printState prints stream time and the windows in the store, with the
// stream time at which each closes.
func (h *ddHarness) printState(b *strings.Builder) {
	a := h.agg
	if a.st == noTime {
		b.WriteString("stream time: none\n")
	} else {
		fmt.Fprintf(b, "stream time: %s\n", fmtMS(a.st))
	}
	it := h.s.Prefix([]byte{nsWindow})
	defer it.Close()
	for it.Next() {
		kb, start, last, _, ab, err := decodeEntry(it.Key(), it.Value())
		if err != nil {
			h.t.Fatal(err)
		}
		key, err := a.o.Keys.Decode(kb)
		if err != nil {
			h.t.Fatal(err)
		}
		v, err := a.o.Values.Decode(ab)
		if err != nil {
			h.t.Fatal(err)
		}
		end := a.end(start, last)
		w := Window{time.UnixMilli(start), time.UnixMilli(end)}
		fmt.Fprintf(b, "%s %s %s (closes at %s)\n", key, fmtWindow(a.o.Windows.Kind, w), v, fmtMS(a.closeAt(start, end)))
	}
	if err := it.Err(); err != nil {
		h.t.Fatal(err)
	}
}

// checkInvariants checks that the aggregator's index of open windows is
// exactly the set of windows in its store, that each is still open by
// stream time and placed in the index no later than it closes, that its
// windows by key agree, that the open count agrees, that the windows marked
// changed are those the store says changed since the last Flush, that
// stream time is at least every window's latest event, and that open
// sessions of one key are more than gap apart (an event within gap of two
// would have merged them).
func checkInvariants[K, V, A any](t testing.TB, a *Aggregator[K, V, A], where string) {
	t.Helper()
	var errs []error
	inIndex := map[string]*win{}
	a.index.Ascend(func(w *win) bool {
		inIndex[string(storeKey(nil, w.key, w.start))] = w
		return true
	})
	if n := a.index.Len(); int64(n) != a.open.Load() {
		errs = append(errs, fmt.Errorf("index holds %d windows, open counter says %d", n, a.open.Load()))
	}
	byKey := 0
	for k, w := range a.byKey {
		for ; w != nil; w = w.next {
			byKey++
			if w.key != k {
				errs = append(errs, fmt.Errorf("window %q/%d is under key %q", w.key, w.start, k))
			}
			if inIndex[string(storeKey(nil, w.key, w.start))] != w {
				errs = append(errs, fmt.Errorf("window %q/%d is in byKey, not in the index", w.key, w.start))
			}
			if w.next != nil && w.next.start >= w.start {
				errs = append(errs, fmt.Errorf("windows of %q out of order: %d before %d", k, w.start, w.next.start))
			}
		}
	}
	if byKey != len(inIndex) {
		errs = append(errs, fmt.Errorf("byKey holds %d windows, index %d", byKey, len(inIndex)))
	}
	changed := 0
	for _, w := range a.changed {
		if w.changed {
			changed++
		}
	}
	type span struct{ start, end int64 }
	sessions := map[string][]span{}
	seen, storeChanged := 0, 0
	it := a.s.Prefix([]byte{nsWindow})
	for it.Next() {
		kb, start, last, gen, _, err := decodeEntry(it.Key(), it.Value())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		seen++
		end := a.end(start, last)
		k := string(it.Key())
		c := a.closeAt(start, end)
		w, ok := inIndex[k]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("window %q is in the store, not in the index", k))
		case w.end != end:
			errs = append(errs, fmt.Errorf("window %q ends at %d in the index, %d in the store", k, w.end, end))
		case w.at > c || w.at < c && a.o.Windows.Kind != KindSession:
			errs = append(errs, fmt.Errorf("window %q is placed at %d in the index, closes at %d", k, w.at, c))
		case a.o.EmitUpdates && w.changed != (gen == a.gen):
			// (Not so after a Flush whose emit failed: the windows it
			// emitted are no longer marked, but have the current
			// generation. No emit fails here.)
			errs = append(errs, fmt.Errorf("window %q: changed %v, but its generation is %d of %d", k, w.changed, gen, a.gen))
		}
		if gen == a.gen {
			storeChanged++
		}
		if a.st != noTime && c <= a.st {
			errs = append(errs, fmt.Errorf("window %q closes at %s but stream time is %s", k, fmtMS(c), fmtMS(a.st)))
		}
		if last > a.st {
			errs = append(errs, fmt.Errorf("window %q has an event at %s, after stream time %s", k, fmtMS(last), fmtMS(a.st)))
		}
		sessions[string(kb)] = append(sessions[string(kb)], span{start, end})
	}
	if err := errors.Join(it.Err(), it.Close()); err != nil {
		errs = append(errs, err)
	}
	if seen != len(inIndex) {
		errs = append(errs, fmt.Errorf("store holds %d windows, index %d", seen, len(inIndex)))
	}
	if a.o.EmitUpdates && changed != storeChanged {
		errs = append(errs, fmt.Errorf("%d windows marked changed, the store says %d", changed, storeChanged))
	}
	if a.o.Windows.Kind == KindSession {
		gap := a.o.Windows.Gap.Milliseconds()
		for kb, ss := range sessions {
			sort.Slice(ss, func(i, j int) bool { return ss[i].start < ss[j].start })
			for i := 1; i < len(ss); i++ {
				if ss[i].start-ss[i-1].end <= gap {
					errs = append(errs, fmt.Errorf("key %q: open sessions [%d,%d] and [%d,%d] are within gap %d", kb, ss[i-1].start, ss[i-1].end, ss[i].start, ss[i].end, gap))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("%s: invariants broken:\n%v", where, err)
	}
}
