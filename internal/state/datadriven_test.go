package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"github.com/grete-go/grete/store"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/ddtest"
)

// The data-driven suite: every file in testdata/ is a list of commands and
// their expected output, in the manner of Pebble's testdata files:
//
//	# comment
//	put a 1
//	----
//
//	get a
//	----
//	a: 1
//
// A command is one line, optional input lines, a "----" line, then the
// expected output up to the next blank line. Every file runs against both
// engines and must give the same output; a command with engine=pebble or
// engine=memory runs only on that engine (the other skips it).
//
// Commands (keys: "-" is nil, `""` empty, Go escapes such as \xff work):
//
//	open [track] [ttl=D] [buffer=N]   a new empty store; the clock restarts
//	put K [V] [K V]... | put-all K V... | delete K... | get K...
//	range [START] [END] | prefix P
//	iter-open NAME range [START] [END] | iter-open NAME prefix P
//	iter-next NAME [N] | iter-close NAME
//	flush [fail=TEXT] [log]           print what Flush emits
//	commit [verbose] [noflush] [id=N] [offset=N]   Flush, then Commit
//	meta | buffered | stats | engine | engine-value data|change K
//	advance D                         move the injected clock
//	take-changes [LIMIT] [fail=K]
//	close | reopen | wipe | restore-into-fresh [batch=N]
//
// go test ./store -run TestDataDriven -rewrite rewrites the expected
// output from the Pebble run; review the diff before committing it.

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
	h := newHarness(t, eng)
	defer h.closeAll()
	ddtest.Run(t, path, rewrite, func(c *ddtest.Case) string {
		if only, ok := c.Opts["engine"]; ok && only != eng.String() {
			return c.Expected // not for this engine
		}
		return h.run(c)
	})
}

// t0 is the injected clock's start; times print relative to it.
var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

type harness struct {
	t      *testing.T
	eng    store.Engine
	base   string
	dirs   int
	dir    string
	spec   store.Spec
	now    time.Time
	s      *Local
	iters  map[string]store.Iterator
	log    []store.Record // every record flushed since open: the changelog
	logged int            // records of log covered by the last commit
	meta   Meta
}

func newHarness(t *testing.T, eng store.Engine) *harness {
	return &harness{t: t, eng: eng, base: t.TempDir(), now: t0, iters: map[string]store.Iterator{}}
}

func (h *harness) clock() time.Time { return h.now }

func (h *harness) newDir() string {
	h.dirs++
	return filepath.Join(h.base, fmt.Sprintf("store%d", h.dirs))
}

func (h *harness) closeAll() {
	for name, it := range h.iters {
		_ = it.Close()
		delete(h.iters, name)
	}
	if h.s != nil {
		_ = h.s.Close()
	}
}

// key decodes a key argument: "-" is nil, `""` is empty, and Go escapes
// (\x00, \xff) work.
func key(s string) []byte {
	switch s {
	case "-":
		return nil
	case `""`:
		return []byte{}
	}
	u, err := strconv.Unquote(`"` + s + `"`)
	if err != nil {
		panic(fmt.Sprintf("bad key %q: %v", s, err))
	}
	return []byte(u)
}

// pk prints a key or value: printable bytes as they are, others escaped.
func pk(b []byte) string {
	if len(b) == 0 {
		return `""`
	}
	q := strconv.Quote(string(b))
	return q[1 : len(q)-1]
}

func rel(ns int64) string {
	return "+" + time.Unix(0, ns).Sub(t0).String()
}

// engineRecord prints an engine key and value (nil: deleted) by namespace.
func engineRecord(k, v []byte) string {
	if len(k) == 0 {
		return "<empty key>"
	}
	var name string
	switch k[0] {
	case nsData:
		name = "data/" + pk(k[1:])
	case nsChange:
		name = "change/" + pk(k[1:])
	case nsExpiry:
		if len(k) < 9 {
			return "bad expiry key " + pk(k)
		}
		name = "expiry/" + rel(int64(binary.BigEndian.Uint64(k[1:9]))) + "/" + pk(k[9:])
	default:
		name = "?" + pk(k)
	}
	if v == nil {
		return "del " + name
	}
	if k[0] != nsData {
		if len(v) != 0 {
			return "put " + name + " = " + pk(v) + " (unexpected value)"
		}
		return "put " + name
	}
	if len(v) == 0 {
		return "put " + name + " (no header)"
	}
	switch v[0] {
	case hdrPlain:
		return "put " + name + " = " + pk(v[1:])
	case hdrExpiring:
		if len(v) < 9 {
			return "put " + name + " (short expiring value)"
		}
		return "put " + name + " = " + pk(v[9:]) + " exp=" + rel(int64(binary.BigEndian.Uint64(v[1:9])))
	}
	return "put " + name + fmt.Sprintf(" (header %d)", v[0])
}

