package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/stream"
)

// KafkaOptions tunes a Kafka manager. The zero value is ready to use.
type KafkaOptions struct {
	// Topic defaults to "<job>-checkpoints".
	Topic string
	// Mirror copies the checkpointed input offsets of every write to the
	// consumer group Group (default: the job name), so that lag tools see
	// progress. Leave it off for a manager given to task.Job: a job
	// mirrors its checkpoints to its group itself, and only a member of a
	// live group may commit the group's offsets.
	Mirror bool
	Group  string
	// Logger receives warnings (e.g. a failed mirror); defaults to
	// slog.Default().
	Logger *slog.Logger
}

// Kafka is a Manager that keeps checkpoints in a compacted topic with one
// partition, keyed by task name: compaction keeps exactly the last
// checkpoint of every task. With KafkaOptions.Mirror, each write also
// copies the checkpointed input offsets to a consumer group (for a
// partition several tasks read, the smallest offset), so standard lag
// tools see progress.
type Kafka struct {
	conn     *kafka.Conn
	producer *kafka.Producer
	latest   *kafka.Latest
	topic    string
	group    string
	mirror   bool
	log      *slog.Logger

	mu sync.Mutex
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
		conn: conn, topic: opts.Topic, group: opts.Group, mirror: opts.Mirror, log: opts.Logger,
		mirrored: map[stream.Partition]map[string]int64{},
	}
	if k.topic == "" {
		k.topic = Topic(job)
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
	k.latest = kafka.NewLatest(conn, k.producer, k.topic)
	return k, nil
}

// Topic is the name of job's checkpoint topic, "<job>-checkpoints".
func Topic(job string) string { return job + "-checkpoints" }

// Topic is the name of the checkpoint topic.
func (k *Kafka) Topic() string { return k.topic }

// Load implements Manager. It first reads every checkpoint written since
// the last Load, so it sees checkpoints written by other processes too.
func (k *Kafka) Load(ctx context.Context, task string) (Checkpoint, bool, error) {
	b, ok, err := k.latest.Get(ctx, task)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("checkpoint: %w", err)
	}
	if !ok {
		return Checkpoint{}, false, nil
	}
	c, err := Decode(b)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("checkpoint of task %q: %w", task, err)
	}
	k.mu.Lock()
	for p, off := range c.Inputs {
		k.noteMirror(task, p, off)
	}
	k.mu.Unlock()
	return c, true, nil
}

// Write implements Manager. Transient broker errors are retried (by the
// producer, then here with backoff) until ctx ends.
func (k *Kafka) Write(ctx context.Context, c Checkpoint) error {
	b, err := Encode(c)
	if err != nil {
		return err
	}
	if err := k.latest.Put(ctx, c.Task, b, k.log); err != nil {
		return fmt.Errorf("checkpoint %d of task %q: %w", c.ID, c.Task, err)
	}
	if !k.mirror {
		return nil
	}
	k.mu.Lock()
	offsets := make(map[stream.Partition]int64, len(c.Inputs))
	for p, off := range c.Inputs {
		offsets[p] = k.noteMirror(c.Task, p, off)
	}
	k.mu.Unlock()
	if err := k.conn.CommitGroupOffsets(ctx, k.group, offsets); err != nil {
		// The checkpoint topic is the source of truth; the mirror only
		// informs lag tools, so a failure is reported, not fatal.
		k.log.Warn("mirroring checkpoint to consumer group failed", "group", k.group, "err", err)
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
