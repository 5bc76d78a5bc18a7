// Package window aggregates events into event-time windows: tumbling,
// hopping, and session windows, with a grace period for out-of-order
// events, state kept in a changelog-backed store, and emits of updates and
// final values.
//
// # Basics
//
// An [Aggregator] lives in a task. Make it in Init over a store of its own
// (declared without TrackChanges: the aggregator tracks the windows that
// changed itself), call Add from Process and Flush from Window:
//
//	agg, err := window.New(s, window.Options[string, Event, Session]{
//		Windows:     window.Sessions(30 * time.Minute),
//		Grace:       time.Minute,
//		Add:         addEvent,
//		Merge:       mergeSessions,
//		EmitUpdates: true, // Flush emits every session changed since the last Flush
//	})
//
// Stream time is the largest event timestamp the task has seen. A window
// closes once stream time passes its end (a session's last event plus the
// gap) plus the grace period: its final value is emitted and its state
// deleted, which writes a tombstone to the changelog. An event that belongs
// to no open window is late: it is counted and dropped, or handed to a
// LateFunc (e.g. to send it to a side output).
//
// # Exactly-once state
//
// Windows, stream time and the set of changed windows live in the task's
// store, so they are restored to the task's checkpoint after a crash and
// the reprocessed input rebuilds them exactly: every event is folded into
// its windows once. Emitted values may repeat after a crash; the last value
// emitted for a window is always complete.
//
// # Caveats
//
// Event timestamps are taken in milliseconds. Which windows are open
// depends only on stream time, so results do not depend on how often Flush
// runs, unless Options.IdleTimeout lets the wall clock close windows of an
// idle partition.
//
// An Aggregator keeps an index of open windows and the stream time in
// memory as well as in the store. When Process fails, Grete rolls the
// task's stores back to before the message; the aggregator notices
// (every task store is a store.RollbackCounter) and rebuilds its memory
// from the store at its next Add or Flush, so a task that goes on (Skip,
// DeadLetter) sees the state as if the message had never come. The rebuild costs a scan of the open
// windows, and only follows a failed message that had written to the
// store.
package window
