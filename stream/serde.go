package stream

import (
	"encoding/json"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Serde converts values of type T to bytes and back. Implementations must be
// safe for concurrent use; the ones in this package are.
type Serde[T any] interface {
	Encode(v T) ([]byte, error)
	Decode(b []byte) (T, error)
}

// DecodeError reports bytes a serde could not decode. Tasks that return it
// (or wrap it) from Process let the job's error policy treat the message as
// bad input.
type DecodeError struct {
	Format string // "json", "msgpack", ...
	Err    error
}

func (e *DecodeError) Error() string { return "stream: decode " + e.Format + ": " + e.Err.Error() }

// Unwrap returns the underlying decoder error.
func (e *DecodeError) Unwrap() error { return e.Err }

// Bytes is the identity serde. Decode returns its argument without copying.
func Bytes() Serde[[]byte] { return bytesSerde{} }

type bytesSerde struct{}

func (bytesSerde) Encode(v []byte) ([]byte, error) { return v, nil }
func (bytesSerde) Decode(b []byte) ([]byte, error) { return b, nil }

// String converts between strings and their UTF-8 bytes (no validation).
func String() Serde[string] { return stringSerde{} }

type stringSerde struct{}

func (stringSerde) Encode(v string) ([]byte, error) { return []byte(v), nil }
func (stringSerde) Decode(b []byte) (string, error) { return string(b), nil }

// JSON encodes T with encoding/json. Decode fails with a *DecodeError.
func JSON[T any]() Serde[T] { return jsonSerde[T]{} }

type jsonSerde[T any] struct{}

func (jsonSerde[T]) Encode(v T) ([]byte, error) { return json.Marshal(v) }
func (jsonSerde[T]) Decode(b []byte) (T, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return v, &DecodeError{Format: "json", Err: err}
	}
	return v, nil
}

// Msgpack encodes T with github.com/vmihailenco/msgpack/v5. It is Grete's
// default for store values: compact and faster than JSON. Decode fails with a
// *DecodeError.
func Msgpack[T any]() Serde[T] { return msgpackSerde[T]{} }

type msgpackSerde[T any] struct{}

func (msgpackSerde[T]) Encode(v T) ([]byte, error) { return msgpack.Marshal(v) }
func (msgpackSerde[T]) Decode(b []byte) (T, error) {
	var v T
	if err := msgpack.Unmarshal(b, &v); err != nil {
		return v, &DecodeError{Format: "msgpack", Err: err}
	}
	return v, nil
}

// DecodeValue decodes m.Value with s.
func DecodeValue[T any](s Serde[T], m *Message) (T, error) { return s.Decode(m.Value) }

// DecodeKey decodes m.Key with s.
func DecodeKey[T any](s Serde[T], m *Message) (T, error) { return s.Decode(m.Key) }

// Encoded builds an Outgoing for topic with key and value encoded by the
// given serdes.
func Encoded[K, V any](topic string, ks Serde[K], key K, vs Serde[V], value V) (Outgoing, error) {
	kb, err := ks.Encode(key)
	if err != nil {
		return Outgoing{}, fmt.Errorf("stream: encode key: %w", err)
	}
	vb, err := vs.Encode(value)
	if err != nil {
		return Outgoing{}, fmt.Errorf("stream: encode value: %w", err)
	}
	return Outgoing{Topic: topic, Key: kb, Value: vb}, nil
}
