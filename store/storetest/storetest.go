// Package storetest opens stores outside a job, for tests and examples of
// code built on stores (window aggregators, typed wrappers): a store that
// behaves like a task's, whose writes are visible at once.
//
// A task's store buffers writes between commits and is restored from its
// changelog after a crash; this one has no changelog, and its buffered
// writes reach its engine when its buffer fills or at Handle.Commit. To
// test a whole task, its commits and restarts included, use package
// task/tasktest.
package storetest

import (
	"fmt"

	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
)

// Open opens a store of spec: in memory with store.Memory (dir is then
// ignored), in dir with store.Pebble. Like a task's store, it is a
// store.ChangeTracker when spec has TrackChanges, and a
// store.RollbackCounter. The Handle commits and closes it.
func Open(dir string, spec store.Spec) (store.Store, *Handle, error) {
	if spec.Name == "" {
		spec.Name = "test"
	}
	l, err := state.Open(dir, spec, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("storetest: %w", err)
	}
	return l.View(), &Handle{l: l}, nil
}

// Handle commits and closes a store opened by Open.
type Handle struct {
	l       *state.Local
	commits uint64
}

// Commit applies the buffered writes to the engine, as a task's commit
// does (without a changelog).
func (h *Handle) Commit() error {
	h.commits++
	if err := h.l.Flush(func(_, _ []byte) error { return nil }); err != nil {
		return err
	}
	return h.l.Commit(state.Meta{CheckpointID: h.commits, Offset: -1})
}

// Close closes the store.
func (h *Handle) Close() error { return h.l.Close() }
