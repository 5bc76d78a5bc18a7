package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"time"
)

// config holds the flags of the router's commands and of their children.
type config struct {
	messages    int64
	size        int
	partitions  int
	rounds      int
	childBroker bool
	copyJob     bool
	cpuprofile  string
	backlog     int64
	handover    int64
	timeout     time.Duration

	// The children's parameters.
	brokers       string
	input         string
	expect        int64
	handoverOwner string
	ownerDir      string
	ownerStandbys int
}

func init() {
	register(command{name: "router", summary: "(a) raw copy vs (b) the router job; -copy-job adds (b'), a job that only copies",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			var c config
			parse := flags("router", stderr, func(fs *flag.FlagSet) {
				c.eventFlags(fs, 1_000_000)
				fs.IntVar(&c.rounds, "rounds", 1, "measurement rounds, in alternating order")
				fs.BoolVar(&c.childBroker, "child-broker", false, "run the broker in a child process, so that this process's CPU time and profile cover the clients only")
				fs.BoolVar(&c.copyJob, "copy-job", false, "also measure (b'), a Grete job that only copies, like (a)")
				fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of each measurement to `prefix`.<raw|job|copyjob>.<round>.pprof")
			})
			if err := parse(args, func() error { return c.check(c.messages > 0 && c.rounds > 0) }); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			return measurePair(ctx, c, stdout, stderr)
		}})
	register(command{name: "router-rss", summary: "(c) the router job's peak memory on a backlog, broker and job in child processes",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			var c config
			parse := flags("router-rss", stderr, func(fs *flag.FlagSet) {
				c.eventFlags(fs, 0)
				fs.Int64Var(&c.backlog, "backlog", 5_000_000, "events in the backlog")
				fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the job process to `file`")
			})
			if err := parse(args, func() error { return c.check(c.backlog > 0) }); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			return measureRSS(ctx, c, stdout, stderr)
		}})
	register(command{name: "handover", summary: "(d) moving a task whose store holds -keys keys to another process, with and without a standby",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			var c config
			parse := flags("handover", stderr, func(fs *flag.FlagSet) {
				fs.Int64Var(&c.handover, "keys", 1_000_000, "keys in the task's store (100-byte values)")
				fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "give up after this long")
			})
			if err := parse(args, func() error { return c.check(c.handover > 0) }); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			return measureHandover(ctx, c, stdout, stderr)
		}})
	register(command{name: "child-broker", child: true, summary: "run an embedded broker until standard input closes",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			var c config
			parse := flags("child-broker", stderr, func(fs *flag.FlagSet) {
				fs.IntVar(&c.partitions, "partitions", 8, "partitions of topics created on first use")
			})
			if err := parse(args, nil); err != nil {
				return err
			}
			return serveBroker(os.Stdin, stdout, c.partitions)
		}})
	register(command{name: "child-router", child: true, summary: "run the router job until it has processed -expect events",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			var c config
			parse := flags("child-router", stderr, func(fs *flag.FlagSet) {
				fs.StringVar(&c.brokers, "brokers", "", "comma-separated broker `addresses`")
				fs.StringVar(&c.input, "input", "", "input `topic`")
				fs.Int64Var(&c.expect, "expect", 0, "events to wait for")
				fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile to `file`")
				fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "give up after this long")
			})
			if err := parse(args, nil); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			return runJobChild(ctx, c, os.Stdin, stdout)
		}})
	register(command{name: "child-owner", child: true, summary: "run the handover job's first owner until standard input closes",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			var c config
			parse := flags("child-owner", stderr, func(fs *flag.FlagSet) {
				fs.StringVar(&c.handoverOwner, "job", "", "job `name`")
				fs.StringVar(&c.brokers, "brokers", "", "comma-separated broker `addresses`")
				fs.Int64Var(&c.handover, "keys", 0, "keys to wait for")
				fs.StringVar(&c.ownerDir, "dir", "", "data `directory`")
				fs.IntVar(&c.ownerStandbys, "standbys", 0, "standbys of the job")
				fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "give up after this long")
			})
			if err := parse(args, nil); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			return runOwnerChild(ctx, c, os.Stdin, stdout, stderr)
		}})
}

// eventFlags are the flags of the generated input.
func (c *config) eventFlags(fs *flag.FlagSet, messages int64) {
	if messages > 0 {
		fs.Int64Var(&c.messages, "messages", messages, "events to measure on")
	}
	fs.IntVar(&c.size, "size", 100, "approximate event size in bytes (never below what the fields need, about 100)")
	fs.IntVar(&c.partitions, "partitions", 8, "partitions of the input topic")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "give up after this long")
}

func (c *config) check(ok bool) error {
	if !ok || c.size < 1 || c.partitions < 1 || c.timeout <= 0 {
		return errors.New("counts, sizes and -timeout must be positive")
	}
	return nil
}
