package sessions

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSimulator checks what the generator promises: the same seed makes the
// same events; ids are unique; the events of a session_id, in ts order, are
// less than Gap apart; some arrive out of order within Grace and a few
// later than that; revenue comes with purchases only.
func TestSimulator(t *testing.T) {
	cfg := Traffic{Seed: 42, Gap: time.Minute, Grace: 10 * time.Second, Active: 500, Visitors: 5000, OutOfOrder: 0.05, Late: 0.005}
	evs := Simulate(cfg, 50_000, time.UnixMilli(t0), 20*time.Millisecond)
	require.Equal(t, evs, Simulate(cfg, 50_000, time.UnixMilli(t0), 20*time.Millisecond), "deterministic")
	require.NotEqual(t, evs[:100], Simulate(Traffic{Seed: 43, Gap: cfg.Gap, Grace: cfg.Grace, Active: 500, Visitors: 5000}, 100, time.UnixMilli(t0), 20*time.Millisecond))

	ids := map[string]bool{}
	bySession := map[string][]int64{}
	var maxTS int64
	var ooo, late, revenue int
	for _, e := range evs {
		require.NoError(t, e.validate())
		require.False(t, ids[e.EventID], "event id %s twice", e.EventID)
		ids[e.EventID] = true
		bySession[e.SessionID] = append(bySession[e.SessionID], e.TS)
		switch d := maxTS - e.TS; {
		case d > cfg.Grace.Milliseconds():
			late++
		case d > 0:
			ooo++
		}
		maxTS = max(maxTS, e.TS)
		if e.Revenue != 0 {
			revenue++
			require.Equal(t, "purchase", e.Type)
		}
	}
	for id, ts := range bySession {
		slices.Sort(ts)
		for i := 1; i < len(ts); i++ {
			require.Less(t, ts[i]-ts[i-1], cfg.Gap.Milliseconds(), "session %s pauses for a gap", id)
		}
	}
	t.Logf("%d events, %d sessions: %d out of order within grace, %d later, %d with revenue", len(evs), len(bySession), ooo, late, revenue)
	require.Greater(t, ooo, len(evs)/50)
	require.Positive(t, late)
	require.Less(t, late, len(evs)/100)
	require.Positive(t, revenue)
}
