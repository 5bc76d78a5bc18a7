package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/grete-go/grete/examples/router/routing"
	"github.com/grete-go/grete/internal/embedded"
	"github.com/grete-go/grete/stream"
)

// The benchmarks in this file measure the pieces of the benchmark
// program: ns/op is per event. Run them with
//
//	go test -run '^$' -bench . ./examples/bench

// discard is a Collector and Coordinator that drops everything.
type discard struct{ sent int }

func (d *discard) Send(stream.Outgoing) error { d.sent++; return nil }
func (d *discard) Commit()                    {}
func (d *discard) Shutdown()                  {}

// BenchmarkRouterProcess is the routing task alone, without Kafka: the
// cost of Process per event, on the benchmark's events.
func BenchmarkRouterProcess(b *testing.B) {
	gen := newEvents(100)
	msgs := make([]stream.Message, 4096)
	for i := range msgs {
		k, v := gen.next()
		msgs[i] = stream.Message{Topic: inputTopic, Partition: 0, Offset: int64(i), Key: k, Value: v, Timestamp: time.Now()}
	}
	t := routing.NewTask(routing.DefaultRules(), nil)
	d := &discard{}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := t.Process(ctx, msgs[i%len(msgs)], d, d); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(d.sent)/float64(b.N), "sends/op")
}

// startBroker starts an embedded broker for a benchmark.
func startBroker(b *testing.B) []string {
	b.Helper()
	br, err := embedded.Start(embedded.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Close)
	return br.Addrs()
}

// benchEndToEnd runs one measurement over b.N events on the embedded
// broker (in this process) and reports msgs/s. Producing the input is not
// timed.
func benchEndToEnd(b *testing.B, kind string) {
	brokers := startBroker(b)
	ctx := context.Background()
	admin, err := newKgo(brokers)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	if err := createTopics(ctx, admin, 8, inputTopic); err != nil {
		b.Fatal(err)
	}
	if _, err := produce(ctx, brokers, inputTopic, int64(b.N), 100); err != nil {
		b.Fatal(err)
	}
	pb := &pairBench{c: config{messages: int64(b.N), partitions: 8}, brokers: brokers, admin: admin, stderr: io.Discard}
	b.ResetTimer()
	res, err := pb.measure(ctx, kind, 1)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.rate(), "msgs/s")
	b.ReportMetric(0, "ns/op") // ns/op would include the untimed shutdown and checks
}

// BenchmarkRawCopy is measurement (a): sarama consume → produce.
func BenchmarkRawCopy(b *testing.B) { benchEndToEnd(b, kindRaw) }

// BenchmarkRouterJob is measurement (b): the router job run by task.Job.
func BenchmarkRouterJob(b *testing.B) { benchEndToEnd(b, kindJob) }

// BenchmarkCopyJob is a Grete job that only copies, like (a).
func BenchmarkCopyJob(b *testing.B) { benchEndToEnd(b, kindCopyJob) }

// reportRate reports a measurement's rate in unit; ns/op would include the
// untimed set-up and shutdown, so it is zeroed.
func reportRate(b *testing.B, rate float64, unit string, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rate, unit)
	b.ReportMetric(0, "ns/op")
}
