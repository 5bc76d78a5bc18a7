package group

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Slot is a dynamic member's place on its machine: the lowest-numbered
// lock file under a directory that no running process holds. A process
// holds its slot until it exits, and the operating system releases the lock
// of a process that dies. So when a process takes a slot, every earlier
// member that announced the same slot is dead: killed, its successor
// restarted by systemd or Kubernetes, typically within a second. Such a
// member would otherwise stay in the group until its session timed out,
// and a rebalance would wait for it.
//
// The slot's identity is a hash of the host name, the kernel's boot id, the
// slot directory's path, device and inode, and the slot number: processes
// on other machines, in containers with their own file systems, or using
// other directories never share one. A member announces its identity and
// its start time in the client id of its group connections, where
// DescribeGroups shows them.
type Slot struct {
	N     int
	ident string // hex hash, see above
	start int64  // Unix ns when the slot was taken
	lock  io.Closer
}

// clientIDMark separates the user's client id from the slot in a group
// connection's client id.
const clientIDMark = ".grete-slot-"

// maxSlots bounds the lock files tried.
const maxSlots = 64

// AcquireSlot takes the first free slot under dir, creating dir. It fails
// when all maxSlots slots are held.
func AcquireSlot(dir string) (*Slot, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("member slot: %w", err)
	}
	base := identityBase(abs)
	for n := range maxSlots {
		lock, err := vfs.Default.Lock(filepath.Join(abs, fmt.Sprintf("slot-%d.lock", n)))
		if err != nil {
			continue // held by a running process (maybe this one)
		}
		sum := sha256.Sum256([]byte(base + "\x00" + strconv.Itoa(n)))
		return &Slot{N: n, ident: hex.EncodeToString(sum[:8]), start: time.Now().UnixNano(), lock: lock}, nil
	}
	return nil, fmt.Errorf("member slot: all %d slots under %s are held by running processes", maxSlots, abs)
}

// identityBase is what makes a slot directory unique across machines and
// file systems.
func identityBase(abs string) string {
	host, _ := os.Hostname()
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return fmt.Sprintf("%s\x00%s\x00%s\x00%s", host, strings.TrimSpace(string(boot)), abs, fileIdentity(abs))
}

// ClientID returns base with the slot's identity and start time appended.
func (s *Slot) ClientID(base string) string {
	return fmt.Sprintf("%s%s%s-%d", base, clientIDMark, s.ident, s.start)
}

// Predecessor reports whether a member that announced clientID held this
// slot before this process did: it is dead.
func (s *Slot) Predecessor(clientID string) bool {
	i := strings.LastIndex(clientID, clientIDMark)
	if i < 0 {
		return false
	}
	ident, start, ok := strings.Cut(clientID[i+len(clientIDMark):], "-")
	if !ok || ident != s.ident {
		return false
	}
	t, err := strconv.ParseInt(start, 10, 64)
	return err == nil && t < s.start
}

// Release gives the slot up.
func (s *Slot) Release() error { return s.lock.Close() }
