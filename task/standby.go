package task

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// standbyInterval is how often a standby catches up with its task's latest
// checkpoint.
const standbyInterval = time.Second

// runStandby keeps a standby copy of task l.id's stores: every
// standbyInterval it loads the task's latest checkpoint and replays the
// changelog up to the offsets it records, never further (records past the
// checkpoint may yet be trimmed); errors are logged and retried. When the
// group later gives the task to this process, its restore replays only
// what the standby had not applied. It runs until the lease is revoked or
// the job stops.
func (c *container) runStandby(l *lease) error {
	ctx, cancel := c.leaseContext(l)
	defer cancel()
	name := fmt.Sprintf("task-%d", l.id)
	r := &runner{
		c: c, name: name, partition: l.id, lease: l, standby: true,
		log: slog.New(quieter{c.log.With("task", name, "standby", true).Handler()}),
	}
	if err := r.openStores(); err != nil {
		return err
	}
	defer func() { _ = r.closeStores() }()
	tick := time.NewTicker(standbyInterval)
	defer tick.Stop()
	for {
		if err := r.followCheckpoint(ctx); err != nil && ctx.Err() == nil {
			// Transient or not, the next round tries again; the task
			// itself would restore from the changelog meanwhile.
			r.log.Warn("standby could not catch up; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// followCheckpoint brings the standby's stores up to the task's latest
// checkpoint.
func (r *runner) followCheckpoint(ctx context.Context) error {
	cp, ok, err := r.c.cps.Load(ctx, r.name)
	if err != nil {
		return fmt.Errorf("load checkpoint: %w", err)
	}
	if !ok || cp.ID == r.lease.standbyAt.Load() {
		return nil
	}
	r.last = cp
	var lag int64
	for _, s := range r.stores {
		if meta, ok, _ := s.local.Meta(); ok {
			lag += max(0, cp.Changelogs[s.spec.Name]-meta.Offset)
		} else {
			lag += cp.Changelogs[s.spec.Name] + 1
		}
	}
	r.lease.standbyLag.Store(lag)
	if err := r.restore(ctx); err != nil {
		return err
	}
	r.lease.standbyLag.Store(0)
	r.lease.standbyAt.Store(cp.ID)
	return nil
}

// quieter logs a handler's Info records at Debug: a standby restores every
// second, and its progress is routine.
type quieter struct{ slog.Handler }

func (q quieter) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return q.Handler.Enabled(ctx, l)
}

func (q quieter) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level == slog.LevelInfo {
		rec.Level = slog.LevelDebug
	}
	return q.Handler.Handle(ctx, rec)
}

func (q quieter) WithAttrs(as []slog.Attr) slog.Handler { return quieter{q.Handler.WithAttrs(as)} }
func (q quieter) WithGroup(n string) slog.Handler       { return quieter{q.Handler.WithGroup(n)} }
