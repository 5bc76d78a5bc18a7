//go:build !linux

package store

import "time"

// threadCPU is unknown here: the benchmarks then report no CPU figures.
func threadCPU() time.Duration { return 0 }
