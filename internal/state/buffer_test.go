package state

import (
	"bytes"
	"fmt"
	"github.com/grete-go/grete/store"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// flushed returns what Flush emits, as "key=value" lines (tombstone: no
// "="), checking that each key comes once and in order.
func flushed(t *testing.T, s *Local) []string {
	t.Helper()
	var out []string
	var prev []byte
	must(t, s.Flush(func(k, v []byte) error {
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			t.Errorf("flush: %q after %q: not in strictly increasing key order", k, prev)
		}
		prev = bytes.Clone(k)
		if v == nil {
			out = append(out, string(k))
		} else {
			out = append(out, string(k)+"="+string(v))
		}
		return nil
	}))
	return out
}

// The key order that Flush and Commit use is kept across calls while no
// key is added; a Rollback that drops keys must not leave it standing, or
// keys added next would take the dropped keys' places.
func TestFlushOrderAfterRollback(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.String(), func(t *testing.T) {
			s := openLocal(t, eng, store.Spec{}, nil)
			must(t, s.Put([]byte("b"), []byte("1")))
			s.Savepoint()
			must(t, s.Put([]byte("c"), []byte("1")))
			if got, want := flushed(t, s), []string{"db=\x001", "dc=\x001"}; !slices.Equal(got, want) {
				t.Fatalf("flush = %q, want %q", got, want)
			}
			s.Rollback()
			must(t, s.Put([]byte("a"), []byte("1")))
			if got, want := flushed(t, s), []string{"da=\x001", "db=\x001"}; !slices.Equal(got, want) {
				t.Fatalf("flush after Rollback = %q, want %q", got, want)
			}
			commit(t, s, 1)
			if got, want := collect(t, s.Range(nil, nil)), []store.Entry{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("b"), Value: []byte("1")}}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("committed %q, want %q", got, want)
			}
		})
	}
}

// Iterators see the buffered writes of the moment they are opened, however
// writes, iterators and Rollbacks interleave: the index of buffered keys
// catches up with the keys written since it was last used, and forgets
// those that a Rollback drops.
func TestIterateInterleavedWrites(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.String(), func(t *testing.T) {
			s := openLocal(t, eng, store.Spec{}, nil)
			put := func(kvs ...string) {
				t.Helper()
				for i := 0; i < len(kvs); i += 2 {
					must(t, s.Put([]byte(kvs[i]), []byte(kvs[i+1])))
				}
			}
			keys := func(it store.Iterator) string {
				t.Helper()
				var ks []string
				for _, e := range collect(t, it) {
					ks = append(ks, string(e.Key)+"="+string(e.Value))
				}
				return strings.Join(ks, " ")
			}
			put("b", "1", "d", "1")
			commit(t, s, 1)
			put("c", "2", "e", "2")
			first := s.Range(nil, nil) // indexes c and e
			put("a", "3", "c", "3", "f", "3")
			must(t, s.Delete([]byte("d")))
			if got, want := keys(s.Range(nil, nil)), "a=3 b=1 c=3 e=2 f=3"; got != want {
				t.Errorf("second iterator: %s, want %s", got, want)
			}
			if got, want := keys(first), "b=1 c=2 d=1 e=2"; got != want {
				t.Errorf("first iterator: %s, want %s", got, want)
			}

			s.Savepoint()
			put("a", "4", "aa", "4", "g", "4")
			if got, want := keys(s.Prefix([]byte("a"))), "a=4 aa=4"; got != want {
				t.Errorf("before Rollback: %s, want %s", got, want)
			}
			s.Rollback()
			if got, want := keys(s.Range(nil, nil)), "a=3 b=1 c=3 e=2 f=3"; got != want {
				t.Errorf("after Rollback: %s, want %s", got, want)
			}
			put("ab", "5", "g", "5")
			if got, want := keys(s.Range([]byte("a"), []byte("h"))), "a=3 ab=5 b=1 c=3 e=2 f=3 g=5"; got != want {
				t.Errorf("after Rollback and writes: %s, want %s", got, want)
			}
			commit(t, s, 2)
			if got, want := keys(s.Range(nil, nil)), "a=3 ab=5 b=1 c=3 e=2 f=3 g=5"; got != want {
				t.Errorf("committed: %s, want %s", got, want)
			}
		})
	}
}

