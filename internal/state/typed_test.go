package state

import (
	"bytes"
	"errors"
	"github.com/grete-go/grete/store"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/grete-go/grete/stream"
)

type session struct {
	User   string
	Clicks int
	Pages  []string
}

func TestTypedSerdes(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.String(), func(t *testing.T) {
			s := openLocal(t, eng, store.Spec{}, nil)
			msg := store.StringKeys[session](s)
			js := store.NewTyped(s, stream.String(), stream.JSON[session]())
			str := store.NewTyped(s, stream.String(), stream.String())
			if msg.Store() != store.Store(s) {
				t.Fatal("Store() is not the wrapped store")
			}

			in := session{User: "ann", Clicks: 3, Pages: []string{"/", "/cart"}}
			must(t, msg.Put("m/ann", in))
			must(t, js.Put("j/ann", in))
			must(t, str.Put("s/ann", "plain"))
			for _, phase := range []string{"buffered", "committed"} {
				got, ok, err := msg.Get("m/ann")
				if err != nil || !ok || got.User != "ann" || got.Clicks != 3 || !slices.Equal(got.Pages, in.Pages) {
					t.Fatalf("%s: msgpack Get = %+v, %v, %v", phase, got, ok, err)
				}
				got, ok, err = js.Get("j/ann")
				if err != nil || !ok || got.User != "ann" || got.Clicks != 3 || !slices.Equal(got.Pages, in.Pages) {
					t.Fatalf("%s: JSON Get = %+v, %v, %v", phase, got, ok, err)
				}
				if raw, _, _ := s.Get([]byte("j/ann")); !bytes.HasPrefix(raw, []byte(`{"User":"ann"`)) {
					t.Fatalf("%s: JSON value stored as %q", phase, raw)
				}
				sv, ok, err := str.Get("s/ann")
				if err != nil || !ok || sv != "plain" {
					t.Fatalf("%s: string Get = %q, %v, %v", phase, sv, ok, err)
				}
				commit(t, s, 1)
			}

			// Missing keys: the zero value, not found.
			if got, ok, err := msg.Get("m/bob"); err != nil || ok || got.User != "" {
				t.Fatalf("Get(missing) = %+v, %v, %v", got, ok, err)
			}

			// Prefix and All decode keys and values.
			must(t, msg.Put("m/bob", session{User: "bob"}))
			it := msg.Prefix([]byte("m/"))
			var users []string
			for it.Next() {
				users = append(users, it.Key()+"="+it.Value().User)
			}
			must(t, it.Err())
			must(t, it.Close())
			if !slices.Equal(users, []string{"m/ann=ann", "m/bob=bob"}) {
				t.Fatalf("Prefix = %q", users)
			}
			all := str.All()
			var keys []string
			for all.Next() {
				keys = append(keys, all.Key())
			}
			must(t, all.Close())
			if !slices.Equal(keys, []string{"j/ann", "m/ann", "m/bob", "s/ann"}) {
				t.Fatalf("All = %q", keys)
			}

			// Delete.
			must(t, msg.Delete("m/ann"))
			if _, ok, _ := msg.Get("m/ann"); ok {
				t.Fatal("Delete did not delete")
			}
		})
	}
}

