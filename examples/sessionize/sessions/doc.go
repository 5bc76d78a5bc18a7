// Package sessions is the sessionize example's job, Optimizely's
// sessionization on Grete: it reads visitor events, groups them into
// sessions by session_id (a session ends after a gap of event-time
// inactivity), and every window emits a snapshot of every session that
// changed, keyed by session_id. A session that closes gets a final
// snapshot and its state is deleted.
//
// NewJob returns the job, ready to run: its task, its store, its outputs
// and its dead-letter policy. A program that builds its own task.Job takes
// the pieces instead: NewTask, Stores, and the Output (and LateTopic) of
// its Settings as output topics. Stats counts what the tasks of a job
// emit. The command in examples/sessionize runs the job with flags, and
// examples/bench measures it (go run ./examples/bench sessionize).
//
// # Input and output
//
// The input topic holds JSON events keyed by visitor_id:
//
//	{"event_id":"e1","visitor_id":"v7","session_id":"s3","ts":1700000000000,"type":"purchase",
//	 "experiment":"checkout_flow:b","revenue":12.99,"browser":"chrome","country":"US","ip":"10.0.0.1"}
//
// ts is in Unix milliseconds; revenue is a decimal amount. Numbers are JSON
// numbers, whatever their spelling: revenue 12.5, 12.50, 1.25e1 or 1250e-2
// is the same amount, summed exactly (to the millionth: more decimals are
// rounded half to even; see Amount), and ts 1.7e12 is a whole number of
// milliseconds. session_id, event_id and ts are required; members the job
// does not know are ignored, and null counts as missing. An event without
// a required member, with a member of the wrong kind (a string revenue, a
// numeric session_id, a fractional ts), or a value that is not a JSON
// object, goes to the job's dead-letter topic "<name>-dlq" with an error
// that names the member (a *FieldError).
//
// The output topic gets snapshots (see Snapshot) keyed by session_id:
//
//	{"session_id":"s3","visitor_id":"v7","start":1700000000000,"end":1700000042000,
//	 "event_count":2,"revenue":12.99,"browser":"chrome","country":"US","ip":"10.0.0.1","final":false,
//	 "events":[{"event_id":"e0","ts":1700000000000,"type":"pageview","experiment":"","revenue":0},
//	           {"event_id":"e1","ts":1700000042000,"type":"purchase","experiment":"checkout_flow:b","revenue":12.99}]}
//
// start and end are the smallest and largest ts, revenue the exact sum,
// written as the shortest JSON number that is exactly it. The
// metadata (visitor_id, browser, country, ip) is the session's first
// event's: the one with the smallest ts, ties broken by the smaller
// event_id (bytewise). events are ordered by ts, then event_id. final is
// true on the last snapshot of a session that closed.
//
// The output is an ordinary delete-policy topic, not a compacted one: the
// job never deletes a session from it, so a compacted topic would keep
// every session ever seen, for ever. Read the last snapshot of each
// session within the topic's retention.
//
// # Semantics
//
// Sessions are kept per task (one per input partition) in a
// window.Aggregator over session windows of Gap, in a changelog-backed
// store. Stream time is the largest ts the task has seen. An event joins
// the open sessions of its session_id that it falls within Gap of
// (merging them if it bridges two). A session closes when stream time
// reaches its last event's ts + Gap + Grace: its final snapshot is sent
// and its state deleted. An event that joins no open session and whose
// own session would already be closed is late: it is dropped and counted,
// or sent as it came to the LateTopic. Every Window of processing time the
// job sends a snapshot of every session that changed since the last one.
//
// State, stream time and the set of changed sessions are restored to the
// last checkpoint after a crash, and reprocessing the input after it
// rebuilds them exactly: a snapshot may be sent twice, but the last
// snapshot of every session is always complete, and a session changed
// before a crash gets its snapshot after the restart.
//
// Events of one session_id more than Gap apart form separate sessions
// under the same key, as does an event that comes after its session closed
// but recent enough to open one of its own (its ts + Gap + Grace is still
// ahead of stream time). Each has its own snapshots; the key's last
// snapshot is that of the session emitted last. The input is taken as it
// is: an event sent twice by its producer is counted twice.
//
// # Generated traffic
//
// Traffic, Generator and Simulate make visitor events like the job's
// input, deterministically from a seed: sessions that open, pause, close,
// merge and reopen, with events out of order and late. They are not part
// of the job; the example generates its demo traffic with them, and its
// tests and the benchmark their input.
package sessions
