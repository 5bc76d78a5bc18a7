package task

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/runtime"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// StartPosition is where a task begins reading a partition it has no
// checkpoint for.
type StartPosition int

const (
	// StartOldest reads from the oldest retained message (the default).
	StartOldest StartPosition = iota
	// StartNewest reads only messages produced after the job started.
	StartNewest
)

// OutputTopic declares an output topic that Run creates when it is missing.
type OutputTopic struct {
	Name string
	// Partitions defaults to the job's task count.
	Partitions int32
	// Compacted asks for cleanup.policy=compact. A compacted topic keeps
	// the last value of every key for ever and ignores retention.bytes, so
	// it grows without bound unless the job deletes keys (sends nil
	// values): Run refuses Compacted without Deletes.
	Compacted bool
	// Deletes declares that the job sends tombstones to this topic.
	Deletes bool
	// Configs are further topic configs, e.g. "retention.ms".
	Configs map[string]string
}

// Defaults for Job fields left zero.
const (
	DefaultCommitInterval   = 5 * time.Second
	DefaultQueueSize        = 1024
	DefaultShutdownTimeout  = 30 * time.Second
	DefaultCommitTimeout    = 2 * time.Minute
	DefaultSessionTimeout   = 10 * time.Second
	DefaultRebalanceTimeout = 60 * time.Second
)

