package store_test

import (
	"fmt"

	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/store/storetest"
)

// A typed store with string keys and msgpack values, iterated in key order.
// Tasks get their stores from task.Context.Store; tests and examples can
// open one with package storetest.
func ExampleStringKeys() {
	s, h, err := storetest.Open("", store.Spec{Name: "counts", Engine: store.Memory})
	if err != nil {
		panic(err)
	}
	defer h.Close()
	counts := store.StringKeys[int64](s)
	for _, page := range []string{"/home", "/pricing", "/home", "/docs", "/home"} {
		n, _, err := counts.Get(page)
		if err != nil {
			panic(err)
		}
		if err := counts.Put(page, n+1); err != nil {
			panic(err)
		}
	}
	it := counts.All()
	defer it.Close()
	for it.Next() {
		fmt.Println(it.Key(), it.Value())
	}
	// Output:
	// /docs 1
	// /home 3
	// /pricing 1
}

// A store declared with TrackChanges is a ChangeTracker: TakeChanges
// visits only the keys written since the last call, so a periodic flush
// costs what changed, not the size of the store.
func ExampleChangeTracker() {
	s, h, err := storetest.Open("", store.Spec{Name: "sessions", Engine: store.Memory, TrackChanges: true})
	if err != nil {
		panic(err)
	}
	defer h.Close()
	changes := s.(store.ChangeTracker)
	_ = s.Put([]byte("a"), []byte("1"))
	_ = s.Put([]byte("b"), []byte("1"))
	flush := func() {
		n, _ := changes.TakeChanges(0, func(k, v []byte) error {
			fmt.Printf("changed %s=%s\n", k, v)
			return nil
		})
		fmt.Println(n, "changed")
	}
	flush()
	_ = s.Put([]byte("b"), []byte("2"))
	flush()
	flush()
	// Output:
	// changed a=1
	// changed b=1
	// 2 changed
	// changed b=2
	// 1 changed
	// 0 changed
}
