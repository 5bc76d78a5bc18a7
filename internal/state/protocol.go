package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/grete-go/grete/store"
	"os"
	"time"
)

// TakeChanges visits up to limit keys changed (put or deleted) since they
// were last taken, in key order, and forgets them: each is visited once per
// change. value is nil when the key no longer exists (deleted or expired).
// A limit <= 0 means all. It returns how many keys it visited. The store
// must have been declared with TrackChanges.
//
// The cost is proportional to the number of changed keys, never to the size
// of the store, and the set of changed keys is stored and logged with the
// data: keys changed before a crash are visited after the restart.
// key and value are valid only during fn. A key that fn writes is marked
// changed again, for the next call; if fn fails, the key it was given stays
// marked and TakeChanges stops with that error.
func (l *Local) TakeChanges(limit int, fn func(key, value []byte) error) (int, error) {
	if l.closed {
		return 0, store.ErrClosed
	}
	if !l.spec.TrackChanges {
		return 0, fmt.Errorf("store %q: TakeChanges needs Spec.TrackChanges", l.spec.Name)
	}
	// Changed keys: committed markers (marks) merged with buffered ones,
	// a buffered delete hiding a committed marker.
	var keys [][]byte
	ps := l.buf.scan([]byte{nsChange}, []byte{nsChange + 1})
	full := func() bool { return limit > 0 && len(keys) >= limit }
	pi := 0
	l.marks.Ascend(func(mk string) bool {
		for pi < len(ps) && string(ps[pi].key) < mk && !full() {
			if !ps[pi].del {
				keys = append(keys, bytes.Clone(ps[pi].key))
			}
			pi++
		}
		if full() {
			return false
		}
		if pi < len(ps) && string(ps[pi].key) == mk {
			if !ps[pi].del {
				keys = append(keys, bytes.Clone(ps[pi].key))
			}
			pi++
			return !full()
		}
		keys = append(keys, []byte(mk))
		return !full()
	})
	for ; pi < len(ps) && !full(); pi++ {
		if !ps[pi].del {
			keys = append(keys, bytes.Clone(ps[pi].key))
		}
	}
	for i, ck := range keys {
		key := ck[1:]
		v, ok, err := l.Get(key)
		if err != nil {
			return i, err
		}
		if !ok {
			v = nil
		}
		// Forget the key before fn runs, so that a write fn makes to it
		// marks it changed again; if fn fails, keep it for the next time.
		l.buffer(ck, nil, true)
		if err := fn(key, v); err != nil {
			l.buffer(ck, []byte{}, false)
			return i, err
		}
	}
	return len(keys), nil
}

// Buffered is the number of bytes of writes buffered since the last
// commit.
func (l *Local) Buffered() int { return l.buf.size }

// Full reports whether the write buffer has reached Spec.WriteBuffer: the
// task should commit now.
func (l *Local) Full() bool { return l.buf.size >= l.spec.WriteBuffer }

// maxSweep bounds the expired entries one flush deletes, so a mass expiry
// cannot stall a commit; the rest go at the next commits.
const maxSweep = 10000

// sweepExpired deletes up to maxSweep entries whose TTL has passed.
func (l *Local) sweepExpired() error {
	if l.spec.TTL <= 0 {
		return nil
	}
	now := l.now().UnixNano()
	hi := make([]byte, 9)
	hi[0] = nsExpiry
	binary.BigEndian.PutUint64(hi[1:], uint64(now)+1)
	lo := []byte{nsExpiry}
	m, err := l.merged(lo, hi, l.buf.filter(lo, hi))
	if err != nil {
		return err
	}
	var idx [][]byte
	for m.next() && len(idx) < maxSweep {
		idx = append(idx, bytes.Clone(m.k))
	}
	if err := errors.Join(m.err(), m.close()); err != nil {
		return err
	}
	for _, ik := range idx {
		key := ik[9:]
		exp := int64(binary.BigEndian.Uint64(ik[1:9]))
		v, ok, err := l.lookup(l.scratchKey(nsData, key))
		if err != nil {
			return err
		}
		// The index entry may be stale (the key was rewritten); delete the
		// data only when it carries this very expiry.
		if ok && len(v) >= 9 && v[0] == hdrExpiring && int64(binary.BigEndian.Uint64(v[1:9])) == exp {
			l.buffer(l.scratchKey(nsData, key), nil, true)
			l.markChanged(key)
			l.expired.Add(1)
		}
		l.buffer(ik, nil, true)
	}
	return nil
}

// Flush is step 2 of the commit protocol: it deletes expired entries, then
// calls emit once per buffered key with the engine key and value to log
// (value nil for a tombstone). Repeated writes to a key since the last
// commit coalesce into one record; records come in key order. The writes
// stay buffered until Commit. emit may keep key and value: they are never
// modified.
func (l *Local) Flush(emit func(key, value []byte) error) error {
	if l.closed {
		return store.ErrClosed
	}
	start := time.Now()
	if err := l.sweepExpired(); err != nil {
		return err
	}
	var err error
	for _, w := range l.buf.inOrder() {
		v := w.value
		if w.del {
			v = nil
		}
		if err = emit(w.key, v); err != nil {
			break
		}
	}
	if err == nil && l.buf.len() > 0 {
		l.flushes.Add(1)
	}
	l.flushNs.Add(int64(time.Since(start)))
	return err
}

