package stream_test

import (
	"testing"

	"github.com/grete-go/grete/stream"
	"github.com/stretchr/testify/require"
)

func TestPartitionStringAndParse(t *testing.T) {
	tests := []struct {
		p    stream.Partition
		text string
	}{
		{stream.Partition{Topic: "orders", Partition: 0}, "orders/0"},
		{stream.Partition{Topic: "orders", Partition: 17}, "orders/17"},
		{stream.Partition{Topic: "a.b_c-d", Partition: 2147483647}, "a.b_c-d/2147483647"},
		{stream.Partition{Topic: "x", Partition: 3}, "x/3"},
		{stream.Partition{Topic: "42", Partition: 42}, "42/42"},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			require.Equal(t, tt.text, tt.p.String())
			got, err := stream.ParsePartition(tt.text)
			require.NoError(t, err)
			require.Equal(t, tt.p, got)
		})
	}
}

func TestParsePartitionUsesLastSlash(t *testing.T) {
	// Kafka topic names cannot contain '/', but the parser must still
	// split at the last one so the partition number is never misread.
	p, err := stream.ParsePartition("a/b/5")
	require.NoError(t, err)
	require.Equal(t, stream.Partition{Topic: "a/b", Partition: 5}, p)
}

func TestParsePartitionRefusesBadInput(t *testing.T) {
	for _, s := range []string{
		"",
		"orders",
		"/3",
		"orders/",
		"orders/x",
		"orders/-1",
		"orders/1.5",
		"orders/0x10",
		"orders/2147483648", // does not fit in int32
		"orders/99999999999999999999",
		"orders/ 1",
		"orders/1 ",
	} {
		t.Run(s, func(t *testing.T) {
			_, err := stream.ParsePartition(s)
			require.Error(t, err)
			require.Contains(t, err.Error(), "is not of the form topic/partition")
		})
	}
}

func TestMessageHeader(t *testing.T) {
	m := &stream.Message{Headers: []stream.Header{
		{Key: "trace", Value: []byte("first")},
		{Key: "empty", Value: nil},
		{Key: "trace", Value: []byte("second")},
	}}
	v, ok := m.Header("trace")
	require.True(t, ok)
	require.Equal(t, "first", string(v), "the first header of a repeated key")
	v, ok = m.Header("empty")
	require.True(t, ok, "a header with no value is still present")
	require.Nil(t, v)
	_, ok = m.Header("missing")
	require.False(t, ok)
	_, ok = (&stream.Message{}).Header("trace")
	require.False(t, ok)
}

func TestMessagePosition(t *testing.T) {
	m := &stream.Message{Topic: "t", Partition: 9, Offset: 100}
	require.Equal(t, stream.Partition{Topic: "t", Partition: 9}, m.Position())
	require.Equal(t, "t/9", m.Position().String())
}
