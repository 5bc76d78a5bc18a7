// Package state is the commit and restore protocol of Grete's stores.
//
// A Local is one task's store: an engine (Pebble on disk, or memory) and
// the writes buffered since the last commit. Its task sees it through
// View, as a store.Store; the task loop drives the rest:
//
//   - Savepoint before every Process or Window call, Rollback when the call
//     fails: a failed message leaves no writes behind.
//   - Flush (step 2 of a commit): every buffered key becomes one changelog
//     record, in key order; expired entries are deleted first.
//   - Commit (step 5): once the records are acknowledged and the
//     checkpoint written, the buffered writes and Meta (the checkpoint id
//     and the last changelog offset the data covers) reach the engine in
//     one atomic write. The engine is never ahead of the checkpoint.
//   - Meta, Restore and FinishRestore, Wipe, EngineValue: the restore at a
//     task's start (reuse the store, replay the changelog's tail or all of
//     it, trim the records a crashed run wrote past its checkpoint).
//
// The changelog's records are the engine's keys and values as they are;
// package store documents the format, which tools reading changelogs from
// Kafka rely on.
package state
