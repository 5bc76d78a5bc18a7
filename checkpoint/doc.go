// Package checkpoint records how far each task of a job has got: the next
// offset to read in every input partition and the last changelog offset of
// every store, written atomically as one record per commit.
//
// # Basics
//
// A [Checkpoint] is encoded by [Encode] as a versioned msgpack record and
// read back by [Decode]. A [Manager] stores the last checkpoint of each task.
// [NewKafka] keeps them in the job's compacted "<job>-checkpoints" topic (one
// partition, keyed by task name), optionally mirroring input offsets to a
// consumer group for lag tools; [NewMemory] keeps them in memory for tests.
// A task.Job uses a Kafka manager of its own unless Job.Checkpoints names
// another, and mirrors its checkpoints to its group itself.
//
// # Caveats
//
// Records carry a format version. A record written by a newer Grete with a
// format this one does not know is refused with [ErrUnsupportedVersion],
// never misread: a wrongly read offset would lose or repeat data.
package checkpoint
