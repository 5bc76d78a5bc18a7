package experiments

import (
	"time"

	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
)

// Names of the stores, as declared on the jobs. A store's changelog is the
// topic "<job>-<store>-changelog" (see task.Job), which is how tests and
// benchmarks find the counts from outside.
const (
	CountsStore   = "counts"   // counting job: experiment -> count
	PartialsStore = "partials" // merging job: counting task -> its latest Partial
)

// PartialTopic is the topic the counting job writes its partial tops to
// when the global tops go to output. It has one partition: every partial
// must reach the one merging task.
func PartialTopic(output string) string { return output + "-partial" }

// CountJob returns the counting job "<name>-count": every task counts the
// experiments of its partition of input and, every window, emits its own
// top n to PartialTopic(output) when it changed. counters, when not nil,
// is shared by the job's tasks for a program's reports.
//
// The caller sets what depends on where the job runs (DataDir,
// CommitInterval, OnError, Logger, InstanceID).
func CountJob(name string, kc stream.KafkaConfig, input, output string, n int, window time.Duration, counters *Counters) *task.Job {
	partial := PartialTopic(output)
	return &task.Job{
		Name:    name + "-count",
		Kafka:   kc,
		Inputs:  []string{input},
		Stores:  []store.Spec{{Name: CountsStore, TrackChanges: true}},
		Window:  window,
		Outputs: []task.OutputTopic{{Name: partial, Partitions: 1}},
		NewTask: func() task.StreamTask { return newCountTask(n, partial, counters) },
	}
}

// MergeJob returns the merging job "<name>-merge": it reads the partial
// tops of CountJob(name, ..., output, ...) and emits the global top n on
// output whenever it changes. onTop, when not nil, is called with every
// global top emitted, from the job's task goroutine.
//
// As with CountJob, the caller sets what depends on where the job runs.
func MergeJob(name string, kc stream.KafkaConfig, output string, n int, onTop func(Global)) *task.Job {
	return &task.Job{
		Name:    name + "-merge",
		Kafka:   kc,
		Inputs:  []string{PartialTopic(output)},
		Stores:  []store.Spec{{Name: PartialsStore}},
		Outputs: []task.OutputTopic{{Name: output, Partitions: 1}},
		NewTask: func() task.StreamTask { return newMergeTask(n, output, onTop) },
	}
}
