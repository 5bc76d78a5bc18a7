package task

import (
	"testing"

	"github.com/grete-go/grete/internal/runtime"
)

// The runtime writes dead-letter headers and error policies by its own
// names for them: they must be this package's.
func TestRuntimeSharesTheAPIsValues(t *testing.T) {
	for _, h := range [][2]string{
		{HeaderError, runtime.HeaderError},
		{HeaderTopic, runtime.HeaderTopic},
		{HeaderPartition, runtime.HeaderPartition},
		{HeaderOffset, runtime.HeaderOffset},
		{HeaderTask, runtime.HeaderTask},
	} {
		if h[0] != h[1] {
			t.Errorf("header %q is %q in the runtime", h[0], h[1])
		}
	}
	for _, p := range [][2]int{{int(Fail), int(runtime.Fail)}, {int(Skip), int(runtime.Skip)}, {int(DeadLetter), int(runtime.DeadLetter)}} {
		if p[0] != p[1] {
			t.Errorf("policy %d is %d in the runtime", p[0], p[1])
		}
	}
}
