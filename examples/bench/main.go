// Command bench measures what Grete costs over plain sarama, on the
// embedded broker, in one run:
//
//	go run ./examples/bench          # (a) + (b), 1M events, one round
//	go run ./examples/bench -rss     # (c), peak memory on a 5M-event backlog
//
// # What is measured
//
// Before anything is timed, the program produces -messages JSON events of
// about -size bytes into an input topic of -partitions partitions, with
// franz-go (an independent client). The events look like
// {"id":"e1","user":"u7","type":"click","revenue":0,"debug":false,...}:
// mostly clicks, views and purchases; purchases carry revenue, 1% are debug
// events. Both measurements read exactly these bytes.
//
//	(a) raw copy: sarama partition consumers on every input partition
//	    hand each message to one sarama AsyncProducer that copies it to an
//	    output topic; done when every copy is acknowledged.
//	(b) router job: the router example's job (package
//	    examples/router/routing, default rules, dead-letter policy) run by
//	    task.Job.Run; done when every event is processed and Run has
//	    returned nil after its final commit (outputs acknowledged,
//	    checkpoints written).
//
// Both producers are configured by Grete's own internal/kafka.Config
// (idempotent, acks=all, one request in flight, flush at 1 MiB or 2 ms, no
// compression, murmur2 key partitioner), so the difference between them is
// Grete's run loop, not producer settings. Both clocks include connecting
// and shutting down. Output topics exist before the clock starts and are
// deleted after each measurement, so the broker's memory does not grow from
// round to round.
//
// # Reading the ratio
//
// The program prints msgs/s (input events per second) for (a) and (b) and
// the ratio b/a. The router does more work than the copy: it validates and
// scans every event, drops debug events and writes revenue events twice,
// and it checkpoints. A ratio of 1 means Grete and the routing cost nothing
// beyond what sarama itself needs; the target is b/a >= 0.9. Broker,
// consumers and producers share the machine's cores, so the numbers say as
// much about the broker as about the clients: compare the ratio, not the
// absolute rates, between machines. On a shared, noisy machine use -rounds:
// each round runs the pair in alternating order (a then b, then b then a),
// and the median ratio is the number to quote.
//
// With -rss the program instead runs the broker in a child process,
// produces a backlog of -backlog events into it, then runs the router job
// alone in a second child process until the job has caught up, and prints
// the job process's peak resident set size (from its rusage): the memory
// the job needs whatever the backlog, without the broker's. Target: under
// 300 MB.
//
// # Flags
//
//	-messages N      events for (a) and (b) (default 1000000)
//	-size B          approximate event size in bytes (default 100)
//	-partitions P    partitions of the input topic (default 8)
//	-rounds R        (a)+(b) pairs to run, in alternating order (default 1)
//	-child-broker    run the broker in a child process for (a) and (b) too,
//	                 so that this process's CPU profile and garbage
//	                 collector cover the clients only
//	-cpuprofile P    write CPU profiles of each measurement to
//	                 P.raw.<round>.pprof and P.job.<round>.pprof (with -rss:
//	                 of the job process, to P)
//	-rss             measure (c) instead of (a) and (b)
//	-backlog N       events in the backlog for -rss (default 5000000)
//	-timeout D       give up after this long (default 30m)
//
// The hidden flags -serve-broker and -run-job are how the program starts
// its child processes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"

	"github.com/grete-go/grete/internal/embedded"
)

type config struct {
	messages    int64
	size        int
	partitions  int
	rounds      int
	childBroker bool
	cpuprofile  string
	rss         bool
	backlog     int64
	timeout     time.Duration

	// Hidden: the child-process modes.
	serveBroker bool
	runJob      bool
	brokers     string
	input       string
	expect      int64
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Int64Var(&c.messages, "messages", 1_000_000, "events for the raw copy and the router job")
	fs.IntVar(&c.size, "size", 100, "approximate event size in `bytes`")
	fs.IntVar(&c.partitions, "partitions", 8, "partitions of the input topic")
	fs.IntVar(&c.rounds, "rounds", 1, "measurement pairs to run, in alternating order")
	fs.BoolVar(&c.childBroker, "child-broker", false, "run the broker in a child process for the pair too")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write CPU profiles of each measurement, named after this `prefix`")
	fs.BoolVar(&c.rss, "rss", false, "measure the router job's peak RSS on a backlog instead")
	fs.Int64Var(&c.backlog, "backlog", 5_000_000, "events in the backlog for -rss")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "give up after this long")
	fs.BoolVar(&c.serveBroker, "serve-broker", false, "internal: run a broker until stdin closes")
	fs.BoolVar(&c.runJob, "run-job", false, "internal: run the router job until it has processed -expect events")
	fs.StringVar(&c.brokers, "brokers", "", "internal: brokers for -run-job")
	fs.StringVar(&c.input, "input", "", "internal: input topic for -run-job")
	fs.Int64Var(&c.expect, "expect", 0, "internal: events -run-job waits for")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: bench [-messages N] [-size B] [-partitions P] [-rounds R] [-child-broker] [-cpuprofile prefix]\n       bench -rss [-backlog N] [-size B] [-partitions P] [-cpuprofile file]")
		for _, name := range []string{"messages", "size", "partitions", "rounds", "child-broker", "cpuprofile", "rss", "backlog", "timeout"} {
			f := fs.Lookup(name)
			fmt.Fprintf(fs.Output(), "  -%s\t%s (default %q)\n", f.Name, f.Usage, f.DefValue)
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.messages < 1 || c.backlog < 1 || c.size < 1 || c.partitions < 1 || c.rounds < 1 || c.timeout <= 0 {
		return c, errors.New("-messages, -backlog, -size, -partitions, -rounds and -timeout must be positive")
	}
	return c, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	switch {
	case c.serveBroker:
		return serveBroker(os.Stdin, stdout, c.partitions)
	case c.runJob:
		return runJobChild(ctx, c, os.Stdin, stdout)
	case c.rss:
		return measureRSS(ctx, c, stdout, stderr)
	default:
		return measurePair(ctx, c, stdout, stderr)
	}
}

