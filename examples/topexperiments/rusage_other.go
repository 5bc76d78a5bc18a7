//go:build !unix

package main

import (
	"os"
)

func maxRSS(ps *os.ProcessState) int64 { return -1 }
