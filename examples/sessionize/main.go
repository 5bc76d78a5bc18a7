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
// # Input and output
//
// The input topic holds JSON events keyed by visitor_id:
//
//	{"event_id":"e1","visitor_id":"v7","session_id":"s3","ts":1700000000000,"type":"purchase",
//	 "experiment":"checkout_flow:b","revenue":12.99,"browser":"chrome","country":"US","ip":"10.0.0.1"}
//
// ts is in Unix milliseconds; revenue is a decimal amount. Numbers are JSON
// numbers, whatever their spelling: revenue 12.5, 12.50, 1.25e1 or 1250e-2
// is the same amount, summed exactly (to the millionth: more decimals are
// rounded half to even), and ts 1.7e12 is a whole number of milliseconds.
// session_id, event_id and ts are required; members the job does not know
// are ignored, and null counts as missing. An event without a required
// member, with a member of the wrong kind (a string revenue, a numeric
// session_id, a fractional ts), or a value that is not a JSON object, goes
// to the dead-letter topic "<name>-dlq" with an error that names the
// member.
//
// The output topic gets snapshots keyed by session_id:
//
//	{"session_id":"s3","visitor_id":"v7","start":1700000000000,"end":1700000042000,
//	 "event_count":2,"revenue":12.99,"browser":"chrome","country":"US","ip":"10.0.0.1","final":false,
//	 "events":[{"event_id":"e0","ts":1700000000000,"type":"pageview","experiment":"","revenue":0},
//	           {"event_id":"e1","ts":1700000042000,"type":"purchase","experiment":"checkout_flow:b","revenue":12.99}]}
//
// start and end are the smallest and largest ts, revenue the exact sum,
// written as the shortest JSON number that is exactly it. The
// metadata (visitor_id, browser, country, ip) is the session's first
// event's: the one with the smallest ts, ties broken by the smaller
// event_id (bytewise). events are ordered by ts, then event_id. final is
// true on the last snapshot of a session that closed.
//
// The output is an ordinary delete-policy topic, not a compacted one: the
// job never deletes a session from it, so a compacted topic would keep
// every session ever seen, for ever. Read the last snapshot of each
// session within the topic's retention.
//
// # Semantics
//
// Sessions are kept per task (one per input partition) in a
// window.Aggregator over session windows of -gap, in a changelog-backed
// store. Stream time is the largest ts the task has seen. An event joins
// the open sessions of its session_id that it falls within -gap of
// (merging them if it bridges two). A session closes when stream time
// reaches its last event's ts + gap + grace: its final snapshot is sent and
// its state deleted. An event that joins no open session and whose own
// session would already be closed is late: it is dropped and counted, or
// sent as it came to -late-topic. Every -window of processing time the job
// sends a snapshot of every session that changed since the last one.
//
// State, stream time and the set of changed sessions are restored to the
// last checkpoint after a crash, and reprocessing the input after it
// rebuilds them exactly: a snapshot may be sent twice, but the last
// snapshot of every session is always complete, and a session changed
// before a crash gets its snapshot after the restart.
//
// Events of one session_id more than -gap apart form separate sessions
// under the same key, as does an event that comes after its session closed
// but recent enough to open one of its own (its ts + gap + grace is still
// ahead of stream time). Each has its own snapshots; the key's last
// snapshot is that of the session emitted last. The input is taken as it
// is: an event sent twice by its producer is counted twice.
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
// Benchmarks, on the embedded broker (see bench.go):
//
//	-bench N     time the job on N events against a raw sarama copy of them
//	-rounds R    measurement rounds for -bench, in alternating order (default 3)
//	-bench-members M
//	             with -bench: compare the job run by M group members (as M
//	             processes would run it, each with its own data directory)
//	             with one member, instead of with a raw copy
//	-rss N       peak RSS of the job process holding N open sessions
//	-cpuprofile  write a CPU profile of the job to this file
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
	"os"
	"time"

	"github.com/grete-go/grete/examples/kit"
	"github.com/grete-go/grete/task"
)

func main() { kit.Main("sessionize", run) }

