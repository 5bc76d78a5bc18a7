package task

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// taskStore is one store of one task, with its changelog position.
type taskStore struct {
	local *state.Local
	spec  store.Spec
	idx   int    // index in the runner's stores; the tracker's changelog index is idx+1
	topic string // changelog topic, "" without changelog
	// offset is the last changelog offset the store's committed state
	// covers (-1 none); checkpoints record it.
	offset int64
}

func (j *Job) dataDir() string {
	if j.DataDir == "" {
		return filepath.Join(os.TempDir(), "grete")
	}
	return j.DataDir
}

func (j *Job) changelogTopic(s store.Spec) string {
	if s.NoChangelog {
		return ""
	}
	return j.Name + "-" + s.Name + "-changelog"
}

// ensureChangelogs creates missing changelog topics and refuses existing
// ones that would corrupt state: not compacted, or too few partitions.
func (c *container) ensureChangelogs(ensure func(kafka.TopicSpec) error) error {
	for _, s := range c.job.Stores {
		t := c.job.changelogTopic(s)
		if t == "" {
			continue
		}
		spec := kafka.TopicSpec{Name: t, Partitions: c.tasks, MinPartitions: c.tasks, Compact: true}
		if err := ensure(spec); err != nil {
			return fmt.Errorf("store %q changelog: %w", s.Name, err)
		}
	}
	return nil
}

// openStores opens the task's stores under <data-dir>/<job>/<task>/<store>.
func (r *runner) openStores() error {
	for i, s := range r.c.job.Stores {
		dir := filepath.Join(r.c.job.dataDir(), r.c.job.Name, r.name, s.Name)
		l, err := state.Open(dir, s, nil)
		if err != nil {
			return fmt.Errorf("task %s: %w", r.name, err)
		}
		r.stores = append(r.stores, &taskStore{local: l, spec: l.Spec(), idx: i, topic: r.c.job.changelogTopic(s), offset: -1})
	}
	return nil
}

// Store implements Context.
func (r *runner) Store(name string) (store.Store, error) {
	for _, s := range r.stores {
		if s.spec.Name == name {
			return s.local.View(), nil
		}
	}
	return nil, fmt.Errorf("task %s: no store %q (declare it in Job.Stores)", r.name, name)
}

// restoreBatch is how many changelog records the reader hands the store
// at a time (the store writes its engine by larger chunks).
const restoreBatch = 4096

// restore brings every store of the task to its checkpoint.
func (r *runner) restore(ctx context.Context) error {
	for _, s := range r.stores {
		if err := r.restoreStore(ctx, s); err != nil {
			return fmt.Errorf("task %s: restore store %q: %w", r.name, s.spec.Name, err)
		}
	}
	return nil
}

