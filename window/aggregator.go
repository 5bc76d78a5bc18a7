package window

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/btree"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// Emit is a window's value handed to the emit function: a periodic update
// of an open window (Final false) or the last value of a window that
// closed (Final true), after which its state is deleted.
type Emit[K, A any] struct {
	Key    K
	Window Window
	Value  A
	Final  bool
}

// Options configure an Aggregator. Add is required; so is Merge for
// session windows.
type Options[K, V, A any] struct {
	// Windows assigns events to windows.
	Windows Spec
	// Grace is how long after a window's end (a session's last event plus
	// Gap) it stays open for out-of-order events, in stream time.
	Grace time.Duration
	// Keys encodes keys. It must be deterministic: equal keys must encode
	// to equal bytes. Default: msgpack.
	Keys stream.Serde[K]
	// Values encodes accumulators in the store. Default: msgpack.
	Values stream.Serde[A]
	// Init returns the accumulator of a new window; default the zero A.
	Init func(key K, w Window) A
	// Add folds one event into an accumulator.
	Add func(acc A, value V, ts time.Time) A
	// Merge combines the accumulators of two sessions that an event
	// bridged. Required for session windows.
	Merge func(a, b A) A
	// EmitUpdates makes Flush emit, as non-final updates, every open window
	// changed since the previous Flush (Optimizely's periodic session
	// snapshots).
	EmitUpdates bool
	// IdleTimeout, when positive, closes windows of a partition that
	// received no event for that long of processing time, as if stream time
	// had advanced with the wall clock since the last event.
	IdleTimeout time.Duration
	// Now is the processing-time clock for IdleTimeout; default time.Now.
	Now func() time.Time
}

// EmitFunc receives emitted windows.
type EmitFunc[K, A any] func(Emit[K, A]) error

// LateFunc receives events too late for any open window, when the task
// wants them (e.g. to send them to a side output). Without one they are
// dropped and counted.
type LateFunc[K, V any] func(key K, value V, ts time.Time) error

// Stats are an aggregator's counters.
type Stats struct {
	Added   uint64 // events folded into windows
	Late    uint64 // events later than the grace period
	Emitted uint64 // updates and finals emitted
	Closed  uint64 // windows closed (final emitted, state deleted)
	Merged  uint64 // sessions merged into others
	Open    int    // windows open now
}

// Store layout: one namespace byte, then:
//
//	nsWindow: uvarint(len(key)) key start(8) -> layout(1) last(8) uvarint(gen) accumulator
//	nsMeta:   "stream-time" -> 8 bytes: stream time, when IdleTimeout moved it
//	nsMeta:   "updates" -> 8 bytes: how many Flushes emitted updates
//
// Times are milliseconds, big endian with the sign bit flipped, so the
// windows of a key sort by start. Besides its accumulator, a window's
// value holds:
//
//   - last, its latest event (a session's end). The end is not in the key,
//     so that a session growing in order overwrites its one key. And stream
//     time is not written with every event: the window of the latest event
//     is always open, so stream time is the largest last of the windows, or
//     the stored stream time when IdleTimeout moved it further.
//   - gen, the "updates" count when the window last changed: the windows
//     changed since the last Flush are those of the current count, and a
//     Flush marks them all unchanged by writing one key.
const (
	nsMeta   = 0
	nsWindow = 1
)

// windowLayout is the first byte of a window's value. The values of the
// earlier layout, which began with the end, are refused, not misread.
const windowLayout = 2

var (
	streamTimeKey = []byte{nsMeta, 's', 't', 'r', 'e', 'a', 'm', '-', 't', 'i', 'm', 'e'}
	updatesKey    = []byte{nsMeta, 'u', 'p', 'd', 'a', 't', 'e', 's'}
)

// noTime is stream time before any event.
const noTime = int64(-1 << 63)

