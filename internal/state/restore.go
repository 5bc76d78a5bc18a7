package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/grete-go/grete/store"
)

// Changelog reads one changelog partition: a Kafka partition in a job, a
// slice in tests.
type Changelog interface {
	// Name says which partition, for logs and errors.
	Name() string
	// End is the offset the next record will get (the high watermark).
	End(ctx context.Context) (int64, error)
	// Start is the offset of the oldest record kept.
	Start(ctx context.Context) (int64, error)
	// Read calls fn with the records whose offsets lie in [from, to], in
	// order and in batches, skipping offsets without a record; from may
	// be Oldest. The records are fn's to keep.
	Read(ctx context.Context, from, to int64, fn func([]LogRecord) error) error
}

// Oldest, as the start of a Read, means the oldest record kept.
const Oldest = -2

// LogRecord is a changelog record with its offset.
type LogRecord struct {
	Offset     int64
	Key, Value []byte
}

// Sink writes one store's changelog records.
type Sink interface {
	// Send hands a record on; it may return before the record is
	// acknowledged.
	Send(ctx context.Context, key, value []byte) error
	// Wait waits until every record sent so far is acknowledged, and
	// returns the highest offset acknowledged (-1 before the first).
	Wait(ctx context.Context) (int64, error)
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Standby leaves the records past the target alone: the task's owner
	// is writing them, and its next checkpoint covers them.
	Standby bool
	Log     *slog.Logger
}

// restoreBatch is how many changelog records replay hands the store at a
// time (the store writes its engine by larger chunks).
const restoreBatch = 4096

// Restore implements the restore protocol for one store, against its
// changelog cl, to target t (a checkpoint's id, and the last changelog
// offset it covers; -1: none):
//
//   - local metadata equal to the target: the store is used as it is;
//   - local store behind: the changelog is replayed from its offset + 1;
//   - no local store, one without metadata (an interrupted restore), or one
//     ahead of the target (which only a lost checkpoint topic can cause):
//     the changelog is replayed from the beginning into an empty store;
//
// and in every case, but for a standby, records past the target are
// trimmed: written by a run that crashed before its checkpoint, they are
// not applied, and each of their keys is written again through sink with
// its restored value (or a tombstone), so that no later restore picks
// them up. It returns the last changelog offset the store's state covers
// now: the target's, or the trim's last record's, which the task's next
// checkpoint must cover.
func Restore(ctx context.Context, l *Local, cl Changelog, sink Sink, t Meta, o RestoreOptions) (int64, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	end, err := cl.End(ctx)
	if err != nil {
		return 0, err
	}
	if t.Offset >= end {
		return 0, fmt.Errorf("the checkpoint covers changelog %s up to offset %d, but it ends at %d: was the changelog deleted or truncated?", cl.Name(), t.Offset, end)
	}
	meta, ok, err := l.Meta()
	if err != nil {
		return 0, err
	}
	from := int64(Oldest)
	switch {
	case ok && meta.Offset == t.Offset:
		log.Info("store is current; no replay", "store", l.Name(), "offset", t.Offset)
		from = t.Offset + 1 // nothing to replay
	case ok && meta.Offset < t.Offset:
		from = meta.Offset + 1
	case ok:
		log.Warn("local store is ahead of its checkpoint; rebuilding it from the changelog", "store", l.Name(), "local", meta.Offset, "checkpoint", t.Offset)
		if err := l.Wipe(); err != nil {
			return 0, err
		}
	default:
		// No metadata: a new store, or one whose restore from scratch was
		// interrupted. Its partial data may hold a key whose later
		// tombstone compaction has since dropped from the changelog:
		// start empty.
		if err := l.Wipe(); err != nil {
			return 0, err
		}
	}
	if t.Offset >= 0 && (from < 0 || from <= t.Offset) {
		if err := replay(ctx, l, cl, from, t, log); err != nil {
			return 0, err
		}
	}
	if !ok || meta.Offset != t.Offset || meta.CheckpointID != t.CheckpointID {
		if err := l.FinishRestore(t, 0); err != nil {
			return 0, err
		}
	}
	if end-1 > t.Offset && !o.Standby {
		return trim(ctx, l, cl, sink, t.Offset+1, end-1, log)
	}
	return t.Offset, nil
}

// replay applies changelog records [from, t.Offset] to the store, logging
// progress every few seconds.
func replay(ctx context.Context, l *Local, cl Changelog, from int64, t Meta, log *slog.Logger) error {
	start := time.Now()
	first := from
	if first < 0 {
		first, _ = cl.Start(ctx) // for the progress log only
		first = max(first, 0)
	}
	to := t.Offset
	log.Info("restoring store from changelog", "store", l.Name(), "changelog", cl.Name(), "from", first, "to", to)
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
				if err = l.Restore(b); err != nil {
					failed.Store(true)
				}
			}
		}
		applied <- err
	}()
	readErr := cl.Read(ctx, from, to, func(ms []LogRecord) error {
		if failed.Load() {
			return errors.New("store write failed")
		}
		// The store keeps the keys and values until FinishRestore: they
		// are the reader's to give away.
		for len(ms) > 0 {
			n := min(restoreBatch, len(ms))
			batch := make([]store.Record, n)
			for i, m := range ms[:n] {
				batch[i] = store.Record{Key: m.Key, Value: m.Value}
				bytes += uint64(len(m.Key) + len(m.Value))
			}
			recs += uint64(n)
			select {
			case batches <- batch:
			case <-ctx.Done():
				return ctx.Err()
			}
			if now := time.Now(); now.After(nextLog) {
				nextLog = now.Add(2 * time.Second)
				last := ms[n-1].Offset
				pct := 100.0
				if to > first {
					pct = 100 * float64(last-first) / float64(to-first)
				}
				log.Info("restoring", "store", l.Name(), "records", recs, "bytes", bytes, "percent", fmt.Sprintf("%.1f", pct))
			}
			ms = ms[n:]
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
	if err := l.FinishRestore(Meta{CheckpointID: t.CheckpointID, Offset: to}, took); err != nil {
		return err
	}
	log.Info("store restored", "store", l.Name(), "records", recs, "bytes", bytes, "took", took.Round(time.Millisecond),
		"records_per_s", fmt.Sprintf("%.0f", float64(recs)/max(took.Seconds(), 1e-9)))
	return nil
}

// trim rewrites every key of the changelog records in [from, to] with the
// value the store holds at the target, or a tombstone, and returns the
// offset of the last record written.
func trim(ctx context.Context, l *Local, cl Changelog, sink Sink, from, to int64, log *slog.Logger) (int64, error) {
	keys := map[string]struct{}{}
	err := cl.Read(ctx, from, to, func(ms []LogRecord) error {
		for _, m := range ms {
			keys[string(m.Key)] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("trim: %w", err)
	}
	if len(keys) == 0 {
		return from - 1, nil
	}
	log.Warn("trimming changelog records written after the last checkpoint", "store", l.Name(),
		"changelog", cl.Name(), "from", from, "to", to, "keys", len(keys))
	// In key order: a restart writes the same records whatever the run.
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		v, err := l.EngineValue([]byte(k))
		if err != nil {
			return 0, fmt.Errorf("trim: %w", err)
		}
		if err := sink.Send(ctx, []byte(k), v); err != nil {
			return 0, fmt.Errorf("trim: %w", err)
		}
	}
	// The next checkpoint covers the trim records, so a later restore
	// replays them over the records they correct.
	off, err := sink.Wait(ctx)
	if err != nil {
		return 0, fmt.Errorf("trim: %w", err)
	}
	return off, nil
}
