package store

import (
	"errors"
	"fmt"
	"time"
)

// Store is the key-value store of one task. Keys are ordered bytewise.
//
// Ownership: slices passed to Put and Delete may be reused by the caller as
// soon as the call returns. A value returned by Get belongs to the caller.
// Key and Value of an Iterator are valid only until its next Next or Close.
//
// Concurrency: a Store belongs to its task and is used from the task's
// goroutine only (Process, Window, Init, Close), which is how Grete calls
// tasks.
type Store interface {
	// Name is the store's name from its Spec.
	Name() string
	// Get returns the value of key and whether it exists.
	Get(key []byte) (value []byte, found bool, err error)
	// Put sets key to value. A nil value is stored as an empty value; use
	// Delete to remove a key.
	Put(key, value []byte) error
	// PutAll sets every entry, in order.
	PutAll(entries []Entry) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(key []byte) error
	// Range iterates the keys in [start, end) in order; nil start means
	// from the first key, nil end means to the last. The iterator must be
	// closed.
	Range(start, end []byte) Iterator
	// Prefix iterates the keys that begin with prefix, in order.
	Prefix(prefix []byte) Iterator
}

// ChangeTracker is implemented by the stores of a Spec with TrackChanges:
//
//	ct, ok := s.(store.ChangeTracker)
//
// TakeChanges visits up to limit keys changed (put or deleted) since they
// were last taken (limit <= 0: all), in key order, with their current
// value or nil when gone, and forgets them: each is visited once per
// change. It returns how many keys it visited. Its cost is proportional to
// the number of changed keys, never to the size of the store, and the set
// of changed keys survives crashes like the data. key and value are valid
// only during fn. A key that fn writes is marked changed again, for the
// next call; if fn fails, the key it was given stays marked and
// TakeChanges stops with that error.
type ChangeTracker interface {
	TakeChanges(limit int, fn func(key, value []byte) error) (int, error)
}

// RollbackCounter is implemented by a task's stores. Grete takes back the
// writes of a Process or Window call that fails, whatever the job's error
// policy; Rollbacks counts the times it took back writes. Code that keeps
// a copy of a store's content in memory (window.Aggregator does) notes the
// count and rebuilds its copy when the count has changed.
type RollbackCounter interface {
	Rollbacks() uint64
}

// Entry is one key and value.
type Entry struct {
	Key, Value []byte
}

// Iterator walks keys in order:
//
//	it := s.Range(nil, nil)
//	defer it.Close()
//	for it.Next() {
//		use(it.Key(), it.Value())
//	}
//	if err := it.Err(); err != nil { ... }
//
// Key and Value are valid until the next call to Next or Close: copy what
// must outlive them. An iterator walks the store as it was when Range or
// Prefix opened it: writes and commits made while it is open do not change
// what it returns.
type Iterator interface {
	Next() bool
	Key() []byte
	Value() []byte
	Err() error
	Close() error
}

// ErrorIterator returns an Iterator that visits nothing and reports err:
// what a Store returns when it cannot open an iterator.
func ErrorIterator(err error) Iterator { return &errIter{err: err} }

type errIter struct{ err error }

func (e *errIter) Next() bool    { return false }
func (e *errIter) Key() []byte   { return nil }
func (e *errIter) Value() []byte { return nil }
func (e *errIter) Err() error    { return e.err }
func (e *errIter) Close() error  { return nil }

// Engine chooses where a store keeps its data.
type Engine int

const (
	// Pebble keeps data on disk in a Pebble database under the job's data
	// directory, so a restarted task reuses it without replaying its
	// changelog. The default.
	Pebble Engine = iota
	// Memory keeps data in memory: every start replays the changelog.
	// Fits small state and tests.
	Memory
)

func (e Engine) String() string {
	switch e {
	case Pebble:
		return "pebble"
	case Memory:
		return "memory"
	}
	return fmt.Sprintf("Engine(%d)", int(e))
}

// Spec declares a store on a Job. Only Name is required.
type Spec struct {
	// Name names the store ("<job>-<name>-changelog" is its changelog
	// topic). Letters, digits, '.', '_' and '-'.
	Name string
	// Engine defaults to Pebble.
	Engine Engine
	// NoChangelog turns off the changelog: the store is then lost with the
	// machine, and a Memory store with every restart.
	NoChangelog bool
	// WriteBuffer bounds the bytes of writes buffered between commits; a
	// task whose buffer is full commits early. Default 64 MiB.
	WriteBuffer int
	// TTL, when positive, makes entries expire that long after their last
	// Put: expired entries are invisible at once and deleted (with a
	// changelog tombstone) by the next commits.
	TTL time.Duration
	// TrackChanges records which keys changed since the task last took
	// them, durably, so that a periodic flush visits only changed keys
	// instead of scanning the store: the task's store is then a
	// ChangeTracker.
	TrackChanges bool
	// CacheSize is Pebble's block cache in bytes; default 8 MiB per store.
	CacheSize int64
	// MemTableSize is Pebble's memtable size in bytes; default 4 MiB.
	MemTableSize uint64
}

// DefaultWriteBuffer is the write buffer of a Spec that sets none.
const DefaultWriteBuffer = 64 << 20

// Validate reports what is wrong with the spec.
func (s Spec) Validate() error {
	var errs []error
	if s.Name == "" {
		errs = append(errs, errors.New("store has no name"))
	}
	for _, c := range s.Name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			errs = append(errs, fmt.Errorf("store name %q may contain only letters, digits, '.', '_' and '-'", s.Name))
			break
		}
	}
	if s.Engine != Pebble && s.Engine != Memory {
		errs = append(errs, fmt.Errorf("store %q: unknown engine %v", s.Name, s.Engine))
	}
	if s.WriteBuffer < 0 || s.TTL < 0 || s.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("store %q: WriteBuffer, TTL and CacheSize must not be negative", s.Name))
	}
	return errors.Join(errs...)
}

// Record is a changelog record as Kafka carries it: an engine key and
// value, or a tombstone when Value is nil. See the package documentation
// for the format.
type Record struct {
	Key, Value []byte
}

// ErrClosed is returned by a store used after its task closed it.
var ErrClosed = errors.New("store: closed")

// ErrReadOnly is returned by the writes of a store opened for inspection
// (task.Job.OpenStore).
var ErrReadOnly = errors.New("store: opened read-only")

// Stats are a store's counters.
type Stats struct {
	Gets, Puts, Deletes uint64
	// Flushes counts flushes (step 2 of a commit) that had buffered
	// writes; FlushTime is the total time of all flushes.
	Flushes   uint64
	FlushTime time.Duration
	// Expired counts entries deleted because their TTL passed.
	Expired uint64
	// RestoreRecords and RestoreBytes count changelog records replayed at
	// start; RestoreTime is the time replay took.
	RestoreRecords, RestoreBytes uint64
	RestoreTime                  time.Duration
}
