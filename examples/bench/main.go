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
// 55% clicks, 34% views, 8% purchases (all with revenue > 0, so the router
// fans them out), 3% other types, 1% debug events. The sequence is seeded:
// every run, and both measurements of a run, read exactly these bytes.
//
//	(a) raw copy: sarama partition consumers on every input partition hand
//	    each message to one sarama AsyncProducer that copies it to one
//	    output topic. The clock runs from connecting until every copy is
//	    acknowledged.
//	(b) router job: the router example's job (package
//	    examples/router/routing, default rules, dead-letter policy, outputs
//	    created on first use) run by task.Job.Run. Once every event is
//	    processed the context is cancelled; the clock runs from the call of
//	    Run until the final checkpoints cover every event (so every output
//	    is acknowledged). Run must then return nil.
//
// Both producers are configured by Grete's own internal/kafka.Config
// (idempotent, acks=all, one request in flight, flush at 1 MiB or 2 ms, no
// compression, murmur2 key partitioner), so the difference between them is
// Grete's run loop and the routing, not producer settings. The rest of the
// shutdown (closing consumers, producer, connections) is printed apart for
// both and is not in the rates: closing a sarama partition consumer waits
// for the fetch in flight, up to Consumer.MaxWaitTime (500 ms), whatever
// the program does. Output topics exist before the clock starts, and every
// topic a measurement wrote is checked (record counts) and then deleted, so
// the broker's memory does not grow from round to round.
//
// # Reading the output
//
// For each measurement the program prints the input events per second and
// the CPU time this process used per event (set-up and shutdown included;
// with the in-process broker that is the broker's CPU too, with
// -child-broker the clients' only). Then it prints the ratio b/a of the
// rates. The router does more work than the copy: it validates and scans
// every event, drops debug events, writes revenue events twice, and
// checkpoints. A ratio of 1 means Grete and the routing cost nothing beyond
// what sarama itself needs; the target is b/a >= 0.9.
//
// Broker, consumers and producers share the machine's cores, so the rates
// say as much about the machine and the broker as about the clients:
// compare ratios, not absolute rates, across machines. On a shared, noisy
// machine use -rounds: each round runs the measurements in alternating
// order (a then b, then b then a), and the median ratio is the number to
// quote. CPU per event is less sensitive to noise than the rates. With
// -copy-job each round also measures (b'), a Grete job whose task only
// copies, like (a): b'/a is what Grete's run loop costs, b/b' what the
// routing costs.
//
// With -handover N the program instead measures (d), moving a task whose
// store holds N keys (100-byte values) from one process of a job to
// another: without standbys (the new owner replays the changelog) and
// with Standbys: 1 (the new owner kept a standby copy), the old owner
// stopping gracefully, then killed with SIGKILL (a child process; its task
// moves once its 6 s group session has timed out). It prints the time
// from the old owner's stop to the new owner running the task, and the
// new owner's restore time and replayed records. Target with a standby and
// 1M keys, graceful: under 1 s.
//
// With -rss the program instead runs the broker in a child process,
// produces a backlog of -backlog events into it, then runs the router job
// alone in a second child process until it has processed the whole
// backlog, and prints the job process's peak resident set size (from its
// rusage): the memory the job needs whatever the backlog, without the
// broker's. Target: under 300 MB. The broker keeps the backlog in memory
// (about 2 GB for 5M events).
//
// # Flags
//
//	-messages N      events for (a) and (b) (default 1000000)
//	-size B          approximate event size in bytes (default 100)
//	-partitions P    partitions of the input topic (default 8)
//	-rounds R        measurement rounds, in alternating order (default 1)
//	-copy-job        also measure (b'), a Grete job that only copies
//	-child-broker    run the broker in a child process for (a) and (b) too,
//	                 so that this process's CPU time, CPU profile and
//	                 garbage collector cover the clients only
//	-cpuprofile P    write a CPU profile of each measurement to
//	                 P.<raw|job|copyjob>.<round>.pprof (with -rss: of the
//	                 job process, to P)
//	-rss             measure (c) instead of (a) and (b)
//	-backlog N       events in the backlog for -rss (default 5000000)
//	-timeout D       give up after this long (default 30m)
//
// The hidden flags -serve-broker and -run-job are how the program starts
// its child processes; a child stops when its standard input closes, so it
// never outlives the program. Every broker listens on 127.0.0.1 only.
//
// The benchmarks in bench_test.go measure the same pieces with go test
// -bench, and the routing task's Process alone.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/grete-go/grete/internal/benchkit"
)

