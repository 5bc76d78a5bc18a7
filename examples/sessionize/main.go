// Command sessionize is Optimizely's sessionization job on Grete: it reads
// visitor events, groups them into sessions by session_id (a session ends
// after a gap of event-time inactivity), and every window emits a snapshot
// of every session that changed, keyed by session_id. A session that closes
// gets a final snapshot and its state is deleted.
//
// With no flags it starts an embedded Kafka-protocol broker, generates
// visitor traffic, and prints a line per emit:
//
//	go run ./examples/sessionize
//
// Generated event time moves with the wall clock, so with the default
// 30-minute gap the first sessions close after half an hour. To see
// sessions close within a couple of minutes:
//
//	go run ./examples/sessionize -gap 1m -grace 10s -window 10s
//
// Against a real cluster:
//
//	go run ./examples/sessionize -brokers kafka1:9092,kafka2:9092 -generate 0 -data-dir /var/lib/sessionize
//
// The job itself is package sessions (examples/sessionize/sessions): its
// documentation describes the events the job reads, the snapshots it
// writes, what -gap, -grace and -window mean, late events, and the
// dead-letter topic "<name>-dlq" that bad input goes to.
//
// # Flags
//
//	-brokers     comma-separated host:port list; empty runs an embedded broker
//	-input       input topic (default "events")
//	-output      snapshot topic (default "sessions")
//	-late-topic  topic for late events (default none: dropped and counted)
//	-window      how often changed sessions are emitted (default 1m)
//	-gap         inactivity, in event time, that ends a session (default 30m)
//	-grace       how long a session stays open after its gap, for out-of-order events (default 1m)
//	-generate    events per second to generate into the input (0 = none; default 1000)
//	-duration    stop after this long (0 = until Ctrl-C or SIGTERM)
//	-data-dir    directory for the job's local state (and, with the embedded
//	             broker, the broker's data); empty = a temporary directory
//	             with the embedded broker, the system's temp dir otherwise
//	-partitions  partitions of the input topic when sessionize creates it (default 8)
//	-commit      commit interval (default 5s)
//	-name        job name (default "sessionize")
//	-instance    this process's id among the job's processes: run several
//	             sessionize processes with the same -brokers and -name (each
//	             with its own -data-dir) and they share the tasks
//	-standbys    other processes that keep a standby copy of each task
//	-quiet       print no per-emit lines
//	-log-level   debug, info, warn or error (default info)
//
// The job's benchmarks are the bench program's sessionize command:
//
//	go run ./examples/bench sessionize -events 1000000
//	go run ./examples/bench sessionize -rss 1000000
//
// The job stops gracefully on Ctrl-C, SIGTERM or at the end of -duration:
// it finishes the current event, commits, and exits 0. Sessions changed
// since the last emit are emitted by the next run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/grete-go/grete/examples/kit"
	"github.com/grete-go/grete/examples/sessionize/sessions"
	"github.com/grete-go/grete/task"
)

func main() { kit.Main("sessionize", run) }

