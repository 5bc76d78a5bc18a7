package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"github.com/grete-go/grete/store"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Grete's store against raw Pebble with the same options, on the same
// work: the target is raw time / Grete time >= 0.8.
//
//	go test ./store -run '^$' -bench . -benchtime 3s
//
// On a shared or busy machine the separate grete and rawpebble runs see
// different background load; the paired sub-benchmarks alternate the two
// within one run and report raw-ns/op, grete-ns/op and their ratio.

const (
	benchBatch  = 10_000 // puts per commit
	benchKeys   = 100_000
	benchKeyLen = 16
	benchValLen = 100
)

func benchKeySet(n int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	ks := make([][]byte, n)
	for i := range ks {
		k := make([]byte, benchKeyLen)
		binary.BigEndian.PutUint64(k, rng.Uint64())
		binary.BigEndian.PutUint64(k[8:], uint64(i))
		ks[i] = k
	}
	return ks
}

func benchValue(i int) []byte {
	v := bytes.Repeat([]byte{'v'}, benchValLen)
	binary.BigEndian.PutUint64(v, uint64(i))
	return v
}

// openRawPebble opens Pebble as the store's Pebble engine does.
func openRawPebble(b *testing.B) *pebble.DB {
	b.Helper()
	cache := pebble.NewCache(8 << 20)
	db, err := pebble.Open(filepath.Join(b.TempDir(), "raw"), &pebble.Options{Cache: cache, MemTableSize: 4 << 20, Logger: quietLogger{}})
	cache.Unref()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	return db
}

