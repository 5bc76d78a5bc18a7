package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/grete-go/grete/internal/embedded"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kgo"
)

const inputTopic = "bench-events"

// Measurement kinds, also the names of their CPU profiles.
const (
	kindRaw     = "raw"
	kindJob     = "job"
	kindCopyJob = "copyjob"
)

var kindNames = map[string]string{
	kindRaw:     "(a) raw copy",
	kindJob:     "(b) router job",
	kindCopyJob: "(b') copy job",
}

// pairBench holds what every measurement of a run shares.
type pairBench struct {
	c       config
	brokers []string
	admin   *kgo.Client
	stderr  io.Writer
}

// measurePair produces the input once, then runs (a) and (b) -rounds
// times in alternating order and prints each result and the ratios.
func measurePair(ctx context.Context, c config, stdout, stderr io.Writer) error {
	var brokers []string
	where := "in this process"
	if c.childBroker {
		b, err := startBrokerChild(ctx, c.partitions, stderr)
		if err != nil {
			return err
		}
		defer b.stop()
		brokers, where = b.addrs, "in a child process"
	} else {
		b, err := embedded.Start(embedded.Options{Partitions: c.partitions})
		if err != nil {
			return err
		}
		defer b.Close()
		brokers = b.Addrs()
	}
	fmt.Fprintf(stdout, "bench: %d events of %d bytes, %d partitions, embedded broker %s, GOMAXPROCS=%d, %d round(s)\n",
		c.messages, c.size, c.partitions, where, runtime.GOMAXPROCS(0), c.rounds)
	fmt.Fprintln(stdout, "bench: (a) and (b) produce with the same sarama settings, Grete's internal/kafka.Config:")
	fmt.Fprintln(stdout, "bench:     idempotent, acks=all, 1 request in flight, flush at 1 MiB or 2 ms, no compression, murmur2 keys")
	if c.childBroker {
		fmt.Fprintln(stdout, "bench: CPU/event is the CPU time of this process (the clients), set-up and shutdown included")
	} else {
		fmt.Fprintln(stdout, "bench: CPU/event is the CPU time of this process (clients and broker), set-up and shutdown included")
	}

	admin, err := newKgo(brokers)
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := createTopics(ctx, admin, int32(c.partitions), inputTopic); err != nil {
		return err
	}
	start := time.Now()
	size, err := produce(ctx, brokers, inputTopic, c.messages, c.size)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "input: %d events, %.1f bytes on average, produced with franz-go in %s (not timed)\n",
		c.messages, float64(size)/float64(c.messages), time.Since(start).Round(time.Millisecond))

	pb := &pairBench{c: c, brokers: brokers, admin: admin, stderr: stderr}
	kinds := []string{kindRaw, kindJob}
	if c.copyJob {
		kinds = append(kinds, kindCopyJob)
	}
	rates := map[string][]float64{}
	var ratios []float64
	for round := 1; round <= c.rounds; round++ {
		order := slices.Clone(kinds)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		got := map[string]result{}
		for _, kind := range order {
			runtime.GC() // start each measurement with the same, collected heap
			res, err := pb.measure(ctx, kind, round)
			if err != nil {
				return err
			}
			got[kind] = res
			rates[kind] = append(rates[kind], res.rate())
			fmt.Fprintf(stdout, "round %d  %-16s %8d events in %7s = %7.0f msgs/s  %5.2f µs CPU/event  (%d records written; start-up %s, shutdown %s)\n",
				round, kindNames[kind], res.messages, res.elapsed.Round(time.Millisecond), res.rate(), res.cpuPerEvent(),
				res.outputs, res.startup.Round(time.Millisecond), res.shutdown.Round(time.Millisecond))
		}
		ratio := got[kindJob].rate() / got[kindRaw].rate()
		ratios = append(ratios, ratio)
		line := fmt.Sprintf("round %d  ratio b/a = %.3f", round, ratio)
		if c.copyJob {
			line += fmt.Sprintf(", b'/a = %.3f", got[kindCopyJob].rate()/got[kindRaw].rate())
		}
		fmt.Fprintln(stdout, line)
	}
	for _, kind := range kinds {
		fmt.Fprintf(stdout, "result: %-16s %8.0f msgs/s (median of %d)\n", kindNames[kind], median(rates[kind]), c.rounds)
	}
	verdict := "met"
	if median(ratios) < 0.9 {
		verdict = "NOT met"
	}
	fmt.Fprintf(stdout, "result: median ratio b/a = %.3f (target >= 0.90: %s)\n", median(ratios), verdict)
	return nil
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs one measurement of kind in a fresh output topic (or job),
// checks what it wrote, and deletes its topics.
func (pb *pairBench) measure(ctx context.Context, kind string, round int) (result, error) {
	c := pb.c
	var outs, scratch []string
	var job *task.Job
	switch kind {
	case kindRaw:
		outs = []string{fmt.Sprintf("bench-copy-r%d", round)}
	case kindJob:
		name := fmt.Sprintf("bench-router-r%d", round)
		outs = routerOutputs(inputTopic)
		scratch = []string{name + "-dlq", name + "-checkpoints"}
		job = routerJob(name, pb.brokers, inputTopic, quietLogger(pb.stderr))
	case kindCopyJob:
		name := fmt.Sprintf("bench-copyjob-r%d", round)
		out := name + "-out"
		outs = []string{out}
		scratch = []string{name + "-checkpoints"}
		job = copyJob(name, pb.brokers, inputTopic, out, quietLogger(pb.stderr))
	}
	if err := createTopics(ctx, pb.admin, int32(c.partitions), outs...); err != nil {
		return result{}, err
	}
	var res result
	cpu0 := cpuTime()
	err := profiled(c.cpuprofile, kind, round, func() (err error) {
		if kind == kindRaw {
			res, err = rawCopy(ctx, pb.brokers, inputTopic, outs[0])
		} else {
			res, err = runJob(ctx, job, c.messages, 5*time.Millisecond, nil)
		}
		return err
	})
	res.cpu = cpuTime() - cpu0
	if err != nil {
		return res, err
	}
	if res.messages != c.messages {
		return res, fmt.Errorf("%s: handled %d events, want %d", kindNames[kind], res.messages, c.messages)
	}
	n, err := endOffsets(ctx, pb.admin, outs...)
	if err != nil {
		return res, err
	}
	if n != res.outputs {
		return res, fmt.Errorf("%s: outputs hold %d records, %d were written", kindNames[kind], n, res.outputs)
	}
	return res, deleteTopics(ctx, pb.admin, append(outs, scratch...)...)
}

// copyJob is a Grete job whose task copies every message to out, like the
// raw copy: with -copy-job it separates what Grete costs from what the
// routing costs.
func copyJob(name string, brokers []string, input, out string, log *slog.Logger) *task.Job {
	return &task.Job{
		Name:    name,
		Kafka:   stream.KafkaConfig{Brokers: brokers, ClientID: "bench-job"},
		Inputs:  []string{input},
		NewTask: func() task.StreamTask { return copyTask{out: out} },
		Logger:  log,
	}
}

// copyTask sends every message, unchanged, to one topic.
type copyTask struct{ out string }

func (t copyTask) Process(_ context.Context, m stream.Message, out task.Collector, _ task.Coordinator) error {
	return out.Send(stream.Outgoing{Topic: t.out, Key: m.Key, Value: m.Value, Headers: m.Headers, Timestamp: m.Timestamp})
}
