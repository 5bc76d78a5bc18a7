package experiments

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task/tasktest"
)

// The benchmarks measure the pieces of the counting task; the benchmark
// program measures the jobs end to end, against raw sarama clients:
//
//	go run ./examples/bench counting
//	go run ./examples/bench restore
//
// (see examples/bench/topexperiments.go).

func BenchmarkExperimentOf(b *testing.B) {
	_, v := NewTraffic(1, 500).Next(time.UnixMilli(1_700_000_000_000))
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		if _, err := experimentOf(v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCountTask feeds generated events to a counting task on the
// in-memory test driver, with a window every 10k events.
func BenchmarkCountTask(b *testing.B) {
	ctx := context.Background()
	job := CountJob("bench", stream.KafkaConfig{}, "events", "top", 10, time.Second, nil)
	d := tasktest.FromJob(job)
	defer d.Close(ctx)
	g := NewTraffic(1, 500)
	msgs := make([]stream.Message, 10_000)
	for i := range msgs {
		k, v := g.Next(time.UnixMilli(1_700_000_000_000))
		msgs[i] = stream.Message{Key: k, Value: v}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i += len(msgs) {
		batch := msgs[:min(len(msgs), b.N-i)]
		for j := range batch {
			batch[j].Offset = 0 // the next offset
		}
		if err := d.Feed(ctx, batch...); err != nil {
			b.Fatal(err)
		}
		if err := d.Advance(ctx, time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFlush compares the two ways a window flush can find the
// experiments counted since the last one, in a Pebble store of 100k
// committed counters of which 100 changed: TakeChanges, whose cost follows
// the changes, and a full scan, whose cost follows the store (what starved
// Optimizely's Samza job).
func BenchmarkFlush(b *testing.B) {
	const keys, changed = 100_000, 100
	for _, mode := range []string{"take-changes", "full-scan"} {
		b.Run(mode, func(b *testing.B) {
			l, err := state.Open(b.TempDir(), store.Spec{Name: CountsStore, TrackChanges: true}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			counts := store.StringKeys[int64](l)
			commit := func(id uint64) {
				if err := l.Flush(func(_, _ []byte) error { return nil }); err != nil {
					b.Fatal(err)
				}
				if err := l.Commit(state.Meta{CheckpointID: id, Offset: int64(id)}); err != nil {
					b.Fatal(err)
				}
			}
			for i := range keys {
				if err := counts.Put(fmt.Sprintf("exp-%06d", i), 1); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := l.TakeChanges(0, func(_, _ []byte) error { return nil }); err != nil {
				b.Fatal(err)
			}
			commit(1)
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				for j := range changed {
					if err := counts.Put(fmt.Sprintf("exp-%06d", (i*changed+j*997)%keys), int64(i+2)); err != nil {
						b.Fatal(err)
					}
				}
				commit(uint64(i + 2))
				b.StartTimer()
				visited := 0
				if mode == "take-changes" {
					visited, err = l.TakeChanges(0, func(_, _ []byte) error { return nil })
				} else {
					it := l.Range(nil, nil)
					for it.Next() {
						visited++
					}
					err = it.Err()
					it.Close()
				}
				if err != nil {
					b.Fatal(err)
				}
				if (mode == "take-changes" && visited != changed) || (mode == "full-scan" && visited != keys) {
					b.Fatalf("visited %d keys", visited)
				}
			}
		})
	}
}
