// Package benchkit measures what the example benchmarks report: CPU time
// and peak memory of the process measuring itself.
package benchkit

import (
	"context"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
)

// PeakRSS returns this process's peak resident set size in bytes (VmHWM,
// Linux), or -1 where it cannot be read.
//
// Measure a child with its own PeakRSS rather than with the parent's view
// of its rusage: Go starts children with vfork, so until exec the child
// shares the parent's memory, and Linux carries the parent's peak over into
// the child's ru_maxrss.
func PeakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}

// StartProfile starts the CPU profiler writing to path and returns what
// stops it; with an empty path it does nothing.
func StartProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// UntilClosed returns a context cancelled when r reaches its end: a
// benchmark child reads its stdin, which closes when the parent exits,
// however it exits, so the child never outlives it.
func UntilClosed(ctx context.Context, r io.Reader) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		_, _ = io.Copy(io.Discard, r)
		cancel()
	}()
	return ctx, cancel
}
