package state

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"slices"

	"github.com/google/btree"
)

// writeBuffer holds the writes buffered since the last commit: the last
// write to each engine key, in the order the keys were first written.
//
// Puts and point reads go through a map and cost the same whatever the
// size of the buffer. Ordered reads need the keys sorted, and only they pay
// for it:
//
//   - Flush and Commit take every write in key order: a radix sort, once
//     per commit (inOrder);
//   - iterators and TakeChanges read ranges, repeatedly: a B-tree that
//     indexes the entries lazily, when a range is asked for (scan);
//   - the TTL sweep reads one namespace once per flush: a filter and a sort
//     of what it keeps (filter).
//
// A buffered key or value is never modified in place: a write replaces the
// value slice. Snapshots taken by iterators, the undo log and the records
// handed to Flush's emit may therefore keep them.
type writeBuffer struct {
	ents []write          // first-write order
	pos  map[string]int32 // engine key -> index in ents
	peak int              // the most keys pos has held
	// size is the bytes of the buffered keys and values.
	size int
	// index orders ents[:indexed] by key; scan brings it up to date.
	index   *btree.BTreeG[ref]
	indexed int
	// order lists the indexes of ents in key order while it is as long as
	// ents: a new key makes it stale.
	order []int32
	out   []write // scratch for inOrder
	// arena is the free end of the current chunk of alloc.
	arena []byte
}

// ref is an entry of the index: a buffered key and its place in ents.
type ref struct {
	key []byte
	i   int32
}

func lessRef(a, b ref) bool { return bytes.Compare(a.key, b.key) < 0 }

func newWriteBuffer() *writeBuffer {
	return &writeBuffer{pos: map[string]int32{}, index: btree.NewG(16, lessRef)}
}

func (b *writeBuffer) len() int { return len(b.ents) }

func (b *writeBuffer) key(i int32) []byte { return b.ents[i].key }

// get returns the buffered write of an engine key.
func (b *writeBuffer) get(k []byte) (write, bool) {
	i, ok := b.pos[string(k)]
	if !ok {
		return write{}, false
	}
	return b.ents[i], true
}

// set buffers a copy of k and v (a delete when del), and returns the write
// it replaces with its index, or -1 when k was not buffered.
func (b *writeBuffer) set(k, v []byte, del bool) (prev write, i int32) {
	if i, ok := b.pos[string(k)]; ok {
		prev = b.ents[i]
		w := &b.ents[i]
		w.value, w.del = nil, del
		if !del {
			w.value = make([]byte, len(v))
			copy(w.value, v)
		}
		b.size += len(w.value) - len(prev.value)
		return prev, i
	}
	n := len(k)
	if !del {
		n += len(v)
	}
	buf := b.alloc(n)
	copy(buf, k)
	w := write{key: buf[:len(k):len(k)], del: del}
	if !del {
		w.value = buf[len(k):]
		copy(w.value, v)
	}
	b.pos[string(w.key)] = int32(len(b.ents))
	b.ents = append(b.ents, w)
	b.peak = max(b.peak, len(b.ents))
	b.size += n
	return write{}, -1
}

// arenaChunk is the size of the chunks of memory that hold the first
// write of each key: one allocation for many small writes.
const arenaChunk = 32 << 10

// alloc returns n bytes for the key and value of a new entry. An overwrite
// allocates its value on its own instead, so that a key written over and
// over does not fill the arena with dead values.
func (b *writeBuffer) alloc(n int) []byte {
	if n > arenaChunk/8 {
		return make([]byte, n)
	}
	if len(b.arena)+n > cap(b.arena) {
		b.arena = make([]byte, 0, arenaChunk)
	}
	b.arena = b.arena[:len(b.arena)+n]
	return b.arena[len(b.arena)-n : len(b.arena) : len(b.arena)]
}

// putBack puts back the write that entry i held before a set.
func (b *writeBuffer) putBack(i int32, w write) {
	b.size += len(w.value) - len(b.ents[i].value)
	b.ents[i] = w
}

// truncate forgets the entries from n on: the keys first written since
// ents had n entries.
func (b *writeBuffer) truncate(n int) {
	for i := n; i < len(b.ents); i++ {
		w := b.ents[i]
		delete(b.pos, string(w.key))
		if i < b.indexed {
			b.index.Delete(ref{key: w.key})
		}
		b.size -= len(w.key) + len(w.value)
	}
	clear(b.ents[n:])
	b.ents = b.ents[:n]
	b.indexed = min(b.indexed, n)
	if n < len(b.order) {
		b.order = b.order[:0]
	}
}

