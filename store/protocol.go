package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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
		return 0, ErrClosed
	}
	if !l.spec.TrackChanges {
		return 0, fmt.Errorf("store %q: TakeChanges needs Spec.TrackChanges", l.spec.Name)
	}
	// Changed keys: committed markers (marks) merged with buffered ones,
	// a buffered delete hiding a committed marker.
	var keys [][]byte
	var ps []*pend
	l.pending.AscendRange(&pend{key: []byte{nsChange}}, &pend{key: []byte{nsChange + 1}}, func(p *pend) bool {
		ps = append(ps, p)
		return true
	})
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
func (l *Local) Buffered() int { return l.pbytes }

// Full reports whether the write buffer has reached Spec.WriteBuffer: the
// task should commit now.
func (l *Local) Full() bool { return l.pbytes >= l.spec.WriteBuffer }

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
	m, err := l.merged([]byte{nsExpiry}, hi)
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
		dk := dataKey(key)
		v, ok, err := l.lookup(dk)
		if err != nil {
			return err
		}
		// The index entry may be stale (the key was rewritten); delete the
		// data only when it carries this very expiry.
		if ok && len(v) >= 9 && v[0] == hdrExpiring && int64(binary.BigEndian.Uint64(v[1:9])) == exp {
			l.buffer(dk, nil, true)
			l.markChanged(key)
			l.expired.Add(1)
		}
		l.buffer(ik, nil, true)
	}
	return nil
}

// Flush is step 2 of the commit protocol: it deletes expired entries, then
// calls emit once per buffered key, in key order, with the engine key and
// value to log (value nil for a tombstone). Repeated writes to a key since
// the last commit coalesce into one record. The writes stay buffered until
// Commit.
func (l *Local) Flush(emit func(key, value []byte) error) error {
	if l.closed {
		return ErrClosed
	}
	start := time.Now()
	if err := l.sweepExpired(); err != nil {
		return err
	}
	var err error
	l.pending.Ascend(func(p *pend) bool {
		v := p.value
		if p.del {
			v = nil
		} else if v == nil {
			v = []byte{}
		}
		err = emit(p.key, v)
		return err == nil
	})
	if err == nil && l.pending.Len() > 0 {
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
		return ErrClosed
	}
	ws := make([]write, 0, l.pending.Len())
	l.pending.Ascend(func(p *pend) bool {
		ws = append(ws, write{key: p.key, value: p.value, del: p.del})
		return true
	})
	if err := l.eng.apply(ws, meta.encode(), true); err != nil {
		return fmt.Errorf("store %q: commit: %w", l.spec.Name, err)
	}
	for _, w := range ws {
		l.noteMarks(w.key, w.del)
	}
	l.pending.Clear(false)
	l.pbytes = 0
	l.undo, l.undoPbytes = l.undo[:0], 0
	return nil
}

// Meta returns the metadata of the last Commit or FinishRestore, and false
// when the engine has none (a new store).
func (l *Local) Meta() (Meta, bool, error) {
	if l.closed {
		return Meta{}, false, ErrClosed
	}
	b, err := l.eng.meta()
	if err != nil || b == nil {
		return Meta{}, false, err
	}
	m, err := decodeMeta(b)
	return m, err == nil, err
}

// Record is a changelog record: an engine key and value, or a tombstone
// when Value is nil.
type Record struct {
	Key, Value []byte
}

// Restore writes replayed changelog records straight to the engine, not
// durably: FinishRestore makes them durable with their metadata.
func (l *Local) Restore(recs []Record) error {
	if l.closed {
		return ErrClosed
	}
	ws := make([]write, len(recs))
	var n uint64
	for i, r := range recs {
		if len(r.Key) == 0 {
			return fmt.Errorf("store %q: restore: changelog record with empty key", l.spec.Name)
		}
		ws[i] = write{key: r.Key, value: r.Value, del: r.Value == nil}
		n += uint64(len(r.Key) + len(r.Value))
	}
	if err := l.eng.apply(ws, nil, false); err != nil {
		return fmt.Errorf("store %q: restore: %w", l.spec.Name, err)
	}
	for _, w := range ws {
		l.noteMarks(w.key, w.del)
	}
	l.restRecs.Add(uint64(len(recs)))
	l.restBytes.Add(n)
	return nil
}

// FinishRestore durably records meta once replay is complete; took is the
// time replay took, for Stats.
func (l *Local) FinishRestore(meta Meta, took time.Duration) error {
	if l.closed {
		return ErrClosed
	}
	l.restNs.Add(int64(took))
	return l.eng.apply(nil, meta.encode(), true)
}

// EngineValue returns the engine value of an engine key, ignoring buffered
// writes, or nil when there is none. Restore uses it to trim records that
// no checkpoint covers.
func (l *Local) EngineValue(key []byte) ([]byte, error) {
	if l.closed {
		return nil, ErrClosed
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
		return ErrClosed
	}
	if err := l.eng.close(); err != nil {
		return err
	}
	if l.spec.Engine == Pebble {
		if err := os.RemoveAll(l.dir); err != nil {
			return fmt.Errorf("store %q: wipe: %w", l.spec.Name, err)
		}
	}
	l.undo, l.undoPbytes = l.undo[:0], 0
	l.pending.Clear(false)
	l.pbytes = 0
	return l.openEngine()
}

// Stats returns the store's counters; safe from any goroutine.
func (l *Local) Stats() Stats {
	return Stats{
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