// restoreStore implements the restore protocol for one store:
//
//   - local metadata equal to the checkpoint: use the store as it is;
//   - local store behind: replay the changelog from its offset + 1;
//   - no local store, one without metadata (an interrupted restore), or one
//     ahead of the checkpoint (which only a lost checkpoint topic can
//     cause): replay from the beginning into an empty store;
//
// and in every case trim: changelog records after the checkpointed offset
// were written by a run that crashed before its checkpoint. They are not
// applied, and each of their keys is rewritten with its restored value (or
// a tombstone), so no later restore can pick them up.
func (r *runner) restoreStore(ctx context.Context, s *taskStore) error {
	target := int64(-1)
	if off, ok := r.last.Changelogs[s.spec.Name]; ok {
		target = off
	}
	s.offset = target
	if s.topic == "" {
		return nil
	}
	p := stream.Partition{Topic: s.topic, Partition: r.partition}
	var hwm int64
	err := r.c.retry(ctx, "read end of "+p.String(), func() (err error) {
		hwm, err = r.c.conn.HighWatermark(ctx, p)
		return err
	})
	if err != nil {
		return err
	}
	if target >= hwm {
		return fmt.Errorf("the checkpoint covers changelog %s up to offset %d, but it ends at %d: was the changelog deleted or truncated?", p, target, hwm)
	}
	meta, ok, err := s.local.Meta()
	if err != nil {
		return err
	}
	from := int64(kafka.Oldest)
	switch {
	case ok && meta.Offset == target:
		r.log.Info("store is current; no replay", "store", s.spec.Name, "offset", target)
		from = target + 1 // nothing to replay
	case ok && meta.Offset < target:
		from = meta.Offset + 1
	case ok:
		r.log.Warn("local store is ahead of its checkpoint; rebuilding it from the changelog", "store", s.spec.Name, "local", meta.Offset, "checkpoint", target)
		if err := s.local.Wipe(); err != nil {
			return err
		}
	default:
		// No metadata: a new store, or one whose restore from scratch
		// was interrupted. Its partial data may hold a key whose later
		// tombstone compaction has since dropped from the changelog:
		// start empty.
		if err := s.local.Wipe(); err != nil {
			return err
		}
	}
	if target >= 0 && (from < 0 || from <= target) {
		if err := r.replay(ctx, s, p, from, target); err != nil {
			return err
		}
	}
	if !ok || meta.Offset != target || meta.CheckpointID != r.last.ID {
		if err := s.local.FinishRestore(state.Meta{CheckpointID: r.last.ID, Offset: target}, 0); err != nil {
			return err
		}
	}
	// A standby leaves the records past the checkpoint alone: the task's
	// owner is writing them, and its next checkpoint covers them.
	if hwm-1 > target && !r.standby {
		return r.trim(ctx, s, p, target+1, hwm-1)
	}
	return nil
}

// replay applies changelog records [from, to] to the store, logging
// progress every few seconds.
func (r *runner) replay(ctx context.Context, s *taskStore, p stream.Partition, from, to int64) error {
	start := time.Now()
	first := from
	if first < 0 {
		_ = r.c.retry(ctx, "read start of "+p.String(), func() (err error) {
			first, err = r.c.conn.OldestOffset(ctx, p)
			return err
		})
		first = max(first, 0) // for the progress log only
	}
	r.log.Info("restoring store from changelog", "store", s.spec.Name, "changelog", p.String(), "from", first, "to", to)
	var recs, bytes uint64
	nextLog := time.Now().Add(2 * time.Second)
	// Fetching and writing overlap: an applier goroutine writes batches to
	// the store while the next ones are read. The store writes its engine
	// by chunks of a few megabytes, each ending with syncs: the queue lets
	// reading go on meanwhile.
	batches := make(chan []store.Record, 8)
	applied := make(chan error, 1)
	var failed atomic.Bool
	go func() {
		var err error
		for b := range batches {
			if err == nil {
				if err = s.local.Restore(b); err != nil {
					failed.Store(true)
				}
			}
		}
		applied <- err
	}()
	readErr := r.c.conn.ReadRange(ctx, p, first, to, restoreBatch, func(ms []kafka.Record) error {
		if failed.Load() {
			return errors.New("store write failed")
		}
		// The store keeps the keys and values until FinishRestore: they
		// are the reader's to give away.
		batch := make([]store.Record, len(ms))
		for i, m := range ms {
			batch[i] = store.Record{Key: m.Key, Value: m.Value}
			bytes += uint64(len(m.Key) + len(m.Value))
		}
		recs += uint64(len(ms))
		select {
		case batches <- batch:
		case <-ctx.Done():
			return ctx.Err()
		}
		if now := time.Now(); now.After(nextLog) {
			nextLog = now.Add(2 * time.Second)
			last := ms[len(ms)-1].Offset
			pct := 100.0
			if to > first {
				pct = 100 * float64(last-first) / float64(to-first)
			}
			r.log.Info("restoring", "store", s.spec.Name, "records", recs, "bytes", bytes, "percent", fmt.Sprintf("%.1f", pct))
		}
		return nil
	})
	close(batches)
	if err := <-applied; err != nil {
		return err
	}
	if readErr != nil {
		return readErr
	}
	took := time.Since(start)
	if err := s.local.FinishRestore(state.Meta{CheckpointID: r.last.ID, Offset: to}, took); err != nil {
		return err
	}
	r.log.Info("store restored", "store", s.spec.Name, "records", recs, "bytes", bytes, "took", took.Round(time.Millisecond),
		"records_per_s", fmt.Sprintf("%.0f", float64(recs)/max(took.Seconds(), 1e-9)))
	return nil
}

