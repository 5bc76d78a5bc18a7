package kafka

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/stream"
)

// This file is the benchmarks' baseline: what plain sarama, configured
// like Grete, does with the same data.

// CopyResult is one measurement of RawCopy.
type CopyResult struct {
	Messages int64         // input messages copied
	Outputs  int64         // copies acknowledged
	Elapsed  time.Duration // from connecting until every copy is acknowledged
	Startup  time.Duration // until the first message was handed on
	Shutdown time.Duration // closing, after Elapsed
}

// RawCopy is the baseline every benchmark of a job compares with: the
// least a sarama program must do to copy input to output with Grete's
// producer guarantees. Partition consumers read every partition of input
// from the oldest offset; each message goes to output through one
// AsyncProducer configured like Grete's (idempotent, acks=all, the same
// flush settings and partitioner). The clock runs from connecting until
// every message is acknowledged; closing the clients afterwards is timed
// apart.
func RawCopy(ctx context.Context, brokers []string, input, output string) (res CopyResult, err error) {
	start := time.Now()
	cfg, err := config(stream.KafkaConfig{Brokers: brokers, ClientID: "bench-raw"})
	if err != nil {
		return res, err
	}
	client, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		return res, fmt.Errorf("raw copy: connect: %w", err)
	}
	defer client.Close()
	parts, err := client.Partitions(input)
	if err != nil {
		return res, fmt.Errorf("raw copy: partitions of %s: %w", input, err)
	}
	// The messages to copy: everything up to the end offsets as of now.
	ends := make(map[int32]int64, len(parts))
	var want int64
	for _, p := range parts {
		lo, err := client.GetOffset(input, p, sarama.OffsetOldest)
		if err != nil {
			return res, fmt.Errorf("raw copy: start of %s/%d: %w", input, p, err)
		}
		hi, err := client.GetOffset(input, p, sarama.OffsetNewest)
		if err != nil {
			return res, fmt.Errorf("raw copy: end of %s/%d: %w", input, p, err)
		}
		if hi > lo {
			ends[p] = hi
			want += hi - lo
		}
	}
	producer, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		return res, fmt.Errorf("raw copy: producer: %w", err)
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		producer.AsyncClose()
		return res, fmt.Errorf("raw copy: consumer: %w", err)
	}

	// Acknowledgements: count successes until every message is in.
	var (
		acked    atomic.Int64
		firstErr atomic.Pointer[error]
		allAcked = make(chan struct{})
		ackWG    sync.WaitGroup
	)
	ack := func() {
		if acked.Add(1) == want {
			close(allAcked)
		}
	}
	ackWG.Add(2)
	go func() {
		defer ackWG.Done()
		for range producer.Successes() {
			ack()
		}
	}()
	go func() {
		defer ackWG.Done()
		for e := range producer.Errors() {
			err := fmt.Errorf("raw copy: produce: %w", e.Err)
			firstErr.CompareAndSwap(nil, &err)
			ack()
		}
	}()
	if want == 0 {
		close(allAcked)
	}

	// Forwarders: one goroutine per partition, like Grete's subscription.
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var fwdWG sync.WaitGroup
	var firstOnce sync.Once
	var pcs []sarama.PartitionConsumer
	for p, end := range ends {
		pc, err := consumer.ConsumePartition(input, p, sarama.OffsetOldest)
		if err != nil {
			err = fmt.Errorf("raw copy: consume %s/%d: %w", input, p, err)
			firstErr.CompareAndSwap(nil, &err)
			cancel()
			break
		}
		pcs = append(pcs, pc)
		fwdWG.Add(1)
		go func() {
			defer fwdWG.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case e := <-pc.Errors():
					err := fmt.Errorf("raw copy: consume %s/%d: %w", input, p, e.Err)
					firstErr.CompareAndSwap(nil, &err)
					cancel()
					return
				case m := <-pc.Messages():
					firstOnce.Do(func() { res.Startup = time.Since(start) })
					pm := &sarama.ProducerMessage{
						Topic: output, Key: sarama.ByteEncoder(m.Key), Value: sarama.ByteEncoder(m.Value),
						Timestamp: m.Timestamp,
					}
					select {
					case producer.Input() <- pm:
					case <-ctx.Done():
						return
					}
					if m.Offset+1 >= end {
						return
					}
				}
			}
		}()
	}
	select {
	case <-allAcked:
	case <-ctx.Done():
	}
	res.Elapsed = time.Since(start)
	res.Messages, res.Outputs = want, acked.Load()

	// Shut down (not timed: closing a partition consumer waits for the
	// fetch in flight, up to Consumer.MaxWaitTime, which would add noise).
	cancel()
	fwdWG.Wait()
	for _, pc := range pcs {
		pc.AsyncClose()
	}
	for _, pc := range pcs {
		for range pc.Messages() {
		}
		for range pc.Errors() {
		}
	}
	producer.AsyncClose()
	ackWG.Wait()
	_ = consumer.Close()
	res.Shutdown = time.Since(start) - res.Elapsed
	if p := firstErr.Load(); p != nil {
		return res, *p
	}
	if err := parent.Err(); err != nil && res.Outputs < want {
		return res, fmt.Errorf("raw copy: stopped after %d of %d messages: %w", res.Outputs, want, err)
	}
	return res, nil
}

// ConsumeResult is one measurement of RawConsume.
type ConsumeResult struct {
	Records, Bytes int64
	Elapsed        time.Duration // from connecting until the last record
	Startup        time.Duration // until the first record arrived
}

// RawConsume reads every partition of topic from the oldest offset to the
// end with sarama partition consumers configured like Grete's, and counts
// records and bytes: the baseline of a restore.
func RawConsume(ctx context.Context, kc stream.KafkaConfig, topic string) (ConsumeResult, error) {
	var res ConsumeResult
	start := time.Now()
	cfg, err := config(kc)
	if err != nil {
		return res, err
	}
	client, err := sarama.NewClient(kc.Brokers, cfg)
	if err != nil {
		return res, err
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return res, err
	}
	defer consumer.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		return res, err
	}
	var records, size atomic.Int64
	var firstOnce sync.Once
	errc := make(chan error, len(parts))
	for _, p := range parts {
		hi, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return res, err
		}
		lo, err := client.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil {
			return res, err
		}
		if hi <= lo {
			errc <- nil
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			return res, err
		}
		go func() {
			defer pc.AsyncClose()
			var n, bytes int64
			for {
				select {
				case m := <-pc.Messages():
					firstOnce.Do(func() { res.Startup = time.Since(start) })
					n++
					bytes += int64(len(m.Key) + len(m.Value))
					if m.Offset >= hi-1 {
						records.Add(n)
						size.Add(bytes)
						errc <- nil
						return
					}
				case e := <-pc.Errors():
					errc <- e.Err
					return
				case <-ctx.Done():
					errc <- ctx.Err()
					return
				}
			}
		}()
	}
	for range parts {
		if err := <-errc; err != nil {
			return res, err
		}
	}
	res.Elapsed = time.Since(start)
	res.Records, res.Bytes = records.Load(), size.Load()
	return res, nil
}