func errLine(err error) string { return "error: " + err.Error() }

func (h *harness) open(dir string) error {
	s, err := Open(dir, h.spec, h.clock)
	if err != nil {
		return err
	}
	h.s, h.dir = s, dir
	return nil
}

// flush calls Flush, checks that records come in strictly increasing key
// order, prints each with w and returns copies of them.
func (h *harness) flush(c *ddtest.Case, w func(string, ...any)) ([]store.Record, error) {
	var recs []store.Record
	err := h.s.Flush(func(k, v []byte) error {
		if n := len(recs); n > 0 && bytes.Compare(recs[n-1].Key, k) >= 0 {
			h.t.Errorf("line %d: flush: records not in strictly increasing key order: %q then %q", c.Line, recs[n-1].Key, k)
		}
		line := engineRecord(k, v)
		if f, ok := c.Opts["fail"]; ok && strings.Contains(line, f) {
			return fmt.Errorf("emit failed at %s", line)
		}
		w("%s", line)
		var vc []byte
		if v != nil {
			vc = bytes.Clone(v)
		}
		recs = append(recs, store.Record{Key: bytes.Clone(k), Value: vc})
		return nil
	})
	return recs, err
}

func (h *harness) run(c *ddtest.Case) string {
	t := h.t
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	need := func(n int) {
		if len(c.Args) < n {
			t.Fatalf("line %d: %s needs %d arguments", c.Line, c.Cmd, n)
		}
	}
	if h.s == nil && c.Cmd != "open" {
		t.Fatalf("line %d: no store: start with open", c.Line)
	}
	switch c.Cmd {
	case "open":
		// open [track] ttl=D buffer=N: a new, empty store.
		h.closeAll()
		h.spec = store.Spec{Name: "s", Engine: h.eng}
		for _, a := range c.Args {
			switch a {
			case "track":
				h.spec.TrackChanges = true
			default:
				t.Fatalf("line %d: open: unknown flag %q", c.Line, a)
			}
		}
		if v, ok := c.Opts["ttl"]; ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatal(err)
			}
			h.spec.TTL = d
		}
		if v, ok := c.Opts["buffer"]; ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			h.spec.WriteBuffer = n
		}
		h.now, h.log, h.logged, h.meta = t0, nil, 0, Meta{}
		if err := h.open(h.newDir()); err != nil {
			w("%s", errLine(err))
		}

	case "put":
		// put k [v] [k v]...; or input lines "k [v]". A missing value is nil.
		pairs := c.Args
		var lines [][]string
		if len(pairs) == 1 {
			lines = append(lines, pairs)
		}
		for i := 0; i+1 < len(pairs); i += 2 {
			lines = append(lines, pairs[i:i+2])
		}
		for _, in := range c.Input {
			lines = append(lines, strings.Fields(in))
		}
		for _, kv := range lines {
			var v []byte
			if len(kv) > 1 {
				v = key(kv[1])
			}
			if err := h.s.Put(key(kv[0]), v); err != nil {
				w("%s", errLine(err))
			}
		}

	case "put-all":
		var es []store.Entry
		for i := 0; i+1 < len(c.Args); i += 2 {
			es = append(es, store.Entry{Key: key(c.Args[i]), Value: key(c.Args[i+1])})
		}
		if err := h.s.PutAll(es); err != nil {
			w("%s", errLine(err))
		}

	case "delete":
		for _, k := range c.Args {
			if err := h.s.Delete(key(k)); err != nil {
				w("%s", errLine(err))
			}
		}

	case "get":
		for _, k := range c.Args {
			v, ok, err := h.s.Get(key(k))
			switch {
			case err != nil:
				w("%s: %s", k, errLine(err))
			case !ok:
				w("%s: <not found>", k)
				if v != nil {
					w("  (but value %q returned)", v)
				}
			case v == nil:
				w("%s: <nil value for a found key>", k)
			default:
				w("%s: %s", k, pk(v))
			}
		}

	case "range", "prefix":
		var it store.Iterator
		if c.Cmd == "range" {
			var start, end []byte
			if len(c.Args) > 0 {
				start = key(c.Args[0])
			}
			if len(c.Args) > 1 {
				end = key(c.Args[1])
			}
			it = h.s.Range(start, end)
		} else {
			need(1)
			it = h.s.Prefix(key(c.Args[0]))
		}
		n := 0
		var prev []byte
		for it.Next() {
			if n > 0 && bytes.Compare(prev, it.Key()) >= 0 {
				t.Errorf("line %d: keys out of order: %q then %q", c.Line, prev, it.Key())
			}
			prev = bytes.Clone(it.Key())
			w("%s: %s", pk(it.Key()), pk(it.Value()))
			n++
		}
		if err := it.Err(); err != nil {
			w("%s", errLine(err))
		} else if n == 0 {
			w("<empty>")
		}
		if err := it.Close(); err != nil {
			w("close: %s", errLine(err))
		}

	case "iter-open":
		// iter-open name range [start] [end] | iter-open name prefix p
		need(2)
		name := c.Args[0]
		var it store.Iterator
		switch c.Args[1] {
		case "range":
			var start, end []byte
			if len(c.Args) > 2 {
				start = key(c.Args[2])
			}
			if len(c.Args) > 3 {
				end = key(c.Args[3])
			}
			it = h.s.Range(start, end)
		case "prefix":
			need(3)
			it = h.s.Prefix(key(c.Args[2]))
		default:
			t.Fatalf("line %d: iter-open: range or prefix", c.Line)
		}
		h.iters[name] = it

	case "iter-next":
		// iter-next name [n]: advance n times (default 1), printing each entry.
		need(1)
		it := h.iters[c.Args[0]]
		if it == nil {
			t.Fatalf("line %d: no iterator %q", c.Line, c.Args[0])
		}
		n := 1
		if len(c.Args) > 1 {
			n, _ = strconv.Atoi(c.Args[1])
		}
		for i := 0; i < n; i++ {
			if !it.Next() {
				if err := it.Err(); err != nil {
					w("%s", errLine(err))
				} else {
					w("<end>")
				}
				break
			}
			w("%s: %s", pk(it.Key()), pk(it.Value()))
		}

	case "iter-close":
		need(1)
		it := h.iters[c.Args[0]]
		if it == nil {
			t.Fatalf("line %d: no iterator %q", c.Line, c.Args[0])
		}
		delete(h.iters, c.Args[0])
		if err := it.Close(); err != nil {
			w("%s", errLine(err))
		}
		// A closed iterator stays exhausted.
		if it.Next() {
			w("Next after Close returned true")
		}

	case "flush":
		// flush [fail=TEXT] [log]: prints the records Flush emits. With
		// fail, emit fails at the first record whose line contains TEXT.
		// With log, the records join the changelog uncommitted, as when a
		// task crashes between sending them and its checkpoint.
		recs, err := h.flush(c, w)
		if err != nil {
			w("%s", errLine(err))
		} else if len(recs) == 0 {
			w("<none>")
		}
		if c.HasArg("log") {
			h.log = append(h.log, recs...)
		}

	case "commit":
		// commit [id=N] [offset=N] [noflush]: the commit protocol: Flush,
		// whose records join the changelog (printed with verbose), then
		// Commit with the next checkpoint id and the last changelog offset
		// unless given. With noflush, Commit alone.
		if !c.HasArg("noflush") {
			quiet := func(string, ...any) {}
			if c.HasArg("verbose") {
				quiet = w
			}
			recs, err := h.flush(c, quiet)
			if err != nil {
				w("flush: %s", errLine(err))
				break
			}
			h.log = append(h.log, recs...)
		}
		m := Meta{CheckpointID: h.meta.CheckpointID + 1, Offset: int64(len(h.log)) - 1}
		if v, ok := c.Opts["id"]; ok {
			m.CheckpointID, _ = strconv.ParseUint(v, 10, 64)
		}
		if v, ok := c.Opts["offset"]; ok {
			m.Offset, _ = strconv.ParseInt(v, 10, 64)
		}
		if err := h.s.Commit(m); err != nil {
			w("%s", errLine(err))
			break
		}
		h.meta, h.logged = m, len(h.log)

	case "meta":
		m, ok, err := h.s.Meta()
		switch {
		case err != nil:
			w("%s", errLine(err))
		case !ok:
			w("<none>")
		default:
			w("id=%d offset=%d", m.CheckpointID, m.Offset)
		}

	case "advance":
		need(1)
		d, err := time.ParseDuration(c.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		h.now = h.now.Add(d)
		w("now %s", rel(h.now.UnixNano()))

	case "take-changes":
		// take-changes [limit] [fail=KEY]: fn fails on KEY.
		limit := 0
		if len(c.Args) > 0 {
			limit, _ = strconv.Atoi(c.Args[0])
		}
		n, err := h.s.TakeChanges(limit, func(k, v []byte) error {
			if f, ok := c.Opts["fail"]; ok && string(k) == f {
				return errors.New("fn failed at " + f)
			}
			if v == nil {
				w("%s: <absent>", pk(k))
			} else {
				w("%s: %s", pk(k), pk(v))
			}
			return nil
		})
		if err != nil {
			w("%s", errLine(err))
		}
		w("taken %d", n)

	case "engine":
		// engine: everything in the engine (not the buffered writes).
		it, err := h.s.eng.iter(nil, nil)
		if err != nil {
			w("%s", errLine(err))
			break
		}
		n := 0
		for ok := it.first(); ok; ok = it.next() {
			w("%s", strings.TrimPrefix(engineRecord(it.key(), it.value()), "put "))
			n++
		}
		if err := it.err(); err != nil {
			w("%s", errLine(err))
		}
		if err := it.close(); err != nil {
			w("%s", errLine(err))
		}
		if n == 0 {
			w("<empty>")
		}

	case "engine-value":
		// engine-value data|change KEY
		need(2)
		var ns byte
		switch c.Args[0] {
		case "data":
			ns = nsData
		case "change":
			ns = nsChange
		default:
			t.Fatalf("line %d: engine-value data|change KEY", c.Line)
		}
		k := append([]byte{ns}, key(c.Args[1])...)
		v, err := h.s.EngineValue(k)
		switch {
		case err != nil:
			w("%s", errLine(err))
		case v == nil:
			w("<none>")
		default:
			w("%s", strings.TrimPrefix(engineRecord(k, v), "put "))
		}

	case "buffered":
		w("buffered=%d full=%t", h.s.Buffered(), h.s.Full())

	case "stats":
		st := h.s.Stats()
		w("gets=%d puts=%d deletes=%d flushes=%d expired=%d restored=%d/%dB",
			st.Gets, st.Puts, st.Deletes, st.Flushes, st.Expired, st.RestoreRecords, st.RestoreBytes)

	case "close":
		if err := h.s.Close(); err != nil {
			w("%s", errLine(err))
		}

	case "reopen":
		// reopen: close and open the store's directory again. The Memory
		// engine keeps nothing: it reopens empty.
		if err := h.s.Close(); err != nil {
			w("close: %s", errLine(err))
		}
		if err := h.open(h.dir); err != nil {
			w("%s", errLine(err))
		}

	case "restore-into-fresh":
		// restore-into-fresh [batch=N]: a new store (new directory) gets
		// the committed part of the changelog through Restore, in batches
		// of N records, and FinishRestore with the last commit's Meta; it
		// then replaces the current store.
		old := h.s
		if err := h.open(h.newDir()); err != nil {
			w("%s", errLine(err))
			break
		}
		recs := h.log[:h.logged]
		batch := len(recs)
		if v, ok := c.Opts["batch"]; ok {
			batch, _ = strconv.Atoi(v)
		}
		for len(recs) > 0 {
			n := min(batch, len(recs))
			if err := h.s.Restore(recs[:n]); err != nil {
				w("%s", errLine(err))
			}
			recs = recs[n:]
		}
		if err := h.s.FinishRestore(h.meta, time.Second); err != nil {
			w("%s", errLine(err))
		}
		if err := old.Close(); err != nil {
			w("close old: %s", errLine(err))
		}
		w("restored %d records", h.logged)

	case "wipe":
		if err := h.s.Wipe(); err != nil {
			w("%s", errLine(err))
		}

	default:
		t.Fatalf("line %d: unknown command %q", c.Line, c.Cmd)
	}
	return b.String()
}