// Commit is step 5 of the commit protocol: it applies the buffered writes
// and meta to the engine in one atomic, durable write, and empties the
// buffer.
func (l *Local) Commit(meta Meta) error {
	if l.closed {
		return store.ErrClosed
	}
	// In key order: Pebble sorts a large batch itself, and inserts sorted
	// keys into its memtable faster.
	if err := l.eng.apply(l.buf.inOrder(), meta.encode(), true); err != nil {
		return fmt.Errorf("store %q: commit: %w", l.spec.Name, err)
	}
	if l.marks != nil {
		for _, w := range l.buf.ents {
			l.noteMarks(w.key, w.del)
		}
	}
	l.buf.reset()
	l.undo, l.spLen = l.undo[:0], 0
	return nil
}

// Meta returns the metadata of the last Commit or FinishRestore, and false
// when the engine has none (a new store).
func (l *Local) Meta() (Meta, bool, error) {
	if l.closed {
		return Meta{}, false, store.ErrClosed
	}
	b, err := l.eng.meta()
	if err != nil || b == nil {
		return Meta{}, false, err
	}
	m, err := decodeMeta(b)
	return m, err == nil, err
}

// restoreChunk is how many bytes of replayed records a store gathers
// before it writes them to its engine.
const restoreChunk = 4 << 20

// Restore writes replayed changelog records to the engine, not durably:
// FinishRestore makes them durable with their metadata. The store gathers
// records and writes them by chunks of a few megabytes, each sorted by key
// with only the last record of each key, which Pebble ingests as a table
// instead of passing them through its log and memtable. The records reach
// the engine (and reads) by FinishRestore at the latest, and Restore keeps
// the keys and values of recs, which must not change, until then.
func (l *Local) Restore(recs []store.Record) error {
	if l.closed {
		return store.ErrClosed
	}
	for _, r := range recs {
		if len(r.Key) == 0 {
			return fmt.Errorf("store %q: restore: changelog record with empty key", l.spec.Name)
		}
	}
	var n int
	for _, r := range recs {
		l.restoring = append(l.restoring, write{key: r.Key, value: r.Value, del: r.Value == nil})
		l.noteMarks(r.Key, r.Value == nil)
		n += len(r.Key) + len(r.Value)
	}
	l.restoringBytes += n
	l.restRecs.Add(uint64(len(recs)))
	l.restBytes.Add(uint64(n))
	if l.restoringBytes >= restoreChunk {
		return l.loadRestoring()
	}
	return nil
}

// loadRestoring writes the records Restore gathered to the engine.
func (l *Local) loadRestoring() error {
	rs := l.restoring
	if len(rs) == 0 {
		return nil
	}
	idx := make([]int32, len(rs))
	for i := range idx {
		idx[i] = int32(i)
	}
	sortByKey(idx, func(i int32) []byte { return rs[i].key })
	// Equal keys sort by index: the last of a run is the latest record.
	ws := make([]write, 0, len(idx))
	for j, i := range idx {
		if j+1 < len(idx) && bytes.Equal(rs[i].key, rs[idx[j+1]].key) {
			continue
		}
		ws = append(ws, rs[i])
	}
	clear(l.restoring)
	l.restoring, l.restoringBytes = l.restoring[:0], 0
	if err := l.eng.load(ws); err != nil {
		return fmt.Errorf("store %q: restore: %w", l.spec.Name, err)
	}
	return nil
}

// FinishRestore writes what Restore gathered and durably records meta
// once replay is complete; took is the time replay took, for Stats.
func (l *Local) FinishRestore(meta Meta, took time.Duration) error {
	if l.closed {
		return store.ErrClosed
	}
	if err := l.loadRestoring(); err != nil {
		return err
	}
	l.restNs.Add(int64(took))
	return l.eng.apply(nil, meta.encode(), true)
}

// EngineValue returns the engine value of an engine key, ignoring buffered
// writes, or nil when there is none. Restore uses it to trim records that
// no checkpoint covers.
func (l *Local) EngineValue(key []byte) ([]byte, error) {
	if l.closed {
		return nil, store.ErrClosed
	}
	v, ok, err := l.eng.get(key)
	if !ok {
		return nil, err
	}
	return v, err
}

// Wipe deletes everything in the store, metadata included.
func (l *Local) Wipe() error {
	if l.closed {
		return store.ErrClosed
	}
	if err := l.eng.close(); err != nil {
		return err
	}
	if l.spec.Engine == store.Pebble {
		if err := os.RemoveAll(l.dir); err != nil {
			return fmt.Errorf("store %q: wipe: %w", l.spec.Name, err)
		}
	}
	l.buf.reset()
	l.undo, l.spLen = l.undo[:0], 0
	clear(l.restoring)
	l.restoring, l.restoringBytes = l.restoring[:0], 0
	return l.openEngine()
}

// Stats returns the store's counters; safe from any goroutine.
func (l *Local) Stats() store.Stats {
	return store.Stats{
		Gets: l.gets.Load(), Puts: l.puts.Load(), Deletes: l.dels.Load(),
		Flushes: l.flushes.Load(), FlushTime: time.Duration(l.flushNs.Load()),
		Expired:        l.expired.Load(),
		RestoreRecords: l.restRecs.Load(), RestoreBytes: l.restBytes.Load(),
		RestoreTime: time.Duration(l.restNs.Load()),
	}
}

// Close closes the engine; buffered writes are dropped (they were never
// committed).
func (l *Local) Close() error {
	if l.closed {
		return nil
	}
	l.closed = true
	return l.eng.close()
}