// Records that Flush hands out, values that iterators return and the
// buffer's own copies stay as they were whatever is written after: the
// buffer never writes over memory it gave out. Values of every size cross
// the arena's limits.
func TestBufferedValuesStay(t *testing.T) {
	sizes := []int{0, 1, 100, arenaChunk/8 - 2, arenaChunk/8 - 1, arenaChunk / 8, arenaChunk, 3 * arenaChunk}
	value := func(round, i int) []byte {
		return bytes.Repeat([]byte{byte('a' + round), byte(i)}, sizes[i%len(sizes)]/2+i%2)
	}
	for _, eng := range engines {
		t.Run(eng.String(), func(t *testing.T) {
			s := openLocal(t, eng, store.Spec{}, nil)
			type kept struct{ k, v, want []byte }
			var all []kept
			for round := range 3 {
				for i := range 40 {
					must(t, s.Put(fmt.Appendf(nil, "k%02d", i), value(round, i)))
				}
				it := s.Range(nil, nil)
				for it.Next() {
					// Every key is buffered: these are the buffer's own
					// copies, which nothing may write over (an engine's
					// would be valid only until Next).
					all = append(all, kept{k: it.Key(), v: it.Value(), want: bytes.Clone(it.Value())})
				}
				must(t, it.Close())
				must(t, s.Flush(func(k, v []byte) error {
					all = append(all, kept{k: k, v: v, want: bytes.Clone(v)})
					return nil
				}))
				for i := range 40 {
					got, ok, err := s.Get(fmt.Appendf(nil, "k%02d", i))
					if err != nil || !ok || !bytes.Equal(got, value(round, i)) {
						t.Fatalf("round %d: Get(k%02d) = %d bytes, %v, %v; want %d bytes", round, i, len(got), ok, err, len(value(round, i)))
					}
				}
				if round%2 == 0 {
					must(t, s.Commit(Meta{CheckpointID: uint64(round)}))
				}
			}
			for _, k := range all {
				if !bytes.Equal(k.v, k.want) {
					t.Fatalf("a value handed out for %q changed", k.k)
				}
			}
		})
	}
}

// sortByKey agrees with a plain sort, for keys that tie in their first 8
// bytes (long shared prefixes, zero padding) and keys that do not, and for
// keys that all share a prefix.
func TestSortByKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	kinds := []func(n int) []byte{
		func(n int) []byte { return fmt.Appendf(nil, "dkey-%09d", rng.IntN(n+1)) },
		func(int) []byte { // "a" and "a\x00" tie on their 8 bytes
			k := make([]byte, 1+rng.IntN(9))
			for j := range k {
				k[j] = []byte{0, 'a', 0xff}[rng.IntN(3)]
			}
			return k
		},
		func(int) []byte {
			k := make([]byte, 17)
			for j := range k {
				k[j] = byte(rng.Uint32())
			}
			return k
		},
	}
	for _, tc := range []struct{ n, kinds int }{{0, 3}, {1, 3}, {2, 3}, {10, 3}, {1000, 3}, {5000, 3}, {1000, 1}, {5000, 1}} {
		n := tc.n
		b := newWriteBuffer()
		for range n {
			b.set(kinds[rng.IntN(tc.kinds)](n), []byte{1}, false)
		}
		got := b.inOrder()
		want := slices.Clone(b.ents)
		slices.SortFunc(want, func(x, y write) int { return bytes.Compare(x.key, y.key) })
		if len(got) != len(want) {
			t.Fatalf("n=%d: %d writes in order, want %d", n, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i].key, want[i].key) {
				t.Fatalf("n=%d: write %d is %q, want %q", n, i, got[i].key, want[i].key)
			}
		}
	}
}

// After a commit the buffer keeps its room for as many writes again, but
// not the room a burst of writes took once.
func TestBufferResetKeepsRoomOfSteadyFlow(t *testing.T) {
	b := newWriteBuffer()
	fill := func(n int) {
		for i := range n {
			b.set(fmt.Appendf(nil, "k%d", i), []byte("v"), false)
		}
		b.inOrder()
		b.reset()
	}
	fill(10000)
	fill(10000)
	if cap(b.ents) < 10000 || b.peak < 10000 {
		t.Fatalf("after a steady flow: room for %d entries (map %d), want 10000", cap(b.ents), b.peak)
	}
	fill(100)
	if cap(b.ents) > 1000 || cap(b.out) > 1000 || b.peak > 1000 {
		t.Fatalf("after a burst: room for %d entries (scratch %d, map %d) kept", cap(b.ents), cap(b.out), b.peak)
	}
}
