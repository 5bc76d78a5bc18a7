// Package checkpoint records how far each task of a job has got: the next
// offset to read in every input partition and the last changelog offset of
// every store, written atomically as one record per commit.
//
// # Basics
//
// A [Checkpoint] is encoded by [Encode] as a versioned msgpack record and
// read back by [Decode]. A [Manager] stores the last checkpoint of each task.
// [NewKafka] keeps them in the job's compacted "<job>-checkpoints" topic (one
// partition, keyed by task name) and mirrors input offsets to the job's
// consumer group so lag tools see the job; [NewMemory] keeps them in memory
// for tests.
//
// # Caveats
//
// Records carry a format version. A record written by a newer Grete with a
// format this one does not know is refused with [ErrUnsupportedVersion],
// never misread: a wrongly read offset would lose or repeat data.
package checkpoint
