package state

import "github.com/grete-go/grete/store"

// View returns the store as its task sees it: a store.Store and a
// store.RollbackCounter, and a store.ChangeTracker only when its Spec has
// TrackChanges, so that code can tell the two apart by a type assertion.
// The protocol methods of Local stay out of the task's reach.
func (l *Local) View() store.Store {
	if l.spec.TrackChanges {
		return tracking{view{l}}
	}
	return view{l}
}

type view struct{ l *Local }

func (v view) Name() string                           { return v.l.Name() }
func (v view) Get(key []byte) ([]byte, bool, error)   { return v.l.Get(key) }
func (v view) Put(key, value []byte) error            { return v.l.Put(key, value) }
func (v view) PutAll(entries []store.Entry) error     { return v.l.PutAll(entries) }
func (v view) Delete(key []byte) error                { return v.l.Delete(key) }
func (v view) Range(start, end []byte) store.Iterator { return v.l.Range(start, end) }
func (v view) Prefix(prefix []byte) store.Iterator    { return v.l.Prefix(prefix) }
func (v view) Rollbacks() uint64                      { return v.l.Rollbacks() }
func (v view) String() string                         { return "store " + v.l.Name() }
func (v tracking) TakeChanges(limit int, fn func(key, value []byte) error) (int, error) {
	return v.l.TakeChanges(limit, fn)
}

type tracking struct{ view }

var (
	_ store.RollbackCounter = view{}
	_ store.ChangeTracker   = tracking{}
)
