package window

import (
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
)

// BenchmarkFlush: a periodic emit (Flush with EmitUpdates) over many open
// sessions, few of which changed. Its cost must follow the changed
// sessions, not the open ones: ns/op should stay flat from open=10k to
// open=1M (target under 50ms for 1M open, 10k changed).
//
//	go test ./window -run '^$' -bench Flush -benchtime 20x
//
// Setup makes the open sessions through Add on a Pebble store, with a
// Flush (emitting them, as the periodic emit would have) and a commit
// every 50k events. Then every op changes 10k sessions (extending them: a
// put over each one's key) with the timer stopped, times the Flush alone,
// and commits with the timer stopped. Reported besides ns/op: updates/op (must equal the changed
// sessions), heap-MB (live heap after setup) and peak-rss-MB (the process's
// peak resident set, which includes the cases run before in the process:
// run open=1M alone for its own figure).
func BenchmarkFlush(b *testing.B) {
	for _, c := range []struct {
		name string
		open int
	}{
		{"10k", 10_000},
		{"100k", 100_000},
		{"1M", 1_000_000},
	} {
		b.Run("open="+c.name+"/changed=10k", func(b *testing.B) {
			benchFlush(b, c.open, 10_000)
		})
	}
}

type benchSessions struct {
	b    testing.TB
	s    *state.Local
	agg  *Aggregator[string, int64, int64]
	ckpt uint64
}

// benchBase is the event time of the sessions the setup makes, in ms.
const benchBase = 1_700_000_000_000

func newBenchSessions(b testing.TB, open int) (*benchSessions, []string) {
	b.Helper()
	s, err := state.Open(b.TempDir(), store.Spec{Name: "sessions", Engine: store.Pebble}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	agg, err := New(s.View(), Options[string, int64, int64]{
		Windows:     Sessions(time.Hour),
		Add:         func(acc, v int64, _ time.Time) int64 { return acc + v },
		Merge:       func(a, b int64) int64 { return a + b },
		EmitUpdates: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	bs := &benchSessions{b: b, s: s, agg: agg}
	keys := make([]string, open)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%07d", i)
	}
	for i, k := range keys {
		if err := agg.Add(k, 1, time.UnixMilli(benchBase), nil, nil); err != nil {
			b.Fatal(err)
		}
		if (i+1)%50_000 == 0 || i == len(keys)-1 {
			// The new sessions reach the engine, then a periodic emit
			// takes them.
			bs.commit()
			if err := agg.Flush(nil); err != nil {
				b.Fatal(err)
			}
			bs.commit()
		}
	}
	if st := agg.Stats(); st.Open != open {
		b.Fatalf("setup left %d sessions open, want %d", st.Open, open)
	}
	return bs, keys
}

// commit runs steps 2 and 5 of the commit protocol with no changelog.
func (bs *benchSessions) commit() {
	if err := bs.s.Flush(func(k, v []byte) error { return nil }); err != nil {
		bs.b.Fatal(err)
	}
	bs.ckpt++
	if err := bs.s.Commit(state.Meta{CheckpointID: bs.ckpt}); err != nil {
		bs.b.Fatal(err)
	}
}

// change extends changed sessions, round robin over keys, to end at
// benchBase+round ms.
func (bs *benchSessions) change(keys []string, round, changed int) {
	ts := time.UnixMilli(benchBase + int64(round))
	for j := range changed {
		if err := bs.agg.Add(keys[(round*changed+j)%len(keys)], 1, ts, nil, nil); err != nil {
			bs.b.Fatal(err)
		}
	}
}

func benchFlush(b *testing.B, open, changed int) {
	bs, keys := newBenchSessions(b, open)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)

	// A Flush with nothing changed: its time is the floor that the open
	// sessions (and the tombstones of their taken change markers) add.
	start := time.Now()
	if err := bs.agg.Flush(func(e Emit[string, int64]) error {
		b.Fatalf("unexpected emit %v", e)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	empty := time.Since(start)

	// CPU time of this thread, which runs Flush and everything Flush
	// does synchronously, is less disturbed by other work on a shared
	// machine than wall time.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cpu time.Duration
	updates, round := 0, 0
	var count EmitFunc[string, int64] = func(e Emit[string, int64]) error {
		if e.Final {
			b.Fatalf("unexpected final %v", e)
		}
		updates++
		return nil
	}
	for b.Loop() {
		b.StopTimer()
		round++
		bs.change(keys, round, changed)
		c0 := threadCPU()
		b.StartTimer()
		if err := bs.agg.Flush(count); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += threadCPU() - c0
		bs.commit()
		b.StartTimer()
	}
	if updates != round*changed {
		b.Fatalf("%d updates in %d rounds, want %d a round", updates, round, changed)
	}
	b.ReportMetric(float64(updates)/float64(round), "updates/op")
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MB")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(round), "cpu-ns/op")
	b.ReportMetric(float64(empty.Microseconds()), "empty-flush-µs")
	b.ReportMetric(peakRSSMB(), "peak-rss-MB")
}

// threadCPU is the CPU time of the calling OS thread.
func threadCPU() time.Duration {
	const rusageThread = 1 // RUSAGE_THREAD, Linux
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSSMB is the process's peak resident set size in MiB (Linux reports
// ru_maxrss in KiB).
func peakRSSMB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return float64(ru.Maxrss) / 1024
}
