package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/grete-go/grete/stream"
)

// Latest is the latest value of every key of a compacted topic of one
// partition (a job's checkpoints): it reads what was written since its
// last read, to the topic's end, and writes values through a producer.
type Latest struct {
	conn     *Conn
	producer *Producer
	topic    string

	mu     sync.Mutex
	next   int64 // next offset to read
	values map[string][]byte
}

// NewLatest returns a Latest of topic, reading on conn and writing
// through producer.
func NewLatest(conn *Conn, producer *Producer, topic string) *Latest {
	return &Latest{conn: conn, producer: producer, topic: topic, values: map[string][]byte{}}
}

// Get returns key's latest value, having read every record written so
// far (by any process).
func (l *Latest) Get(ctx context.Context, key string) ([]byte, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.catchUp(ctx); err != nil {
		return nil, false, err
	}
	v, ok := l.values[key]
	return v, ok, nil
}

// catchUp reads the topic from where the last read stopped up to its end
// as of now.
func (l *Latest) catchUp(ctx context.Context) error {
	p := stream.Partition{Topic: l.topic}
	end, err := l.conn.HighWatermark(ctx, p)
	if err != nil {
		return fmt.Errorf("read end of %s: %w", p, err)
	}
	if l.next >= end {
		return nil
	}
	from := l.next
	if from == 0 {
		from = Oldest // compaction moves the log start
	}
	err = l.conn.ReadRange(ctx, p, from, end-1, 4096, func(rs []Record) error {
		for _, r := range rs {
			if r.Value == nil {
				delete(l.values, string(r.Key))
			} else {
				l.values[string(r.Key)] = r.Value
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	l.next = end
	return nil
}

// Put writes key's value and waits until it is acknowledged, retrying a
// failed write with backoff until ctx ends; log hears of the retries.
func (l *Latest) Put(ctx context.Context, key string, value []byte, log *slog.Logger) error {
	m := &stream.Outgoing{Topic: l.topic, Partition: 0, HasPartition: true, Key: []byte(key), Value: value}
	backoff := 100 * time.Millisecond
	for {
		t := NewTracker()
		err := l.producer.Send(ctx, t, m)
		if err == nil {
			err = t.Wait(ctx)
		}
		if err == nil {
			break
		}
		if ctx.Err() == nil && log != nil {
			log.Warn("write to "+l.topic+" failed; retrying", "key", key, "err", err, "backoff", backoff)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("write %q to %s: %w (last error: %v)", key, l.topic, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	l.mu.Lock()
	l.values[key] = value
	l.mu.Unlock()
	return nil
}