// win is an open window in the aggregator's index.
type win struct {
	key        string // encoded key
	start, end int64  // ms
	// at is when its entry in the index says it closes: closeAt(start,
	// end), or earlier for a session that grew since it was placed there
	// (closeDue moves it when it gets there).
	at int64
	// next is the key's window that starts before this one.
	next *win
	// changed since the last Flush: it is in Aggregator.changed.
	changed bool
}

// lessWin orders the index by closing time, then as the store orders
// windows.
func lessWin(a, b *win) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return storeOrder(a, b) < 0
}

// storeOrder compares windows as their store keys sort.
func storeOrder(a, b *win) int {
	if len(a.key) != len(b.key) {
		return cmp.Compare(len(a.key), len(b.key))
	}
	if c := strings.Compare(a.key, b.key); c != 0 {
		return c
	}
	return cmp.Compare(a.start, b.start)
}

// Aggregator folds events into event-time windows kept in a store, emits
// their values, and closes them when stream time passes their end plus the
// grace period. It is used from one task's calls: Add from Process, Flush
// from Window.
//
// Stream time is the largest event timestamp seen. It is known from the
// windows in the store (see the store layout), so that it too is
// consistent with the task's checkpoint. Which windows are open depends on
// stream time only, never on when Flush runs: results are the same however
// processing is paced or interrupted (unless IdleTimeout is set).
//
// An in-memory index of the open windows, by key and by closing time,
// rebuilt once when the aggregator is made, lets an event find its windows
// without a store scan, and closing cost in proportion to the windows that
// close; periodic updates cost in proportion to the windows that changed.
type Aggregator[K, V, A any] struct {
	s     store.Store
	o     Options[K, V, A]
	index *btree.BTreeG[*win]
	// byKey holds the open windows of every encoded key, latest start
	// first, chained by win.next.
	byKey map[string]*win
	// changed holds the windows changed since the last Flush (with
	// EmitUpdates), and windows since closed, whose changed is false.
	changed []*win
	gen     uint64 // Flushes that emitted updates
	st      int64  // stream time, ms
	// lastEvent is the processing time of the last Add, for IdleTimeout.
	lastEvent time.Time
	// Scratch space.
	assigned   [][2]int64
	joined     []*win
	kbuf, vbuf []byte

	added, late, emitted, closed, merged atomic.Uint64
	open                                 atomic.Int64

	// rb tells when the store took back writes (a failed Process): the
	// aggregator then rebuilds its memory from the store.
	rb store.RollbackCounter
	// rbSeen is rb's count when the memory was last in step.
	rbSeen uint64
}

