package window

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
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
	// snapshots). The store must be declared with TrackChanges.
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
//	nsWindow: uvarint(len(key)) key start(8) -> end(8) accumulator
//	nsMeta:   "stream-time" -> 8 bytes
//
// Times are milliseconds, big endian with the sign bit flipped, so the
// windows of a key sort by start. The end lives in the value, so that a
// session growing in order overwrites its one key instead of deleting it
// and writing another.
const (
	nsMeta   = 0
	nsWindow = 1
)

var streamTimeKey = []byte{nsMeta, 's', 't', 'r', 'e', 'a', 'm', '-', 't', 'i', 'm', 'e'}

// noTime is stream time before any event.
const noTime = int64(-1 << 63)

// span is an open session of a key, in Aggregator.byKey.
type span struct {
	start, end int64
	k          string // store key
}

// track and untrack keep byKey in step with the open sessions.
func (a *Aggregator[K, V, A]) track(k []byte, start, end int64) {
	kb, _, _ := parseKey(k)
	a.byKey[string(kb)] = append(a.byKey[string(kb)], span{start, end, string(k)})
}

func (a *Aggregator[K, V, A]) untrack(k []byte) {
	kb, _, _ := parseKey(k)
	ss := a.byKey[string(kb)]
	for i, s := range ss {
		if s.k == string(k) {
			ss = append(ss[:i], ss[i+1:]...)
			break
		}
	}
	if len(ss) == 0 {
		delete(a.byKey, string(kb))
	} else {
		a.byKey[string(kb)] = ss
	}
}

// openWin is an open window in the index, ordered by when it closes.
type openWin struct {
	closeAt int64
	key     string // store key
}

func lessOpen(a, b openWin) bool {
	if a.closeAt != b.closeAt {
		return a.closeAt < b.closeAt
	}
	return a.key < b.key
}

// Aggregator folds events into event-time windows kept in a store, emits
// their values, and closes them when stream time passes their end plus the
// grace period. It is used from one task's calls: Add from Process, Flush
// from Window.
//
// Stream time is the largest event timestamp seen, kept in the store with
// the windows, so that it too is consistent with the task's checkpoint.
// Which windows are open depends on stream time only, never on when Flush
// runs: results are the same however processing is paced or interrupted
// (unless IdleTimeout is set).
//
// An in-memory index of open windows by closing time, rebuilt once when the
// aggregator is made, lets closing cost in proportion to the windows that
// close; periodic updates cost in proportion to the windows that changed
// (the store's change tracking). Neither scans the store.
type Aggregator[K, V, A any] struct {
	s     store.Store
	o     Options[K, V, A]
	index *btree.BTreeG[openWin]
	// byKey holds the open sessions of every key (session windows only), so
	// that an event finds the sessions it may join without a store scan.
	byKey map[string][]span
	st    int64 // stream time, ms
	// lastEvent is the processing time of the last Add, for IdleTimeout.
	lastEvent time.Time
	scratch   [][2]int64

	added, late, emitted, closed, merged atomic.Uint64
	open                                 atomic.Int64
}

