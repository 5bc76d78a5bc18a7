package task

import (
	"context"
	"log/slog"

	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// StreamTask is the one interface a task must implement. Grete creates one
// instance per task (partition N of every input) with Job.NewTask and calls
// Process for each message of the task's partitions, one at a time and in
// offset order per partition.
//
// A non-nil error (or a panic) is handled by the job's ErrorPolicy. The
// context is cancelled only when the job must stop at once (a shutdown that
// overran its timeout); a graceful shutdown lets the current Process finish.
type StreamTask interface {
	Process(ctx context.Context, m stream.Message, out Collector, co Coordinator) error
}

// InitableTask is implemented by tasks that need set-up before their first
// message: Init runs once, after the task's checkpoint is loaded and before
// any Process or Window call. An error from Init stops the job.
type InitableTask interface {
	Init(ctx context.Context, tc Context) error
}

// WindowableTask is implemented by tasks that act periodically. Window runs
// every Job.Window of processing time, even when no input arrives, and never
// concurrently with Process. An error from Window stops the job (there is no
// message to skip or dead-letter).
type WindowableTask interface {
	Window(ctx context.Context, out Collector, co Coordinator) error
}

// ClosableTask is implemented by tasks that hold resources. Close runs once
// when the task stops, after its final commit.
type ClosableTask interface {
	Close(ctx context.Context) error
}

// Collector sends messages to Kafka. Send returns without waiting for the
// network; the message is acknowledged before the task's next checkpoint is
// written, so a checkpoint never covers an output that could still be lost.
// Send blocks only while the producer's bounded buffers are full.
//
// Send returns an error for a message that cannot be sent (no topic) or when
// the job is stopping at once. The message's slices must not be modified
// after Send.
type Collector interface {
	Send(m stream.Outgoing) error
}

// Coordinator lets a task steer its container. Both requests take effect
// after the current Process or Window call returns.
type Coordinator interface {
	// Commit asks for a commit of this task (outputs acknowledged,
	// checkpoint written) as soon as the current call returns.
	Commit()
	// Shutdown asks the whole job to stop gracefully: every task commits
	// and closes, and Job.Run returns nil.
	Shutdown()
}

// Context describes a running task to its Init.
type Context interface {
	// JobName is Job.Name.
	JobName() string
	// TaskName is the task's stable name, "task-N".
	TaskName() string
	// Partition is N: the task reads partition N of every
	// (non-broadcast) input.
	Partition() int32
	// Inputs lists every partition the task reads, broadcast ones included.
	Inputs() []stream.Partition
	// Logger is the job's logger with the job and task names attached.
	Logger() *slog.Logger
	// Store returns the task's store of that name, declared in Job.Stores,
	// restored to the task's checkpoint. It stays open until the task
	// closes; use it from the task's calls only.
	Store(name string) (store.Store, error)
}
