package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// blocked asserts that Wait does not return before a short deadline: the
// tracker still has records in flight.
func blocked(t *testing.T, tr *Tracker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := tr.Wait(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "Wait returned while records were in flight")
}

func TestTrackerIdle(t *testing.T) {
	tr := NewTracker()
	require.NoError(t, tr.Wait(context.Background()))
	require.NoError(t, tr.Err())
	require.Zero(t, tr.Sent())
}

func TestTrackerWaitsForEveryRecord(t *testing.T) {
	tr := NewTracker()
	tr.add()
	tr.add()
	tr.add()
	require.EqualValues(t, 3, tr.Sent())
	blocked(t, tr)

	done := make(chan error, 1)
	go func() { done <- tr.Wait(context.Background()) }()
	tr.done(nil)
	tr.done(nil)
	blocked(t, tr)
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v with a record in flight", err)
	default:
	}
	tr.done(nil)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return once every record was acknowledged")
	}
	require.NoError(t, tr.Wait(context.Background()))

	// Busy again after being idle.
	tr.add()
	blocked(t, tr)
	tr.done(nil)
	require.NoError(t, tr.Wait(context.Background()))
	require.EqualValues(t, 4, tr.Sent())
}

func TestTrackerKeepsFirstError(t *testing.T) {
	tr := NewTracker()
	first, second := errors.New("first"), errors.New("second")
	for range 4 {
		tr.add()
	}
	tr.done(nil)
	tr.done(first)
	require.ErrorIs(t, tr.Err(), first, "Err reports a failure at once")
	blocked(t, tr)
	tr.done(second)
	tr.done(nil)
	err := tr.Wait(context.Background())
	require.ErrorIs(t, err, first)
	require.False(t, errors.Is(err, second))

	// The error stays: the failed output is lost whatever comes after.
	tr.add()
	tr.done(nil)
	require.ErrorIs(t, tr.Wait(context.Background()), first)
	require.ErrorIs(t, tr.Err(), first)
}

func TestTrackerWaitHonoursContext(t *testing.T) {
	tr := NewTracker()
	tr.add()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Wait(ctx) }()
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorContains(t, err, "waiting for output acknowledgements")
	case <-time.After(10 * time.Second):
		t.Fatal("Wait ignored the cancelled context")
	}
	require.NoError(t, tr.Err(), "giving up waiting is not a send failure")
	tr.done(nil)
	require.NoError(t, tr.Wait(context.Background()))
}

// dial connects to the embedded broker with Grete's configuration and
// closes the connection at cleanup.
func dial(t *testing.T, addrs []string) *Conn {
	t.Helper()
	cfg, err := config(stream.KafkaConfig{Brokers: addrs})
	require.NoError(t, err)
	c, err := dialConfig(cfg, addrs)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func TestProducerRoutesAndAcknowledges(t *testing.T) {
	b := testkit.Broker(t)
	const n = 6
	testkit.CreateTopic(t, b.Addrs(), "out", n, nil)
	conn := dial(t, b.Addrs())
	p, err := conn.NewProducer()
	require.NoError(t, err)
	defer func() { require.NoError(t, p.Close()) }()

	ctx := context.Background()
	tr := NewTracker()
	ts := time.UnixMilli(1_700_000_000_000)
	sends := []stream.Outgoing{
		{Topic: "out", Key: []byte("foobar"), Value: []byte("by key"), Timestamp: ts,
			Headers: []stream.Header{{Key: "h1", Value: []byte("v1")}, {Key: "h1", Value: []byte("v2")}}},
		{Topic: "out", Key: []byte("foobar"), PartitionKey: []byte("abc"), Value: []byte("by partition key")},
		{Topic: "out", Key: []byte("foobar"), Partition: 4, HasPartition: true, Value: []byte("explicit")},
		{Topic: "out", Key: []byte("tomb")}, // nil value: a tombstone
	}
	for i := range sends {
		require.NoError(t, p.Send(ctx, tr, &sends[i]))
	}
	require.NoError(t, tr.Wait(ctx))
	require.EqualValues(t, len(sends), tr.Sent())

	recs := testkit.ReadAll(t, b.Addrs(), 30*time.Second, "out")
	require.Len(t, recs, len(sends))
	byValue := map[string]*kgo.Record{}
	for _, r := range recs {
		byValue[string(r.Value)] = r
	}
	r := byValue["by key"]
	require.NotNil(t, r)
	require.Equal(t, PartitionFor([]byte("foobar"), n), r.Partition)
	require.Equal(t, "foobar", string(r.Key))
	require.True(t, ts.Equal(r.Timestamp), "timestamp %v", r.Timestamp)
	require.Equal(t, []kgo.RecordHeader{{Key: "h1", Value: []byte("v1")}, {Key: "h1", Value: []byte("v2")}}, r.Headers)

	r = byValue["by partition key"]
	require.NotNil(t, r)
	require.Equal(t, PartitionFor([]byte("abc"), n), r.Partition)
	require.NotEqual(t, PartitionFor([]byte("foobar"), n), r.Partition, "the test needs keys that land apart")
	require.Equal(t, "foobar", string(r.Key), "the partition key is not written")

	r = byValue["explicit"]
	require.NotNil(t, r)
	require.EqualValues(t, 4, r.Partition)

	r = byValue[""]
	require.NotNil(t, r)
	require.Nil(t, r.Value, "a nil value stays a tombstone")
	require.Equal(t, PartitionFor([]byte("tomb"), n), r.Partition)
	require.False(t, r.Timestamp.IsZero(), "a zero timestamp becomes the send time")
}

func TestProducerReportsFailureToTracker(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "small", 2, nil)
	conn := dial(t, b.Addrs())
	p, err := conn.NewProducer()
	require.NoError(t, err)
	defer func() { require.NoError(t, p.Close()) }()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok, bad := NewTracker(), NewTracker()
	require.NoError(t, p.Send(ctx, ok, &stream.Outgoing{Topic: "small", Value: []byte("fine")}))
	require.NoError(t, p.Send(ctx, bad, &stream.Outgoing{Topic: "small", Partition: 9, HasPartition: true, Value: []byte("nowhere")}))
	err = bad.Wait(ctx)
	require.ErrorContains(t, err, `produce to topic "small"`)
	require.ErrorContains(t, err, "partition 9 out of range")
	require.NoError(t, ok.Wait(ctx), "one task's failure is not another's")
}

func TestProducerClosed(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "t", 1, nil)
	conn := dial(t, b.Addrs())
	p, err := conn.NewProducer()
	require.NoError(t, err)
	tr := NewTracker()
	ctx := context.Background()
	require.NoError(t, p.Send(ctx, tr, &stream.Outgoing{Topic: "t", Value: []byte("before close")}))
	require.NoError(t, p.Close())
	require.NoError(t, tr.Wait(ctx), "Close waits for what was sent")
	require.ErrorIs(t, p.Send(ctx, tr, &stream.Outgoing{Topic: "t"}), ErrProducerClosed)
	require.EqualValues(t, 1, tr.Sent(), "a refused send is not tracked")
	require.NoError(t, p.Close(), "closing twice is harmless")
	require.Len(t, testkit.ReadAll(t, b.Addrs(), 30*time.Second, "t"), 1)
}
