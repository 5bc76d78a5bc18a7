package task

import (
	"errors"
	"fmt"
)

// ErrorPolicy says what happens to a message whose Process returned an
// error or panicked.
type ErrorPolicy int

const (
	// Fail stops the job with a *ProcessError naming the message's topic,
	// partition and offset. Progress up to (not including) the message is
	// checkpointed, so a restart begins with it. The default.
	Fail ErrorPolicy = iota
	// Skip logs the error, counts the message in TaskStats.Skipped, and
	// goes on.
	Skip
	// DeadLetter copies the message to the dead-letter topic
	// ("<job>-dlq" by default) with the error and its origin in headers,
	// counts it in TaskStats.DeadLettered, and goes on.
	DeadLetter
)

func (p ErrorPolicy) String() string {
	switch p {
	case Fail:
		return "fail"
	case Skip:
		return "skip"
	case DeadLetter:
		return "dead-letter"
	}
	return fmt.Sprintf("ErrorPolicy(%d)", int(p))
}

// ParseErrorPolicy parses "fail", "skip" or "dead-letter" (as written by
// String), for command-line flags.
func ParseErrorPolicy(s string) (ErrorPolicy, error) {
	for _, p := range []ErrorPolicy{Fail, Skip, DeadLetter} {
		if p.String() == s {
			return p, nil
		}
	}
	return Fail, fmt.Errorf("task: unknown error policy %q (want fail, skip or dead-letter)", s)
}

// Headers Grete adds to a dead-lettered message, next to the original ones.
const (
	HeaderError     = "grete.error"
	HeaderTopic     = "grete.topic"
	HeaderPartition = "grete.partition"
	HeaderOffset    = "grete.offset"
	HeaderTask      = "grete.task"
)

// ProcessError is the error Job.Run returns when a message fails under the
// Fail policy.
type ProcessError struct {
	Task      string
	Topic     string
	Partition int32
	Offset    int64
	Err       error
}

func (e *ProcessError) Error() string {
	return fmt.Sprintf("task %s: message at %s/%d offset %d: %v", e.Task, e.Topic, e.Partition, e.Offset, e.Err)
}

// Unwrap returns the task's error (a *PanicError for a panic).
func (e *ProcessError) Unwrap() error { return e.Err }

// PanicError is a panic in task code, recovered by Grete.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v\n%s", e.Value, e.Stack) }

// ErrUnreachable matches (errors.Is) the error of a Run that ended
// because the Kafka cluster could not be reached for Job.CommitTimeout; the
// error's message says since when. Run the job again once the cluster is
// back: it resumes from its checkpoints, with nothing lost.
var ErrUnreachable = errors.New("task: the Kafka cluster is unreachable")

// unreachableError marks an error of the cluster being unreachable as
// ErrUnreachable, keeping its message.
type unreachableError struct{ err error }

func (e unreachableError) Error() string        { return e.err.Error() }
func (e unreachableError) Unwrap() error        { return e.err }
func (e unreachableError) Is(target error) bool { return target == ErrUnreachable }

// ErrStopping is returned by Collector.Send when the job is stopping at once
// and can no longer guarantee delivery.
var ErrStopping = errors.New("task: job is stopping")
