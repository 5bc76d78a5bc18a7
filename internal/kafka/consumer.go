package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/stream"
)

// Start positions, as offsets: the oldest retained record, and the next
// record produced.
const (
	Oldest = sarama.OffsetOldest
	Newest = sarama.OffsetNewest
)

// Input is one partition to read and where to begin: an exact next offset,
// or Oldest or Newest.
type Input struct {
	Partition stream.Partition
	Offset    int64
}

// Subscription forwards the messages of a set of partitions, in offset order
// per partition, into one bounded channel.
type Subscription struct {
	conn   *Conn
	owned  []stream.Partition // partitions read through the shared consumer
	extra  sarama.Consumer    // for partitions another subscription reads too
	pcs    []sarama.PartitionConsumer
	failed chan error // a partition stopped on its own; see Failed
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Subscribe starts reading inputs and sends every message to out. Sends
// block while out is full: that is the backpressure that keeps memory
// bounded whatever the backlog. A checkpointed offset that no longer exists
// (deleted by retention or compaction) restarts at the oldest retained
// message, with a warning; newer data is never skipped.
func (c *Conn) Subscribe(inputs []Input, out chan<- stream.Message, log *slog.Logger) (*Subscription, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Subscription{conn: c, cancel: cancel, failed: make(chan error, 1)}
	for _, in := range inputs {
		// A sarama consumer reads a partition once; broadcast inputs are
		// read by every task, so later readers get a consumer of their own.
		consumer := c.consumer
		c.mu.Lock()
		if c.reading[in.Partition] {
			if s.extra == nil {
				var err error
				if s.extra, err = sarama.NewConsumerFromClient(c.client); err != nil {
					c.mu.Unlock()
					s.Close()
					return nil, fmt.Errorf("start consumer: %w", err)
				}
			}
			consumer = s.extra
		} else {
			c.reading[in.Partition] = true
			s.owned = append(s.owned, in.Partition)
		}
		c.mu.Unlock()
		pc, err := consumer.ConsumePartition(in.Partition.Topic, in.Partition.Partition, in.Offset)
		if errors.Is(err, sarama.ErrOffsetOutOfRange) && in.Offset >= 0 {
			log.Warn("checkpointed offset is no longer in the log; resuming at the oldest retained message",
				"partition", in.Partition.String(), "offset", in.Offset)
			pc, err = consumer.ConsumePartition(in.Partition.Topic, in.Partition.Partition, sarama.OffsetOldest)
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("consume %s from offset %d: %w", in.Partition, in.Offset, err)
		}
		s.pcs = append(s.pcs, pc)
		s.wg.Add(1)
		go s.forward(ctx, pc, out, in.Partition, log)
	}
	return s, nil
}

// Failed delivers an error when a partition stops being read while the
// subscription is open: sarama closes a partition consumer itself, e.g.
// when its offset fell out of the log. The reader of the subscription must
// stop then, or it would silently stop receiving that partition.
func (s *Subscription) Failed() <-chan error { return s.failed }

func (s *Subscription) forward(ctx context.Context, pc sarama.PartitionConsumer, out chan<- stream.Message, p stream.Partition, log *slog.Logger) {
	defer s.wg.Done()
	msgs, errs := pc.Messages(), pc.Errors()
	var lastErr error
	var logged time.Time // when an error was last logged
	failures := 0        // errors since
	stopped := func() {
		if ctx.Err() != nil {
			return // closed by Close
		}
		err := fmt.Errorf("consumer of %s stopped (last error: %v)", p, lastErr)
		select {
		case s.failed <- err:
		default:
		}
	}
	for {
		// Fast path while a backlog streams in: a message is ready and the
		// queue has room. Non-blocking channel operations cost a fraction
		// of a multi-way select.
		select {
		case m, ok := <-msgs:
			if !ok {
				stopped()
				return
			}
			sm := toMessage(m)
			select {
			case out <- sm:
				continue
			default:
			}
			select {
			case out <- sm:
				continue
			case <-ctx.Done():
				return
			}
		default:
		}
		select {
		case <-ctx.Done():
			return
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Sarama retries fetches itself; these are reports, not failures
			// (unless the consumer then stops: see stopped). While a broker
			// is away they come every retry: log the first, then a count
			// every few seconds.
			lastErr = err.Err
			if failures++; time.Since(logged) >= consumerErrorEvery {
				log.Warn("consumer error; retrying", "partition", p.String(), "err", err.Err, "errors", failures)
				logged, failures = time.Now(), 0
			}
		case m, ok := <-msgs:
			if !ok {
				stopped()
				return
			}
			sm := toMessage(m)
			select {
			case out <- sm:
			case <-ctx.Done():
				return
			}
		}
	}
}

// consumerErrorEvery is how often a partition's consumer errors are logged.
const consumerErrorEvery = 10 * time.Second

func toMessage(m *sarama.ConsumerMessage) stream.Message {
	sm := stream.Message{
		Topic: m.Topic, Partition: m.Partition, Offset: m.Offset,
		Key: m.Key, Value: m.Value, Timestamp: m.Timestamp,
	}
	if len(m.Headers) > 0 {
		sm.Headers = make([]stream.Header, len(m.Headers))
		for i, h := range m.Headers {
			sm.Headers[i] = stream.Header{Key: string(h.Key), Value: h.Value}
		}
	}
	return sm
}

// Stop begins closing the subscription without waiting; Close finishes.
// Stopping many subscriptions before closing any lets their in-flight
// fetches end together rather than one after another.
func (s *Subscription) Stop() {
	s.cancel()
	for _, pc := range s.pcs {
		pc.AsyncClose()
	}
}

// Close stops forwarding and closes the partition consumers. It returns
// once no goroutine of the subscription is running.
func (s *Subscription) Close() {
	s.Stop()
	s.wg.Wait()
	// Drain so that sarama's goroutines can finish.
	for _, pc := range s.pcs {
		for range pc.Messages() {
		}
		for range pc.Errors() {
		}
	}
	s.pcs = nil
	if s.extra != nil {
		_ = s.extra.Close()
		s.extra = nil
	}
	s.conn.mu.Lock()
	for _, p := range s.owned {
		delete(s.conn.reading, p)
	}
	s.owned = nil
	s.conn.mu.Unlock()
}

// CommitGroupOffsets records offsets (next offset to read) as the committed
// offsets of group, the way a consumer outside any group generation does, so
// that lag tools see how far the job has got.
func (c *Conn) CommitGroupOffsets(ctx context.Context, group string, offsets map[stream.Partition]int64) error {
	if len(offsets) == 0 {
		return nil
	}
	_, err := call(ctx, func() (struct{}, error) { return struct{}{}, c.commitGroupOffsets(group, offsets) })
	return err
}

func (c *Conn) commitGroupOffsets(group string, offsets map[stream.Partition]int64) error {
	coord, err := c.client.Coordinator(group)
	if err != nil {
		return fmt.Errorf("find coordinator of group %q: %w", group, err)
	}
	req := &sarama.OffsetCommitRequest{
		Version:                 2,
		ConsumerGroup:           group,
		ConsumerGroupGeneration: sarama.GroupGenerationUndefined,
		RetentionTime:           -1,
	}
	for p, off := range offsets {
		req.AddBlock(p.Topic, p.Partition, off, 0, "grete")
	}
	resp, err := coord.CommitOffset(req)
	if err != nil {
		_ = c.client.RefreshCoordinator(group)
		return fmt.Errorf("commit offsets of group %q: %w", group, err)
	}
	for topic, parts := range resp.Errors {
		for part, kerr := range parts {
			if kerr != sarama.ErrNoError {
				return fmt.Errorf("commit offset of group %q for %s/%d: %w", group, topic, part, kerr)
			}
		}
	}
	return nil
}

// HighWatermark returns the offset the next record of p will get.
func (c *Conn) HighWatermark(ctx context.Context, p stream.Partition) (int64, error) {
	return call(ctx, func() (int64, error) { return c.client.GetOffset(p.Topic, p.Partition, sarama.OffsetNewest) })
}
