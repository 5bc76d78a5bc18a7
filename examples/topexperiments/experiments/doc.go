// Package experiments is the task code of the topexperiments example,
// Optimizely's "top experiments by traffic, in real time" on Grete: two
// jobs that read a stream of JSON events naming an A/B experiment, count
// events per experiment, and keep the global top-N on a topic, as counts
// since the jobs started:
//
//	{"at": 1700000000000, "top": [{"experiment": "exp-0031", "count": 4521}, ...]}
//
// The command in the parent directory runs them (with an embedded broker
// and generated traffic by default); the benchmark program in
// examples/bench measures them. This package holds what both need: the
// jobs (CountJob, MergeJob), the records they exchange (Partial, Global),
// and the generator of the example's traffic (Traffic).
//
// # Two jobs, chained by a topic
//
// The counting job ("<name>-count") reads the input: task i counts the
// experiments of input partition i in a changelog-backed Pebble store, and
// every window emits its own top-N to PartialTopic(output) (when it changed
// since the last one, and after every start). Every partial carries the
// same partition key, so all of them meet in one task of the merging job
// ("<name>-merge"), which keeps the latest partial of every counting task
// in a changelog-backed store of its own and emits the global top-N to
// output whenever a partial changes it.
//
// The window flush must not stall processing (Optimizely's lesson from
// Samza: iterating RocksDB in a windowed flush starved the job). The counts
// store is declared with TrackChanges, and the flush visits only the
// experiments counted since the previous flush (store TakeChanges), folding
// them into an in-memory top-N that stays exact because counts only grow
// (see Leaders). The only full scan of the store happens once per start, to
// rebuild that top-N.
//
// # The input must be keyed by experiment
//
// The global top-N is exact when every experiment is counted by one
// counting task: then each task's top-N holds the whole count of its
// experiments, and the union of the per-task tops contains the global top.
// So events must be partitioned by experiment (Traffic keys them by
// experiment; Kafka's default partitioner does the rest). A task that sees
// an event whose key is not its experiment logs a warning once: with such
// input the merging job adds up the counts it sees, which only
// approximates the top-N. Repartition such a stream by experiment first.
//
// Counts are exact through crashes: Grete restores each counting task's
// store to its last checkpoint and replays the input from there, so no
// event is lost or counted twice. The global top lags the counts by up to
// one window, and a partial emitted just before a crash can hold counts
// that the restarted task reaches again only once it has caught up.
package experiments
