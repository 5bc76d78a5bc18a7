package stream_test

import (
	"errors"
	"testing"
	"time"

	"github.com/grete-go/grete/stream"
	"github.com/stretchr/testify/require"
)

type order struct {
	ID       string            `json:"id" msgpack:"id"`
	Items    []string          `json:"items" msgpack:"items"`
	Total    float64           `json:"total" msgpack:"total"`
	Paid     bool              `json:"paid" msgpack:"paid"`
	Labels   map[string]string `json:"labels,omitempty" msgpack:"labels,omitempty"`
	PlacedAt time.Time         `json:"placed_at" msgpack:"placed_at"`
}

func sampleOrder() order {
	return order{
		ID: "o-1", Items: []string{"tea", "scones"}, Total: 12.5, Paid: true,
		Labels:   map[string]string{"channel": "web"},
		PlacedAt: time.Date(2024, 3, 4, 5, 6, 7, 8000, time.UTC),
	}
}

// roundTrip encodes v with s, decodes the result, and returns it.
func roundTrip[T any](t *testing.T, s stream.Serde[T], v T) T {
	t.Helper()
	b, err := s.Encode(v)
	require.NoError(t, err)
	got, err := s.Decode(b)
	require.NoError(t, err)
	return got
}

func TestBytesSerde(t *testing.T) {
	s := stream.Bytes()
	for _, v := range [][]byte{nil, {}, []byte("plain"), {0, 0xff, 0x80, '\n'}} {
		require.Equal(t, v, roundTrip(t, s, v))
	}
	// Bytes is the identity: neither direction copies.
	in := []byte("shared")
	out, err := s.Decode(in)
	require.NoError(t, err)
	require.Same(t, &in[0], &out[0])
}

func TestStringSerde(t *testing.T) {
	s := stream.String()
	for _, v := range []string{"", "hello", "grüße, 世界", "\x00\xff not utf-8"} {
		require.Equal(t, v, roundTrip(t, s, v))
		b, err := s.Encode(v)
		require.NoError(t, err)
		require.Equal(t, []byte(v), b, "the bytes are the string's, unchanged")
	}
}

func TestJSONSerde(t *testing.T) {
	s := stream.JSON[order]()
	o := sampleOrder()
	require.Equal(t, o, roundTrip(t, s, o))

	b, err := s.Encode(o)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"o-1","items":["tea","scones"],"total":12.5,"paid":true,
		"labels":{"channel":"web"},"placed_at":"2024-03-04T05:06:07.000008Z"}`, string(b))

	// Other shapes of T.
	require.Equal(t, map[string]int{"a": 1, "b": 2}, roundTrip(t, stream.JSON[map[string]int](), map[string]int{"a": 1, "b": 2}))
	require.Equal(t, []int{3, 1, 2}, roundTrip(t, stream.JSON[[]int](), []int{3, 1, 2}))
	require.Equal(t, "quote\"d", roundTrip(t, stream.JSON[string](), "quote\"d"))
	p := &order{ID: "p"}
	require.Equal(t, p, roundTrip(t, stream.JSON[*order](), p))
}

func TestMsgpackSerde(t *testing.T) {
	s := stream.Msgpack[order]()
	o := sampleOrder()
	got := roundTrip(t, s, o)
	require.True(t, o.PlacedAt.Equal(got.PlacedAt), "time survives: %v vs %v", o.PlacedAt, got.PlacedAt)
	got.PlacedAt = o.PlacedAt // msgpack decodes times in the local zone
	require.Equal(t, o, got)

	require.Equal(t, map[string]int64{"x": -1, "y": 1 << 40}, roundTrip(t, stream.Msgpack[map[string]int64](), map[string]int64{"x": -1, "y": 1 << 40}))
	require.Equal(t, []byte{0, 1, 2}, roundTrip(t, stream.Msgpack[[]byte](), []byte{0, 1, 2}))
	require.Equal(t, uint64(1<<63), roundTrip(t, stream.Msgpack[uint64](), uint64(1<<63)))

	// msgpack is more compact than JSON for the same value.
	mb, err := s.Encode(o)
	require.NoError(t, err)
	jb, err := stream.JSON[order]().Encode(o)
	require.NoError(t, err)
	require.Less(t, len(mb), len(jb))
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name   string
		decode func([]byte) error
		input  []byte
		format string
	}{
		{"json syntax", decodeWith(stream.JSON[order]()), []byte(`{"id":`), "json"},
		{"json wrong type", decodeWith(stream.JSON[order]()), []byte(`{"id": 42}`), "json"},
		{"json not an object", decodeWith(stream.JSON[order]()), []byte(`[1,2]`), "json"},
		{"json empty", decodeWith(stream.JSON[int]()), nil, "json"},
		{"msgpack truncated", decodeWith(stream.Msgpack[order]()), []byte{0x85, 0xa2, 'i'}, "msgpack"},
		{"msgpack wrong type", decodeWith(stream.Msgpack[int]()), []byte{0xa3, 'a', 'b', 'c'}, "msgpack"},
		{"msgpack empty", decodeWith(stream.Msgpack[string]()), nil, "msgpack"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode(tt.input)
			var de *stream.DecodeError
			require.ErrorAs(t, err, &de)
			require.Equal(t, tt.format, de.Format)
			require.NotNil(t, de.Err)
			require.Same(t, de.Err, errors.Unwrap(de))
			require.Equal(t, "stream: decode "+tt.format+": "+de.Err.Error(), err.Error())
		})
	}
}

func decodeWith[T any](s stream.Serde[T]) func([]byte) error {
	return func(b []byte) error {
		_, err := s.Decode(b)
		return err
	}
}

func TestDecodeErrorSurvivesWrapping(t *testing.T) {
	_, err := stream.JSON[int]().Decode([]byte("nope"))
	wrapped := errors.Join(errors.New("process"), err)
	var de *stream.DecodeError
	require.ErrorAs(t, wrapped, &de)
	require.Equal(t, "json", de.Format)
}

func TestDecodeKeyAndValue(t *testing.T) {
	m := &stream.Message{Key: []byte(`"k"`), Value: []byte(`{"id":"o-9"}`)}
	v, err := stream.DecodeValue(stream.JSON[order](), m)
	require.NoError(t, err)
	require.Equal(t, "o-9", v.ID)
	k, err := stream.DecodeKey(stream.JSON[string](), m)
	require.NoError(t, err)
	require.Equal(t, "k", k)
	_, err = stream.DecodeKey(stream.JSON[order](), m)
	var de *stream.DecodeError
	require.ErrorAs(t, err, &de, "a key of the wrong shape")
}

func TestEncoded(t *testing.T) {
	out, err := stream.Encoded("orders", stream.String(), "o-1", stream.JSON[order](), order{ID: "o-1", Total: 3})
	require.NoError(t, err)
	require.Equal(t, "orders", out.Topic)
	require.Equal(t, []byte("o-1"), out.Key)
	back, err := stream.JSON[order]().Decode(out.Value)
	require.NoError(t, err)
	require.Equal(t, order{ID: "o-1", Total: 3}, back)
	require.False(t, out.HasPartition)
	require.Nil(t, out.PartitionKey)

	_, err = stream.Encoded("t", stream.JSON[chan int](), make(chan int), stream.String(), "v")
	require.ErrorContains(t, err, "stream: encode key: ")
	_, err = stream.Encoded("t", stream.String(), "k", stream.JSON[func()](), func() {})
	require.ErrorContains(t, err, "stream: encode value: ")
}
