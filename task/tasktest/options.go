package tasktest

import (
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/task"
)

// An Option configures a [Driver]. Options are applied in order; a later
// option overrides an earlier one. Invalid values are reported by the
// driver's first call ([Driver.Init], [Driver.Feed] or [Driver.Advance]).
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// Defaults of a driver configured by no option.
const (
	// DefaultJobName is the job name when neither [JobName] nor [FromJob]
	// sets one; the dead-letter topic is then "job-dlq".
	DefaultJobName = "job"
	// DefaultInput is the input topic when neither [Inputs], [Broadcast]
	// nor [FromJob] sets one.
	DefaultInput = "input"
)

type config struct {
	job        string
	partition  int32
	inputs     []string
	inputsSet  bool
	broadcast  []string
	bcastParts map[string]int32
	window     time.Duration
	commit     time.Duration
	policy     task.ErrorPolicy
	dlq        string
	log        *slog.Logger
	start      time.Time
	resume     *checkpoint.Checkpoint
	stores     []store.Spec
}

func newConfig() *config {
	return &config{
		job:        DefaultJobName,
		bcastParts: map[string]int32{},
		commit:     task.DefaultCommitInterval,
		start:      time.Date(2020, time.January, 1, 0, 0, 0, 0, time.UTC),
	}
}

// Stores declares the task's stores (see [task.Context.Store]). The driver
// keeps them in memory whatever their Engine, runs their TTLs on the
// driver's clock, and records what each commit writes to their changelogs
// (see [Driver.Changelog]).
func Stores(specs ...store.Spec) Option {
	return optionFunc(func(c *config) { c.stores = append(c.stores, specs...) })
}

// JobName sets the job name ([task.Context.JobName]); it also names the
// dead-letter topic "<name>-dlq". Default [DefaultJobName].
func JobName(name string) Option { return optionFunc(func(c *config) { c.job = name }) }

// Partition sets N, the partition the task owns: it reads partition N of
// every partitioned input and is named "task-N". Default 0.
func Partition(n int32) Option { return optionFunc(func(c *config) { c.partition = n }) }

// Inputs sets the partitioned input topics, replacing earlier ones. Default
// a single topic, [DefaultInput], unless broadcast inputs are set.
func Inputs(topics ...string) Option {
	return optionFunc(func(c *config) {
		c.inputs = slices.Clone(topics)
		c.inputsSet = true
	})
}

// Broadcast declares a broadcast input with the given number of
// partitions: the task reads every one of them. Declaring a topic again
// changes its partition count.
func Broadcast(topic string, partitions int32) Option {
	return optionFunc(func(c *config) {
		if _, ok := c.bcastParts[topic]; !ok {
			c.broadcast = append(c.broadcast, topic)
		}
		c.bcastParts[topic] = partitions
	})
}

// Window sets the period of [task.WindowableTask.Window] in the driver's
// clock, like [task.Job.Window]. Zero (the default) disables Window.
func Window(d time.Duration) Option { return optionFunc(func(c *config) { c.window = d }) }

// CommitInterval sets the period of automatic commits in the driver's clock,
// like [task.Job.CommitInterval]; zero means [task.DefaultCommitInterval].
func CommitInterval(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d == 0 {
			d = task.DefaultCommitInterval
		}
		c.commit = d
	})
}

// OnError sets the error policy for messages whose Process fails or
// panics, like [task.Job.OnError]. Default [task.Fail].
func OnError(p task.ErrorPolicy) Option { return optionFunc(func(c *config) { c.policy = p }) }

// DeadLetterTopic sets where [task.DeadLetter] copies failed messages;
// default "<job>-dlq".
func DeadLetterTopic(topic string) Option { return optionFunc(func(c *config) { c.dlq = topic }) }

// Logger sets the logger the task gets from [task.Context.Logger] (with the
// job and task names attached) and that the driver reports skipped and
// dead-lettered messages to. The default discards everything, so that test
// output stays readable.
func Logger(l *slog.Logger) Option { return optionFunc(func(c *config) { c.log = l }) }

// StartTime sets the driver's clock at creation. The default is a fixed
// instant, 2020-01-01 00:00 UTC, so that tests are reproducible.
func StartTime(t time.Time) Option { return optionFunc(func(c *config) { c.start = t }) }

// ResumeFrom starts the task from a checkpoint, as a restarted job would:
// partitions in cp.Inputs continue at the recorded offsets, and the next
// checkpoint gets ID cp.ID+1. cp.Task, when set, must be the task's name.
func ResumeFrom(cp checkpoint.Checkpoint) Option {
	return optionFunc(func(c *config) {
		cp = cp.Clone()
		c.resume = &cp
	})
}

func (c *config) taskName() string { return fmt.Sprintf("task-%d", c.partition) }

func (c *config) deadLetterTopic() string {
	if c.dlq == "" {
		return c.job + "-dlq"
	}
	return c.dlq
}

func (c *config) validate() error {
	switch {
	case c.job == "":
		return fmt.Errorf("tasktest: job name is empty")
	case c.partition < 0:
		return fmt.Errorf("tasktest: partition %d is negative", c.partition)
	case c.window < 0 || c.commit < 0:
		return fmt.Errorf("tasktest: Window and CommitInterval must not be negative")
	case c.policy < task.Fail || c.policy > task.DeadLetter:
		return fmt.Errorf("tasktest: %v is not an error policy", c.policy)
	}
	seen := map[string]bool{}
	for _, t := range slices.Concat(c.inputs, c.broadcast) {
		if t == "" {
			return fmt.Errorf("tasktest: an input topic name is empty")
		}
		if seen[t] {
			return fmt.Errorf("tasktest: input %q is listed twice", t)
		}
		seen[t] = true
	}
	for _, t := range c.broadcast {
		if c.bcastParts[t] <= 0 {
			return fmt.Errorf("tasktest: broadcast input %q needs at least one partition", t)
		}
	}
	if c.resume != nil && c.resume.Task != "" && c.resume.Task != c.taskName() {
		return fmt.Errorf("tasktest: ResumeFrom: checkpoint is of %s, the driver runs %s", c.resume.Task, c.taskName())
	}
	return nil
}
