package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// Config is a job as the runtime runs it: task.Job with its defaults
// filled in and its task adapted.
type Config struct {
	Name      string
	Kafka     stream.KafkaConfig
	Inputs    []string
	Broadcast []string
	// NewTask makes a task instance.
	NewTask func() (Task, error)
	Stores  []store.Spec
	DataDir string
	// Window is the period of Window calls (zero: none).
	Window          time.Duration
	CommitInterval  time.Duration
	StartNewest     bool
	OnError         ErrorPolicy
	DeadLetterTopic string
	Outputs         []OutputTopic
	// AutoCreateOutputs creates an output topic the first time a task
	// sends to it.
	AutoCreateOutputs bool
	QueueSize         int
	ShutdownTimeout   time.Duration
	CommitTimeout     time.Duration
	// Checkpoints, when set, replaces the job's checkpoint topic; the
	// runtime does not close it.
	Checkpoints      checkpoint.Manager
	Logger           *slog.Logger
	InstanceID       string // "" for the default; see instanceID
	SessionTimeout   time.Duration
	RebalanceTimeout time.Duration
	Standbys         int
}

// OutputTopic is task.OutputTopic.
type OutputTopic struct {
	Name       string
	Partitions int32
	Compacted  bool
	Configs    map[string]string
}

// ValidName is what job names, instance ids and store names may be.
var ValidName = regexp.MustCompile(`^[a-zA-Z0-9._-]+$`)

// DefaultDataDir is where stores live when a job sets no DataDir.
func DefaultDataDir() string { return filepath.Join(os.TempDir(), "grete") }

// ChangelogTopic is the changelog topic of store s of job, "" when it has
// none.
func ChangelogTopic(job string, s store.Spec) string {
	if s.NoChangelog {
		return ""
	}
	return job + "-" + s.Name + "-changelog"
}

// StoreDir is where task taskNum of job keeps store name under dataDir.
func StoreDir(dataDir, job string, taskNum int32, name string) string {
	return filepath.Join(dataDir, job, TaskName(taskNum), name)
}

// TaskName is the name of task i, "task-i".
func TaskName(i int32) string { return fmt.Sprintf("task-%d", i) }

// instanceID returns the configured InstanceID or the default one: for a
// job with stores, derived from the data dir it locks; none (dynamic
// membership) for a stateless job, whose processes may share a data dir.
func (c *Config) instanceID() (string, error) {
	if c.InstanceID != "" || len(c.Stores) == 0 {
		return c.InstanceID, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	dir, err := filepath.Abs(filepath.Join(c.DataDir, c.Name))
	if err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	sum := sha256.Sum256([]byte(dir))
	host = strings.Map(func(r rune) rune {
		if ValidName.MatchString(string(r)) {
			return r
		}
		return '_'
	}, host)
	return host + "-" + hex.EncodeToString(sum[:6]), nil
}