// New returns an aggregator over s, which must be a store of this task
// used by nothing else. It scans s once to rebuild its index.
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
	if o.Keys == nil {
		o.Keys = stream.Msgpack[K]()
	}
	if o.Values == nil {
		o.Values = stream.Msgpack[A]()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &Aggregator[K, V, A]{s: s, o: o, index: btree.NewG(32, lessOpen), byKey: map[string][]span{}, st: noTime, lastEvent: o.Now()}
	if b, ok, err := s.Get(streamTimeKey); err != nil {
		return nil, err
	} else if ok && len(b) == 8 {
		a.st = int64(binary.BigEndian.Uint64(b))
	}
	it := s.Prefix([]byte{nsWindow})
	for it.Next() {
		_, start, end, _, err := decodeEntry(it.Key(), it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		a.index.ReplaceOrInsert(openWin{closeAt: a.closeAt(start, end), key: string(it.Key())})
		if a.o.Windows.Kind == KindSession {
			a.track(it.Key(), start, end)
		}
	}
	if err := errors.Join(it.Err(), it.Close()); err != nil {
		return nil, err
	}
	a.open.Store(int64(a.index.Len()))
	return a, nil
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

func storeKey(kb []byte, start int64) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(kb)+8)
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

// decodeEntry splits a window's store entry into its encoded key, bounds
// and encoded accumulator.
func decodeEntry(k, v []byte) (kb []byte, start, end int64, acc []byte, err error) {
	kb, start, err = parseKey(k)
	if err != nil {
		return nil, 0, 0, nil, err
	}
	if len(v) < 8 {
		return nil, 0, 0, nil, fmt.Errorf("window: malformed window value of %q", k)
	}
	return kb, start, int64(binary.BigEndian.Uint64(v) ^ (1 << 63)), v[8:], nil
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

// get returns the end and accumulator of the window stored at k.
func (a *Aggregator[K, V, A]) get(k []byte) (int64, A, error) {
	var acc A
	b, ok, err := a.s.Get(k)
	if err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("window: window %q missing from the store", k)
		}
		return 0, acc, err
	}
	_, _, end, ab, err := decodeEntry(k, b)
	if err != nil {
		return 0, acc, err
	}
	acc, err = a.o.Values.Decode(ab)
	return end, acc, err
}

func (a *Aggregator[K, V, A]) put(k []byte, end int64, acc A) error {
	b, err := a.o.Values.Encode(acc)
	if err != nil {
		return fmt.Errorf("window: encode accumulator: %w", err)
	}
	v := make([]byte, 8, 8+len(b))
	binary.BigEndian.PutUint64(v, flip(end))
	return a.s.Put(k, append(v, b...))
}

// Add folds an event of key at ts into its windows. An event too late for
// any open window goes to late when it is non-nil, and is otherwise
// dropped; either way it is counted. Windows that close because the event
// advanced stream time are emitted (Final) to emit and deleted.
func (a *Aggregator[K, V, A]) Add(key K, value V, ts time.Time, emit EmitFunc[K, A], late LateFunc[K, V]) error {
	kb, err := a.o.Keys.Encode(key)
	if err != nil {
		return fmt.Errorf("window: encode key: %w", err)
	}
	t := ms(ts)
	a.lastEvent = a.o.Now()
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
		if err := a.s.Put(streamTimeKey, binary.BigEndian.AppendUint64(nil, uint64(t))); err != nil {
			return err
		}
		return a.closeDue(a.st, emit)
	}
	return nil
}

func (a *Aggregator[K, V, A]) addTimed(key K, kb []byte, value V, t int64) (bool, error) {
	a.scratch = a.o.Windows.assign(t, a.scratch[:0])
	accepted := false
	for _, w := range a.scratch {
		if !a.isOpen(w[0], w[1]) {
			continue
		}
		accepted = true
		k := storeKey(kb, w[0])
		b, ok, err := a.s.Get(k)
		if err != nil {
			return false, err
		}
		var acc A
		if ok {
			_, _, _, ab, err := decodeEntry(k, b)
			if err != nil {
				return false, err
			}
			if acc, err = a.o.Values.Decode(ab); err != nil {
				return false, err
			}
		} else {
			if a.o.Init != nil {
				acc = a.o.Init(key, Window{fromMS(w[0]), fromMS(w[1])})
			}
			a.index.ReplaceOrInsert(openWin{closeAt: a.closeAt(w[0], w[1]), key: string(k)})
			a.open.Add(1)
		}
		if err := a.put(k, w[1], a.o.Add(acc, value, fromMS(t))); err != nil {
			return false, err
		}
	}
	return accepted, nil
}

