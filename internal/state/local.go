package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/grete-go/grete/store"
	"os"
	"sync/atomic"
	"time"

	"github.com/google/btree"
)

// Engine keys begin with a namespace byte. The changelog carries engine
// keys and values as they are, so everything in these namespaces (change
// markers and the TTL index too) survives a crash with the data.
const (
	nsData   = 'd' // 'd' + key -> header + value
	nsChange = 'c' // 'c' + key -> "" : key changed since last taken
	nsExpiry = 'x' // 'x' + expiry (8 bytes, big endian ns) + key -> ""
)

// Value headers.
const (
	hdrPlain    = 0 // followed by the value
	hdrExpiring = 1 // followed by 8 bytes of expiry (Unix ns, big endian), then the value
)

// Meta is what a store's engine records about the checkpoint its data
// matches: written atomically with the data at every commit.
type Meta struct {
	CheckpointID uint64
	// Offset is the last changelog offset the data includes (-1 none).
	Offset int64
}

func (m Meta) encode() []byte {
	b := make([]byte, 17)
	b[0] = 1 // format version
	binary.BigEndian.PutUint64(b[1:], m.CheckpointID)
	binary.BigEndian.PutUint64(b[9:], uint64(m.Offset))
	return b
}

func decodeMeta(b []byte) (Meta, error) {
	if len(b) == 0 {
		return Meta{}, errors.New("store: empty metadata")
	}
	if len(b) != 17 || b[0] != 1 {
		return Meta{}, fmt.Errorf("store: metadata of unknown format (version %d, %d bytes)", b[0], len(b))
	}
	return Meta{CheckpointID: binary.BigEndian.Uint64(b[1:]), Offset: int64(binary.BigEndian.Uint64(b[9:]))}, nil
}

// Local is a task's store: an engine plus the writes buffered since the
// last commit. Reads see buffered writes; buffered writes reach the engine
// only through Commit, after their changelog records are acknowledged and
// the checkpoint is written, so the engine is never ahead of the
// checkpoint.
//
// Task code sees a Local through View, as a store.Store. The other
// exported methods are the commit and restore protocol, driven by the
// task loop.
type Local struct {
	spec store.Spec
	dir  string
	eng  engine
	buf  *writeBuffer
	// kbuf and vbuf are scratch space for the engine key and value of a
	// write: the buffer keeps copies.
	kbuf, vbuf []byte
	// marks mirrors the change markers the engine holds (TrackChanges):
	// TakeChanges reads them here, never iterating the engine's marker
	// range, where taken markers linger as tombstones until compaction.
	marks    *btree.BTreeG[string]
	now      func() time.Time
	closed   bool
	readOnly bool // opened by OpenReadOnly: writes fail
	// undo records what each write since Savepoint replaced in the
	// entries buffered before it (spLen of them), so that Rollback can
	// take back the writes of a failed message.
	undo      []undoEntry
	undoOn    bool
	spLen     int
	rollbacks uint64 // Rollbacks that took back writes
	// restoring gathers replayed records (restoringBytes of them) until
	// the engine takes them.
	restoring      []write
	restoringBytes int

	gets, puts, dels, flushes, expired atomic.Uint64
	flushNs                            atomic.Int64
	restRecs, restBytes                atomic.Uint64
	restNs                             atomic.Int64
}

// Open opens the store of spec in dir (ignored by the Memory engine).
// now is the clock for TTLs; nil means time.Now.
func Open(dir string, spec store.Spec, now func() time.Time) (*Local, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if spec.WriteBuffer == 0 {
		spec.WriteBuffer = store.DefaultWriteBuffer
	}
	if now == nil {
		now = time.Now
	}
	l := &Local{spec: spec, dir: dir, now: now, buf: newWriteBuffer()}
	if err := l.openEngine(); err != nil {
		return nil, err
	}
	return l, nil
}

