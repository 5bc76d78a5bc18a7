package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/grete-go/grete/internal/embedded"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// events generates the benchmark's input: JSON events of the shape the
// router reads, padded to a target size. The sequence is fixed by the seed,
// so every run (and both measurements of a run) read the same bytes.
type events struct {
	rng  *rand.Rand
	size int
	n    int64
}

func newEvents(size int) *events {
	return &events{rng: rand.New(rand.NewPCG(1, 2)), size: size}
}

// users is the number of distinct users (and record keys): enough that the
// keys spread evenly over the partitions.
const users = 50000

// next returns the key and value of the next event. Both are freshly
// allocated: the producer keeps them until the record is acknowledged.
//
// The mix: 55% click, 34% view, 8% purchase (always with revenue, so the
// router fans them out), 3% other types; 1% of events are debug events.
func (e *events) next() (key, value []byte) {
	e.n++
	user := e.rng.IntN(users)
	var typ string
	revenue := 0
	switch r := e.rng.IntN(100); {
	case r < 55:
		typ = "click"
	case r < 89:
		typ = "view"
	case r < 97:
		typ = "purchase"
		revenue = 100 + e.rng.IntN(50000) // cents
	case r < 99:
		typ = "search"
	default:
		typ = "signup"
	}
	debug := e.rng.IntN(100) == 0

	key = append(make([]byte, 0, 8), 'u')
	key = strconv.AppendInt(key, int64(user), 10)

	v := make([]byte, 0, max(e.size, 128))
	v = append(v, `{"id":"e`...)
	v = strconv.AppendInt(v, e.n, 10)
	v = append(v, `","user":"`...)
	v = append(v, key...)
	v = append(v, `","type":"`...)
	v = append(v, typ...)
	v = append(v, `","revenue":`...)
	v = strconv.AppendInt(v, int64(revenue), 10)
	v = append(v, `,"debug":`...)
	v = strconv.AppendBool(v, debug)
	v = append(v, `,"ts":`...)
	v = strconv.AppendInt(v, 1_700_000_000_000+e.n, 10)
	// Pad to the target size with a string field, present in every event
	// so that sizes vary little: `,"pad":"` + x… + `"}`.
	v = append(v, `,"pad":"`...)
	for range e.size - len(v) - len(`"}`) {
		v = append(v, 'x')
	}
	v = append(v, `"}`...)
	return key, v
}

// newKgo returns a franz-go client of brokers. Records are not compressed,
// like the records Grete's producer writes, so that input and output
// batches have the same format.
func newKgo(brokers []string, opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.ProducerBatchMaxBytes(1 << 20),
	}, opts...)...)
}

// createTopics creates topics with the given partition count, accepting
// topics that already exist.
func createTopics(ctx context.Context, cl *kgo.Client, partitions int32, topics ...string) error {
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, partitions, 1, nil, topics...)
	if err != nil {
		return fmt.Errorf("create topics %v: %w", topics, err)
	}
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// startBenchBroker starts an embedded broker in this process, with topics
// created, and a franz-go client of it for administration; stop closes
// both.
func startBenchBroker(ctx context.Context, partitions int, topics ...string) (addrs []string, admin *kgo.Client, stop func(), err error) {
	b, err := embedded.Start(embedded.Options{Partitions: partitions})
	if err != nil {
		return nil, nil, nil, err
	}
	if admin, err = newKgo(b.Addrs()); err != nil {
		b.Close()
		return nil, nil, nil, err
	}
	stop = func() { admin.Close(); b.Close() }
	if err := createTopics(ctx, admin, int32(partitions), topics...); err != nil {
		stop()
		return nil, nil, nil, err
	}
	return b.Addrs(), admin, stop, nil
}

// deleteTopics deletes topics to give the broker's memory back between
// measurements. Missing topics are ignored.
func deleteTopics(ctx context.Context, cl *kgo.Client, topics ...string) error {
	if len(topics) == 0 {
		return nil
	}
	resp, err := kadm.NewClient(cl).DeleteTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("delete topics %v: %w", topics, err)
	}
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("delete topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// endOffsets sums the end offsets of topics: the number of records written
// to them (nothing is deleted or compacted during a run).
func endOffsets(ctx context.Context, cl *kgo.Client, topics ...string) (int64, error) {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err != nil {
		return 0, fmt.Errorf("list end offsets of %v: %w", topics, err)
	}
	var sum int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && err == nil {
			err = fmt.Errorf("end offset of %s/%d: %w", o.Topic, o.Partition, o.Err)
		}
		sum += o.Offset
	})
	return sum, err
}

// produce writes n generated events to topic, partitioned by key (murmur2,
// as Kafka's default partitioner), and waits until every one is
// acknowledged. It returns the total size of the values. Memory stays
// bounded: the client buffers at most MaxBufferedRecords records.
func produce(ctx context.Context, brokers []string, topic string, n int64, size int) (bytes int64, err error) {
	cl, err := newKgo(brokers, kgo.DefaultProduceTopic(topic), kgo.MaxBufferedRecords(20000))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var (
		mu    sync.Mutex
		first error
	)
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
		}
	}
	gen := newEvents(size)
	for range n {
		k, v := gen.next()
		bytes += int64(len(v))
		cl.Produce(ctx, &kgo.Record{Key: k, Value: v}, done)
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, fmt.Errorf("produce %d events to %s: %w", n, topic, err)
	}
	if first != nil {
		return 0, fmt.Errorf("produce %d events to %s: %w", n, topic, first)
	}
	return bytes, nil
}
