package kafka

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// readRange returns what ReadRange hands over, checking the batch sizes.
func readRange(t *testing.T, c *Conn, p stream.Partition, from, to int64, batch int) []Record {
	t.Helper()
	var got []Record
	err := c.ReadRange(context.Background(), p, from, to, batch, func(rs []Record) error {
		require.NotEmpty(t, rs)
		require.LessOrEqual(t, len(rs), batch)
		got = append(got, rs...)
		return nil
	})
	require.NoError(t, err)
	return got
}

func dialWith(t *testing.T, addrs []string, change func(*sarama.Config)) *Conn {
	t.Helper()
	cfg, err := config(stream.KafkaConfig{Brokers: addrs})
	require.NoError(t, err)
	change(cfg)
	c, err := dialConfig(cfg, addrs)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// ReadRange reads exactly the records of the range, in order, across many
// fetches (a small fetch size) and records larger than a fetch.
func TestReadRange(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "log", 1, nil)
	const n = 300
	var recs []*kgo.Record
	for i := range n {
		r := &kgo.Record{Key: fmt.Appendf(nil, "k%03d", i), Value: fmt.Appendf(nil, "v%d", i)}
		switch {
		case i%7 == 0:
			r.Value = nil // a tombstone
		case i%50 == 3:
			r.Value = bytes.Repeat([]byte{'x'}, 5000) // larger than a fetch
		}
		recs = append(recs, r)
	}
	for i := 0; i < n; i += 30 { // several batches
		testkit.Produce(t, b.Addrs(), "log", recs[i:i+30])
	}
	c := dialWith(t, b.Addrs(), func(cfg *sarama.Config) { cfg.Consumer.Fetch.Default = 1024 })
	p := stream.Partition{Topic: "log"}
	for _, tc := range []struct {
		from, to int64
		batch    int
	}{{Oldest, n - 1, 16}, {0, n - 1, 1000}, {45, 45, 4}, {29, 61, 5}, {n - 1, n - 1, 1}, {10, 9, 4}} {
		got := readRange(t, c, p, tc.from, tc.to, tc.batch)
		first := max(tc.from, 0)
		require.Len(t, got, max(0, int(tc.to-first+1)), "range [%d, %d]", tc.from, tc.to)
		for i, r := range got {
			off := first + int64(i)
			require.Equal(t, off, r.Offset)
			require.Equal(t, recs[off].Key, r.Key)
			require.Equal(t, recs[off].Value, r.Value)
			require.Equal(t, recs[off].Value == nil, r.Value == nil, "offset %d: tombstone", off)
		}
	}
}

// Offsets that compaction removed are skipped, and a range that begins
// before the start of the log begins at its start.
func TestReadRangeAfterCompaction(t *testing.T) {
	b := testkit.Broker(t)
	compact := "compact"
	testkit.CreateTopic(t, b.Addrs(), "c", 1, map[string]*string{"cleanup.policy": &compact})
	for i := range 8 {
		// One produce per record: one batch each, which compaction can drop.
		testkit.Produce(t, b.Addrs(), "c", []*kgo.Record{{Key: []byte{'a' + byte(i%3)}, Value: fmt.Appendf(nil, "%d", i)}})
	}
	b.Cluster.Compact()
	c := dial(t, b.Addrs())
	oldest, err := c.client.GetOffset("c", 0, Oldest)
	require.NoError(t, err)
	require.Positive(t, oldest, "compaction moved the log start")
	var want []string // as another client reads it
	for _, r := range testkit.ReadAll(t, b.Addrs(), 30*time.Second, "c") {
		want = append(want, fmt.Sprintf("%d:%s=%s", r.Offset, r.Key, r.Value))
	}
	require.Less(t, len(want), 8, "compaction removed records")
	for _, from := range []int64{Oldest, 0} {
		var got []string
		for _, r := range readRange(t, c, stream.Partition{Topic: "c"}, from, 7, 2) {
			got = append(got, fmt.Sprintf("%d:%s=%s", r.Offset, r.Key, r.Value))
		}
		require.Equal(t, want, got, "from %d", from)
	}
}

// Control records never reach fn; reading committed records, neither do
// those of aborted transactions.
func TestReadRangeTransactions(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "tx", 1, nil)
	cl := testkit.Client(t, b.Addrs(), kgo.TransactionalID("tx"), kgo.DefaultProduceTopic("tx"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, commit := range []bool{true, false, true} {
		require.NoError(t, cl.BeginTransaction())
		for j := range 3 {
			require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "%d.%d", i, j)}).FirstErr())
		}
		require.NoError(t, cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)))
	}
	testkit.Produce(t, b.Addrs(), "tx", []*kgo.Record{{Value: []byte("plain")}})
	p := stream.Partition{Topic: "tx"}
	// 3 transactions of 3 records and a marker each, then the plain record.
	const last = 12
	values := func(c *Conn) []string {
		var vs []string
		for _, r := range readRange(t, c, p, Oldest, last, 2) {
			vs = append(vs, string(r.Value))
		}
		return vs
	}
	require.Equal(t, []string{"0.0", "0.1", "0.2", "1.0", "1.1", "1.2", "2.0", "2.1", "2.2", "plain"}, values(dial(t, b.Addrs())))
	committed := dialWith(t, b.Addrs(), func(cfg *sarama.Config) { cfg.Consumer.IsolationLevel = sarama.ReadCommitted })
	require.Equal(t, []string{"0.0", "0.1", "0.2", "2.0", "2.1", "2.2", "plain"}, values(committed))
}

// ReadRange stops at fn's first error, and when its context ends.
func TestReadRangeStops(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "s", 1, nil)
	recs := make([]*kgo.Record, 100)
	for i := range recs {
		recs[i] = &kgo.Record{Value: []byte("v")}
	}
	testkit.Produce(t, b.Addrs(), "s", recs)
	c := dial(t, b.Addrs())
	p := stream.Partition{Topic: "s"}
	stop := fmt.Errorf("stop")
	calls := 0
	err := c.ReadRange(context.Background(), p, Oldest, 99, 10, func([]Record) error { calls++; return stop })
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, calls)

	ctx, cancel := context.WithCancel(context.Background())
	err = c.ReadRange(ctx, p, Oldest, 99, 10, func([]Record) error { cancel(); return nil })
	require.ErrorIs(t, err, context.Canceled)
}
