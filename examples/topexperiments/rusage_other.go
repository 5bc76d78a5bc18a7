//go:build !unix

package main

import (
	"os"
	"time"
)

func cpuTime() time.Duration           { return 0 }
func maxRSS(ps *os.ProcessState) int64 { return -1 }
