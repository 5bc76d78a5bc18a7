package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/grete-go/grete/stream"
)

// Typed is a Store seen through serdes: keys of type K, values of type V.
// Range order is the order of the encoded keys, so use an order-preserving
// key serde (stream.String, Int64Key, Uint64Key) when order matters.
type Typed[K, V any] struct {
	s  Store
	ks stream.Serde[K]
	vs stream.Serde[V]
}

// NewTyped wraps s with the given serdes.
func NewTyped[K, V any](s Store, ks stream.Serde[K], vs stream.Serde[V]) *Typed[K, V] {
	return &Typed[K, V]{s: s, ks: ks, vs: vs}
}

// StringKeys wraps s with string keys (stored as their bytes) and msgpack
// values, the common case.
func StringKeys[V any](s Store) *Typed[string, V] {
	return NewTyped(s, stream.String(), stream.Msgpack[V]())
}

// Store returns the underlying store.
func (t *Typed[K, V]) Store() Store { return t.s }

// Get returns the value of k and whether it exists.
func (t *Typed[K, V]) Get(k K) (V, bool, error) {
	var zero V
	kb, err := t.ks.Encode(k)
	if err != nil {
		return zero, false, fmt.Errorf("store %q: encode key: %w", t.s.Name(), err)
	}
	b, ok, err := t.s.Get(kb)
	if !ok || err != nil {
		return zero, false, err
	}
	v, err := t.vs.Decode(b)
	if err != nil {
		return zero, false, fmt.Errorf("store %q: key %v: %w", t.s.Name(), k, err)
	}
	return v, true, nil
}

// Put sets k to v.
func (t *Typed[K, V]) Put(k K, v V) error {
	kb, err := t.ks.Encode(k)
	if err != nil {
		return fmt.Errorf("store %q: encode key: %w", t.s.Name(), err)
	}
	vb, err := t.vs.Encode(v)
	if err != nil {
		return fmt.Errorf("store %q: encode value of %v: %w", t.s.Name(), k, err)
	}
	return t.s.Put(kb, vb)
}

// Delete removes k.
func (t *Typed[K, V]) Delete(k K) error {
	kb, err := t.ks.Encode(k)
	if err != nil {
		return fmt.Errorf("store %q: encode key: %w", t.s.Name(), err)
	}
	return t.s.Delete(kb)
}

// Range iterates keys in [start, end) by encoded order.
func (t *Typed[K, V]) Range(start, end K) *TypedIterator[K, V] {
	sb, err1 := t.ks.Encode(start)
	eb, err2 := t.ks.Encode(end)
	if err := errors.Join(err1, err2); err != nil {
		return &TypedIterator[K, V]{it: &errIter{err: err}, t: t}
	}
	return &TypedIterator[K, V]{it: t.s.Range(sb, eb), t: t}
}

// All iterates every key in encoded order.
func (t *Typed[K, V]) All() *TypedIterator[K, V] {
	return &TypedIterator[K, V]{it: t.s.Range(nil, nil), t: t}
}

// Prefix iterates keys whose encoding begins with prefix.
func (t *Typed[K, V]) Prefix(prefix []byte) *TypedIterator[K, V] {
	return &TypedIterator[K, V]{it: t.s.Prefix(prefix), t: t}
}

// TypedIterator decodes an Iterator's keys and values. It stops at the
// first entry it cannot decode and reports why in Err.
type TypedIterator[K, V any] struct {
	it  Iterator
	t   *Typed[K, V]
	k   K
	v   V
	err error
}

// Next advances to the next entry.
func (i *TypedIterator[K, V]) Next() bool {
	if i.err != nil || !i.it.Next() {
		return false
	}
	var err1, err2 error
	i.k, err1 = i.t.ks.Decode(i.it.Key())
	i.v, err2 = i.t.vs.Decode(i.it.Value())
	if err := errors.Join(err1, err2); err != nil {
		i.err = fmt.Errorf("store %q: key %q: %w", i.t.s.Name(), i.it.Key(), err)
		return false
	}
	return true
}

// Key is the current key. Decoded keys and values do not alias the store.
func (i *TypedIterator[K, V]) Key() K { return i.k }

// Value is the current value.
func (i *TypedIterator[K, V]) Value() V { return i.v }

// Err returns the first error met.
func (i *TypedIterator[K, V]) Err() error {
	if i.err != nil {
		return i.err
	}
	return i.it.Err()
}

// Close releases the iterator.
func (i *TypedIterator[K, V]) Close() error { return i.it.Close() }

// Uint64Key encodes uint64 keys big-endian, so they sort numerically.
func Uint64Key() stream.Serde[uint64] { return uint64Key{} }

type uint64Key struct{}

func (uint64Key) Encode(v uint64) ([]byte, error) { return binary.BigEndian.AppendUint64(nil, v), nil }
func (uint64Key) Decode(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, &stream.DecodeError{Format: "uint64 key", Err: fmt.Errorf("%d bytes, want 8", len(b))}
	}
	return binary.BigEndian.Uint64(b), nil
}

// Int64Key encodes int64 keys so that they sort numerically, negatives
// first.
func Int64Key() stream.Serde[int64] { return int64Key{} }

type int64Key struct{}

func (int64Key) Encode(v int64) ([]byte, error) {
	return binary.BigEndian.AppendUint64(nil, uint64(v)^(1<<63)), nil
}
func (int64Key) Decode(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, &stream.DecodeError{Format: "int64 key", Err: fmt.Errorf("%d bytes, want 8", len(b))}
	}
	return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)), nil
}

// Int64Value encodes int64 values as varints (one to ten bytes, small
// magnitudes short): compact counters, with no allocation beyond the
// encoded bytes. Use it for values only; as keys varints do not sort.
func Int64Value() stream.Serde[int64] { return int64Value{} }

type int64Value struct{}

func (int64Value) Encode(v int64) ([]byte, error) { return binary.AppendVarint(nil, v), nil }
func (int64Value) Decode(b []byte) (int64, error) {
	v, n := binary.Varint(b)
	if n <= 0 || n != len(b) {
		return 0, &stream.DecodeError{Format: "int64 value", Err: fmt.Errorf("%d bytes are not one varint", len(b))}
	}
	return v, nil
}

// Uint64Value encodes uint64 values as unsigned varints (one to ten
// bytes). Use it for values only; as keys varints do not sort.
func Uint64Value() stream.Serde[uint64] { return uint64Value{} }

type uint64Value struct{}

func (uint64Value) Encode(v uint64) ([]byte, error) { return binary.AppendUvarint(nil, v), nil }
func (uint64Value) Decode(b []byte) (uint64, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 || n != len(b) {
		return 0, &stream.DecodeError{Format: "uint64 value", Err: fmt.Errorf("%d bytes are not one varint", len(b))}
	}
	return v, nil
}