// Job describes a stream job. Only Name, Kafka.Brokers, Inputs and NewTask
// are required; every other field has a working zero value. Validate
// explains what is wrong with a Job. A Job must not be copied or changed
// once Run has been called.
type Job struct {
	// Name identifies the job: it names the consumer group, the
	// checkpoint topic "<Name>-checkpoints" and the dead-letter topic
	// "<Name>-dlq". Letters, digits, '.', '_' and '-'.
	Name string
	// Kafka says how to reach the cluster.
	Kafka stream.KafkaConfig
	// Inputs are partitioned inputs. They must all have the same number
	// of partitions N; the job runs N tasks and task i reads partition i
	// of every input (co-partitioned inputs meet in one task).
	Inputs []string
	// Broadcast inputs are read in full by every task (e.g. a small
	// table of rules). A job with only broadcast inputs runs one task.
	Broadcast []string
	// NewTask makes the task instance for each task.
	NewTask func() StreamTask
	// Stores are the state stores every task gets (Context.Store). Each is
	// backed by a compacted changelog topic "<Name>-<store>-changelog"
	// with one partition per task, unless its Spec says NoChangelog.
	Stores []store.Spec
	// DataDir is where Pebble stores live, under <DataDir>/<Name>/<task>/.
	// Default: the "grete" directory in os.TempDir(). State there is a
	// cache of the changelog: losing it costs a replay, never data.
	DataDir string
	// Window is the period of WindowableTask.Window; zero disables it.
	Window time.Duration
	// CommitInterval is the period of automatic commits; default 5 s.
	CommitInterval time.Duration
	// StartAt applies to partitions with no checkpoint; default oldest.
	StartAt StartPosition
	// OnError is the bad-input policy; default Fail.
	OnError ErrorPolicy
	// DeadLetterTopic defaults to "<Name>-dlq".
	DeadLetterTopic string
	// Outputs are created when missing. Undeclared outputs must exist,
	// unless AutoCreateOutputs is set.
	Outputs []OutputTopic
	// AutoCreateOutputs creates a missing output topic the first time a
	// task sends to it, with the job's task count as its partition count
	// and the cluster's default (delete) cleanup policy. Off by default:
	// most clusters manage their topics deliberately. Useful for routers
	// whose output topics depend on the data.
	AutoCreateOutputs bool
	// QueueSize bounds each task's queue of fetched messages; default
	// 1024. With sarama's per-partition buffers it bounds the memory a
	// backlog can take.
	QueueSize int
	// ShutdownTimeout bounds the final commit of every task on a graceful
	// stop; default 30 s.
	ShutdownTimeout time.Duration
	// CommitTimeout bounds one commit: waiting for the acknowledgement of
	// outputs and writing the checkpoint, retries included; default 2
	// minutes. It is also how long the job waits for a cluster it cannot
	// reach: a broker that restarts or a short outage costs nothing but
	// time (records are retried, tasks resume), while a cluster unreachable
	// for longer ends Run with an error that says since when.
	CommitTimeout time.Duration
	// Checkpoints overrides where checkpoints are kept; default the
	// compacted topic "<Name>-checkpoints" (the format of checkpoint.Kafka),
	// read and written on the job's own connections. Run does not close a
	// manager it did not create. Whatever keeps them, Run mirrors the
	// checkpointed input offsets to the job's group for lag tools.
	Checkpoints checkpoint.Manager
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// InstanceID is this process's stable identity in the job's consumer
	// group (Kafka static membership): a process that crashed and restarts
	// with the same InstanceID gets its tasks back at once, without
	// waiting for the session timeout and without a rebalance of the
	// other members (a graceful stop leaves the group, handing its tasks
	// over at once). Two running processes must never share one. Default,
	// for a job with Stores: derived from the host name and the absolute
	// path of <DataDir>/<Name>, which one process at a time holds (Run
	// locks it), so a restart keeps its identity and finds its state.
	// Default for a job without stores: none (dynamic membership). A
	// process then takes the first free slot (a lock file under
	// <DataDir>/<Name>/members) and, on start, removes from the group the
	// members that dead processes in its slot left behind: a process that
	// a supervisor restarts after a crash, on the same machine, takes over
	// at once too. A killed process that is not restarted there is noticed
	// after SessionTimeout.
	InstanceID string
	// SessionTimeout is how long the group waits for a process that
	// stopped heartbeating (e.g. killed) before moving its tasks; default
	// 10 s. A process that stops gracefully hands its tasks over at once.
	// A process that cannot reach the group's coordinator for this long
	// takes its membership as lost: its tasks close without committing
	// (another process may have them now), and it joins again.
	SessionTimeout time.Duration
	// RebalanceTimeout bounds how long a task may take to hand over when
	// the group moves it away (finish the current message and commit);
	// default 60 s. A task that cannot hand over in half that time is
	// fenced: it closes without committing, and its new owner redoes the
	// work since the last checkpoint. (Rebalances themselves do not wait
	// for handovers: members join again at once and a moving task is
	// withheld until its old owner has released it.)
	RebalanceTimeout time.Duration
	// Standbys is how many other processes keep a standby copy of each
	// task's stores, by following its changelog up to its latest
	// checkpoint. When a task moves, the group prefers a process with a
	// standby, whose restore replays only the few records the standby had
	// not applied. Needs a store with a changelog, and costs each standby
	// process the disk of the copy and the reads of the changelog.
	Standbys int

	running atomic.Pointer[runtime.Container]
}

var validName = runtime.ValidName