// TestTypedDecodeErrors: a value that does not decode is an error that
// names the store and keeps the serde's *stream.DecodeError, and an
// iterator stops at it.
func TestTypedDecodeErrors(t *testing.T) {
	s := openLocal(t, store.Memory, store.Spec{Name: "sessions"}, nil)
	js := store.NewTyped(s, stream.String(), stream.JSON[session]())
	must(t, js.Put("a", session{User: "a"}))
	must(t, s.Put([]byte("b"), []byte("not json")))
	must(t, js.Put("c", session{User: "c"}))

	_, ok, err := js.Get("b")
	var de *stream.DecodeError
	if ok || !errors.As(err, &de) || de.Format != "json" {
		t.Fatalf("Get(b) = %v, %v; want a JSON DecodeError", ok, err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte(`"sessions"`)) {
		t.Errorf("error %q does not name the store", err)
	}

	it := js.All()
	var seen []string
	for it.Next() {
		seen = append(seen, it.Key())
	}
	if !slices.Equal(seen, []string{"a"}) {
		t.Errorf("iterated %q before the bad entry, want [a]", seen)
	}
	if err := it.Err(); !errors.As(err, &de) {
		t.Errorf("Err() = %v, want a DecodeError", err)
	}
	if it.Next() {
		t.Error("Next after an error returned true")
	}
	must(t, it.Close())

	// Keys that do not decode: a uint64 key store holding a short key.
	u := store.NewTyped(s, store.Uint64Key(), stream.String())
	it2 := u.All()
	if it2.Next() {
		t.Fatalf("decoded key %d from a 1-byte key", it2.Key())
	}
	if err := it2.Err(); !errors.As(err, &de) || de.Format != "uint64 key" {
		t.Errorf("Err() = %v, want a uint64 key DecodeError", err)
	}
	must(t, it2.Close())
}

var int64Edges = []int64{math.MinInt64, math.MinInt64 + 1, -1 << 32, -256, -255, -1, 0, 1, 255, 256, 1 << 32, math.MaxInt64 - 1, math.MaxInt64}

// TestInt64KeyOrder: encoded int64 keys sort as the numbers do, negatives
// first, and decode back; random values and edges.
func TestInt64KeyOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := slices.Clone(int64Edges)
	for range 2000 {
		v := int64(rng.Uint64())
		if rng.IntN(4) == 0 {
			v = rng.Int64N(1000) - 500 // near zero, where the sign flips
		}
		vals = append(vals, v)
	}
	ks := store.Int64Key()
	enc := make([][]byte, len(vals))
	for i, v := range vals {
		b, err := ks.Encode(v)
		must(t, err)
		if len(b) != 8 {
			t.Fatalf("Encode(%d) is %d bytes", v, len(b))
		}
		d, err := ks.Decode(b)
		if err != nil || d != v {
			t.Fatalf("Decode(Encode(%d)) = %d, %v", v, d, err)
		}
		enc[i] = b
	}
	byNumber := slices.Clone(vals)
	sort.Slice(byNumber, func(i, j int) bool { return byNumber[i] < byNumber[j] })
	sort.Slice(enc, func(i, j int) bool { return bytes.Compare(enc[i], enc[j]) < 0 })
	for i := range enc {
		d, _ := ks.Decode(enc[i])
		if d != byNumber[i] {
			t.Fatalf("position %d: bytewise order has %d, numeric order %d", i, d, byNumber[i])
		}
	}
	if _, err := ks.Decode([]byte{1, 2, 3}); err == nil {
		t.Error("Decode of 3 bytes succeeded")
	}
}

func TestUint64KeyOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	vals := []uint64{0, 1, 255, 256, 1 << 63, math.MaxUint64}
	for range 2000 {
		vals = append(vals, rng.Uint64()>>rng.IntN(64))
	}
	ks := store.Uint64Key()
	enc := make([][]byte, len(vals))
	for i, v := range vals {
		b, err := ks.Encode(v)
		must(t, err)
		if d, err := ks.Decode(b); err != nil || d != v {
			t.Fatalf("Decode(Encode(%d)) = %d, %v", v, d, err)
		}
		enc[i] = b
	}
	slices.Sort(vals)
	slices.SortFunc(enc, bytes.Compare)
	for i := range enc {
		if d, _ := ks.Decode(enc[i]); d != vals[i] {
			t.Fatalf("position %d: bytewise order has %d, numeric order %d", i, d, vals[i])
		}
	}
	if _, err := ks.Decode(make([]byte, 9)); err == nil {
		t.Error("Decode of 9 bytes succeeded")
	}
}

// TestTypedInt64Range: through a store, Int64Key ranges are numeric ranges.
func TestTypedInt64Range(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.String(), func(t *testing.T) {
			s := openLocal(t, eng, store.Spec{}, nil)
			ts := store.NewTyped(s, store.Int64Key(), stream.Msgpack[int64]())
			rng := rand.New(rand.NewPCG(5, 6))
			vals := slices.Clone(int64Edges)
			for range 300 {
				vals = append(vals, rng.Int64N(2000)-1000)
			}
			for i, v := range vals {
				must(t, ts.Put(v, -v))
				if i == len(vals)/2 {
					commit(t, s, 1) // half committed, half buffered
				}
			}
			slices.Sort(vals)
			vals = slices.Compact(vals)

			check := func(it *store.TypedIterator[int64, int64], want []int64) {
				t.Helper()
				var got []int64
				for it.Next() {
					if it.Value() != -it.Key() {
						t.Fatalf("value of %d is %d", it.Key(), it.Value())
					}
					got = append(got, it.Key())
				}
				must(t, it.Err())
				must(t, it.Close())
				if !slices.Equal(got, want) {
					t.Fatalf("got %d keys %v..., want %d", len(got), got[:min(5, len(got))], len(want))
				}
			}
			check(ts.All(), vals)
			var want []int64
			for _, v := range vals {
				if v >= -100 && v < 100 {
					want = append(want, v)
				}
			}
			check(ts.Range(-100, 100), want)
			check(ts.Range(math.MinInt64, math.MaxInt64), vals[:len(vals)-1])
			check(ts.Range(5, -5), nil)
		})
	}
}