const inputTopic = "bench-events"

// measurePair runs (a) and (b) -rounds times.
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

	admin, err := newKgo(brokers)
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := createTopics(ctx, admin, int32(c.partitions), inputTopic); err != nil {
		return err
	}
	start := time.Now()
	if err := produce(ctx, brokers, inputTopic, c.messages, c.size); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "input: %d events produced with franz-go in %s (not timed below)\n", c.messages, time.Since(start).Round(time.Millisecond))

	log := quietLogger(stderr)
	var ratios, rawRates, jobRates []float64
	for round := 1; round <= c.rounds; round++ {
		measureRaw := func() (result, error) {
			out := fmt.Sprintf("bench-copy-r%d", round)
			if err := createTopics(ctx, admin, int32(c.partitions), out); err != nil {
				return result{}, err
			}
			var res result
			err := profiled(c.cpuprofile, "raw", round, func() (err error) {
				res, err = rawCopy(ctx, brokers, inputTopic, out)
				return err
			})
			if err != nil {
				return res, err
			}
			if n, err := endOffsets(ctx, admin, out); err != nil {
				return res, err
			} else if n != c.messages {
				return res, fmt.Errorf("raw copy: output %s has %d records, want %d", out, n, c.messages)
			}
			return res, deleteTopics(ctx, admin, out)
		}
		measureJob := func() (result, error) {
			outs := routerOutputs(inputTopic)
			if err := createTopics(ctx, admin, int32(c.partitions), outs...); err != nil {
				return result{}, err
			}
			name := fmt.Sprintf("bench-router-r%d", round)
			job := routerJob(name, brokers, inputTopic, log)
			var res result
			err := profiled(c.cpuprofile, "job", round, func() (err error) {
				res, err = runJob(ctx, job, uint64(c.messages), 5*time.Millisecond, nil)
				return err
			})
			if err != nil {
				return res, err
			}
			if n, err := endOffsets(ctx, admin, outs...); err != nil {
				return res, err
			} else if n != res.outputs {
				return res, fmt.Errorf("router job: outputs have %d records, the job sent %d", n, res.outputs)
			}
			return res, deleteTopics(ctx, admin, append(outs, name+"-dlq", name+"-checkpoints")...)
		}
		steps := []func() (result, error){measureRaw, measureJob}
		if round%2 == 0 {
			slices.Reverse(steps)
		}
		var raw, job result
		for _, step := range steps {
			runtime.GC() // start each measurement with the same, collected heap
			res, err := step()
			if err != nil {
				return err
			}
			if res.name == "router job" {
				job = res
			} else {
				raw = res
			}
			fmt.Fprintf(stdout, "round %d  %-15s %9d events in %7s = %9.0f msgs/s  (%d records written)\n",
				round, res.name, res.messages, res.elapsed.Round(time.Millisecond), res.rate(), res.outputs)
		}
		ratio := job.rate() / raw.rate()
		ratios = append(ratios, ratio)
		rawRates = append(rawRates, raw.rate())
		jobRates = append(jobRates, job.rate())
		fmt.Fprintf(stdout, "round %d  ratio b/a = %.3f\n", round, ratio)
	}
	fmt.Fprintf(stdout, "result: (a) raw copy %.0f msgs/s, (b) router job %.0f msgs/s (medians of %d rounds)\n",
		median(rawRates), median(jobRates), c.rounds)
	verdict := "met"
	if median(ratios) < 0.9 {
		verdict = "NOT met"
	}
	fmt.Fprintf(stdout, "result: median ratio b/a = %.3f (target >= 0.90: %s)\n", median(ratios), verdict)
	return nil
}

// profiled runs f under the CPU profiler when prefix is set.
func profiled(prefix, what string, round int, f func() error) error {
	if prefix == "" {
		return f()
	}
	file, err := os.Create(fmt.Sprintf("%s.%s.%d.pprof", prefix, what, round))
	if err != nil {
		return err
	}
	defer file.Close()
	if err := pprof.StartCPUProfile(file); err != nil {
		return err
	}
	err = f()
	pprof.StopCPUProfile()
	return err
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
