package kafka

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// javaMurmur2 are the test vectors of the Kafka Java client's
// Utils.murmur2 (UtilsTest.testMurmur2). Java returns an int: the int32
// reading of the uint32 hash.
var javaMurmur2 = []struct {
	key  string
	hash int32
}{
	{"21", -973932308},
	{"foobar", -790332482},
	{"a-little-bit-long-string", -985981536},
	{"a-little-bit-longer-string", -1486304829},
	{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
	{"abc", 479470107},
}

func TestMurmur2MatchesJavaClient(t *testing.T) {
	for _, v := range javaMurmur2 {
		t.Run(v.key, func(t *testing.T) {
			require.Equal(t, v.hash, int32(murmur2([]byte(v.key))))
		})
	}
}

func TestPartitionForMatchesJavaClient(t *testing.T) {
	// The Java default partitioner: Utils.toPositive(murmur2(key)) % n,
	// where toPositive clears the sign bit.
	for _, v := range javaMurmur2 {
		for _, n := range []int32{1, 2, 3, 7, 12, 100, 1 << 20} {
			want := (v.hash & 0x7fffffff) % n
			require.Equal(t, want, PartitionFor([]byte(v.key), n), "key %q, %d partitions", v.key, n)
		}
	}
}

// franz-go implements the Java partitioner independently; Grete must agree
// with it on every key, or the two would place equal keys apart.
func TestPartitionForMatchesFranzGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ref := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for i := range 5000 {
		key := make([]byte, rng.IntN(40))
		for j := range key {
			key[j] = byte(rng.UintN(256))
		}
		n := 1 + rng.IntN(64)
		require.Equal(t, ref.Partition(&kgo.Record{Key: key}, n), int(PartitionFor(key, int32(n))), "case %d: key %x, %d partitions", i, key, n)
	}
}

func TestMurmur2TailLengths(t *testing.T) {
	// Lengths 0 to 8 cover every tail case (0-3 bytes after whole words);
	// franz-go's hasher is the reference.
	ref := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for l := range 9 {
		key := []byte("abcdefgh")[:l]
		require.Equal(t, ref.Partition(&kgo.Record{Key: key}, 1<<30), int(PartitionFor(key, 1<<30)), "length %d", l)
	}
}

func msg(key []byte, meta *Meta) *sarama.ProducerMessage {
	m := &sarama.ProducerMessage{Topic: "t"}
	if key != nil {
		m.Key = sarama.ByteEncoder(key)
	}
	if meta != nil {
		m.Metadata = meta
	}
	return m
}

func TestPartitioner(t *testing.T) {
	const n = 12
	tests := []struct {
		name    string
		m       *sarama.ProducerMessage
		want    int32
		wantErr string
	}{
		{name: "explicit partition", m: msg([]byte("key"), &Meta{Partition: 7, HasPartition: true}), want: 7},
		{name: "explicit partition zero", m: msg([]byte("key"), &Meta{Partition: 0, HasPartition: true}), want: 0},
		{name: "explicit last partition", m: msg(nil, &Meta{Partition: n - 1, HasPartition: true}), want: n - 1},
		{name: "explicit partition beats partition key", m: msg(nil, &Meta{Partition: 3, HasPartition: true, PartitionKey: []byte("foobar")}), want: 3},
		{name: "partition out of range", m: msg(nil, &Meta{Partition: n, HasPartition: true}), wantErr: `partition 12 out of range: topic "t" has 12 partitions`},
		{name: "negative partition", m: msg(nil, &Meta{Partition: -1, HasPartition: true}), wantErr: "partition -1 out of range"},
		{name: "partition unset is ignored", m: msg([]byte("foobar"), &Meta{Partition: 5}), want: PartitionFor([]byte("foobar"), n)},
		{name: "key", m: msg([]byte("foobar"), &Meta{}), want: PartitionFor([]byte("foobar"), n)},
		{name: "key without metadata", m: msg([]byte("foobar"), nil), want: PartitionFor([]byte("foobar"), n)},
		{name: "partition key overrides key", m: msg([]byte("foobar"), &Meta{PartitionKey: []byte("21")}), want: PartitionFor([]byte("21"), n)},
		{name: "partition key without key", m: msg(nil, &Meta{PartitionKey: []byte("abc")}), want: PartitionFor([]byte("abc"), n)},
		{name: "empty key is hashed", m: msg([]byte{}, &Meta{}), want: PartitionFor([]byte{}, n)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := newPartitioner("t").Partition(tt.m, n)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
	// The cases above must tell the rules apart.
	require.NotEqual(t, PartitionFor([]byte("foobar"), n), PartitionFor([]byte("21"), n))
}

func TestPartitionerSpreadsKeylessMessages(t *testing.T) {
	for _, n := range []int32{1, 3, 8} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p := newPartitioner("t")
			require.True(t, p.RequiresConsistency())
			seen := map[int32]int{}
			for range 10 * n {
				got, err := p.Partition(msg(nil, &Meta{}), n)
				require.NoError(t, err)
				require.True(t, got >= 0 && got < n, "partition %d of %d", got, n)
				seen[got]++
			}
			require.Len(t, seen, int(n), "every partition gets keyless messages")
			for part, c := range seen {
				require.Equal(t, 10, c, "partition %d", part)
			}
		})
	}
}
