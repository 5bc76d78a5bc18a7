// Package task is how a program runs stream jobs: the task interfaces it
// implements, and Job, which runs them against Kafka.
//
// # Basics
//
// A task implements [StreamTask]; it may also implement [InitableTask],
// [WindowableTask] and [ClosableTask], and Grete calls what it finds (the
// optional-interface pattern of database/sql/driver). A [Job] names the
// inputs and how to make a task; [Job.Run] does the rest:
//
//   - Tasks: a job runs one task per input partition N; task N reads
//     partition N of every input, so co-partitioned inputs meet in one task.
//     Broadcast inputs are read in full by every task.
//   - Ordering: a task sees its messages one at a time, in offset order per
//     partition. Process, Window, commits and Close of one task never run
//     concurrently; different tasks run in parallel.
//   - Delivery: at least once. Every Job.CommitInterval (and on
//     Coordinator.Commit, and when stopping) a task waits until Kafka has
//     acknowledged everything it sent, then writes a checkpoint of its next
//     input offsets. After a crash a task resumes from its last checkpoint:
//     messages processed since are processed again, none are lost.
//   - Backpressure: fetched messages wait in a bounded queue per task, and
//     Collector.Send blocks when the producer's buffers are full, so memory
//     stays bounded whatever the backlog.
//   - Bad input: Job.OnError chooses Fail, Skip or DeadLetter for messages
//     whose Process returns an error or panics.
//   - Scale-out: processes running the same job join the consumer group
//     named after it and share its tasks, whole (a task's partitions never
//     split). Rebalances are cooperative and sticky: a task moves only when
//     balance needs it, and is committed and closed by its old owner before
//     its new owner restores and starts it; Job.Standbys keeps warm copies
//     of every task's stores on other processes. See Job.InstanceID,
//     Job.SessionTimeout, Job.RebalanceTimeout and Job.Member.
//
// # Caveats
//
// Output may contain duplicates after a crash (at-least-once); make outputs
// idempotent or de-duplicate downstream. Checkpoints are kept in a compacted
// topic "<job>-checkpoints"; deleting it restarts every task from
// Job.StartAt. The consumer group's offsets mirror the checkpoints of
// partitioned inputs (for lag tools); broadcast inputs are not mirrored.
//
// Use package [github.com/grete-go/grete/task/tasktest] to test a task in
// memory, without a broker.
package task
