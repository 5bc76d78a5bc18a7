// Command topexperiments is Optimizely's "top experiments by traffic, in
// real time" on Grete: it reads a stream of JSON events that name an A/B
// experiment, counts events per experiment, and keeps the global top-N on a
// topic, as counts since the job started:
//
//	{"at": 1700000000000, "top": [{"experiment": "exp-0031", "count": 4521}, ...]}
//
// With no flags it starts an embedded Kafka-protocol broker, generates
// skewed traffic over 500 experiments, and prints the top 10 as it changes:
//
//	go run ./examples/topexperiments
//
// Against a real cluster:
//
//	go run ./examples/topexperiments -brokers kafka1:9092,kafka2:9092 -generate 0
//
// The program runs two Grete jobs chained by a topic, a counting job
// ("<name>-count") and a merging job ("<name>-merge"); their tasks, and why
// they stay exact and cheap, are in package experiments. Events must be
// keyed by experiment (the generator keys them so).
//
// Flags:
//
//	-brokers      comma-separated host:port list; empty runs an embedded broker
//	-input        input topic (default "events")
//	-output       output topic (default "top-experiments"); partials go to "<output>-partial"
//	-window       how often every counting task emits its top-N (default 10s)
//	-top          N, the number of experiments in a top (default 10)
//	-generate     events per second to generate into the input (0 = none)
//	-experiments  distinct experiments in the generated traffic (default 500)
//	-duration     stop after this long (0 = until Ctrl-C or SIGTERM)
//	-data-dir     directory for the stores (under state/) and the embedded
//	              broker's data (under broker/); empty = a temporary directory
//	              with an embedded broker, Grete's default with -brokers
//	-partitions   partitions of the input topic when the program creates it
//	-commit       commit interval (default 5s)
//	-on-error     fail, skip or dead-letter for bad events (default dead-letter)
//	-name         job name prefix (default "topexperiments")
//	-instance     this process's id among the jobs' processes (default:
//	              derived from the host and -data-dir)
//	-quiet        print no periodic lines, only the final top-N
//	-log-level    debug, info, warn or error (default info)
//
// The jobs stop gracefully on Ctrl-C, SIGTERM or at the end of -duration:
// they finish the current events, commit, and the program exits 0.
//
// The benchmarks of the two jobs (a store restore vs a raw consume of its
// changelog, the counting job vs a raw consume-produce copy) are
// sub-commands of the benchmark program:
//
//	go run ./examples/bench counting
//	go run ./examples/bench restore
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/grete-go/grete/examples/kit"
	"github.com/grete-go/grete/examples/topexperiments/experiments"
	"github.com/grete-go/grete/task"
)

func main() { kit.Main("topexperiments", run) }

type config struct {
	brokers     string
	input       string
	output      string
	window      time.Duration
	top         int
	generate    int
	experiments int
	duration    time.Duration
	dataDir     string
	partitions  int
	commit      time.Duration
	onError     string
	name        string
	instance    string
	quiet       bool
	logLevel    string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("topexperiments", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.brokers, "brokers", "", "comma-separated `host:port` list; empty runs an embedded broker")
	fs.StringVar(&c.input, "input", "events", "input `topic` of JSON events with an \"experiment\" member, keyed by experiment")
	fs.StringVar(&c.output, "output", "top-experiments", "output `topic`; partial tops go to <output>-partial")
	fs.DurationVar(&c.window, "window", 10*time.Second, "how often every counting task emits its top-N")
	fs.IntVar(&c.top, "top", 10, "`N`, the number of experiments in a top")
	fs.IntVar(&c.generate, "generate", 1000, "events per second to generate into the input (0 = none)")
	fs.IntVar(&c.experiments, "experiments", 500, "distinct experiments in the generated traffic (Zipf-distributed)")
	fs.DurationVar(&c.duration, "duration", 0, "stop after this long (0 = until Ctrl-C)")
	fs.StringVar(&c.dataDir, "data-dir", "", "`directory` for the stores and the embedded broker's data")
	fs.IntVar(&c.partitions, "partitions", 8, "partitions of the input topic when the program creates it")
	fs.DurationVar(&c.commit, "commit", task.DefaultCommitInterval, "commit `interval`")
	fs.StringVar(&c.onError, "on-error", "dead-letter", "bad-input `policy`: fail, skip or dead-letter")
	fs.StringVar(&c.name, "name", "topexperiments", "job name `prefix`: the jobs are <prefix>-count and <prefix>-merge")
	fs.StringVar(&c.instance, "instance", "", "this process's `id` among the jobs' processes (default: derived from the host and -data-dir)")
	fs.BoolVar(&c.quiet, "quiet", false, "print no periodic lines, only the final top-N")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.generate < 0 || c.duration < 0 || c.partitions < 1 || c.top < 1 || c.experiments < 1 || c.window <= 0 || c.commit < 0 {
		return c, errors.New("-generate and -duration must be >= 0; -partitions, -top, -experiments and -window positive")
	}
	if c.input == "" || c.output == "" {
		return c, errors.New("-input and -output must not be empty")
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
	ctx, cancel := kit.WithDuration(ctx, c.duration)
	defer cancel()
	cluster, err := kit.Connect(c.brokers, c.dataDir, c.partitions, stdout)
	if err != nil {
		return err
	}
	defer cluster.Close()
	stateDir, cleanup, err := cluster.StateDir(c.dataDir, "topexperiments")
	if err != nil {
		return err
	}
	defer cleanup()
	kc := cluster.Kafka("grete-topexperiments")
	if err := kit.EnsureTopics(kc,
		kit.Topic{Name: c.input, Partitions: int32(c.partitions)},
		kit.Topic{Name: experiments.PartialTopic(c.output), Partitions: 1},
		kit.Topic{Name: c.output, Partitions: 1},
	); err != nil {
		return err
	}

	counters := &experiments.Counters{}
	board := &board{}
	count := experiments.CountJob(c.name, kc, c.input, c.output, c.top, c.window, counters)
	merge := experiments.MergeJob(c.name, kc, c.output, c.top, board.set)
	for _, j := range []*task.Job{count, merge} {
		j.DataDir, j.CommitInterval, j.OnError, j.Logger, j.InstanceID = stateDir, c.commit, policy, log, c.instance
	}

	genCtx, stopGen := context.WithCancel(ctx)
	genDone := startGenerator(genCtx, kc, c.input, c.generate, c.experiments)
	printDone := make(chan struct{})
	go func() {
		defer close(printDone)
		if !c.quiet {
			report(genCtx, stdout, counters, board)
		}
	}()
	go kit.ReportTasks(genCtx, stdout, count, merge)

	runErr := runJobs(ctx, count, merge)
	stopGen()
	<-printDone
	genErr := <-genDone
	if g, ok := board.get(); ok {
		fmt.Fprintf(stdout, "final top %d (%d events counted in this run):\n", c.top, counters.Counted.Load())
		printTop(stdout, g)
	} else {
		fmt.Fprintln(stdout, "no top experiments yet")
	}
	if runErr != nil {
		return runErr
	}
	if genErr != nil && !errors.Is(genErr, context.Canceled) {
		return fmt.Errorf("generator: %w", genErr)
	}
	return nil
}