type config struct {
	brokers    string
	input      string
	output     string
	lateTopic  string
	window     time.Duration
	gap        time.Duration
	grace      time.Duration
	generate   int
	duration   time.Duration
	dataDir    string
	partitions int
	commit     time.Duration
	name       string
	instance   string
	standbys   int
	quiet      bool
	logLevel   string

	// Benchmarks.
	bench  int
	rounds int
	// benchMembers > 1 compares that many group members with one.
	benchMembers int
	rss          int
	cpuprofile   string
	windowSet    bool // -window was given
	// Hidden: the -rss child process.
	rssChild bool
	expect   int
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("sessionize", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.brokers, "brokers", "", "comma-separated `host:port` list; empty runs an embedded broker")
	fs.StringVar(&c.input, "input", "events", "input `topic` of visitor events")
	fs.StringVar(&c.output, "output", "sessions", "`topic` of session snapshots")
	fs.StringVar(&c.lateTopic, "late-topic", "", "`topic` for late events (default: drop and count them)")
	fs.DurationVar(&c.window, "window", time.Minute, "how often sessions that changed are emitted")
	fs.DurationVar(&c.gap, "gap", 30*time.Minute, "event-time inactivity that ends a session")
	fs.DurationVar(&c.grace, "grace", time.Minute, "how long a session stays open after its gap, for out-of-order events")
	fs.IntVar(&c.generate, "generate", 1000, "events per second to generate into the input (0 = none)")
	fs.DurationVar(&c.duration, "duration", 0, "stop after this long (0 = until Ctrl-C)")
	fs.StringVar(&c.dataDir, "data-dir", "", "`directory` for local state (and the embedded broker's data)")
	fs.IntVar(&c.partitions, "partitions", 8, "partitions of the input topic when sessionize creates it")
	fs.DurationVar(&c.commit, "commit", task.DefaultCommitInterval, "commit `interval`")
	fs.StringVar(&c.name, "name", "sessionize", "job `name` (consumer group, changelog, checkpoint and DLQ topic prefix)")
	fs.StringVar(&c.instance, "instance", "", "this process's `id` among the job's processes (default: derived from the host and -data-dir)")
	fs.IntVar(&c.standbys, "standbys", 0, "other processes that keep a standby copy of each task's sessions")
	fs.BoolVar(&c.quiet, "quiet", false, "print no per-emit lines")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.IntVar(&c.bench, "bench", 0, "benchmark: time the job on `N` events against a raw sarama copy, then exit")
	fs.IntVar(&c.rounds, "rounds", 3, "with -bench: measurement rounds, in alternating order")
	fs.IntVar(&c.benchMembers, "bench-members", 1, "with -bench: compare the job run by `M` group members (as M processes would run it) with one, instead of with a raw copy")
	fs.IntVar(&c.rss, "rss", 0, "benchmark: peak RSS of the job process holding `N` open sessions, then exit")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "with -bench or -rss: write a CPU profile of the job to `file`")
	fs.BoolVar(&c.rssChild, "rss-child", false, "internal: the job process of -rss")
	fs.IntVar(&c.expect, "expect", 0, "internal: events the -rss child waits for")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) { c.windowSet = c.windowSet || f.Name == "window" })
	switch {
	case c.rounds < 1:
		return c, errors.New("-rounds must be at least 1")
	case c.generate < 0 || c.duration < 0 || c.bench < 0 || c.rss < 0 || c.standbys < 0:
		return c, errors.New("-generate, -duration, -bench, -rss and -standbys must not be negative")
	case c.partitions < 1:
		return c, errors.New("-partitions must be at least 1")
	case c.window <= 0 || c.commit <= 0:
		return c, errors.New("-window and -commit must be positive")
	case c.gap < time.Millisecond || c.grace < 0:
		return c, errors.New("-gap must be at least 1ms and -grace not negative")
	case c.input == "" || c.output == "" || c.input == c.output || c.lateTopic == c.input || c.lateTopic == c.output:
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
	switch {
	case c.rssChild:
		return rssChild(ctx, c, os.Stdin, stdout, stderr)
	case c.rss > 0:
		return measureRSS(ctx, c, stdout, stderr)
	case c.bench > 0:
		return measureBench(ctx, c, stdout, stderr)
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
	if err := kit.EnsureTopics(kc, kit.Topic{Name: c.input, Partitions: int32(c.partitions)}); err != nil {
		return err
	}

	stats := &Stats{}
	job := newJob(jobConfig{
		settings:       settings{Output: c.output, LateTopic: c.lateTopic, Gap: c.gap, Grace: c.grace},
		Name:           c.name,
		Kafka:          kc,
		Input:          c.input,
		Window:         c.window,
		CommitInterval: c.commit,
		DataDir:        stateDir,
		InstanceID:     c.instance,
		Standbys:       c.standbys,
		Logger:         log,
	}, stats)

	late := "dropped"
	if c.lateTopic != "" {
		late = "sent to " + c.lateTopic
	}
	fmt.Fprintf(stdout, "sessions of %s in %s: gap %v, grace %v, changed sessions emitted every %v, late events %s\n",
		c.input, c.output, c.gap, c.grace, c.window, late)

	genCtx, stopGen := context.WithCancel(ctx)
	genDone := make(chan error, 1)
	if c.generate > 0 {
		seed := uint64(time.Now().UnixNano())
		go func() {
			genDone <- generate(genCtx, kc, c.input, c.generate, defaultGen(seed, c.generate, c.gap, c.grace))
		}()
		fmt.Fprintf(stdout, "generating %d events/s; the first snapshots come after %v\n", c.generate, c.window)
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

// report prints a line each time every task has run its Window once more:
// what the tasks emitted since the last line, how many sessions are open,
// and the input rate.
func report(ctx context.Context, w io.Writer, job *task.Job, stats *Stats, quiet bool) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var (
		lastRound         uint64
		lastIn            uint64
		lastSnap, lastFin uint64
		lastLate          uint64
		last              = time.Now()
	)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			ts := job.Stats()
			if len(ts) == 0 {
				continue
			}
			round := ts[0].WindowCalls
			for _, s := range ts {
				round = min(round, s.WindowCalls)
			}
			if round == lastRound {
				continue
			}
			// The tasks' own counters start again when a task restarts
			// (it moved, or a broker restart cost the membership): the
			// job's Totals go on.
			t := stats.Totals()
			in := t.Added + t.Late
			if !quiet {
				fmt.Fprintf(w, "%s  emitted %6d sessions (%d final)  open %7d  %6.0f ev/s  late %d\n",
					now.Format("15:04:05"), t.Snapshots-lastSnap, t.Finals-lastFin, t.Open,
					float64(in-lastIn)/now.Sub(last).Seconds(), t.Late-lastLate)
			}
			lastRound, lastIn, last = round, in, now
			lastSnap, lastFin, lastLate = t.Snapshots, t.Finals, t.Late
		}
	}
}
