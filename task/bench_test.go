package task_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kgo"
)

// benchCopy sends every message, unchanged, to one topic.
type benchCopy struct{ out string }

func (c benchCopy) Process(_ context.Context, m stream.Message, out task.Collector, _ task.Coordinator) error {
	return out.Send(stream.Outgoing{Topic: c.out, Key: m.Key, Value: m.Value, Timestamp: m.Timestamp})
}

// BenchmarkJobCopy measures the job's hot path end to end on the embedded
// broker: b.N messages of 100 bytes on 8 partitions, copied by a task that
// only calls Send, until the final checkpoints cover every message (every
// output acknowledged). Producing the input and the rest of the shutdown are
// not timed. ns/op is per message; msgs/s is its inverse. Use a fixed
// count for stable numbers:
//
//	go test -run '^$' -bench JobCopy -benchtime 200000x ./task
func BenchmarkJobCopy(b *testing.B) {
	const parts = 8
	br := testkit.Broker(b)
	testkit.CreateTopic(b, br.Addrs(), "in", parts, nil)
	testkit.CreateTopic(b, br.Addrs(), "out", parts, nil)
	value := make([]byte, 100)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	recs := make([]*kgo.Record, b.N)
	for i := range recs {
		recs[i] = &kgo.Record{Key: []byte("k" + strconv.Itoa(i%1000)), Value: value}
	}
	testkit.Produce(b, br.Addrs(), "in", recs)

	job := &task.Job{
		Name:    "bench-copy",
		Kafka:   stream.KafkaConfig{Brokers: br.Addrs()},
		Inputs:  []string{"in"},
		NewTask: func() task.StreamTask { return benchCopy{out: "out"} },
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() { done <- job.Run(ctx) }()

	// Poll the counters: finished with every message, then (after cancel)
	// final checkpoints that cover them all. Stats are nil once every task
	// has committed and closed.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	processed := func(st []task.TaskStats) (n int) {
		for _, s := range st {
			n += int(s.Processed)
		}
		return n
	}
	checkpointed := func(st []task.TaskStats) (n int) {
		for _, s := range st {
			for _, off := range s.LastCheckpoint.Inputs {
				n += int(off)
			}
		}
		return n
	}
	deadline := time.After(10 * time.Minute)
	for phase := 0; phase < 2; {
		select {
		case err := <-done:
			b.Fatalf("Run returned early: %v", err)
		case <-deadline:
			b.Fatal("job did not finish within 10 minutes")
		case <-tick.C:
		}
		st := job.Stats()
		switch {
		case phase == 0 && processed(st) >= b.N:
			cancel()
			phase = 1
		case phase == 1 && (st == nil || checkpointed(st) >= b.N):
			phase = 2
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}
