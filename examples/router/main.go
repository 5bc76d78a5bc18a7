// Command router is Netflix Keystone's routing job on Grete: it reads a
// stream of JSON events and routes each one to a topic per event type,
// drops debug events, copies revenue events to a revenue topic, and sends
// anything that is not a JSON object to the dead-letter topic.
//
// With no flags it starts an embedded Kafka-protocol broker, generates
// traffic, and prints what it routes once a second:
//
//	go run ./examples/router
//
// Against a real cluster:
//
//	go run ./examples/router -brokers kafka1:9092,kafka2:9092 -generate 0
//
// Flags:
//
//	-brokers     comma-separated host:port list; empty runs an embedded broker
//	-input       input topic (default "events"); outputs are "<input>.<type>"
//	-rules       JSON rules file replacing the default rules (see package routing)
//	-generate    events per second to generate into the input (0 = none)
//	-malformed   fraction of generated events that are not JSON (default 0)
//	-duration    stop after this long (0 = until Ctrl-C or SIGTERM)
//	-data-dir    directory for the embedded broker's data (empty = in memory)
//	-on-error    fail, skip or dead-letter (default dead-letter, to "<name>-dlq")
//	-name        job name (default "router")
//	-partitions  partitions of the input topic when the router creates it
//	-commit      commit interval (default 5s)
//	-quiet       print no per-second lines
//
// The job stops gracefully on Ctrl-C, SIGTERM or at the end of -duration:
// it finishes the current events, commits, and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/grete-go/grete/examples/kit"
	"github.com/grete-go/grete/examples/router/routing"
	"github.com/grete-go/grete/task"
)

func main() { kit.Main("router", run) }

type config struct {
	brokers    string
	input      string
	rules      string
	generate   int
	malformed  float64
	duration   time.Duration
	dataDir    string
	onError    string
	name       string
	instance   string
	partitions int
	commit     time.Duration
	quiet      bool
	logLevel   string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.brokers, "brokers", "", "comma-separated `host:port` list; empty runs an embedded broker")
	fs.StringVar(&c.input, "input", "events", "input `topic`; outputs are <input>.<type>")
	fs.StringVar(&c.rules, "rules", "", "JSON rules `file` replacing the default rules")
	fs.IntVar(&c.generate, "generate", 1000, "events per second to generate into the input (0 = none)")
	fs.Float64Var(&c.malformed, "malformed", 0, "`fraction` of generated events that are not JSON")
	fs.DurationVar(&c.duration, "duration", 0, "stop after this long (0 = until Ctrl-C)")
	fs.StringVar(&c.dataDir, "data-dir", "", "`directory` for the embedded broker's data (empty = in memory)")
	fs.StringVar(&c.onError, "on-error", "dead-letter", "bad-input `policy`: fail, skip or dead-letter")
	fs.StringVar(&c.name, "name", "router", "job `name` (consumer group, checkpoint and DLQ topic prefix)")
	fs.StringVar(&c.instance, "instance", "", "this process's `id` among the job's processes: a restart with the same id takes its tasks back at once (default: none)")
	fs.IntVar(&c.partitions, "partitions", 8, "partitions of the input topic when the router creates it")
	fs.DurationVar(&c.commit, "commit", task.DefaultCommitInterval, "commit `interval`")
	fs.BoolVar(&c.quiet, "quiet", false, "print no per-second lines")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.generate < 0 || c.malformed < 0 || c.malformed > 1 || c.partitions < 1 || c.duration < 0 {
		return c, errors.New("-generate, -duration must be >= 0, -malformed in [0,1], -partitions >= 1")
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := kit.Logger(c.logLevel, stderr)
	if err != nil {
		return err
	}
	policy, err := task.ParseErrorPolicy(c.onError)
	if err != nil {
		return err
	}
	rules := routing.DefaultRules()
	if c.rules != "" {
		if rules, err = routing.LoadRules(c.rules); err != nil {
			return err
		}
	}
	ctx, cancel := kit.WithDuration(ctx, c.duration)
	defer cancel()
	cluster, err := kit.Connect(c.brokers, c.dataDir, c.partitions, stdout)
	if err != nil {
		return err
	}
	defer cluster.Close()
	kc := cluster.Kafka("grete-router")
	if err := kit.EnsureTopics(kc, kit.Topic{Name: c.input, Partitions: int32(c.partitions)}); err != nil {
		return err
	}

	stats := &routing.Stats{}
	job := &task.Job{
		Name:              c.name,
		Kafka:             kc,
		Inputs:            []string{c.input},
		NewTask:           func() task.StreamTask { return routing.NewTask(rules, stats) },
		OnError:           policy,
		CommitInterval:    c.commit,
		AutoCreateOutputs: true,
		InstanceID:        c.instance,
		Logger:            log,
	}

	genCtx, stopGen := context.WithCancel(ctx)
	genDone := make(chan error, 1)
	if c.generate > 0 {
		go func() { genDone <- generate(genCtx, kc, c.input, c.generate, c.malformed) }()
	} else {
		genDone <- nil
	}
	printDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(printDone)
		report(genCtx, stdout, job, stats, c.quiet)
	}()
	go kit.ReportTasks(genCtx, stdout, job)

	runErr := job.Run(ctx)
	elapsed := time.Since(start)
	stopGen()
	<-printDone
	genErr := <-genDone
	summary(stdout, stats, elapsed)
	if runErr != nil {
		return runErr
	}
	if genErr != nil && !errors.Is(genErr, context.Canceled) {
		return fmt.Errorf("generator: %w", genErr)
	}
	return nil
}

// report prints one line a second: input and output rates and the counts
// per output topic.
func report(ctx context.Context, w io.Writer, job *task.Job, stats *routing.Stats, quiet bool) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastIn, lastOut uint64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			var in, out, dead uint64
			for _, s := range job.Stats() {
				in += s.Processed + s.Skipped + s.DeadLettered
				out += s.Sent
				dead += s.DeadLettered
			}
			if quiet {
				lastIn, lastOut, last = in, out, now
				continue
			}
			secs := now.Sub(last).Seconds()
			sent, dropped := stats.Snapshot()
			var b strings.Builder
			fmt.Fprintf(&b, "%s  in %6.0f ev/s  out %6.0f msg/s |", now.Format("15:04:05"), float64(in-lastIn)/secs, float64(out-lastOut)/secs)
			for _, tc := range sent {
				fmt.Fprintf(&b, " %s=%d", tc.Topic, tc.Count)
			}
			fmt.Fprintf(&b, " dropped=%d dead-lettered=%d\n", dropped, dead)
			io.WriteString(w, b.String())
			lastIn, lastOut, last = in, out, now
		}
	}
}

func summary(w io.Writer, stats *routing.Stats, d time.Duration) {
	sent, dropped := stats.Snapshot()
	var total uint64
	for _, tc := range sent {
		total += tc.Count
	}
	fmt.Fprintf(w, "routed %d messages to %d topics (%d events dropped by rules) in %s: %.0f msg/s\n",
		total, len(sent), dropped, d.Round(time.Millisecond), float64(total)/d.Seconds())
}