func (a *Aggregator[K, V, A]) addSession(key K, kb []byte, value V, t int64) (bool, error) {
	gap := a.o.Windows.Gap.Milliseconds()
	// The open sessions of this key that the event joins: those it falls
	// within gap of. There are few sessions per key.
	type sess struct {
		k          []byte
		start, end int64
	}
	var joined []sess
	for _, sp := range a.byKey[string(kb)] {
		if !a.isOpen(sp.start, sp.end) || t < sp.start-gap || t > sp.end+gap {
			continue
		}
		joined = append(joined, sess{[]byte(sp.k), sp.start, sp.end})
	}
	// Merge in order of start, as the store orders a key's sessions.
	slices.SortFunc(joined, func(x, y sess) int { return bytes.Compare(x.k, y.k) })
	start, end := t, t
	if len(joined) == 0 && !a.isOpen(t, t) {
		return false, nil // a new session that would already be closed
	}
	var acc A
	if len(joined) == 0 && a.o.Init != nil {
		acc = a.o.Init(key, Window{fromMS(t), fromMS(t)})
	}
	for i, s := range joined {
		_, prev, err := a.get(s.k)
		if err != nil {
			return false, err
		}
		if i == 0 {
			acc = prev
		} else {
			acc = a.o.Merge(acc, prev)
			a.merged.Add(1)
		}
		start, end = min(start, s.start), max(end, s.end)
	}
	acc = a.o.Add(acc, value, fromMS(t))
	k := storeKey(kb, start)
	for _, s := range joined {
		a.index.Delete(openWin{closeAt: a.closeAt(s.start, s.end), key: string(s.k)})
		a.untrack(s.k)
		a.open.Add(-1)
		if !bytes.Equal(s.k, k) {
			if err := a.s.Delete(s.k); err != nil {
				return false, err
			}
		}
	}
	a.index.ReplaceOrInsert(openWin{closeAt: a.closeAt(start, end), key: string(k)})
	a.track(k, start, end)
	a.open.Add(1)
	return true, a.put(k, end, acc)
}

// closeDue emits and deletes every window that closes at stream time st.
func (a *Aggregator[K, V, A]) closeDue(st int64, emit EmitFunc[K, A]) error {
	for {
		w, ok := a.index.Min()
		if !ok || w.closeAt > st {
			return nil
		}
		k := []byte(w.key)
		end, acc, err := a.get(k)
		if err != nil {
			return err
		}
		if err := a.emit(k, end, acc, true, emit); err != nil {
			return err
		}
		if err := a.s.Delete(k); err != nil {
			return err
		}
		a.index.DeleteMin()
		if a.o.Windows.Kind == KindSession {
			a.untrack(k)
		}
		a.open.Add(-1)
		a.closed.Add(1)
	}
}

func (a *Aggregator[K, V, A]) emit(k []byte, end int64, acc A, final bool, emit EmitFunc[K, A]) error {
	kb, start, err := parseKey(k)
	if err != nil {
		return err
	}
	key, err := a.o.Keys.Decode(kb)
	if err != nil {
		return fmt.Errorf("window: decode key: %w", err)
	}
	a.emitted.Add(1)
	if emit == nil {
		return nil
	}
	return emit(Emit[K, A]{Key: key, Window: Window{fromMS(start), fromMS(end)}, Value: acc, Final: final})
}

// Flush closes the windows that are due (by stream time, or by the wall
// clock when IdleTimeout is set and no event came for that long), then,
// with EmitUpdates, emits every open window changed since the last Flush.
// Call it from the task's Window.
func (a *Aggregator[K, V, A]) Flush(emit EmitFunc[K, A]) error {
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
	if !a.o.EmitUpdates {
		return nil
	}
	_, err := a.s.TakeChanges(0, func(k, v []byte) error {
		if v == nil || len(k) == 0 || k[0] != nsWindow {
			return nil // deleted, closed, or not a window
		}
		_, _, end, ab, err := decodeEntry(k, v)
		if err != nil {
			return err
		}
		acc, err := a.o.Values.Decode(ab)
		if err != nil {
			return err
		}
		return a.emit(k, end, acc, false, emit)
	})
	return err
}