// trim rewrites every key of the changelog records in [from, to] with the
// value the store holds at the checkpoint, or a tombstone.
func (r *runner) trim(ctx context.Context, s *taskStore, p stream.Partition, from, to int64) error {
	keys := map[string]struct{}{}
	err := r.c.conn.ReadRange(ctx, p, from, to, restoreBatch, func(ms []kafka.Record) error {
		for _, m := range ms {
			keys[string(m.Key)] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	if len(keys) == 0 {
		return nil
	}
	r.log.Warn("trimming changelog records written after the last checkpoint", "store", s.spec.Name,
		"changelog", p.String(), "from", from, "to", to, "keys", len(keys))
	for k := range keys {
		v, err := s.local.EngineValue([]byte(k))
		if err != nil {
			return fmt.Errorf("trim: %w", err)
		}
		m := stream.Outgoing{Topic: s.topic, Key: []byte(k), Value: v, Partition: r.partition, HasPartition: true}
		if err := r.c.producer.Send(ctx, r.tracker, &m, s.idx+1); err != nil {
			return fmt.Errorf("trim: %w", err)
		}
	}
	if err := r.tracker.Wait(ctx); err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	// The next checkpoint covers the trim records, so a later restore
	// replays them over the records they correct.
	s.offset = r.tracker.ChangelogOffset(s.idx)
	r.dirty = true
	return nil
}

// flushStores is step 2 of the commit protocol: every buffered key of every
// store becomes one changelog record.
func (r *runner) flushStores(ctx context.Context) error {
	for _, s := range r.stores {
		if s.topic == "" {
			continue
		}
		err := s.local.Flush(func(key, value []byte) error {
			m := stream.Outgoing{Topic: s.topic, Key: key, Value: value, Partition: r.partition, HasPartition: true}
			return r.c.producer.Send(ctx, r.tracker, &m, s.idx+1)
		})
		if err != nil {
			return fmt.Errorf("store %q: flush: %w", s.spec.Name, err)
		}
	}
	return nil
}

// storesDirty reports whether any store has buffered writes.
func (r *runner) storesDirty() bool {
	for _, s := range r.stores {
		if s.local.Buffered() > 0 {
			return true
		}
	}
	return false
}

// storesFull reports whether a store's write buffer asks for a commit.
func (r *runner) storesFull() bool {
	for _, s := range r.stores {
		if s.local.Full() {
			return true
		}
	}
	return false
}

func (r *runner) closeStores() error {
	var errs []error
	for _, s := range r.stores {
		if err := s.local.Close(); err != nil {
			errs = append(errs, fmt.Errorf("store %q: close: %w", s.spec.Name, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("task %s: %v", r.name, errs)
	}
	return nil
}

// OpenStore opens store name of task taskNum (task-N reads partition N of
// the inputs) as the job left it in this machine's DataDir, read only, for
// inspection: the state of the task's last commit here. Stop the job
// first: a running job holds its stores. Writes to the store fail with
// store.ErrReadOnly; close it with the returned Closer. A task whose store
// this machine does not hold (it ran elsewhere, or never committed) is an
// error: its state is in its changelog (see package store).
func (j *Job) OpenStore(taskNum int32, name string) (store.Store, io.Closer, error) {
	i := slices.IndexFunc(j.Stores, func(s store.Spec) bool { return s.Name == name })
	if i < 0 {
		return nil, nil, fmt.Errorf("task: job %q declares no store %q", j.Name, name)
	}
	dir := filepath.Join(j.dataDir(), j.Name, fmt.Sprintf("task-%d", taskNum), name)
	l, err := state.OpenReadOnly(dir, j.Stores[i])
	if err != nil {
		return nil, nil, fmt.Errorf("task: open store %q of task-%d of job %q: %w", name, taskNum, j.Name, err)
	}
	return l.View(), l, nil
}