// New returns an aggregator over s, which must be a store of this task
// used by nothing else, declared without TrackChanges (the aggregator
// tracks the windows that changed itself). It scans s once to rebuild its
// index.
func New[K, V, A any](s store.Store, o Options[K, V, A]) (*Aggregator[K, V, A], error) {
	if err := o.Windows.Validate(); err != nil {
		return nil, err
	}
	if o.Add == nil {
		return nil, errors.New("window: Options.Add is nil")
	}
	if o.Windows.Kind == KindSession && o.Merge == nil {
		return nil, errors.New("window: session windows need Options.Merge")
	}
	if o.Grace < 0 || o.IdleTimeout < 0 {
		return nil, errors.New("window: Grace and IdleTimeout must not be negative")
	}
	if o.Grace%time.Millisecond != 0 {
		return nil, fmt.Errorf("window: Grace %v is not a whole number of milliseconds (event time has millisecond precision)", o.Grace)
	}
	if _, ok := s.(store.ChangeTracker); ok {
		return nil, fmt.Errorf("window: store %q tracks changes, which no one would take: declare it without TrackChanges", s.Name())
	}
	if o.Keys == nil {
		o.Keys = stream.Msgpack[K]()
	}
	if o.Values == nil {
		o.Values = stream.Msgpack[A]()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &Aggregator[K, V, A]{s: s, o: o, lastEvent: o.Now()}
	if rb, ok := s.(store.RollbackCounter); ok {
		a.rb, a.rbSeen = rb, rb.Rollbacks()
	}
	if err := a.load(); err != nil {
		return nil, err
	}
	return a, nil
}

// load builds the aggregator's memory (index, stream time, changed
// windows) from the store.
func (a *Aggregator[K, V, A]) load() error {
	a.index, a.byKey, a.changed, a.st, a.gen = btree.NewG(32, lessWin), map[string]*win{}, nil, noTime, 0
	a.open.Store(0)
	if b, ok, err := a.s.Get(streamTimeKey); err != nil {
		return err
	} else if ok && len(b) == 8 {
		a.st = int64(binary.BigEndian.Uint64(b))
	}
	if b, ok, err := a.s.Get(updatesKey); err != nil {
		return err
	} else if ok && len(b) == 8 {
		a.gen = binary.BigEndian.Uint64(b)
	}
	it := a.s.Prefix([]byte{nsWindow})
	for it.Next() {
		kb, start, last, gen, _, err := decodeEntry(it.Key(), it.Value())
		if err != nil {
			it.Close()
			return err
		}
		w := &win{key: a.keyString(kb), start: start, end: a.end(start, last)}
		a.insert(w)
		if a.st == noTime || last > a.st {
			a.st = last
		}
		if a.o.EmitUpdates && gen == a.gen {
			a.markChanged(w)
		}
	}
	return errors.Join(it.Err(), it.Close())
}

// sync rebuilds the aggregator's memory when the store took back writes
// since it was last in step: a failed Process rolls back the task's stores
// (not this memory), and the task may go on (Skip or DeadLetter).
func (a *Aggregator[K, V, A]) sync() error {
	if a.rb == nil {
		return nil
	}
	if n := a.rb.Rollbacks(); n != a.rbSeen {
		if err := a.load(); err != nil {
			return err
		}
		a.rbSeen = n
	}
	return nil
}

// keyString returns kb as a string, shared with the key's other windows.
func (a *Aggregator[K, V, A]) keyString(kb []byte) string {
	if w := a.byKey[string(kb)]; w != nil {
		return w.key
	}
	return string(kb)
}

// end returns the end of a window that starts at start and whose latest
// event is at last.
func (a *Aggregator[K, V, A]) end(start, last int64) int64 {
	if a.o.Windows.Kind == KindSession {
		return last
	}
	return start + a.o.Windows.Size.Milliseconds()
}

// insert adds a new window to the index and to its key's windows.
func (a *Aggregator[K, V, A]) insert(w *win) {
	w.at = a.closeAt(w.start, w.end)
	a.index.ReplaceOrInsert(w)
	a.open.Add(1)
	p := a.byKey[w.key]
	if p == nil || w.start > p.start {
		w.next = p
		a.byKey[w.key] = w
		return
	}
	for p.next != nil && p.next.start > w.start {
		p = p.next
	}
	w.next, p.next = p.next, w
}

// remove takes a window out of the index and its key's windows.
func (a *Aggregator[K, V, A]) remove(w *win) {
	a.index.Delete(w)
	a.open.Add(-1)
	w.changed = false
	if p := a.byKey[w.key]; p == w {
		if w.next == nil {
			delete(a.byKey, w.key)
		} else {
			a.byKey[w.key] = w.next
		}
	} else {
		for p.next != w {
			p = p.next
		}
		p.next = w.next
	}
	w.next = nil
}

// markChanged records that w changed since the last Flush.
func (a *Aggregator[K, V, A]) markChanged(w *win) {
	if a.o.EmitUpdates && !w.changed {
		w.changed = true
		a.changed = append(a.changed, w)
	}
}

// closeAt is the stream time at which a window closes.
func (a *Aggregator[K, V, A]) closeAt(start, end int64) int64 {
	g := a.o.Grace.Milliseconds()
	if a.o.Windows.Kind == KindSession {
		return end + a.o.Windows.Gap.Milliseconds() + g
	}
	return end + g
}

// isOpen reports whether a window is still open at stream time st. A
// window whose time has passed counts as closed even before Flush deletes
// it, so that results never depend on when Flush runs.
func (a *Aggregator[K, V, A]) isOpen(start, end int64) bool {
	return a.st == noTime || a.closeAt(start, end) > a.st
}

func flip(v int64) uint64 { return uint64(v) ^ (1 << 63) }

// storeKey appends the store key of the window of key kb that starts at
// start to b.
func storeKey(b []byte, kb string, start int64) []byte {
	b = append(b, nsWindow)
	b = binary.AppendUvarint(b, uint64(len(kb)))
	b = append(b, kb...)
	return binary.BigEndian.AppendUint64(b, flip(start))
}

func parseKey(k []byte) (kb []byte, start int64, err error) {
	if len(k) < 1 || k[0] != nsWindow {
		return nil, 0, fmt.Errorf("window: not a window key: %q", k)
	}
	n, w := binary.Uvarint(k[1:])
	if w <= 0 || uint64(len(k)-1-w) != n+8 {
		return nil, 0, fmt.Errorf("window: malformed window key %q", k)
	}
	kb = k[1+w : 1+w+int(n)]
	start = int64(binary.BigEndian.Uint64(k[1+w+int(n):]) ^ (1 << 63))
	return kb, start, nil
}

// decodeEntry splits a window's store entry into its encoded key, start,
// latest event, generation and encoded accumulator.
func decodeEntry(k, v []byte) (kb []byte, start, last int64, gen uint64, acc []byte, err error) {
	kb, start, err = parseKey(k)
	if err != nil {
		return nil, 0, 0, 0, nil, err
	}
	last, gen, acc, err = decodeValue(k, v)
	return kb, start, last, gen, acc, err
}

func decodeValue(k, v []byte) (last int64, gen uint64, acc []byte, err error) {
	if len(v) < 10 || v[0] != windowLayout {
		return 0, 0, nil, fmt.Errorf("window: value of window %q has an unknown layout", k)
	}
	gen, n := binary.Uvarint(v[9:])
	if n <= 0 {
		return 0, 0, nil, fmt.Errorf("window: malformed value of window %q", k)
	}
	return int64(binary.BigEndian.Uint64(v[1:]) ^ (1 << 63)), gen, v[9+n:], nil
}

// StreamTime is the largest event timestamp seen (zero before any event).
func (a *Aggregator[K, V, A]) StreamTime() time.Time {
	if a.st == noTime {
		return time.Time{}
	}
	return fromMS(a.st)
}

// Stats returns the aggregator's counters; safe from any goroutine.
func (a *Aggregator[K, V, A]) Stats() Stats {
	return Stats{
		Added: a.added.Load(), Late: a.late.Load(), Emitted: a.emitted.Load(),
		Closed: a.closed.Load(), Merged: a.merged.Load(), Open: int(a.open.Load()),
	}
}

// get returns the latest event and the accumulator of window w.
func (a *Aggregator[K, V, A]) get(w *win) (int64, A, error) {
	var acc A
	a.kbuf = storeKey(a.kbuf[:0], w.key, w.start)
	b, ok, err := a.s.Get(a.kbuf)
	if err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("window: window %q missing from the store", a.kbuf)
		}
		return 0, acc, err
	}
	last, _, ab, err := decodeValue(a.kbuf, b)
	if err != nil {
		return 0, acc, err
	}
	acc, err = a.o.Values.Decode(ab)
	return last, acc, err
}

