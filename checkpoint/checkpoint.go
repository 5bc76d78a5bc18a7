package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/grete-go/grete/stream"
	"github.com/vmihailenco/msgpack/v5"
)

// Version is the record format this package writes.
const Version = 1

// ErrUnsupportedVersion is returned by Decode (and by managers loading
// checkpoints) for a record whose format version is newer than [Version].
var ErrUnsupportedVersion = errors.New("checkpoint: unsupported record version")

// Checkpoint is the committed position of one task.
type Checkpoint struct {
	// ID increases by one with every checkpoint a task writes.
	ID uint64
	// Task is the task's name, e.g. "task-3".
	Task string
	// Inputs maps every input partition of the task to the offset of the
	// next message to process.
	Inputs map[stream.Partition]int64
	// Changelogs maps every store of the task to the offset of the last
	// changelog record the checkpoint covers (-1 for none).
	Changelogs map[string]int64
	// WrittenAt is when the task wrote the checkpoint.
	WrittenAt time.Time
}

// Clone returns a deep copy.
func (c Checkpoint) Clone() Checkpoint {
	c.Inputs = maps.Clone(c.Inputs)
	c.Changelogs = maps.Clone(c.Changelogs)
	return c
}

// wire is the encoded form. Field names are short and stable: changing one
// is a format change and needs a new Version.
type wire struct {
	Version    int              `msgpack:"version"`
	ID         uint64           `msgpack:"id"`
	Task       string           `msgpack:"task"`
	Inputs     map[string]int64 `msgpack:"inputs"`
	Changelogs map[string]int64 `msgpack:"changelogs"`
	WrittenAt  int64            `msgpack:"written_at"` // Unix milliseconds
}

// Encode returns the record form of c.
func Encode(c Checkpoint) ([]byte, error) {
	w := wire{Version: Version, ID: c.ID, Task: c.Task, Changelogs: c.Changelogs, WrittenAt: c.WrittenAt.UnixMilli()}
	w.Inputs = make(map[string]int64, len(c.Inputs))
	for p, off := range c.Inputs {
		w.Inputs[p.String()] = off
	}
	return msgpack.Marshal(&w)
}

// Decode parses a record written by Encode. It fails with an error wrapping
// ErrUnsupportedVersion when the record's version is newer than Version.
func Decode(b []byte) (Checkpoint, error) {
	var w wire
	if err := msgpack.Unmarshal(b, &w); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: decode: %w", err)
	}
	if w.Version < 1 {
		return Checkpoint{}, fmt.Errorf("checkpoint: decode: record has no version")
	}
	if w.Version > Version {
		return Checkpoint{}, fmt.Errorf("%w: record version %d, this build reads up to %d (upgrade Grete)", ErrUnsupportedVersion, w.Version, Version)
	}
	c := Checkpoint{ID: w.ID, Task: w.Task, Changelogs: w.Changelogs, WrittenAt: time.UnixMilli(w.WrittenAt)}
	c.Inputs = make(map[stream.Partition]int64, len(w.Inputs))
	for s, off := range w.Inputs {
		p, err := stream.ParsePartition(s)
		if err != nil {
			return Checkpoint{}, fmt.Errorf("checkpoint: decode: %w", err)
		}
		c.Inputs[p] = off
	}
	if c.Changelogs == nil {
		c.Changelogs = map[string]int64{}
	}
	return c, nil
}

// Manager stores the last checkpoint of every task of one job.
// Implementations are safe for concurrent use by the job's tasks.
type Manager interface {
	// Load returns the last checkpoint written for task, and false when
	// there is none.
	Load(ctx context.Context, task string) (Checkpoint, bool, error)
	// Write durably stores c as the last checkpoint of c.Task. It returns
	// only once the checkpoint would survive a crash of this process.
	Write(ctx context.Context, c Checkpoint) error
	// Close releases the manager's resources.
	Close() error
}

// Memory is an in-memory Manager, for tests and for jobs that need no
// durability. Its zero value is not usable; call NewMemory.
type Memory struct {
	mu      sync.Mutex
	last    map[string]Checkpoint
	history []Checkpoint
}

// NewMemory returns an empty in-memory manager.
func NewMemory() *Memory { return &Memory{last: map[string]Checkpoint{}} }

// Load implements Manager.
func (m *Memory) Load(_ context.Context, task string) (Checkpoint, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.last[task]
	return c.Clone(), ok, nil
}

// Write implements Manager.
func (m *Memory) Write(_ context.Context, c Checkpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c = c.Clone()
	m.last[c.Task] = c
	m.history = append(m.history, c)
	return nil
}

// History returns every checkpoint written, oldest first.
func (m *Memory) History() []Checkpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Checkpoint, len(m.history))
	for i, c := range m.history {
		out[i] = c.Clone()
	}
	return out
}

// Close implements Manager; it does nothing.
func (m *Memory) Close() error { return nil }
