package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
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
	conn   *kafka.Conn
	sp     sarama.SyncProducer
	topic  string
	group  string
	mirror bool
	log    *slog.Logger

	mu     sync.Mutex
	next   int64 // next offset of the checkpoint topic to read
	latest map[string][]byte
	// mirrored[p][task] is the last offset task checkpointed for p.
	mirrored map[stream.Partition]map[string]int64
}

// NewKafka connects to the cluster, creates the checkpoint topic if it is
// missing (compacted, one partition) and refuses one that is not compacted.
func NewKafka(kc stream.KafkaConfig, job string, opts KafkaOptions) (*Kafka, error) {
	if job == "" {
		return nil, errors.New("checkpoint: job name is empty")
	}
	cfg, err := kafka.Config(kc)
	if err != nil {
		return nil, err
	}
	// The manager reads only up to an end it knows: a fetch waiting for
	// new data would only hold the connection.
	cfg.Consumer.MaxWaitTime = 10 * time.Millisecond
	conn, err := kafka.Dial(cfg, kc.Brokers)
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
	if err := conn.EnsureTopic(kafka.TopicSpec{Name: k.topic, Partitions: 1, Compact: true}); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	k.sp, err = sarama.NewSyncProducerFromClient(conn.Client)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("checkpoint: start producer: %w", err)
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

func (k *Kafka) catchUp(ctx context.Context) error {
	p := stream.Partition{Topic: k.topic}
	hwm, err := k.conn.HighWatermark(p)
	if err != nil {
		return fmt.Errorf("checkpoint: read end of %s: %w", p, err)
	}
	if k.next >= hwm {
		return nil
	}
	start := k.next
	if start == 0 {
		start = sarama.OffsetOldest // compaction moves the log start
	}
	pc, err := k.conn.Consumer.ConsumePartition(k.topic, 0, start)
	if errors.Is(err, sarama.ErrOffsetOutOfRange) {
		pc, err = k.conn.Consumer.ConsumePartition(k.topic, 0, sarama.OffsetOldest)
	}
	if err != nil {
		return fmt.Errorf("checkpoint: read %s: %w", p, err)
	}
	// Wait until the consumer is gone (its errors channel closes after
	// sarama has released the partition): the next Load reads the same
	// partition, and sarama refuses a partition consumed twice. The wait
	// is at most one short fetch.
	defer func() {
		pc.AsyncClose()
		go func() {
			for range pc.Messages() {
			}
		}()
		for range pc.Errors() {
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	idle := time.NewTicker(100 * time.Millisecond)
	defer idle.Stop()
	quiet := 0 // ticks without a message
	for k.next < hwm {
		select {
		case <-idle.C:
			// Grete writes the last record itself, so it exists; but a
			// control record written by another tool could end the
			// partition. Once the consumer has fetched up to hwm and a
			// whole second passed without a message, nothing is left.
			if quiet++; quiet >= 10 && pc.HighWaterMarkOffset() >= hwm {
				k.next = hwm // nothing is left below hwm: start there next time
				return nil
			}
		case m, ok := <-pc.Messages():
			if !ok {
				return fmt.Errorf("checkpoint: read %s: the consumer stopped before offset %d", p, hwm)
			}
			quiet = 0
			if m.Value == nil {
				delete(k.latest, string(m.Key))
			} else {
				k.latest[string(m.Key)] = m.Value
			}
			k.next = m.Offset + 1
		case e := <-pc.Errors():
			return fmt.Errorf("checkpoint: read %s: %w", p, e.Err)
		case <-ctx.Done():
			return fmt.Errorf("checkpoint: read %s up to offset %d: %w", p, hwm, ctx.Err())
		}
	}
	return nil
}

// Write implements Manager. Transient broker errors are retried (by the
// producer, then here with backoff) until ctx ends.
func (k *Kafka) Write(ctx context.Context, c Checkpoint) error {
	b, err := Encode(c)
	if err != nil {
		return err
	}
	msg := &sarama.ProducerMessage{Topic: k.topic, Partition: 0, Key: sarama.StringEncoder(c.Task), Value: sarama.ByteEncoder(b)}
	backoff := 100 * time.Millisecond
	for {
		err = k.send(ctx, msg)
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
		if err := k.conn.CommitGroupOffsets(k.group, offsets); err != nil {
			// The checkpoint topic is the source of truth; the mirror only
			// informs lag tools, so a failure is reported, not fatal.
			k.log.Warn("mirroring checkpoint to consumer group failed", "group", k.group, "err", err)
		}
	}
	return nil
}

// send writes msg, giving up when ctx ends: the sync producer's own
// retries and timeouts take no context, and a commit must not overrun its
// timeout. A send given up on may still land; a later checkpoint of the
// same task supersedes it.
func (k *Kafka) send(ctx context.Context, msg *sarama.ProducerMessage) error {
	done := make(chan error, 1)
	go func() {
		_, _, err := k.sp.SendMessage(msg)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
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
	return errors.Join(k.sp.Close(), k.conn.Close())
}