// reset empties the buffer. The memory of the writes is left to the
// garbage collector, since snapshots and records handed out may hold it.
//
// The entries, the map and the scratch space keep their room for the next
// commit, which takes as much in a steady flow of writes, unless they
// have room for more than twice the writes of this one: then they go, so
// that a burst does not hold memory for good.
func (b *writeBuffer) reset() {
	n := len(b.ents)
	if b.peak > 2*n+64 {
		b.pos, b.peak = map[string]int32{}, 0
	} else {
		clear(b.pos)
	}
	b.ents = reuse(b.ents, n)
	b.order = reuse(b.order, n)
	b.out = reuse(b.out, n)
	b.index.Clear(true)
	b.indexed, b.size = 0, 0
	b.arena = nil
}

// reuse empties s for reuse, or drops it when it has room for more than
// twice n elements.
func reuse[T any](s []T, n int) []T {
	if cap(s) > 2*n+64 {
		return nil
	}
	clear(s[:cap(s)])
	return s[:0]
}

// scan returns a copy of the buffered writes with keys in [lo, hi), in key
// order: a snapshot, which later writes do not change.
func (b *writeBuffer) scan(lo, hi []byte) []write {
	for ; b.indexed < len(b.ents); b.indexed++ {
		b.index.ReplaceOrInsert(ref{key: b.ents[b.indexed].key, i: int32(b.indexed)})
	}
	var ws []write
	b.index.AscendRange(ref{key: lo}, ref{key: hi}, func(r ref) bool {
		ws = append(ws, b.ents[r.i])
		return true
	})
	return ws
}

// filter is scan by looking at every entry, for a single read of a range
// that holds few of them: it costs less than bringing the index up to date.
func (b *writeBuffer) filter(lo, hi []byte) []write {
	var idx []int32
	for i, w := range b.ents {
		if bytes.Compare(w.key, lo) >= 0 && bytes.Compare(w.key, hi) < 0 {
			idx = append(idx, int32(i))
		}
	}
	sortByKey(idx, b.key)
	ws := make([]write, len(idx))
	for j, i := range idx {
		ws[j] = b.ents[i]
	}
	return ws
}

// inOrder returns every buffered write in key order, in scratch space that
// the next call reuses.
func (b *writeBuffer) inOrder() []write {
	if len(b.order) != len(b.ents) {
		b.order = b.order[:0]
		for i := range b.ents {
			b.order = append(b.order, int32(i))
		}
		sortByKey(b.order, b.key)
	}
	b.out = b.out[:0]
	for _, i := range b.order {
		b.out = append(b.out, b.ents[i])
	}
	return b.out
}

// sortByKey sorts idx, indexes of keys that key returns, by key and equal
// keys by index: a radix sort of 8 bytes of each key, held next to the
// indexes, then a comparison sort of the keys that share them. Comparing
// whole keys, each reached through key, costs several times more. The 8
// bytes follow the prefix that every key shares (a namespace, "user-"),
// which would make them all tie.
func sortByKey(idx []int32, key func(int32) []byte) {
	if len(idx) < 2 {
		return
	}
	shared := key(idx[0])
	for _, i := range idx[1:] {
		k := key(i)
		n := 0
		for n < len(shared) && n < len(k) && shared[n] == k[n] {
			n++
		}
		shared = shared[:n]
	}
	as := make([]abbrev, len(idx))
	for j, i := range idx {
		var h [8]byte
		copy(h[:], key(i)[len(shared):])
		as[j] = abbrev{head: binary.BigEndian.Uint64(h[:]), i: i}
	}
	as = radixSort(as, make([]abbrev, len(as)))
	for j := 0; j < len(as); {
		k := j + 1
		for k < len(as) && as[k].head == as[j].head {
			k++
		}
		if k-j > 1 {
			slices.SortFunc(as[j:k], func(x, y abbrev) int {
				if c := bytes.Compare(key(x.i), key(y.i)); c != 0 {
					return c
				}
				return cmp.Compare(x.i, y.i)
			})
		}
		j = k
	}
	for j, a := range as {
		idx[j] = a.i
	}
}

// abbrev is an index and 8 bytes of its key (zero padded), big endian:
// heads order as the keys do, or tie.
type abbrev struct {
	head uint64
	i    int32
}

// radixSort sorts as by head, stably, a byte at a time from the last
// (skipping the bytes every head shares), using tmp as scratch; it returns
// the sorted slice, which is as or tmp.
func radixSort(as, tmp []abbrev) []abbrev {
	for shift := 0; shift < 64 && len(as) > 1; shift += 8 {
		var count [256]int
		for _, a := range as {
			count[byte(a.head>>shift)]++
		}
		if count[byte(as[0].head>>shift)] == len(as) {
			continue // every head has this byte
		}
		sum := 0
		for d, c := range count {
			count[d] = sum
			sum += c
		}
		for _, a := range as {
			d := byte(a.head >> shift)
			tmp[count[d]] = a
			count[d]++
		}
		as, tmp = tmp, as
	}
	return as
}