// put writes window w, whose latest event is at last, and marks it changed.
func (a *Aggregator[K, V, A]) put(w *win, last int64, acc A) error {
	b, err := a.o.Values.Encode(acc)
	if err != nil {
		return fmt.Errorf("window: encode accumulator: %w", err)
	}
	a.vbuf = binary.BigEndian.AppendUint64(append(a.vbuf[:0], windowLayout), flip(last))
	a.vbuf = append(binary.AppendUvarint(a.vbuf, a.gen), b...)
	a.kbuf = storeKey(a.kbuf[:0], w.key, w.start)
	a.markChanged(w)
	return a.s.Put(a.kbuf, a.vbuf)
}

// del deletes window w from the store.
func (a *Aggregator[K, V, A]) del(w *win) error {
	a.kbuf = storeKey(a.kbuf[:0], w.key, w.start)
	return a.s.Delete(a.kbuf)
}

// Add folds an event of key at ts into its windows. An event too late for
// any open window goes to late when it is non-nil, and is otherwise
// dropped; either way it is counted. Windows that close because the event
// advanced stream time are emitted (Final) to emit and deleted.
func (a *Aggregator[K, V, A]) Add(key K, value V, ts time.Time, emit EmitFunc[K, A], late LateFunc[K, V]) error {
	if err := a.sync(); err != nil {
		return err
	}
	kb, err := a.o.Keys.Encode(key)
	if err != nil {
		return fmt.Errorf("window: encode key: %w", err)
	}
	t := ms(ts)
	if a.o.IdleTimeout > 0 {
		a.lastEvent = a.o.Now()
	}
	var accepted bool
	if a.o.Windows.Kind == KindSession {
		accepted, err = a.addSession(key, kb, value, t)
	} else {
		accepted, err = a.addTimed(key, kb, value, t)
	}
	if err != nil {
		return err
	}
	if !accepted {
		a.late.Add(1)
		if late != nil {
			if err := late(key, value, ts); err != nil {
				return err
			}
		}
	} else {
		a.added.Add(1)
	}
	if a.st == noTime || t > a.st {
		a.st = t
		return a.closeDue(a.st, emit)
	}
	return nil
}

