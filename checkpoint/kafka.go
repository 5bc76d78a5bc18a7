package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/stream"
)

// KafkaOptions tunes a Kafka manager. The zero value is ready to use.
type KafkaOptions struct {
	// Topic defaults to "<job>-checkpoints".
	Topic string
	// Group is the consumer group that input offsets are mirrored to;
	// defaults to the job name.
	Group string
	// NoMirror turns off mirroring to the consumer group.
	NoMirror bool
	// Logger receives warnings (e.g. a failed mirror); defaults to
	// slog.Default().
	Logger *slog.Logger
}

// Kafka is a Manager that keeps checkpoints in a compacted topic with one
// partition, keyed by task name: compaction keeps exactly the last
// checkpoint of every task. After each write it mirrors the checkpointed
// input offsets to the job's consumer group (for a partition several tasks
// read, the smallest offset), so standard lag tools see the job.
type Kafka struct {
	conn     *kafka.Conn
	producer *kafka.Producer
	topic    string
	group    string
	mirror   bool
	log      *slog.Logger

	mu     sync.Mutex
	next   int64 // next offset of the checkpoint topic to read
	latest map[string][]byte
	// mirrored[p][task] is the last offset task checkpointed for p.
	mirrored map[stream.Partition]map[string]int64
}

// NewKafka connects to the cluster, creates the checkpoint topic if it is
// missing (compacted, one partition) and refuses one that is not compacted.
func NewKafka(ctx context.Context, kc stream.KafkaConfig, job string, opts KafkaOptions) (*Kafka, error) {
	if job == "" {
		return nil, errors.New("checkpoint: job name is empty")
	}
	conn, err := kafka.Dial(ctx, kc, kafka.Options{})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	k := &Kafka{
		conn: conn, topic: opts.Topic, group: opts.Group, mirror: !opts.NoMirror, log: opts.Logger,
		latest: map[string][]byte{}, mirrored: map[stream.Partition]map[string]int64{},
	}
	if k.topic == "" {
		k.topic = job + "-checkpoints"
	}
	if k.group == "" {
		k.group = job
	}
	if k.log == nil {
		k.log = slog.Default()
	}
	if err := conn.EnsureTopic(ctx, kafka.TopicSpec{Name: k.topic, Partitions: 1, Compact: true}); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if k.producer, err = conn.NewProducer(); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return k, nil
}

// Topic is the name of the checkpoint topic.
func (k *Kafka) Topic() string { return k.topic }

// Load implements Manager. It first reads every checkpoint written since
// the last Load, so it sees checkpoints written by other processes too.
func (k *Kafka) Load(ctx context.Context, task string) (Checkpoint, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.catchUp(ctx); err != nil {
		return Checkpoint{}, false, err
	}
	b, ok := k.latest[task]
	if !ok {
		return Checkpoint{}, false, nil
	}
	c, err := Decode(b)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("checkpoint of task %q: %w", task, err)
	}
	for p, off := range c.Inputs {
		k.noteMirror(task, p, off)
	}
	return c, true, nil
}

// catchUp reads the checkpoint topic from where the last read stopped up
// to its end as of now.
func (k *Kafka) catchUp(ctx context.Context) error {
	p := stream.Partition{Topic: k.topic}
	hwm, err := k.conn.HighWatermark(ctx, p)
	if err != nil {
		return fmt.Errorf("checkpoint: read end of %s: %w", p, err)
	}
	if k.next >= hwm {
		return nil
	}
	from := k.next
	if from == 0 {
		from = kafka.Oldest // compaction moves the log start
	}
	err = k.conn.ReadRange(ctx, p, from, hwm-1, 4096, func(rs []kafka.Record) error {
		for _, r := range rs {
			if r.Value == nil {
				delete(k.latest, string(r.Key))
			} else {
				k.latest[string(r.Key)] = r.Value
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	k.next = hwm
	return nil
}

// Write implements Manager. Transient broker errors are retried (by the
// producer, then here with backoff) until ctx ends.
func (k *Kafka) Write(ctx context.Context, c Checkpoint) error {
	b, err := Encode(c)
	if err != nil {
		return err
	}
	m := &stream.Outgoing{Topic: k.topic, Partition: 0, HasPartition: true, Key: []byte(c.Task), Value: b}
	backoff := 100 * time.Millisecond
	for {
		t := kafka.NewTracker()
		if err = k.producer.Send(ctx, t, m, 0); err == nil {
			err = t.Wait(ctx)
		}
		if err == nil {
			break
		}
		k.log.Warn("checkpoint write failed; retrying", "task", c.Task, "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("checkpoint: write checkpoint %d of task %q: %w (last error: %v)", c.ID, c.Task, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	k.mu.Lock()
	k.latest[c.Task] = b
	var offsets map[stream.Partition]int64
	if k.mirror {
		offsets = make(map[stream.Partition]int64, len(c.Inputs))
		for p, off := range c.Inputs {
			offsets[p] = k.noteMirror(c.Task, p, off)
		}
	}
	k.mu.Unlock()
	if len(offsets) > 0 {
		if err := k.conn.CommitGroupOffsets(ctx, k.group, offsets); err != nil {
			// The checkpoint topic is the source of truth; the mirror only
			// informs lag tools, so a failure is reported, not fatal.
			k.log.Warn("mirroring checkpoint to consumer group failed", "group", k.group, "err", err)
		}
	}
	return nil
}

// noteMirror records task's offset for p and returns the smallest offset of
// any task for p. Callers hold k.mu.
func (k *Kafka) noteMirror(task string, p stream.Partition, off int64) int64 {
	m := k.mirrored[p]
	if m == nil {
		m = map[string]int64{}
		k.mirrored[p] = m
	}
	m[task] = off
	low := off
	for _, o := range m {
		low = min(low, o)
	}
	return low
}

// Close implements Manager.
func (k *Kafka) Close() error {
	return errors.Join(k.producer.Close(), k.conn.Close())
}
