// Package runtime runs Grete tasks: the task loop that both a job and
// task/tasktest drive (Loop), and the Kafka runtime of a job (Container):
// its connections, topics, group membership, leases, restores, standbys
// and the per-task goroutines that feed the loop.
//
// The public API lives in package task; this package sees tasks through
// Task (a set of functions) and builds the API's error values through the
// hooks package task registers (Register).
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"

	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// Task is a task as the runtime calls it. Package task builds one from a
// task.StreamTask: Init, Window and Close are nil when the task does not
// implement them.
type Task struct {
	Init    func(ctx context.Context, tc Context) error
	Process func(ctx context.Context, m stream.Message, out Collector, co Coordinator) error
	Window  func(ctx context.Context, out Collector, co Coordinator) error
	Close   func(ctx context.Context) error
}

// Collector, Coordinator and Context have the method sets of task's: a
// value of one is a value of the other.
type (
	Collector interface {
		Send(m stream.Outgoing) error
	}
	Coordinator interface {
		Commit()
		Shutdown()
	}
	Context interface {
		JobName() string
		TaskName() string
		Partition() int32
		Inputs() []stream.Partition
		Logger() *slog.Logger
		Store(name string) (store.Store, error)
	}
)

// ErrorPolicy is task.ErrorPolicy: the values are the same.
type ErrorPolicy int

// The error policies; see task.ErrorPolicy.
const (
	Fail ErrorPolicy = iota
	Skip
	DeadLetter
)

// Headers of a dead-letter copy; task exports the same names.
const (
	HeaderError     = "grete.error"
	HeaderTopic     = "grete.topic"
	HeaderPartition = "grete.partition"
	HeaderOffset    = "grete.offset"
	HeaderTask      = "grete.task"
)

// API is what package task gives the runtime: how to see one of its tasks
// as a Task, and how to make its error values, which its users match.
type API struct {
	// Adapt turns a task.StreamTask (as an any) into a Task; it fails for
	// nil.
	Adapt func(t any) (Task, error)
	// ProcessError is the error of a message that failed under Fail.
	ProcessError func(task, topic string, partition int32, offset int64, err error) error
	// PanicError is a panic in task code, recovered.
	PanicError func(v any, stack []byte) error
	// Stopping is what Collector.Send returns when the job stops at once.
	Stopping error
	// Unreachable marks an error of the cluster being unreachable.
	Unreachable func(err error) error
}

var api atomic.Pointer[API]

// Register installs package task's API. Package task calls it when it is
// initialized: whatever runs a task imports package task, so the API is
// there before any task runs.
func Register(a API) { api.Store(&a) }

// theAPI returns the registered API.
func theAPI() *API {
	a := api.Load()
	if a == nil {
		panic("grete: package task has not registered its API with the runtime")
	}
	return a
}

// Adapt turns a task of package task into a Task (see API.Adapt).
func Adapt(t any) (Task, error) { return theAPI().Adapt(t) }

// ErrFenced ends a task that may no longer commit: its handover came too
// late, or its process lost its group membership.
var ErrFenced = errors.New("task was fenced: its handover did not finish within half the rebalance timeout, or the process lost its group membership; it closes without committing and its new owner resumes from the last checkpoint")

// SafeCall runs f and turns a panic into the API's PanicError.
func SafeCall(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = theAPI().PanicError(v, debug.Stack())
		}
	}()
	return f()
}

// errNoTopic is Collector.Send's error for a message without a topic.
var errNoTopic = errors.New("task: Send: message has no topic")

// ErrSendOutsideCall reports a Collector used after the call that received
// it returned: what it sends then could escape the next commit.
var ErrSendOutsideCall = errors.New("task: Send called after the Process or Window call that received the Collector returned")

func wrapSend(err error) error { return fmt.Errorf("task: Send: %w", err) }
