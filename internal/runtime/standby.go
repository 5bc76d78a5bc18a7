package runtime

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
func (c *Container) runStandby(l *lease) error {
	ctx, cancel := c.leaseContext(l)
	defer cancel()
	name := TaskName(l.id)
	log := slog.New(quieter{c.log.With("task", name, "standby", true).Handler()})
	stores, err := c.openStores(l.id, false)
	if err != nil {
		return err
	}
	defer func() { _ = CloseStores(name, stores) }()
	tick := time.NewTicker(standbyInterval)
	defer tick.Stop()
	for {
		if err := c.followCheckpoint(ctx, l, stores, log); err != nil && ctx.Err() == nil {
			// Transient or not, the next round tries again; the task
			// itself would restore from the changelog meanwhile.
			log.Warn("standby could not catch up; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// followCheckpoint brings a standby's stores up to its task's latest
// checkpoint.
func (c *Container) followCheckpoint(ctx context.Context, l *lease, stores []*Store, log *slog.Logger) error {
	cp, ok, err := c.cps.Load(ctx, TaskName(l.id))
	if err != nil {
		return fmt.Errorf("load checkpoint: %w", err)
	}
	if !ok || cp.ID == l.standbyAt.Load() {
		return nil
	}
	var lag int64
	for _, s := range stores {
		if meta, ok, _ := s.Local.Meta(); ok {
			lag += max(0, cp.Changelogs[s.Local.Name()]-meta.Offset)
		} else {
			lag += cp.Changelogs[s.Local.Name()] + 1
		}
	}
	l.standbyLag.Store(lag)
	if _, err := c.restore(ctx, l.id, stores, cp, true, log); err != nil {
		return err
	}
	l.standbyLag.Store(0)
	l.standbyAt.Store(cp.ID)
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