type config struct {
	messages    int64
	size        int
	partitions  int
	rounds      int
	childBroker bool
	copyJob     bool
	cpuprofile  string
	rss         bool
	backlog     int64
	handover    int64
	timeout     time.Duration

	// Hidden: the child-process modes.
	serveBroker bool
	runJob      bool
	brokers     string
	input       string
	expect      int64
	// The -handover owner child.
	handoverOwner string
	ownerDir      string
	ownerStandbys int
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Int64Var(&c.messages, "messages", 1_000_000, "events for the raw copy and the router job")
	fs.IntVar(&c.size, "size", 100, "approximate event size in bytes (never below what the fields need, about 100)")
	fs.IntVar(&c.partitions, "partitions", 8, "partitions of the input topic")
	fs.IntVar(&c.rounds, "rounds", 1, "measurement rounds, in alternating order")
	fs.BoolVar(&c.childBroker, "child-broker", false, "run the broker in a child process for the pair too")
	fs.BoolVar(&c.copyJob, "copy-job", false, "also measure a Grete job that only copies, like (a)")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write CPU profiles of each measurement, named after this `prefix`")
	fs.BoolVar(&c.rss, "rss", false, "measure the router job's peak RSS on a backlog instead")
	fs.Int64Var(&c.backlog, "backlog", 5_000_000, "events in the backlog for -rss")
	fs.Int64Var(&c.handover, "handover", 0, "measure moving a task whose store holds `N` keys between two processes, with and without a standby, instead")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "give up after this long")
	fs.BoolVar(&c.serveBroker, "serve-broker", false, "internal: run a broker until stdin closes")
	fs.BoolVar(&c.runJob, "run-job", false, "internal: run the router job until it has processed -expect events")
	fs.StringVar(&c.brokers, "brokers", "", "internal: brokers for -run-job")
	fs.StringVar(&c.input, "input", "", "internal: input topic for -run-job")
	fs.Int64Var(&c.expect, "expect", 0, "internal: events -run-job waits for")
	fs.StringVar(&c.handoverOwner, "handover-owner", "", "internal: run the -handover job's first owner, named so")
	fs.StringVar(&c.ownerDir, "owner-dir", "", "internal: data dir of the -handover owner")
	fs.IntVar(&c.ownerStandbys, "owner-standbys", 0, "internal: standbys of the -handover owner's job")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: bench [-messages N] [-size B] [-partitions P] [-rounds R] [-copy-job] [-child-broker] [-cpuprofile prefix]\n       bench -rss [-backlog N] [-size B] [-partitions P] [-cpuprofile file]\n       bench -handover N")
		for _, name := range []string{"messages", "size", "partitions", "rounds", "copy-job", "child-broker", "cpuprofile", "rss", "backlog", "handover", "timeout"} {
			f := fs.Lookup(name)
			line := fmt.Sprintf("  -%-13s %s", f.Name, strings.ReplaceAll(f.Usage, "`", ""))
			if f.DefValue != "" && f.DefValue != "false" {
				line += " (default " + f.DefValue + ")"
			}
			fmt.Fprintln(fs.Output(), line)
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.messages < 1 || c.backlog < 1 || c.size < 1 || c.partitions < 1 || c.rounds < 1 || c.timeout <= 0 || c.handover < 0 {
		return c, errors.New("-messages, -backlog, -size, -partitions, -rounds and -timeout must be positive, -handover not negative")
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
	case c.handoverOwner != "":
		return runOwnerChild(ctx, c, os.Stdin, stdout, stderr)
	case c.rss:
		return measureRSS(ctx, c, stdout, stderr)
	case c.handover > 0:
		return measureHandover(ctx, c, stdout, stderr)
	default:
		return measurePair(ctx, c, stdout, stderr)
	}
}

// profiled runs f under the CPU profiler when prefix is set.
func profiled(prefix, what string, round int, f func() error) error {
	path := ""
	if prefix != "" {
		path = fmt.Sprintf("%s.%s.%d.pprof", prefix, what, round)
	}
	stop, err := benchkit.StartProfile(path)
	if err != nil {
		return err
	}
	defer stop()
	return f()
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
