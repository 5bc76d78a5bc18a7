package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/stream"
)

// Tracker counts one task's records (its outputs, or one store's changelog
// records) that the producer has not yet acknowledged, and remembers the
// first that failed and the highest offset acknowledged. A task waits on
// it before writing a checkpoint, so a checkpoint never covers a record
// that Kafka has not acknowledged. Counting is lock-free: the lock is
// taken only for failures and to wake a waiter.
type Tracker struct {
	inflight atomic.Int64
	sent     atomic.Int64
	waiters  atomic.Int32
	offset   atomic.Int64 // highest acknowledged offset, -1 before the first

	mu   sync.Mutex
	err  error
	wake chan struct{} // closed when inflight drops to 0 while waited on
}

// NewTracker returns an idle tracker.
func NewTracker() *Tracker {
	t := &Tracker{}
	t.offset.Store(-1)
	return t
}

func (t *Tracker) add() {
	t.inflight.Add(1)
	t.sent.Add(1)
}

func (t *Tracker) acked(offset int64) {
	for {
		cur := t.offset.Load()
		if offset <= cur || t.offset.CompareAndSwap(cur, offset) {
			return
		}
	}
}

// Offset is the highest offset acknowledged so far, or -1: for records all
// sent to one partition (a changelog's), the offset of the last.
func (t *Tracker) Offset() int64 { return t.offset.Load() }

func (t *Tracker) done(err error) {
	if err != nil {
		t.mu.Lock()
		if t.err == nil {
			t.err = err
		}
		t.mu.Unlock()
	}
	if t.inflight.Add(-1) == 0 && t.waiters.Load() > 0 {
		t.mu.Lock()
		if t.wake != nil && t.inflight.Load() == 0 {
			close(t.wake)
			t.wake = nil
		}
		t.mu.Unlock()
	}
}

// Err returns the first send failure, if any. Once set it stays set: the
// outputs it stands for are lost, so the task must not checkpoint past them.
func (t *Tracker) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Sent is the number of records sent through this tracker so far.
func (t *Tracker) Sent() int64 { return t.sent.Load() }

// Wait blocks until every record sent so far is acknowledged or failed,
// then returns the first failure, if any. With nothing in flight it
// returns at once, even when ctx is done.
func (t *Tracker) Wait(ctx context.Context) error {
	if t.inflight.Load() != 0 {
		t.mu.Lock()
		if t.wake == nil {
			t.wake = make(chan struct{})
		}
		wake := t.wake
		t.waiters.Add(1)
		t.mu.Unlock()
		defer t.waiters.Add(-1)
		// done checks waiters after its decrement, and this checks
		// inflight after counting itself in: one of the two sees the other.
		if t.inflight.Load() != 0 {
			select {
			case <-wake:
			case <-ctx.Done():
				return fmt.Errorf("waiting for output acknowledgements: %w", ctx.Err())
			}
		}
	}
	return t.Err()
}

// ErrProducerClosed is returned by Send after Close.
var ErrProducerClosed = errors.New("producer closed")

// Producer is the one asynchronous, idempotent (acks=all) producer of a
// process. Send does not wait for the network; it blocks only when the
// producer's bounded buffers are full, which is how a task feels
// backpressure from a slow cluster.
type Producer struct {
	ap     sarama.AsyncProducer
	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup
}

// NewProducer starts a producer on the connection. The producer's requests
// share the connection's broker connections: give a producer a connection
// of its own (see Conn).
func (c *Conn) NewProducer() (*Producer, error) {
	ap, err := sarama.NewAsyncProducerFromClient(c.client)
	if err != nil {
		return nil, fmt.Errorf("start producer: %w", err)
	}
	p := &Producer{ap: ap}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		for m := range ap.Successes() {
			switch md := m.Metadata.(type) {
			case *Tracker:
				md.acked(m.Offset)
				md.done(nil)
			case *Meta:
				md.Tracker.acked(m.Offset)
				md.Tracker.done(nil)
			}
		}
	}()
	go func() {
		defer p.wg.Done()
		for e := range ap.Errors() {
			err := fmt.Errorf("produce to topic %q: %w", e.Msg.Topic, e.Err)
			switch md := e.Msg.Metadata.(type) {
			case *Tracker:
				md.done(err)
			case *Meta:
				md.Tracker.done(err)
			}
		}
	}()
	return p, nil
}

// Send hands m to the producer; t learns when it is acknowledged.
func (p *Producer) Send(ctx context.Context, t *Tracker, m *stream.Outgoing) error {
	// The common record carries just its tracker; routing details cost an
	// allocation only when present.
	pm := &sarama.ProducerMessage{Topic: m.Topic, Timestamp: m.Timestamp, Metadata: t}
	if m.PartitionKey != nil || m.HasPartition {
		pm.Metadata = &Meta{Tracker: t, PartitionKey: m.PartitionKey, Partition: m.Partition, HasPartition: m.HasPartition}
	}
	if m.Key != nil {
		pm.Key = sarama.ByteEncoder(m.Key)
	}
	if m.Value != nil {
		pm.Value = sarama.ByteEncoder(m.Value)
	}
	if pm.Timestamp.IsZero() {
		pm.Timestamp = time.Now()
	}
	if len(m.Headers) > 0 {
		pm.Headers = make([]sarama.RecordHeader, len(m.Headers))
		for i, h := range m.Headers {
			pm.Headers[i] = sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value}
		}
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrProducerClosed
	}
	t.add()
	// Most sends find the producer ready: try without the cost of a
	// select over ctx first.
	select {
	case p.ap.Input() <- pm:
		return nil
	default:
	}
	select {
	case p.ap.Input() <- pm:
		return nil
	case <-ctx.Done():
		t.done(ctx.Err())
		return ctx.Err()
	}
}

// Close flushes what was sent, waits for every acknowledgement, and stops
// the producer.
func (p *Producer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.ap.AsyncClose()
	p.wg.Wait()
	return nil
}
