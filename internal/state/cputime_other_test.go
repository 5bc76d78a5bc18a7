//go:build !linux

package state

import "time"

// threadCPU is unknown here: the benchmarks then report no CPU figures.
func threadCPU() time.Duration { return 0 }