// OpenReadOnly opens the Pebble store of spec in dir as it is on disk, for
// inspection: its writes fail with store.ErrReadOnly, and nothing on disk
// changes. The directory must not be open elsewhere (a running job holds
// its stores).
func OpenReadOnly(dir string, spec store.Spec) (*Local, error) {
	if spec.Engine == store.Memory {
		return nil, fmt.Errorf("store %q keeps its data in memory: there is nothing on disk to open", spec.Name)
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("store %q: %w", spec.Name, err)
	}
	l := &Local{spec: spec, dir: dir, now: time.Now, buf: newWriteBuffer(), readOnly: true}
	if err := l.openEngine(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Local) openEngine() error {
	if l.spec.Engine == store.Memory {
		l.eng = newMemEngine()
	} else {
		if err := os.MkdirAll(l.dir, 0o755); err != nil && !l.readOnly {
			return fmt.Errorf("store %q: %w", l.spec.Name, err)
		}
		e, err := openPebble(l.dir, l.spec, l.readOnly)
		if err != nil {
			return err
		}
		l.eng = e
	}
	if !l.spec.TrackChanges {
		return nil
	}
	l.marks = btree.NewG(32, func(a, b string) bool { return a < b })
	it, err := l.eng.iter([]byte{nsChange}, []byte{nsChange + 1})
	if err != nil {
		return err
	}
	for ok := it.first(); ok; ok = it.next() {
		l.marks.ReplaceOrInsert(string(it.key()))
	}
	return errors.Join(it.err(), it.close())
}

// noteMarks keeps marks in step with writes applied to the engine.
func (l *Local) noteMarks(key []byte, del bool) {
	if l.marks == nil || len(key) == 0 || key[0] != nsChange {
		return
	}
	if del {
		l.marks.Delete(string(key))
	} else {
		l.marks.ReplaceOrInsert(string(key))
	}
}

// Name implements Store.
func (l *Local) Name() string { return l.spec.Name }

// Spec returns the store's spec, with defaults filled in.
func (l *Local) Spec() store.Spec { return l.spec }

func dataKey(key []byte) []byte {
	k := make([]byte, 1+len(key))
	k[0] = nsData
	copy(k[1:], key)
	return k
}

// scratchKey returns ns + key in scratch space that the next call reuses.
func (l *Local) scratchKey(ns byte, key []byte) []byte {
	l.kbuf = append(append(l.kbuf[:0], ns), key...)
	return l.kbuf
}

// expiryKey returns the TTL index key of key expiring at exp, in the same
// scratch space as scratchKey.
func (l *Local) expiryKey(exp int64, key []byte) []byte {
	l.kbuf = binary.BigEndian.AppendUint64(append(l.kbuf[:0], nsExpiry), uint64(exp))
	l.kbuf = append(l.kbuf, key...)
	return l.kbuf
}

// lookup returns the engine value of an engine key, buffered writes first.
// A buffered value is shared with the buffer: read it, never modify it.
func (l *Local) lookup(k []byte) ([]byte, bool, error) {
	if w, ok := l.buf.get(k); ok {
		if w.del {
			return nil, false, nil
		}
		return w.value, true, nil
	}
	return l.eng.get(k)
}

// decode splits an engine value into the user value and whether it is
// still live at now.
func decodeValue(v []byte, now int64) ([]byte, bool, error) {
	if len(v) == 0 {
		return nil, false, errors.New("store: empty engine value")
	}
	switch v[0] {
	case hdrPlain:
		return v[1:], true, nil
	case hdrExpiring:
		if len(v) < 9 {
			return nil, false, errors.New("store: short expiring value")
		}
		exp := int64(binary.BigEndian.Uint64(v[1:9]))
		return v[9:], exp > now, nil
	}
	return nil, false, fmt.Errorf("store: value header %d unknown", v[0])
}

// Get implements Store.
func (l *Local) Get(key []byte) ([]byte, bool, error) {
	if l.closed {
		return nil, false, store.ErrClosed
	}
	l.gets.Add(1)
	v, ok, err := l.lookup(l.scratchKey(nsData, key))
	if !ok || err != nil {
		return nil, false, err
	}
	val, live, err := decodeValue(v, l.now().UnixNano())
	if !live || err != nil {
		return nil, false, err
	}
	return bytes.Clone(val), true, nil
}

// buffer buffers a write of copies of k and v, recording in the undo log
// what it replaces.
func (l *Local) buffer(k, v []byte, del bool) {
	prev, i := l.buf.set(k, v, del)
	// An entry first written since the Savepoint is dropped by Rollback
	// as a whole: it needs no undo.
	if l.undoOn && i >= 0 && int(i) < l.spLen {
		l.undo = append(l.undo, undoEntry{i: i, prev: prev})
	}
}

type undoEntry struct {
	i    int32 // index of the entry in the buffer
	prev write // what it held
}

// Savepoint marks the current buffered writes: a later Rollback takes back
// every write made since. The runner takes one before each message, so
// that a message that fails leaves no partial writes behind to be committed
// with the messages that succeeded.
func (l *Local) Savepoint() {
	l.undo = l.undo[:0]
	l.undoOn = true
	l.spLen = l.buf.len()
}

// Rollback takes back every buffered write since the last Savepoint (or,
// without one, since the last commit).
func (l *Local) Rollback() {
	if len(l.undo) > 0 || l.buf.len() > l.spLen {
		l.rollbacks++
	}
	for i := len(l.undo) - 1; i >= 0; i-- {
		l.buf.putBack(l.undo[i].i, l.undo[i].prev)
	}
	clear(l.undo)
	l.undo = l.undo[:0]
	l.buf.truncate(l.spLen)
}

// Rollbacks counts the Rollbacks that took back writes. Whatever keeps a
// copy of the store's content in memory (window.Aggregator) rebuilds it
// when this changes: the writes it saw are gone.
func (l *Local) Rollbacks() uint64 { return l.rollbacks }

// dropExpiry buffers the deletion of the TTL index entry of key's current
// value, if it has one.
func (l *Local) dropExpiry(key []byte) error {
	old, ok, err := l.lookup(l.scratchKey(nsData, key))
	if err != nil {
		return err
	}
	if ok && len(old) >= 9 && old[0] == hdrExpiring {
		l.buffer(l.expiryKey(int64(binary.BigEndian.Uint64(old[1:9])), key), nil, true)
	}
	return nil
}

// Put implements Store.
func (l *Local) Put(key, value []byte) error {
	if l.closed {
		return store.ErrClosed
	}
	if l.readOnly {
		return store.ErrReadOnly
	}
	l.puts.Add(1)
	var v []byte
	if l.spec.TTL > 0 {
		if err := l.dropExpiry(key); err != nil {
			return err
		}
		exp := l.now().Add(l.spec.TTL).UnixNano()
		l.buffer(l.expiryKey(exp, key), []byte{}, false)
		v = binary.BigEndian.AppendUint64(append(l.vbuf[:0], hdrExpiring), uint64(exp))
	} else {
		v = append(l.vbuf[:0], hdrPlain)
	}
	v = append(v, value...)
	l.vbuf = v
	l.buffer(l.scratchKey(nsData, key), v, false)
	l.markChanged(key)
	return nil
}

// PutAll implements Store.
func (l *Local) PutAll(entries []store.Entry) error {
	for _, e := range entries {
		if err := l.Put(e.Key, e.Value); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements Store.
func (l *Local) Delete(key []byte) error {
	if l.closed {
		return store.ErrClosed
	}
	if l.readOnly {
		return store.ErrReadOnly
	}
	l.dels.Add(1)
	if l.spec.TTL > 0 {
		if err := l.dropExpiry(key); err != nil {
			return err
		}
	}
	l.buffer(l.scratchKey(nsData, key), nil, true)
	l.markChanged(key)
	return nil
}

func (l *Local) markChanged(key []byte) {
	if l.spec.TrackChanges {
		l.buffer(l.scratchKey(nsChange, key), []byte{}, false)
	}
}

// Range implements Store.
func (l *Local) Range(start, end []byte) store.Iterator {
	lo := []byte{nsData}
	hi := []byte{nsData + 1}
	if start != nil {
		lo = dataKey(start)
	}
	if end != nil {
		hi = dataKey(end)
	}
	return l.userIter(lo, hi)
}

// Prefix implements Store.
func (l *Local) Prefix(prefix []byte) store.Iterator {
	lo := dataKey(prefix)
	return l.userIter(lo, prefixEnd(lo))
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func (l *Local) userIter(lo, hi []byte) store.Iterator {
	if l.closed {
		return store.ErrorIterator(store.ErrClosed)
	}
	m, err := l.merged(lo, hi, l.buf.scan(lo, hi))
	if err != nil {
		return store.ErrorIterator(err)
	}
	return &userIter{m: m, now: l.now().UnixNano()}
}

// merged iterates engine keys in [lo, hi): ps, the buffered writes in
// that range in key order, over the engine.
func (l *Local) merged(lo, hi []byte, ps []write) (*mergeIter, error) {
	ei, err := l.eng.iter(lo, hi)
	if err != nil {
		return nil, err
	}
	return &mergeIter{ps: ps, e: ei}, nil
}

// mergeIter merges a snapshot of buffered writes with an engine iterator;
// a buffered write hides the engine's value of its key, and a buffered
// delete hides the key.
type mergeIter struct {
	ps      []write
	pi      int
	e       engineIter
	eok     bool
	started bool
	// advance is set when k, v point into the engine iterator: it moves on
	// only at the next call, since moving invalidates them.
	advance bool
	k, v    []byte
}

func (m *mergeIter) next() bool {
	switch {
	case !m.started:
		m.started = true
		m.eok = m.e.first()
	case m.advance:
		m.advance = false
		m.eok = m.e.next()
	}
	for {
		if m.pi == len(m.ps) && !m.eok {
			return false
		}
		if m.pi == len(m.ps) || (m.eok && bytes.Compare(m.e.key(), m.ps[m.pi].key) < 0) {
			m.k, m.v = m.e.key(), m.e.value()
			m.advance = true
			return true
		}
		p := &m.ps[m.pi]
		if m.eok && bytes.Equal(m.e.key(), p.key) {
			m.eok = m.e.next() // hidden by the buffered write
		}
		m.pi++
		if p.del {
			continue
		}
		m.k, m.v = p.key, p.value
		return true
	}
}

func (m *mergeIter) err() error   { return m.e.err() }
func (m *mergeIter) close() error { return m.e.close() }

// userIter strips namespaces and headers, and hides expired values.
type userIter struct {
	m      *mergeIter
	now    int64
	k, v   []byte
	err    error
	closed bool
}

func (u *userIter) Next() bool {
	if u.err != nil || u.closed {
		return false
	}
	for u.m.next() {
		val, live, err := decodeValue(u.m.v, u.now)
		if err != nil {
			u.err = err
			return false
		}
		if !live {
			continue
		}
		u.k, u.v = u.m.k[1:], val
		return true
	}
	u.err = u.m.err()
	return false
}

func (u *userIter) Key() []byte   { return u.k }
func (u *userIter) Value() []byte { return u.v }
func (u *userIter) Err() error    { return u.err }
func (u *userIter) Close() error {
	if u.closed {
		return nil
	}
	u.closed = true
	return u.m.close()
}
