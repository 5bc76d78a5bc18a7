package runtime

import (
	"context"
	"slices"
	"sync"

	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// The in-memory plugs of the task loop: tasktest's Driver runs a task on
// them, and the loop's own tests inject faults around them. Kafka
// acknowledges nothing here: everything sent is there at once.

// MemOutputs is a Sender that keeps the messages it is sent.
type MemOutputs struct {
	mu   sync.Mutex
	msgs []stream.Outgoing
	sent int64
}

// Send records m; it fails only when ctx has ended.
func (o *MemOutputs) Send(ctx context.Context, m stream.Outgoing) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.msgs = append(o.msgs, m)
	o.sent++
	return nil
}

// Wait returns nil: what is sent is there.
func (o *MemOutputs) Wait(context.Context) error { return nil }

// Err returns nil: nothing is lost.
func (o *MemOutputs) Err() error { return nil }

// Sent is the number of messages sent.
func (o *MemOutputs) Sent() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sent
}

// Messages returns the messages sent and not taken, in order.
func (o *MemOutputs) Messages() []stream.Outgoing {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.msgs)
}

// Take returns the messages sent since the last Take and forgets them.
func (o *MemOutputs) Take() []stream.Outgoing {
	o.mu.Lock()
	defer o.mu.Unlock()
	ms := o.msgs
	o.msgs = nil
	return ms
}

// MemChangelog is a changelog partition in memory: a ChangelogSink for a
// task's store and a state.Changelog to restore it from. Record i has
// offset i; nothing is compacted.
type MemChangelog struct {
	name string
	mu   sync.Mutex
	recs []state.LogRecord
}

// NewMemChangelog returns an empty changelog called name.
func NewMemChangelog(name string) *MemChangelog { return &MemChangelog{name: name} }

// Send appends a record with copies of key and value.
func (c *MemChangelog) Send(_ context.Context, key, value []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := state.LogRecord{Offset: int64(len(c.recs)), Key: slices.Clone(key)}
	if value != nil {
		r.Value = slices.Clone(value)
	}
	c.recs = append(c.recs, r)
	return nil
}

// Wait returns the offset of the last record (-1: none).
func (c *MemChangelog) Wait(context.Context) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(len(c.recs)) - 1, nil
}

// Err returns nil: nothing is lost.
func (c *MemChangelog) Err() error { return nil }

// Name implements state.Changelog.
func (c *MemChangelog) Name() string { return c.name }

// End implements state.Changelog.
func (c *MemChangelog) End(context.Context) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(len(c.recs)), nil
}

// Start implements state.Changelog.
func (c *MemChangelog) Start(context.Context) (int64, error) { return 0, nil }

// Read implements state.Changelog.
func (c *MemChangelog) Read(ctx context.Context, from, to int64, fn func([]state.LogRecord) error) error {
	c.mu.Lock()
	from = max(from, 0)
	to = min(to, int64(len(c.recs))-1)
	var rs []state.LogRecord
	if from <= to {
		rs = slices.Clone(c.recs[from : to+1])
	}
	c.mu.Unlock()
	if len(rs) == 0 {
		return nil
	}
	return fn(rs)
}

// Records returns every record, oldest first.
func (c *MemChangelog) Records() []store.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]store.Record, len(c.recs))
	for i, r := range c.recs {
		out[i] = store.Record{Key: r.Key, Value: r.Value}
	}
	return out
}