// config is the flags: the job's own settings, and how this process runs
// it.
type config struct {
	sessions.Config // but Kafka, DataDir and Logger, which run sets
	brokers         string
	generate        int
	duration        time.Duration
	dataDir         string
	partitions      int
	quiet           bool
	logLevel        string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("sessionize", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.brokers, "brokers", "", "comma-separated `host:port` list; empty runs an embedded broker")
	fs.StringVar(&c.Input, "input", "events", "input `topic` of visitor events")
	fs.StringVar(&c.Output, "output", "sessions", "`topic` of session snapshots")
	fs.StringVar(&c.LateTopic, "late-topic", "", "`topic` for late events (default: drop and count them)")
	fs.DurationVar(&c.Window, "window", time.Minute, "how often sessions that changed are emitted")
	fs.DurationVar(&c.Gap, "gap", 30*time.Minute, "event-time inactivity that ends a session")
	fs.DurationVar(&c.Grace, "grace", time.Minute, "how long a session stays open after its gap, for out-of-order events")
	fs.IntVar(&c.generate, "generate", 1000, "events per second to generate into the input (0 = none)")
	fs.DurationVar(&c.duration, "duration", 0, "stop after this long (0 = until Ctrl-C)")
	fs.StringVar(&c.dataDir, "data-dir", "", "`directory` for local state (and the embedded broker's data)")
	fs.IntVar(&c.partitions, "partitions", 8, "partitions of the input topic when sessionize creates it")
	fs.DurationVar(&c.CommitInterval, "commit", task.DefaultCommitInterval, "commit `interval`")
	fs.StringVar(&c.Name, "name", "sessionize", "job `name` (consumer group, changelog, checkpoint and DLQ topic prefix)")
	fs.StringVar(&c.InstanceID, "instance", "", "this process's `id` among the job's processes (default: derived from the host and -data-dir)")
	fs.IntVar(&c.Standbys, "standbys", 0, "other processes that keep a standby copy of each task's sessions")
	fs.BoolVar(&c.quiet, "quiet", false, "print no per-emit lines")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case c.generate < 0 || c.duration < 0 || c.Standbys < 0:
		return c, errors.New("-generate, -duration and -standbys must not be negative")
	case c.partitions < 1:
		return c, errors.New("-partitions must be at least 1")
	case c.Window <= 0 || c.CommitInterval <= 0:
		return c, errors.New("-window and -commit must be positive")
	case c.Gap < time.Millisecond || c.Grace < 0:
		return c, errors.New("-gap must be at least 1ms and -grace not negative")
	case c.Input == "" || c.Output == "" || c.Input == c.Output || c.LateTopic == c.Input || c.LateTopic == c.Output:
		return c, errors.New("-input, -output and -late-topic must be distinct, non-empty topics")
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
	ctx, cancel := kit.WithDuration(ctx, c.duration)
	defer cancel()
	cluster, err := kit.Connect(c.brokers, c.dataDir, c.partitions, stdout)
	if err != nil {
		return err
	}
	defer cluster.Close()
	stateDir, cleanup, err := cluster.StateDir(c.dataDir, "sessionize")
	if err != nil {
		return err
	}
	defer cleanup()
	kc := cluster.Kafka("grete-sessionize")
	if err := kit.EnsureTopics(kc, kit.Topic{Name: c.Input, Partitions: int32(c.partitions)}); err != nil {
		return err
	}

	jc := c.Config
	jc.Kafka, jc.DataDir, jc.Logger = kc, stateDir, log
	stats := &sessions.Stats{}
	job := sessions.NewJob(jc, stats)

	late := "dropped"
	if c.LateTopic != "" {
		late = "sent to " + c.LateTopic
	}
	fmt.Fprintf(stdout, "sessions of %s in %s: gap %v, grace %v, changed sessions emitted every %v, late events %s\n",
		c.Input, c.Output, c.Gap, c.Grace, c.Window, late)

	genCtx, stopGen := context.WithCancel(ctx)
	genDone := make(chan error, 1)
	if c.generate > 0 {
		seed := uint64(time.Now().UnixNano())
		go func() {
			genDone <- generate(genCtx, kc, c.Input, c.generate, sessions.DefaultTraffic(seed, c.generate, c.Gap, c.Grace))
		}()
		fmt.Fprintf(stdout, "generating %d events/s; the first snapshots come after %v\n", c.generate, c.Window)
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
	t := stats.Totals()
	fmt.Fprintf(stdout, "sessionized %d events in %s: %d snapshots sent (%d final), %d late events, %d sessions open at exit\n",
		t.Added, elapsed.Round(time.Millisecond), t.Snapshots, t.Finals, t.Late, t.Open)
	if runErr != nil {
		return runErr
	}
	if genErr != nil && !errors.Is(genErr, context.Canceled) {
		return fmt.Errorf("generator: %w", genErr)
	}
	return nil
}
