package benchkit

import (
	"runtime"
	"testing"
)

func TestPeakRSSGrowsWithUse(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("VmHWM is Linux's")
	}
	before := PeakRSS()
	if before <= 0 {
		t.Fatalf("PeakRSS = %d", before)
	}
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	after := PeakRSS()
	if after < before+32<<20 {
		t.Fatalf("peak RSS %d -> %d after touching 64 MiB", before, after)
	}
	runtime.KeepAlive(buf)
}

func TestCPUTimeAdvances(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("not measured here")
	}
	start := CPUTime()
	x := 0
	for i := range 50_000_000 {
		x += i
	}
	if CPUTime() <= start {
		t.Fatalf("CPU time did not advance (%d)", x)
	}
}
