package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/grete-go/grete/examples/topexperiments/experiments"
)

// board holds the latest global top for printing.
type board struct {
	mu  sync.Mutex
	g   experiments.Global
	ok  bool
	gen uint64 // changes
}

func (b *board) set(g experiments.Global) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.g, b.ok = g, true
	b.gen++
}

func (b *board) get() (experiments.Global, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.g, b.ok
}

func (b *board) changes() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gen
}

// report prints the input rate and the flush costs once a second, and the
// global top-N whenever it changed.
func report(ctx context.Context, w io.Writer, counters *experiments.Counters, b *board) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastCounted, lastFlushes, lastVisited, lastGen uint64
	var lastNanos int64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			counted, flushes, visited, nanos := counters.Counted.Load(), counters.Flushes.Load(), counters.Visited.Load(), counters.FlushNanos.Load()
			line := fmt.Sprintf("%s  in %6.0f ev/s  counted %d", now.Format("15:04:05"), float64(counted-lastCounted)/now.Sub(last).Seconds(), counted)
			if f := flushes - lastFlushes; f > 0 {
				line += fmt.Sprintf("  flushes %d: %.0f changed keys and %s each on average", f,
					float64(visited-lastVisited)/float64(f), (time.Duration(nanos-lastNanos) / time.Duration(f)).Round(time.Microsecond))
			}
			fmt.Fprintln(w, line)
			if gen := b.changes(); gen != lastGen {
				if g, ok := b.get(); ok {
					printTop(w, g)
				}
				lastGen = gen
			}
			lastCounted, lastFlushes, lastVisited, lastNanos, last = counted, flushes, visited, nanos, now
		}
	}
}

func printTop(w io.Writer, g experiments.Global) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "  top experiments as of %s:\n", time.UnixMilli(g.At).Format("15:04:05.000"))
	for i, e := range g.Top {
		fmt.Fprintf(&sb, "  %3d. %-24s %10d\n", i+1, e.Experiment, e.Count)
	}
	io.WriteString(w, sb.String())
}
