package state

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/grete-go/grete/store"
	"path/filepath"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/btree"
)

// write is one change to an engine: a put, or a delete when del is set.
type write struct {
	key, value []byte
	del        bool
}

// engine is the storage under a store: ordered bytes, atomic batches, and
// a metadata value written in the same batch as the data it describes.
type engine interface {
	get(key []byte) ([]byte, bool, error) // the value is the caller's
	iter(lower, upper []byte) (engineIter, error)
	// apply writes ws and, when meta is non-nil, the metadata, atomically;
	// durable when sync is set.
	apply(ws []write, meta []byte, sync bool) error
	// load writes ws, sorted by key with one write per key, neither
	// atomically nor durably: the bulk writes of a restore.
	load(ws []write) error
	meta() ([]byte, error) // nil when none was written
	close() error
}

type engineIter interface {
	// first/next position the iterator; valid reports whether it is on a key.
	first() bool
	next() bool
	key() []byte
	value() []byte
	err() error
	close() error
}

// batchOverhead bounds what a Pebble batch adds to a record's key and
// value: its kind and two varint lengths, and the batch header.
const batchOverhead = 1 + 2*binary.MaxVarintLen32

// metaKey holds the engine's metadata. It sorts before every data key
// (which begin with a namespace byte >= 'a').
var metaKey = []byte{0}

// --- memory engine ---

type memItem struct{ key, value []byte }

func lessItem(a, b memItem) bool { return bytes.Compare(a.key, b.key) < 0 }

type memEngine struct {
	mu   sync.RWMutex
	tree *btree.BTreeG[memItem]
	m    []byte
}

func newMemEngine() *memEngine {
	return &memEngine{tree: btree.NewG(32, lessItem)}
}

func (e *memEngine) get(key []byte) ([]byte, bool, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	it, ok := e.tree.Get(memItem{key: key})
	if !ok {
		return nil, false, nil
	}
	return bytes.Clone(it.value), true, nil
}

func (e *memEngine) apply(ws []write, meta []byte, _ bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, w := range ws {
		if w.del {
			e.tree.Delete(memItem{key: w.key})
		} else {
			e.tree.ReplaceOrInsert(memItem{key: bytes.Clone(w.key), value: bytes.Clone(w.value)})
		}
	}
	if meta != nil {
		e.m = bytes.Clone(meta)
	}
	return nil
}

func (e *memEngine) load(ws []write) error { return e.apply(ws, nil, false) }

func (e *memEngine) meta() ([]byte, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return bytes.Clone(e.m), nil
}

func (e *memEngine) close() error { return nil }

// iter snapshots the range: the memory engine is small by design, and a
// snapshot keeps iteration simple and safe while the task writes.
func (e *memEngine) iter(lower, upper []byte) (engineIter, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var items []memItem
	visit := func(it memItem) bool {
		if upper != nil && bytes.Compare(it.key, upper) >= 0 {
			return false
		}
		items = append(items, it)
		return true
	}
	if lower == nil {
		e.tree.Ascend(visit)
	} else {
		e.tree.AscendGreaterOrEqual(memItem{key: lower}, visit)
	}
	return &memIter{items: items, i: -1}, nil
}

type memIter struct {
	items []memItem
	i     int
}

func (m *memIter) first() bool   { m.i = 0; return m.i < len(m.items) }
func (m *memIter) next() bool    { m.i++; return m.i < len(m.items) }
func (m *memIter) key() []byte   { return m.items[m.i].key }
func (m *memIter) value() []byte { return m.items[m.i].value }
func (m *memIter) err() error    { return nil }
func (m *memIter) close() error  { return nil }

// --- pebble engine ---

type pebbleEngine struct {
	db   *pebble.DB
	dir  string
	opts *pebble.Options
}

func openPebble(dir string, s store.Spec, readOnly bool) (*pebbleEngine, error) {
	cacheSize := s.CacheSize
	if cacheSize == 0 {
		cacheSize = 8 << 20
	}
	cache := pebble.NewCache(cacheSize)
	opts := &pebble.Options{Cache: cache, Logger: quietLogger{}, ReadOnly: readOnly}
	// Bloom filters let point reads (Get: most of a task's reads) skip
	// files that cannot hold the key.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	if s.MemTableSize > 0 {
		opts.MemTableSize = s.MemTableSize
	} else {
		opts.MemTableSize = 4 << 20
	}
	opts.EnsureDefaults() // load writes tables with them
	db, err := pebble.Open(dir, opts)
	cache.Unref() // the DB holds its own reference
	if err != nil {
		return nil, fmt.Errorf("store: open pebble at %s: %w", dir, err)
	}
	return &pebbleEngine{db: db, dir: dir, opts: opts}, nil
}