func gretePutCommit(b *testing.B, s *Local, keys [][]byte, val []byte, id uint64) {
	for _, k := range keys {
		if err := s.Put(k, val); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Commit(Meta{CheckpointID: id}); err != nil {
		b.Fatal(err)
	}
}

func rawPutCommit(b *testing.B, db *pebble.DB, keys [][]byte, val []byte) {
	batch := db.NewBatch()
	for _, k := range keys {
		if err := batch.Set(k, val, nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := batch.Commit(pebble.Sync); err != nil {
		b.Fatal(err)
	}
	_ = batch.Close()
}

// paired alternates Grete and raw Pebble operations, so that both meet
// the same background load, and reports for each its mean wall time and
// the CPU time of the benchmark's own thread (which leaves out Pebble's
// background work and waiting for fsync), with the ratios raw/grete.
type paired struct {
	wall, cpu [2]time.Duration // [grete, raw]
	n         int
}

const (
	greteSide = 0
	rawSide   = 1
)

func (p *paired) time(side int, op func()) {
	w, c := time.Now(), threadCPU()
	op()
	p.cpu[side] += threadCPU() - c
	p.wall[side] += time.Since(w)
}

// round runs one Grete op and one raw op, in alternating order.
func (p *paired) round(grete, raw func()) {
	if p.n%2 == 0 {
		p.time(greteSide, grete)
		p.time(rawSide, raw)
	} else {
		p.time(rawSide, raw)
		p.time(greteSide, grete)
	}
	p.n++
}

func (p *paired) report(b *testing.B, opsPerRound int) {
	ops := float64(p.n * opsPerRound)
	b.ReportMetric(float64(p.wall[greteSide].Nanoseconds())/ops, "grete-ns/op")
	b.ReportMetric(float64(p.wall[rawSide].Nanoseconds())/ops, "raw-ns/op")
	b.ReportMetric(p.wall[rawSide].Seconds()/p.wall[greteSide].Seconds(), "raw/grete")
	if p.cpu[greteSide] > 0 {
		b.ReportMetric(float64(p.cpu[greteSide].Nanoseconds())/ops, "grete-cpu-ns/op")
		b.ReportMetric(float64(p.cpu[rawSide].Nanoseconds())/ops, "raw-cpu-ns/op")
		b.ReportMetric(p.cpu[rawSide].Seconds()/p.cpu[greteSide].Seconds(), "cpu-raw/grete")
	}
}

// BenchmarkPutCommit: one op is benchBatch puts of 16-byte keys and
// 100-byte values, then one durable commit.
func BenchmarkPutCommit(b *testing.B) {
	keys := benchKeySet(benchBatch, 1)
	val := benchValue(0)
	b.Run("grete", func(b *testing.B) {
		s := openLocal(b, store.Pebble, store.Spec{}, nil)
		b.SetBytes(benchBatch * (benchKeyLen + benchValLen))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			gretePutCommit(b, s, keys, val, uint64(i))
		}
	})
	// With the changelog step: Flush hands every record to a no-op emit.
	b.Run("grete+flush", func(b *testing.B) {
		s := openLocal(b, store.Pebble, store.Spec{}, nil)
		b.SetBytes(benchBatch * (benchKeyLen + benchValLen))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			for _, k := range keys {
				if err := s.Put(k, val); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Flush(func(k, v []byte) error { return nil }); err != nil {
				b.Fatal(err)
			}
			if err := s.Commit(Meta{CheckpointID: uint64(i)}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rawpebble", func(b *testing.B) {
		db := openRawPebble(b)
		b.SetBytes(benchBatch * (benchKeyLen + benchValLen))
		b.ReportAllocs()
		for b.Loop() {
			rawPutCommit(b, db, keys, val)
		}
	})
	b.Run("paired", func(b *testing.B) {
		s := openLocal(b, store.Pebble, store.Spec{}, nil)
		db := openRawPebble(b)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var p paired
		for b.Loop() {
			p.round(func() { gretePutCommit(b, s, keys, val, uint64(p.n)) }, func() { rawPutCommit(b, db, keys, val) })
		}
		p.report(b, 1)
	})
	// Raw Pebble reading its own indexed batch, as a store that must let
	// reads see uncommitted writes would.
	b.Run("rawpebble-indexed", func(b *testing.B) {
		db := openRawPebble(b)
		b.SetBytes(benchBatch * (benchKeyLen + benchValLen))
		b.ReportAllocs()
		for b.Loop() {
			batch := db.NewIndexedBatch()
			for _, k := range keys {
				if err := batch.Set(k, val, nil); err != nil {
					b.Fatal(err)
				}
			}
			if err := batch.Commit(pebble.Sync); err != nil {
				b.Fatal(err)
			}
			_ = batch.Close()
		}
	})
}

// compact flushes and fully compacts db, so that the Grete and raw
// databases serve reads from the same shape of LSM, not from whatever
// their background compactions reached.
func compact(b *testing.B, db *pebble.DB) {
	b.Helper()
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := db.Compact(context.Background(), []byte{0}, bytes.Repeat([]byte{0xff}, benchKeyLen+1), false); err != nil {
		b.Fatal(err)
	}
}

func loadGrete(b *testing.B, keys [][]byte) *Local {
	s := openLocal(b, store.Pebble, store.Spec{}, nil)
	for i, k := range keys {
		if err := s.Put(k, benchValue(i)); err != nil {
			b.Fatal(err)
		}
		if i%benchBatch == benchBatch-1 || i == len(keys)-1 {
			if err := s.Commit(Meta{CheckpointID: uint64(i)}); err != nil {
				b.Fatal(err)
			}
		}
	}
	compact(b, s.eng.(*pebbleEngine).db)
	return s
}

func loadRaw(b *testing.B, keys [][]byte) *pebble.DB {
	db := openRawPebble(b)
	for i := 0; i < len(keys); i += benchBatch {
		batch := db.NewBatch()
		for j := i; j < min(len(keys), i+benchBatch); j++ {
			if err := batch.Set(keys[j], benchValue(j), nil); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Commit(pebble.Sync); err != nil {
			b.Fatal(err)
		}
		_ = batch.Close()
	}
	compact(b, db)
	return db
}

func greteGet(b *testing.B, s *Local, k []byte) {
	v, ok, err := s.Get(k)
	if err != nil || !ok || len(v) != benchValLen {
		b.Fatal(ok, err)
	}
}

func rawGet(b *testing.B, db *pebble.DB, k []byte, copyOut bool) {
	v, closer, err := db.Get(k)
	if err != nil || len(v) != benchValLen {
		b.Fatal(err)
	}
	if copyOut {
		v = bytes.Clone(v)
	}
	_ = closer.Close()
	_ = v
}

// BenchmarkGet: one op is a Get of a random key among benchKeys committed
// keys.
func BenchmarkGet(b *testing.B) {
	keys := benchKeySet(benchKeys, 2)
	order := rand.New(rand.NewPCG(3, 3)).Perm(benchKeys)
	b.Run("grete", func(b *testing.B) {
		s := loadGrete(b, keys)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			greteGet(b, s, keys[order[i%benchKeys]])
		}
	})
	for _, copyOut := range []bool{false, true} {
		name := "rawpebble"
		if copyOut {
			// Grete's Get returns a value the caller owns: the same with
			// raw Pebble costs a copy.
			name = "rawpebble-copy"
		}
		b.Run(name, func(b *testing.B) {
			db := loadRaw(b, keys)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				rawGet(b, db, keys[order[i%benchKeys]], copyOut)
			}
		})
	}
	b.Run("paired", func(b *testing.B) {
		s, db := loadGrete(b, keys), loadRaw(b, keys)
		const block = 256 // gets timed together
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var p paired
		for b.Loop() {
			ks := make([][]byte, block)
			for x := range ks {
				ks[x] = keys[order[(p.n*block+x)%benchKeys]]
			}
			p.round(func() {
				for _, k := range ks {
					greteGet(b, s, k)
				}
			}, func() {
				for _, k := range ks {
					rawGet(b, db, k, false)
				}
			})
		}
		p.report(b, block)
	})
}