func (a *Aggregator[K, V, A]) addTimed(key K, kb []byte, value V, t int64) (bool, error) {
	a.assigned = a.o.Windows.assign(t, a.assigned[:0])
	accepted := false
	for _, span := range a.assigned {
		if !a.isOpen(span[0], span[1]) {
			continue
		}
		accepted = true
		w := a.byKey[string(kb)]
		for w != nil && w.start > span[0] {
			w = w.next
		}
		var acc A
		last := t
		found := w != nil && w.start == span[0]
		if found {
			l, prev, err := a.get(w)
			if err != nil {
				return false, err
			}
			acc, last = prev, max(l, t)
		} else if a.o.Init != nil {
			acc = a.o.Init(key, Window{fromMS(span[0]), fromMS(span[1])})
		}
		acc = a.o.Add(acc, value, fromMS(t))
		if !found {
			w = &win{key: a.keyString(kb), start: span[0], end: span[1]}
			a.insert(w)
		}
		if err := a.put(w, last, acc); err != nil {
			return false, err
		}
	}
	return accepted, nil
}

func (a *Aggregator[K, V, A]) addSession(key K, kb []byte, value V, t int64) (bool, error) {
	gap := a.o.Windows.Gap.Milliseconds()
	// The open sessions of this key that the event joins: those it falls
	// within gap of. There are few sessions per key.
	a.joined = a.joined[:0]
	for w := a.byKey[string(kb)]; w != nil; w = w.next {
		if a.isOpen(w.start, w.end) && t >= w.start-gap && t <= w.end+gap {
			a.joined = append(a.joined, w)
		}
	}
	if len(a.joined) == 0 {
		if !a.isOpen(t, t) {
			return false, nil // a new session that would already be closed
		}
		var acc A
		if a.o.Init != nil {
			acc = a.o.Init(key, Window{fromMS(t), fromMS(t)})
		}
		acc = a.o.Add(acc, value, fromMS(t))
		w := &win{key: a.keyString(kb), start: t, end: t}
		a.insert(w)
		return true, a.put(w, t, acc)
	}
	// Merge in order of start, as the store orders a key's sessions.
	slices.Reverse(a.joined)
	var acc A
	start, end := t, t
	for i, w := range a.joined {
		_, prev, err := a.get(w)
		if err != nil {
			return false, err
		}
		if i == 0 {
			acc = prev
		} else {
			acc = a.o.Merge(acc, prev)
			a.merged.Add(1)
		}
		start, end = min(start, w.start), max(end, w.end)
	}
	acc = a.o.Add(acc, value, fromMS(t))
	// The first session takes in the others.
	w := a.joined[0]
	for _, o := range a.joined[1:] {
		a.remove(o)
		if err := a.del(o); err != nil {
			return false, err
		}
	}
	if start != w.start {
		// Its store key moves, and so does its place among the windows
		// that close when it does.
		if err := a.del(w); err != nil {
			return false, err
		}
		a.index.Delete(w)
		w.start, w.end = start, end
		w.at = a.closeAt(start, end)
		a.index.ReplaceOrInsert(w)
	} else {
		// It closes later than its place in the index says: closeDue
		// moves it when it gets there.
		w.end = end
	}
	return true, a.put(w, end, acc)
}