func (e *pebbleEngine) get(key []byte) ([]byte, bool, error) {
	v, closer, err := e.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := bytes.Clone(v)
	if out == nil {
		out = []byte{}
	}
	return out, true, closer.Close()
}

func (e *pebbleEngine) apply(ws []write, meta []byte, sync bool) error {
	// Sized up front, the batch does not grow (and copy itself) as it fills.
	size := batchOverhead + len(metaKey) + len(meta)
	for _, w := range ws {
		size += batchOverhead + len(w.key) + len(w.value)
	}
	b := e.db.NewBatchWithSize(size)
	defer b.Close()
	for _, w := range ws {
		var err error
		if w.del {
			err = b.Delete(w.key, nil)
		} else {
			err = b.Set(w.key, w.value, nil)
		}
		if err != nil {
			return err
		}
	}
	if meta != nil {
		if err := b.Set(metaKey, meta, nil); err != nil {
			return err
		}
	}
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	return b.Commit(opts)
}

// minIngest is the fewest bytes of writes that load ingests as a table;
// fewer go through a batch, which has no file to create and sync.
const minIngest = 1 << 20

// load writes ws in a table that Pebble ingests: it bypasses the log and
// the memtable, whose flush would write the table anyway.
func (e *pebbleEngine) load(ws []write) error {
	size := 0
	for _, w := range ws {
		size += len(w.key) + len(w.value)
	}
	if size < minIngest {
		return e.apply(ws, nil, false)
	}
	// Ingest moves the file into the database. One left behind by a crash
	// is not one of Pebble's, and the next load replaces it.
	path := filepath.Join(e.dir, "restore.sst")
	f, err := e.opts.FS.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	t := sstable.NewWriter(&tableFile{f: f, w: bufio.NewWriterSize(f, 256<<10)}, e.opts.MakeWriterOptions(0, e.db.TableFormat()))
	for _, w := range ws {
		if w.del {
			err = t.Delete(w.key)
		} else {
			err = t.Set(w.key, w.value)
		}
		if err != nil {
			break
		}
	}
	// Close syncs the file, as Ingest requires.
	if err = errors.Join(err, t.Close()); err == nil {
		err = e.db.Ingest(context.Background(), []string{path})
	}
	if err != nil {
		_ = e.opts.FS.Remove(path)
	}
	return err
}

// tableFile is where load writes a table: with a larger buffer than
// Pebble's own file writer, which writes a few kilobytes at a time.
type tableFile struct {
	f vfs.File
	w *bufio.Writer
}

func (t *tableFile) Write(p []byte) error {
	_, err := t.w.Write(p)
	return err
}

func (t *tableFile) Finish() error { return errors.Join(t.w.Flush(), t.f.Sync(), t.f.Close()) }

func (t *tableFile) Abort() { _ = t.f.Close() }

func (e *pebbleEngine) meta() ([]byte, error) {
	v, ok, err := e.get(metaKey)
	if !ok {
		return nil, err
	}
	return v, err
}

func (e *pebbleEngine) close() error { return e.db.Close() }

func (e *pebbleEngine) iter(lower, upper []byte) (engineIter, error) {
	if lower == nil {
		lower = []byte{1} // past the metadata key
	}
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	return &pebbleIter{it: it}, nil
}

type pebbleIter struct{ it *pebble.Iterator }

func (p *pebbleIter) first() bool   { return p.it.First() }
func (p *pebbleIter) next() bool    { return p.it.Next() }
func (p *pebbleIter) key() []byte   { return p.it.Key() }
func (p *pebbleIter) value() []byte { return p.it.Value() }
func (p *pebbleIter) err() error    { return p.it.Error() }
func (p *pebbleIter) close() error  { return p.it.Close() }

// quietLogger drops Pebble's informational logs and keeps its errors
// visible through returned errors; Pebble's fatal logs still stop the
// process, as Pebble requires.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}
