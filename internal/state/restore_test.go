package state

import (
	"fmt"
	"github.com/grete-go/grete/store"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A restore larger than a chunk reaches the engine in chunks (ingested
// tables with Pebble), each sorted and keeping only the last record of a
// key: keys written, overwritten and deleted in any order, within and
// across chunks, over data committed before, end as the changelog says,
// and stay so after a reopen.
func TestRestoreInChunks(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "s")
			s, err := Open(dir, store.Spec{Name: "s", Engine: eng, TrackChanges: true}, nil)
			must(t, err)
			defer func() { must(t, s.Close()) }()
			want := map[string]string{} // key -> value; absent: deleted
			rng := rand.New(rand.NewPCG(3, 4))
			const keys = 20000
			key := func(i int) string { return fmt.Sprintf("%08x", uint32(i)*2654435761) } // not in key order
			// Committed before the restore: some of it the changelog
			// overwrites or deletes, some it leaves.
			for i := 0; i < keys; i += 3 {
				must(t, s.Put([]byte(key(i)), []byte("old")))
				want[key(i)] = "old"
			}
			commit(t, s, 1)
			var recs []store.Record
			size := 0
			for size < restoreChunk*5/2 {
				k := key(rng.IntN(keys))
				r := store.Record{Key: append([]byte{nsData}, k...)}
				if rng.IntN(5) == 0 {
					delete(want, k)
				} else {
					v := fmt.Sprint(rng.Uint64(), strings.Repeat("v", rng.IntN(200)))
					r.Value = append([]byte{hdrPlain}, v...)
					want[k] = v
				}
				recs = append(recs, r, store.Record{Key: append([]byte{nsChange}, k...), Value: []byte{}})
				size += 2*len(r.Key) + len(r.Value)
			}
			for len(recs) > 0 {
				n := min(len(recs), 1+rng.IntN(3000))
				must(t, s.Restore(recs[:n]))
				recs = recs[n:]
			}
			must(t, s.FinishRestore(Meta{CheckpointID: 2, Offset: 99}, 0))
			check := func(what string) {
				t.Helper()
				got := map[string]string{}
				for _, e := range collect(t, s.Range(nil, nil)) {
					got[string(e.Key)] = string(e.Value)
				}
				if len(got) != len(want) {
					t.Fatalf("%s: %d keys, want %d", what, len(got), len(want))
				}
				for k, v := range want {
					if got[k] != v {
						t.Fatalf("%s: %s = %q, want %q", what, k, got[k], v)
					}
				}
				if m, ok, err := s.Meta(); err != nil || !ok || m != (Meta{CheckpointID: 2, Offset: 99}) {
					t.Fatalf("%s: Meta = %+v, %v, %v", what, m, ok, err)
				}
			}
			check("restored")
			if n, err := s.TakeChanges(0, func(k, v []byte) error { return nil }); err != nil || n == 0 {
				t.Fatalf("TakeChanges after restore = %d, %v; want the restored change markers", n, err)
			}
			if eng == store.Pebble {
				must(t, s.Close())
				if s, err = Open(dir, store.Spec{Name: "s", Engine: eng, TrackChanges: true}, nil); err != nil {
					t.Fatal(err)
				}
				check("reopened")
				if _, err := os.Stat(filepath.Join(dir, "restore.sst")); !os.IsNotExist(err) {
					t.Errorf("restore.sst left in the store's directory: %v", err)
				}
			}
		})
	}
}
