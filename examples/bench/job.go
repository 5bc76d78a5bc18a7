package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/grete-go/grete/examples/router/routing"
	"github.com/grete-go/grete/internal/benchkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
)

// routerOutputs are the topics the default routing rules write for the
// generated events ("<input>.<type>" and "<input>.revenue"). They are
// created before the clock starts, as the raw copy's output is.
func routerOutputs(input string) []string {
	var ts []string
	for _, s := range []string{"click", "view", "purchase", "search", "signup", "revenue"} {
		ts = append(ts, input+"."+s)
	}
	return ts
}

// routerJob is the job under test: the router example's job (default
// rules, dead-letter policy, outputs created on first use), with a quiet
// logger.
func routerJob(name string, brokers []string, input string, log *slog.Logger) *task.Job {
	rules := routing.DefaultRules()
	return &task.Job{
		Name:              name,
		Kafka:             stream.KafkaConfig{Brokers: brokers, ClientID: "bench-job"},
		Inputs:            []string{input},
		NewTask:           func() task.StreamTask { return routing.NewTask(rules, nil) },
		OnError:           task.DeadLetter,
		AutoCreateOutputs: true,
		Logger:            log,
	}
}

func quietLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// done sums the input messages the job has finished with (processed,
// skipped or dead-lettered) and the records it sent.
func done(job *task.Job) (in, sent uint64) {
	for _, s := range job.Stats() {
		in += s.Processed + s.Skipped + s.DeadLettered
		sent += s.Sent
	}
	return in, sent
}

// checkpointed sums the next offsets of every task's last checkpoint: the
// number of input messages covered by checkpoints, for inputs that start
// at offset 0.
func checkpointed(stats []task.TaskStats) int64 {
	var n int64
	for _, s := range stats {
		for _, off := range s.LastCheckpoint.Inputs {
			n += off
		}
	}
	return n
}

// runJob runs job until it has finished with want input messages, then
// cancels it: every task makes its final commit (outputs acknowledged,
// checkpoint written) and Run returns. The clock runs from the call of Run
// until the final checkpoints cover every input message; the rest of the
// shutdown (closing consumers, producer and connections) is timed apart,
// as it is for the raw copy. Input topics must start at offset 0.
//
// poll is how often the job's counters are read; progress, when non-nil,
// is called at each poll.
func runJob(ctx context.Context, job *task.Job, want int64, poll time.Duration, progress func(in uint64)) (result, error) {
	var res result
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- job.Run(ctx) }()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var in, sent uint64
	for in < uint64(want) {
		select {
		case err := <-errc:
			if err == nil {
				err = errors.New("returned early")
			}
			return res, fmt.Errorf("router job: after %d of %d messages: %w", in, want, err)
		case <-tick.C:
			in, sent = done(job)
			if in > 0 && res.startup == 0 {
				res.startup = time.Since(start)
			}
			if progress != nil {
				progress(in)
			}
		}
	}
	// Every input is processed, so nothing more is sent.
	res.messages, res.outputs = int64(in), int64(sent)
	cancel()
	// Wait for the final commit. Stats are nil once every task has
	// finished (committed and closed), just before Run closes its clients.
	fine := time.NewTicker(time.Millisecond)
	defer fine.Stop()
	for {
		stats := job.Stats()
		if stats == nil || checkpointed(stats) >= want {
			break
		}
		select {
		case err := <-errc:
			return res, fmt.Errorf("router job: final commit: %w", err)
		case <-fine.C:
		}
	}
	res.elapsed = time.Since(start)
	if err := <-errc; err != nil {
		return res, fmt.Errorf("router job: final commit: %w", err)
	}
	res.shutdown = time.Since(start) - res.elapsed
	return res, nil
}

// result is one measurement.
type result struct {
	messages int64         // input messages handled
	outputs  int64         // records written
	elapsed  time.Duration // until every input is done with
	startup  time.Duration // until the first input was handed on
	shutdown time.Duration // closing, after elapsed
	cpu      time.Duration // CPU time of this process, shutdown included
}

func (r result) rate() float64 { return float64(r.messages) / r.elapsed.Seconds() }

func (r result) cpuPerEvent() float64 {
	return r.cpu.Seconds() * 1e6 / float64(r.messages)
}

// rawCopy is the baseline, benchkit.RawCopy: the least a sarama program
// must do to copy input to output with Grete's producer guarantees.
func rawCopy(ctx context.Context, brokers []string, input, output string) (result, error) {
	r, err := benchkit.RawCopy(ctx, brokers, input, output)
	return result{messages: r.Messages, outputs: r.Outputs, elapsed: r.Elapsed, startup: r.Startup, shutdown: r.Shutdown}, err
}