// closeDue emits and deletes every window that closes at stream time st.
func (a *Aggregator[K, V, A]) closeDue(st int64, emit EmitFunc[K, A]) error {
	for {
		w, ok := a.index.Min()
		if !ok || w.at > st {
			return nil
		}
		if c := a.closeAt(w.start, w.end); c != w.at {
			// A session that grew since it was placed.
			a.index.DeleteMin()
			w.at = c
			a.index.ReplaceOrInsert(w)
			continue
		}
		_, acc, err := a.get(w)
		if err != nil {
			return err
		}
		if err := a.emit(w, acc, true, emit); err != nil {
			return err
		}
		if err := a.del(w); err != nil {
			return err
		}
		a.remove(w)
		a.closed.Add(1)
	}
}

func (a *Aggregator[K, V, A]) emit(w *win, acc A, final bool, emit EmitFunc[K, A]) error {
	key, err := a.o.Keys.Decode([]byte(w.key))
	if err != nil {
		return fmt.Errorf("window: decode key: %w", err)
	}
	a.emitted.Add(1)
	if emit == nil {
		return nil
	}
	return emit(Emit[K, A]{Key: key, Window: Window{fromMS(w.start), fromMS(w.end)}, Value: acc, Final: final})
}

// Flush closes the windows that are due (by stream time, or by the wall
// clock when IdleTimeout is set and no event came for that long), then,
// with EmitUpdates, emits every open window changed since the last Flush,
// in the order the store keeps them. Call it from the task's Window.
func (a *Aggregator[K, V, A]) Flush(emit EmitFunc[K, A]) error {
	if err := a.sync(); err != nil {
		return err
	}
	st := a.st
	if a.o.IdleTimeout > 0 && st != noTime {
		now := a.o.Now()
		if idle := now.Sub(a.lastEvent); idle >= a.o.IdleTimeout {
			// Advance stream time for real: a window closed by the wall
			// clock must stay closed, or a later event would re-create
			// it and emit a second, partial final.
			st += idle.Milliseconds()
			a.st, a.lastEvent = st, now
			if err := a.s.Put(streamTimeKey, binary.BigEndian.AppendUint64(nil, uint64(st))); err != nil {
				return err
			}
		}
	}
	if st != noTime {
		if err := a.closeDue(st, emit); err != nil {
			return err
		}
	}
	// Windows closed since they changed are gone.
	a.changed = slices.DeleteFunc(a.changed, func(w *win) bool { return !w.changed })
	if len(a.changed) == 0 {
		return nil
	}
	slices.SortFunc(a.changed, storeOrder)
	for _, w := range a.changed {
		_, acc, err := a.get(w)
		if err != nil {
			return err
		}
		if err := a.emit(w, acc, false, emit); err != nil {
			return err // the next Flush emits the rest
		}
		w.changed = false
	}
	clear(a.changed)
	a.changed = a.changed[:0]
	// The windows written from now on are the changed ones.
	a.gen++
	return a.s.Put(updatesKey, binary.BigEndian.AppendUint64(nil, a.gen))
}
