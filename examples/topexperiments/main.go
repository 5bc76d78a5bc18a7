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
// # Two jobs, chained by a topic
//
// The program runs two Grete jobs. The counting job ("<name>-count") reads
// the input: task i counts the experiments of input partition i in a
// changelog-backed Pebble store, and every -window emits its own top-N to
// "<output>-partial" (when it changed since the last one, and after every
// start). Every partial carries the same partition key, so all of them meet
// in one task of the merging job ("<name>-merge"), which keeps the latest
// partial of every counting task in a changelog-backed store of its own and
// emits the global top-N to "<output>" whenever a partial changes it.
//
// The window flush must not stall processing (Optimizely's lesson from
// Samza: iterating RocksDB in a windowed flush starved the job). The counts
// store is declared with TrackChanges, and the flush visits only the
// experiments counted since the previous flush (store TakeChanges), folding
// them into an in-memory top-N that stays exact because counts only grow
// (see Leaders). The only full scan of the store happens once per start, to
// rebuild that top-N.
//
// # The input must be keyed by experiment
//
// The global top-N is exact when every experiment is counted by one
// counting task: then each task's top-N holds the whole count of its
// experiments, and the union of the per-task tops contains the global top.
// So events must be partitioned by experiment (the generator keys them by
// experiment; Kafka's default partitioner does the rest). A task that sees
// an event whose key is not its experiment logs a warning once: with such
// input the merging job adds up the counts it sees, which only
// approximates the top-N. Repartition such a stream by experiment first.
//
// Counts are exact through crashes: Grete restores each counting task's
// store to its last checkpoint and replays the input from there, so no
// event is lost or counted twice. The global top lags the counts by up to
// one window, and a partial emitted just before a crash can hold counts
// that the restarted task reaches again only once it has caught up.
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
//	-quiet        print no periodic lines, only the final top-N
//	-bench        run the benchmarks instead, on an embedded broker: a store
//	              restore vs a raw consume of its changelog, and the counting
//	              job vs a raw consume-produce copy (see bench.go for what is
//	              measured and the -bench-* flags)
//
// The jobs stop gracefully on Ctrl-C, SIGTERM or at the end of -duration:
// they finish the current events, commit, and the program exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/grete-go/grete/examples/kit"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
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

	bench bench
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
	c.bench.flags(fs)
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
	if c.bench.child != "" {
		return runBenchChild(ctx, c, stdout)
	}
	if c.bench.on {
		return runBench(ctx, c, stdout, stderr)
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
		kit.Topic{Name: partialTopic(c.output), Partitions: 1},
		kit.Topic{Name: c.output, Partitions: 1},
	); err != nil {
		return err
	}

	counters := &Counters{}
	board := &board{}
	count := countJob(c.name, kc, c.input, c.output, c.top, c.window, counters)
	merge := mergeJob(c.name, kc, c.output, c.top, board.set)
	for _, j := range []*task.Job{count, merge} {
		j.DataDir, j.CommitInterval, j.OnError, j.Logger, j.InstanceID = stateDir, c.commit, policy, log, c.instance
	}

	genCtx, stopGen := context.WithCancel(ctx)
	genDone := make(chan error, 1)
	if c.generate > 0 {
		go func() { genDone <- generate(genCtx, kc, c.input, c.generate, c.experiments) }()
	} else {
		genDone <- nil
	}
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

func partialTopic(output string) string { return output + "-partial" }

// countJob is the counting job: every task counts the experiments of its
// input partition and emits its top-n every window.
func countJob(name string, kc stream.KafkaConfig, input, output string, n int, window time.Duration, counters *Counters) *task.Job {
	partial := partialTopic(output)
	return &task.Job{
		Name:    name + "-count",
		Kafka:   kc,
		Inputs:  []string{input},
		Stores:  []store.Spec{{Name: countsStore, TrackChanges: true}},
		Window:  window,
		Outputs: []task.OutputTopic{{Name: partial, Partitions: 1}},
		NewTask: func() task.StreamTask { return newCountTask(n, partial, counters) },
	}
}

// mergeJob is the merging job: it reads the partial tops and emits the
// global top-n on output.
func mergeJob(name string, kc stream.KafkaConfig, output string, n int, onTop func(Global)) *task.Job {
	return &task.Job{
		Name:    name + "-merge",
		Kafka:   kc,
		Inputs:  []string{partialTopic(output)},
		Stores:  []store.Spec{{Name: partialsStore}},
		Outputs: []task.OutputTopic{{Name: output, Partitions: 1}},
		NewTask: func() task.StreamTask { return newMergeTask(n, output, onTop) },
	}
}

// runJobs runs the jobs until ctx ends or one of them fails; a failure
// stops the others gracefully.
func runJobs(ctx context.Context, jobs ...*task.Job) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = j.Run(ctx)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("job %s: %w", j.Name, errs[i])
			}
			cancel()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// board holds the latest global top for printing.
type board struct {
	mu  sync.Mutex
	g   Global
	ok  bool
	gen uint64 // changes
}

func (b *board) set(g Global) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.g, b.ok = g, true
	b.gen++
}

func (b *board) get() (Global, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.g, b.ok
}

func (b *board) changes() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gen
}

// report prints the input rate and the flush costs once a second, and the
// global top-N whenever it changed.
func report(ctx context.Context, w io.Writer, counters *Counters, b *board) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastCounted, lastFlushes, lastVisited, lastGen uint64
	var lastNanos int64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			counted, flushes, visited, nanos := counters.Counted.Load(), counters.Flushes.Load(), counters.Visited.Load(), counters.FlushNanos.Load()
			line := fmt.Sprintf("%s  in %6.0f ev/s  counted %d", now.Format("15:04:05"), float64(counted-lastCounted)/now.Sub(last).Seconds(), counted)
			if f := flushes - lastFlushes; f > 0 {
				line += fmt.Sprintf("  flushes %d: %.0f changed keys and %s each on average", f,
					float64(visited-lastVisited)/float64(f), (time.Duration(nanos-lastNanos) / time.Duration(f)).Round(time.Microsecond))
			}
			fmt.Fprintln(w, line)
			if gen := b.changes(); gen != lastGen {
				if g, ok := b.get(); ok {
					printTop(w, g)
				}
				lastGen = gen
			}
			lastCounted, lastFlushes, lastVisited, lastNanos, last = counted, flushes, visited, nanos, now
		}
	}
}

func printTop(w io.Writer, g Global) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "  top experiments as of %s:\n", time.UnixMilli(g.At).Format("15:04:05.000"))
	for i, e := range g.Top {
		fmt.Fprintf(&sb, "  %3d. %-24s %10d\n", i+1, e.Experiment, e.Count)
	}
	io.WriteString(w, sb.String())
}
