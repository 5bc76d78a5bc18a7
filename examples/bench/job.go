package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/grete-go/grete/examples/router/routing"
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

// runJob runs job until it has finished with want input messages, then
// cancels it and waits for Run, which makes the final commit (every output
// acknowledged, checkpoints written) before it returns. The clock runs from
// the call of Run to its return: start-up, processing and the final commit.
// poll is how often the job's counters are read; progress, when non-nil, is
// called at each poll.
func runJob(ctx context.Context, job *task.Job, want uint64, poll time.Duration, progress func(in uint64)) (result, error) {
	res := result{name: "router job"}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- job.Run(ctx) }()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var in, sent uint64
	for in < want {
		select {
		case err := <-errc:
			if err == nil {
				err = errors.New("returned early")
			}
			return res, fmt.Errorf("router job: after %d of %d messages: %w", in, want, err)
		case <-tick.C:
			in, sent = done(job)
			if progress != nil {
				progress(in)
			}
		}
	}
	// Stats are gone once Run returns: read them just before cancelling.
	// Nothing is sent after this point, as every input is processed.
	in, sent = done(job)
	cancel()
	if err := <-errc; err != nil {
		return res, fmt.Errorf("router job: final commit: %w", err)
	}
	res.elapsed = time.Since(start)
	res.messages, res.outputs = int64(in), int64(sent)
	return res, nil
}
