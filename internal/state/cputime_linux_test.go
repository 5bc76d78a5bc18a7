package state

import (
	"syscall"
	"time"
)

// threadCPU is the CPU time of the calling OS thread: with the goroutine
// locked to its thread, the work the benchmark itself did, whatever the
// load of the machine and without Pebble's background goroutines.
func threadCPU() time.Duration {
	const rusageThread = 1 // RUSAGE_THREAD
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
