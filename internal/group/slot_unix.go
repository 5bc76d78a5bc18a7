//go:build unix

package group

import (
	"fmt"
	"os"
	"syscall"
)

// fileIdentity is the device and inode of path: another file system (a
// container's own) has others.
func fileIdentity(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d/%d", uint64(st.Dev), uint64(st.Ino))
}
