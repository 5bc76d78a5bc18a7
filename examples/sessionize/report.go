package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/grete-go/grete/examples/sessionize/sessions"
	"github.com/grete-go/grete/task"
)

// report prints a line each time every task has run its Window once more:
// what the tasks emitted since the last line, how many sessions are open,
// and the input rate.
func report(ctx context.Context, w io.Writer, job *task.Job, stats *sessions.Stats, quiet bool) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var (
		lastRound         uint64
		lastIn            uint64
		lastSnap, lastFin uint64
		lastLate          uint64
		last              = time.Now()
	)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			ts := job.Stats()
			if len(ts) == 0 {
				continue
			}
			round := ts[0].WindowCalls
			for _, s := range ts {
				round = min(round, s.WindowCalls)
			}
			if round == lastRound {
				continue
			}
			// The tasks' own counters start again when a task restarts
			// (it moved, or a broker restart cost the membership): the
			// job's Totals go on.
			t := stats.Totals()
			in := t.Added + t.Late
			if !quiet {
				fmt.Fprintf(w, "%s  emitted %6d sessions (%d final)  open %7d  %6.0f ev/s  late %d\n",
					now.Format("15:04:05"), t.Snapshots-lastSnap, t.Finals-lastFin, t.Open,
					float64(in-lastIn)/now.Sub(last).Seconds(), t.Late-lastLate)
			}
			lastRound, lastIn, last = round, in, now
			lastSnap, lastFin, lastLate = t.Snapshots, t.Finals, t.Late
		}
	}
}
