// Command bench measures what Grete costs, running the example jobs
// against a baseline measured in the same run (plain sarama doing the
// least the job's work needs), on the embedded broker. One sub-command per
// measurement:
//
//	go run ./examples/bench router               # (a) + (b), 1M events, one round
//	go run ./examples/bench router-rss           # (c), peak memory on a 5M-event backlog
//	go run ./examples/bench handover -keys 1000000 # (d)
//
// and, for the other example jobs, the commands their files describe
// (sessionize.go, topexperiments.go). go run ./examples/bench -h lists
// them; <command> -h lists a command's flags. The benchmarks in the
// _test.go files measure the same pieces with go test -bench.
//
// # router: what is measured
//
// Before anything is timed, router produces -messages JSON events of
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
// handover -keys N measures (d), moving a task whose
// store holds N keys (100-byte values) from one process of a job to
// another: without standbys (the new owner replays the changelog) and
// with Standbys: 1 (the new owner kept a standby copy), the old owner
// stopping gracefully, then killed with SIGKILL (a child process; its task
// moves once its 6 s group session has timed out). It prints the time
// from the old owner's stop to the new owner running the task, and the
// new owner's restore time and replayed records. Target with a standby and
// 1M keys, graceful: under 1 s.
//
// router-rss runs the broker in a child process,
// produces a backlog of -backlog events into it, then runs the router job
// alone in a second child process until it has processed the whole
// backlog, and prints the job process's peak resident set size (from its
// rusage): the memory the job needs whatever the backlog, without the
// broker's. Target: under 300 MB. The broker keeps the backlog in memory
// (about 2 GB for 5M events).
//
// The child-* commands are how the others start their child processes:
// a child stops when its standard input closes, so it never outlives the
// program. Every broker listens on 127.0.0.1 only.
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
	"syscall"

	"github.com/grete-go/grete/internal/benchkit"
)

// command is a sub-command of the program.
type command struct {
	name    string
	summary string
	// child commands are how the others start their child processes.
	child bool
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands are the sub-commands, in the order the usage lists them; the
// files of the jobs measured register theirs.
var commands []command

func register(c command) { commands = append(commands, c) }

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
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "help" {
		usage(stderr)
		return flag.ErrHelp
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: go run ./examples/bench <command> [flags]   (<command> -h lists its flags)")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands {
		if !c.child {
			fmt.Fprintf(w, "  %-17s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintln(w, "\nchild processes (started by the commands above):")
	for _, c := range commands {
		if c.child {
			fmt.Fprintf(w, "  %-17s %s\n", c.name, c.summary)
		}
	}
}

// flags is a command's flag set: it parses args, refuses positional
// arguments, and checks the values with check.
func flags(name string, stderr io.Writer, define func(fs *flag.FlagSet)) func(args []string, check func() error) error {
	fs := flag.NewFlagSet("bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	define(fs)
	return func(args []string, check func() error) error {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("unexpected arguments %q", fs.Args())
		}
		if check != nil {
			return check()
		}
		return nil
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