// Validate reports every problem with the job's configuration at once.
func (j *Job) Validate() error {
	var errs []error
	if j.Name == "" {
		errs = append(errs, errors.New("the job has no Name"))
	} else if !validName.MatchString(j.Name) {
		errs = append(errs, fmt.Errorf("job name %q may contain only letters, digits, '.', '_' and '-'", j.Name))
	}
	if j.Checkpoints == nil || len(j.Inputs)+len(j.Broadcast) > 0 {
		if err := j.Kafka.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(j.Inputs)+len(j.Broadcast) == 0 {
		errs = append(errs, errors.New("no inputs: set Inputs or Broadcast"))
	}
	seen := map[string]bool{}
	for _, t := range slices.Concat(j.Inputs, j.Broadcast) {
		if t == "" {
			errs = append(errs, errors.New("an input topic name is empty"))
		} else if seen[t] {
			errs = append(errs, fmt.Errorf("input %q is listed twice", t))
		}
		seen[t] = true
	}
	storeNames := map[string]bool{}
	for _, sp := range j.Stores {
		if err := sp.Validate(); err != nil {
			errs = append(errs, err)
		}
		if storeNames[sp.Name] {
			errs = append(errs, fmt.Errorf("store %q is declared twice", sp.Name))
		}
		storeNames[sp.Name] = true
	}
	if j.NewTask == nil {
		errs = append(errs, errors.New("field NewTask is nil"))
	}
	if j.Window < 0 || j.CommitInterval < 0 || j.ShutdownTimeout < 0 || j.CommitTimeout < 0 || j.SessionTimeout < 0 || j.RebalanceTimeout < 0 {
		errs = append(errs, errors.New("fields Window, CommitInterval, CommitTimeout, ShutdownTimeout, SessionTimeout and RebalanceTimeout must not be negative"))
	}
	if j.InstanceID != "" && !validName.MatchString(j.InstanceID) {
		errs = append(errs, fmt.Errorf("instance id %q may contain only letters, digits, '.', '_' and '-'", j.InstanceID))
	}
	if j.Standbys < 0 {
		errs = append(errs, errors.New("field Standbys must not be negative"))
	} else if j.Standbys > 0 && !slices.ContainsFunc(j.Stores, func(s store.Spec) bool { return !s.NoChangelog }) {
		errs = append(errs, errors.New("field Standbys needs a store with a changelog"))
	}
	if j.QueueSize < 0 {
		errs = append(errs, errors.New("field QueueSize must not be negative"))
	}
	if j.OnError < Fail || j.OnError > DeadLetter {
		errs = append(errs, fmt.Errorf("field OnError: %v is not a policy", j.OnError))
	}
	if j.StartAt != StartOldest && j.StartAt != StartNewest {
		errs = append(errs, fmt.Errorf("field StartAt: %d is not a start position", j.StartAt))
	}
	for _, o := range j.Outputs {
		if o.Name == "" {
			errs = append(errs, errors.New("an output topic name is empty"))
		}
		if o.Compacted && !o.Deletes {
			errs = append(errs, fmt.Errorf("output %q is compacted but the job never deletes from it: it would grow for ever (set Deletes, or use a delete-policy topic)", o.Name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("task: invalid job %q: %w", j.Name, err)
	}
	return nil
}

// TaskStats are the counters of one task, as read by Job.Stats.
type TaskStats struct {
	Task         string
	Processed    uint64        // messages whose Process returned nil
	ProcessTime  time.Duration // total time in Process
	Sent         uint64        // messages sent through the Collector
	WindowCalls  uint64
	WindowTime   time.Duration
	Commits      uint64 // checkpoints written
	CommitTime   time.Duration
	Skipped      uint64 // failed messages skipped under the Skip policy
	DeadLettered uint64 // failed messages sent to the dead-letter topic
	// LastCheckpoint is the last checkpoint the task wrote or started
	// from (ID 0 when none).
	LastCheckpoint checkpoint.Checkpoint
	// Stores are the counters of the task's stores, by name.
	Stores map[string]store.Stats
	// RestoreTime is how long restoring the task's stores took when this
	// process last started the task.
	RestoreTime time.Duration
}

// MemberStats describe this process's membership in the job's group.
type MemberStats struct {
	Instance   string  // the process's instance id
	Tasks      []int32 // tasks this process runs now, ascending
	Rebalances uint64  // group rebalances this process took part in
	Assigned   uint64  // tasks the group gave this process
	Revoked    uint64  // tasks the group took back (handed over)
	Fenced     uint64  // tasks that closed without their final commit
	// Standbys are the tasks this process keeps a standby copy of, and
	// StandbyLag how many changelog records they were behind their
	// tasks' checkpoints when they last looked, summed.
	Standbys   []int32
	StandbyLag int64
	// StandbyCheckpoints is the id of the checkpoint each standby has
	// applied (0 before the first), by task.
	StandbyCheckpoints map[int32]uint64
	// Paused is the total time from the group giving this process a
	// task to the task being ready to process (its checkpoint loaded and
	// stores restored): what moving tasks here cost.
	Paused time.Duration
}
