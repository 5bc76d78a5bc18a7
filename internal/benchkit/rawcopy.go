package benchkit

import (
	"context"
	"time"

	"github.com/grete-go/grete/internal/kafka"
)

// CopyResult is one measurement of RawCopy.
type CopyResult struct {
	kafka.CopyResult
	CPU time.Duration // CPU time of this process during the call
}

// RawCopy is the baseline every example benchmark compares with (see
// kafka.RawCopy), with the CPU time it took.
func RawCopy(ctx context.Context, brokers []string, input, output string) (CopyResult, error) {
	cpu0 := CPUTime()
	r, err := kafka.RawCopy(ctx, brokers, input, output)
	return CopyResult{CopyResult: r, CPU: CPUTime() - cpu0}, err
}
