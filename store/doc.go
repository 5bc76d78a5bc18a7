// Package store is the state of stream tasks: ordered key-value stores kept
// next to the task, on disk (Pebble) or in memory, and backed by a
// compacted changelog topic so they survive any crash.
//
// # Basics
//
// Declare stores on the Job and get them in Init:
//
//	job.Stores = []store.Spec{{Name: "counts"}}
//
//	func (t *Counter) Init(ctx context.Context, tc task.Context) error {
//		s, err := tc.Store("counts")
//		t.counts = store.StringKeys[int64](s)
//		return err
//	}
//
// A [Store] offers Get, Put, Delete, PutAll, and ordered iteration over
// [start, end) ranges and prefixes. [Typed] adds serdes (msgpack values by
// default). Keys order bytewise; [Int64Key] and [Uint64Key] keep numbers in
// numeric order.
//
// # Transactions and the changelog
//
// Writes between two commits of the task are buffered: reads see them at
// once, the engine does not. At commit, every key written since the last
// commit becomes one changelog record (many writes to a key coalesce into
// one; a delete becomes a tombstone); once Kafka has acknowledged them and
// the checkpoint is written, the buffered writes and the checkpoint's
// identity reach the engine in one atomic write. The local store is thus
// never ahead of the checkpoint, and a crash loses only writes that the
// reprocessed input redoes.
//
// At start a task compares each store's local metadata with its
// checkpoint: equal, the store is used as it is; behind, the changelog is
// replayed from where the store stopped; missing (a new machine), it is
// replayed from the beginning. Changelog records written after the
// checkpoint by a run that crashed are not applied, and are overwritten in
// the changelog with the restored values so that no later restore sees them.
//
// # Flushing what changed
//
// A store declared with TrackChanges remembers which keys changed since the
// task last took them ([ChangeTracker]). A periodic flush then costs in
// proportion to what changed, not to the size of the store, and the set of
// changed keys is itself logged: it survives crashes like the data.
//
// # The changelog format
//
// The changelog of store S of job J is the compacted topic "J-S-changelog";
// task N writes partition N. Its records are the store's engine records
// (a [Record]): the key is a namespace byte followed by more bytes, the
// value is nil for a tombstone.
//
//   - 'd' + key: an entry. The value is a header byte, then the value: 0
//     for a plain entry; 1 for an entry with a TTL, followed by its expiry
//     as 8 bytes of Unix nanoseconds, big endian. A tombstone deletes it.
//   - 'c' + key (TrackChanges): key changed since the task last took the
//     changes; the value is empty. A tombstone says it was taken.
//   - 'x' + expiry (8 bytes, Unix ns, big endian) + key (TTL): the expiry
//     index; the value is empty.
//
// A task commits the records of one commit before its checkpoint, which
// records the offset of the last of them; records past a task's
// checkpoint are rewritten by its next start (see above). To read a
// store's state from Kafka, read its changelog partition to the offset the
// task's checkpoint records, keeping the last value of every 'd' key.
//
// # Caveats
//
// A store is used from its task's goroutine only. Iterators must be closed
// before the Process or Window call that opened them returns. Values
// returned by Get are the caller's; an Iterator's Key and Value are valid
// until its next Next or Close.
package store
