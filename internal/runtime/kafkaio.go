package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/stream"
)

// The Kafka plugs of the task loop: where a task's outputs, changelog
// records and checkpoints go, and where its changelogs are read.

// sender sends a task's outputs through the process's producer.
type sender struct {
	c         *Container
	tracker   *kafka.Tracker
	lastTopic string // last output topic known to exist (AutoCreateOutputs)
}

func newSender(c *Container) *sender { return &sender{c: c, tracker: kafka.NewTracker()} }

func (s *sender) Send(ctx context.Context, m stream.Outgoing) error {
	if s.c.cfg.AutoCreateOutputs && m.Topic != s.lastTopic {
		if err := s.c.ensureOutput(m.Topic); err != nil {
			return err
		}
		s.lastTopic = m.Topic
	}
	return s.c.producer.Send(ctx, s.tracker, &m)
}

func (s *sender) Wait(ctx context.Context) error { return s.c.acked(s.tracker, ctx) }
func (s *sender) Sent() int64                    { return s.tracker.Sent() }
func (s *sender) Err() error                     { return lostErr(s.tracker.Err()) }

// acked waits for t's records. A record lost to a broken connection or a
// broker that restarted is a rewindError: the task starts again from its
// checkpoint and sends it again; a wait that timed out while the cluster
// was away says so.
func (c *Container) acked(t *kafka.Tracker, ctx context.Context) error {
	err := t.Wait(ctx)
	if err == nil || kafka.Transient(err) {
		return lostErr(err)
	}
	return c.unreachable(err)
}

// lostErr makes a record lost for a reason that may pass a rewindError.
func lostErr(err error) error {
	if err != nil && kafka.Transient(err) {
		return &rewindError{err: err}
	}
	return err
}

// changelogSink writes one store's changelog records to its partition.
type changelogSink struct {
	c       *Container
	p       stream.Partition
	tracker *kafka.Tracker
}

func (s *changelogSink) Send(ctx context.Context, key, value []byte) error {
	return s.c.producer.Send(ctx, s.tracker, &stream.Outgoing{Topic: s.p.Topic, Key: key, Value: value, Partition: s.p.Partition, HasPartition: true})
}

func (s *changelogSink) Err() error { return lostErr(s.tracker.Err()) }

func (s *changelogSink) Wait(ctx context.Context) (int64, error) {
	if err := s.c.acked(s.tracker, ctx); err != nil {
		return 0, err
	}
	return s.tracker.Offset(), nil
}

// changelogReader reads one store's changelog partition.
type changelogReader struct {
	c *Container
	p stream.Partition
}

func (r changelogReader) Name() string { return r.p.String() }

func (r changelogReader) End(ctx context.Context) (end int64, err error) {
	err = r.c.retry(ctx, "read end of "+r.p.String(), func() (err error) {
		end, err = r.c.conn.HighWatermark(ctx, r.p)
		return err
	})
	return end, err
}

func (r changelogReader) Start(ctx context.Context) (start int64, err error) {
	err = r.c.retry(ctx, "read start of "+r.p.String(), func() (err error) {
		start, err = r.c.conn.OldestOffset(ctx, r.p)
		return err
	})
	return start, err
}

func (r changelogReader) Read(ctx context.Context, from, to int64, fn func([]state.LogRecord) error) error {
	if from == state.Oldest {
		from = kafka.Oldest
	}
	return r.c.conn.ReadRange(ctx, r.p, from, to, 4096, func(rs []kafka.Record) error {
		out := make([]state.LogRecord, len(rs))
		for i, r := range rs {
			out[i] = state.LogRecord{Offset: r.Offset, Key: r.Key, Value: r.Value}
		}
		return fn(out)
	})
}

// checkpoints is the job's checkpoint topic, read on the container's
// connection and written through its producer.
type checkpoints struct {
	latest *kafka.Latest
	log    *slog.Logger
}

func (k *checkpoints) Load(ctx context.Context, task string) (checkpoint.Checkpoint, bool, error) {
	b, ok, err := k.latest.Get(ctx, task)
	if err != nil || !ok {
		return checkpoint.Checkpoint{}, false, err
	}
	c, err := checkpoint.Decode(b)
	if err != nil {
		return checkpoint.Checkpoint{}, false, fmt.Errorf("checkpoint of task %q: %w", task, err)
	}
	return c, true, nil
}

func (k *checkpoints) Write(ctx context.Context, c checkpoint.Checkpoint) error {
	b, err := checkpoint.Encode(c)
	if err != nil {
		return err
	}
	return k.latest.Put(ctx, c.Task, b, k.log)
}

func (k *checkpoints) Close() error { return nil }

// leaseWriter writes a task's checkpoints while its lease is valid: the
// process's group membership confirmed recently enough that no other
// process can have been given the task (see leases.waitValid). A write that
// cannot finish in that time is tried again once the membership is
// confirmed again, or given up once the task is fenced.
type leaseWriter struct {
	c     *Container
	lease *lease
}

func (w leaseWriter) Write(ctx context.Context, cp checkpoint.Checkpoint) error {
	for {
		until, err := w.c.grp.waitValid(ctx, w.lease)
		if err != nil {
			return w.c.unreachable(err)
		}
		wctx, cancel := context.WithDeadline(ctx, until)
		err = w.c.cps.Write(wctx, cp)
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if ctx.Err() != nil {
			return w.c.unreachable(err)
		}
	}
}

// rewindError ends a task whose outputs (or changelog records) were lost
// for a reason that may pass: a connection broke and the producer gave
// them up. Nothing past the last checkpoint may be checkpointed now, but
// nothing is lost either: the task starts again from its checkpoint, as
// after a crash, and sends them again.
type rewindError struct {
	err error
}

func (e *rewindError) Error() string {
	return fmt.Sprintf("lost to a broken connection or a restarting broker (%v); restarting the task from its last checkpoint", e.err)
}

func (e *rewindError) Unwrap() error { return e.err }
