package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grete-go/grete/examples/sessionize/sessions"
	"github.com/grete-go/grete/internal/benchkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The sessionize benchmarks measure the sessionize example's job (package
// examples/sessionize/sessions, configured as the example's main
// configures it) on the embedded broker:
//
//	go run ./examples/bench sessionize -events 1000000 [-rounds 3] [-members M]
//	go run ./examples/bench sessionize -rss 1000000
//
// -events N produces N generated events (three hours of event time, with
// the -gap and -grace of the flags: sessions open, merge and close while
// the job runs) into an input of -partitions partitions, then measures,
// in rounds of alternating order:
//
//	(a) raw copy: sarama partition consumers hand every event to one sarama
//	    AsyncProducer, configured like Grete's own producer
//	    (internal/kafka.Config: idempotent, acks=all), that copies it to
//	    another topic; the clock stops when every copy is acknowledged.
//	(b) the sessionize job, as the example runs it (store with changelog,
//	    commits every -commit, snapshots every -window, default 1s here so
//	    that the periodic emits are in the measurement); once every event
//	    is processed the job is stopped, and the clock stops when the final
//	    checkpoints cover the whole input, so every snapshot and changelog
//	    record is acknowledged.
//
// and prints events per second for both, CPU time per event (this
// process, broker included), where the job's tasks spent their time, and
// the ratio b/a (target ≥ 0.6). The broker runs in this process: its CPU
// is in both measurements, so compare ratios, not rates, across machines;
// on a shared machine, compare the CPU per event.
//
// With -members M each round compares, instead, the job run by M group
// members (each with its own data directory and instance id, as M
// processes would run it) with the job run by one, on the same input. The
// clock starts once the members share the tasks (the first rebalances are
// start-up, not throughput) and stops when they have processed the input
// between them.
//
// -rss N produces N events, each the first of its own session, all within
// ten minutes of event time (none closes with the default gap), then runs
// the job alone in a child process (the child-sessionize command) until
// it has processed them and every task has run its Window once more
// (emitting every session), and prints the child's peak resident set size
// (its own VmHWM: the parent's rusage of a child would count the parent's
// peak too, since Go starts children with vfork): the memory it takes to
// hold N open sessions. The child also prints the peak of its Go heap
// while processing and while emitting.

func init() {
	register(command{name: "sessionize", summary: "the sessionize job vs a raw sarama copy (-events N; -members M: M group members vs one), or its peak RSS holding -rss N open sessions",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			c, err := parseSessionize(args, stderr)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			if c.rss > 0 {
				return measureSessionizeRSS(ctx, c, stdout, stderr)
			}
			return measureSessionize(ctx, c, stdout, stderr)
		}})
	register(command{name: "child-sessionize", child: true, summary: "run the sessionize job until it has processed -expect events and emitted every session",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			var c sessionizeConfig
			parse := flags("child-sessionize", stderr, func(fs *flag.FlagSet) {
				fs.StringVar(&c.brokers, "brokers", "", "comma-separated broker `addresses`")
				fs.IntVar(&c.expect, "expect", 0, "events to wait for")
				c.jobFlags(fs)
				fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile to `file`")
				fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "give up after this long")
			})
			if err := parse(args, func() error {
				if c.brokers == "" || c.expect < 1 {
					return errors.New("child-sessionize needs -brokers and -expect")
				}
				return c.check()
			}); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			return runSessionizeChild(ctx, c, os.Stdin, stdout, stderr)
		}})
}

// sessionizeConfig holds the flags of the sessionize command and of its
// child.
type sessionizeConfig struct {
	events     int
	rounds     int
	members    int // > 1: compare that many group members with one
	rss        int
	cpuprofile string
	partitions int
	timeout    time.Duration

	// The job's parameters.
	gap, grace, window, commit time.Duration

	// The child's.
	brokers string
	expect  int
}

// jobFlags are the job's parameters, the command's and the child's.
func (c *sessionizeConfig) jobFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.gap, "gap", 30*time.Minute, "event-time inactivity that ends a session")
	fs.DurationVar(&c.grace, "grace", time.Minute, "how long a session stays open after its gap, for out-of-order events")
	fs.DurationVar(&c.window, "window", time.Second, "how often the job emits the sessions that changed")
	fs.DurationVar(&c.commit, "commit", task.DefaultCommitInterval, "commit `interval`")
}

func (c *sessionizeConfig) check() error {
	switch {
	case c.window <= 0 || c.commit <= 0 || c.timeout <= 0:
		return errors.New("-window, -commit and -timeout must be positive")
	case c.gap < time.Millisecond || c.grace < 0:
		return errors.New("-gap must be at least 1ms and -grace not negative")
	}
	return nil
}

// parseSessionize parses the sessionize command's flags.
func parseSessionize(args []string, stderr io.Writer) (sessionizeConfig, error) {
	var (
		c  sessionizeConfig
		fs *flag.FlagSet
	)
	parse := flags("sessionize", stderr, func(f *flag.FlagSet) {
		fs = f
		fs.IntVar(&c.events, "events", 1_000_000, "time the job on `N` generated events against a raw sarama copy of them")
		fs.IntVar(&c.rounds, "rounds", 3, "measurement rounds, in alternating order")
		fs.IntVar(&c.members, "members", 1, "compare the job run by `M` group members (as M processes would run it) with one, instead of with a raw copy")
		fs.IntVar(&c.rss, "rss", 0, "instead of timing the job: its peak RSS in a process of its own, holding `N` open sessions")
		fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the job in each round to `prefix`.job.<round>.pprof (with -rss: of the job process, to prefix)")
		fs.IntVar(&c.partitions, "partitions", 8, "partitions of the input topic")
		c.jobFlags(fs)
		fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "give up after this long")
	})
	err := parse(args, func() error {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		switch {
		case c.rss < 0:
			return errors.New("-rss must not be negative")
		case c.rss > 0 && (set["events"] || set["rounds"] || set["members"]):
			return errors.New("-rss measures memory: -events, -rounds and -members do not apply")
		case c.events < 1 || c.rounds < 1 || c.members < 1 || c.partitions < 1:
			return errors.New("-events, -rounds, -members and -partitions must be at least 1")
		}
		return c.check()
	})
	return c, err
}

const (
	sessionizeInput = "bench-events"
	sessionizeSpan  = 3 * time.Hour // event time the -events input covers
)

// sessionizeEpoch is where the event time of the generated input starts.
var sessionizeEpoch = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

// sessionizeTraffic returns the input of -events, one event per call:
// generated traffic over sessionizeSpan of event time, dense enough that
// about 30 seconds of event time are in progress at any moment.
func sessionizeTraffic(c sessionizeConfig) func() sessions.Event {
	step := sessionizeSpan / time.Duration(c.events)
	cfg := sessions.Traffic{Seed: 1, Gap: c.gap, Grace: c.grace, Active: max(50, int(30*time.Second/step)), OutOfOrder: 0.05, Late: 0.005}
	cfg.Visitors = 10 * cfg.Active
	g := sessions.NewGenerator(cfg)
	now := sessionizeEpoch
	var pending []sessions.Event
	return func() sessions.Event {
		for len(pending) == 0 {
			pending = g.Next(now.UnixMilli(), pending)
			now = now.Add(step)
		}
		e := pending[0]
		pending = pending[1:]
		return e
	}
}

// The generator's browsers and countries (package sessions), which the
// events of -rss take in turn, so that they are the size of generated ones.
var (
	sessionizeBrowsers  = []string{"chrome", "chrome", "chrome", "safari", "safari", "firefox", "edge", "samsung"}
	sessionizeCountries = []string{"US", "US", "US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "NL"}
)

// sessionizeOpenSessions returns the input of -rss, one event per call, n
// in all: each starts a session of its own, and they span ten minutes of
// event time, so none closes under the default gap of 30 minutes.
func sessionizeOpenSessions(n int) func() sessions.Event {
	base := sessionizeEpoch.UnixMilli()
	span := (10 * time.Minute).Milliseconds()
	i := 0
	return func() sessions.Event {
		i++
		id := strconv.Itoa(i)
		return sessions.Event{
			EventID: "e" + id, VisitorID: "v" + id, SessionID: "s" + id, TS: base + int64(i)*span/int64(n),
			Type: "pageview", Browser: sessionizeBrowsers[i%len(sessionizeBrowsers)], Country: sessionizeCountries[i%len(sessionizeCountries)],
			IP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
		}
	}
}

// sessionizeProduce writes n events from next, as JSON keyed by
// visitor_id, with franz-go (a client independent of the job's), and
// returns the bytes written.
func sessionizeProduce(ctx context.Context, addrs []string, topic string, n int, next func() sessions.Event) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(100_000))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var (
		size     atomic.Int64
		firstErr atomic.Pointer[error]
	)
	for range n {
		e := next()
		v, err := json.Marshal(&e)
		if err != nil {
			return 0, err
		}
		size.Add(int64(len(v)))
		cl.Produce(ctx, &kgo.Record{Key: []byte(e.VisitorID), Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, err
	}
	if p := firstErr.Load(); p != nil {
		return 0, *p
	}
	return size.Load(), nil
}

// sessionizeDeleteTopics deletes the topics whose names start with prefix:
// those a measurement wrote, so that the in-memory broker does not grow
// from round to round.
func sessionizeDeleteTopics(ctx context.Context, cl *kgo.Client, prefix string) error {
	ts, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		return err
	}
	var del []string
	for _, name := range ts.Names() {
		if strings.HasPrefix(name, prefix) {
			del = append(del, name)
		}
	}
	return deleteTopics(ctx, cl, del...)
}

// sessionizeResult is one measurement: result's counts (messages are the
// events measured, outputs the copies or snapshots written, cpu this
// process's CPU time, broker included), and the job's tasks' time in
// Process, Window and commits, summed.
type sessionizeResult struct {
	result
	process, window, commit time.Duration
	commits                 uint64
}

// measureSessionize is -events: the job against a raw copy, or, with
// -members, M members against one.
func measureSessionize(ctx context.Context, c sessionizeConfig, stdout, stderr io.Writer) error {
	log := quietLogger(stderr)
	addrs, admin, stop, err := startBenchBroker(ctx, c.partitions, sessionizeInput)
	if err != nil {
		return err
	}
	defer stop()
	start := time.Now()
	size, err := sessionizeProduce(ctx, addrs, sessionizeInput, c.events, sessionizeTraffic(c))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bench: %d events (%.0f bytes on average, %v of event time, gap %v, grace %v) produced in %s\n",
		c.events, float64(size)/float64(c.events), sessionizeSpan, c.gap, c.grace, time.Since(start).Round(time.Millisecond))

	if c.members > 1 {
		return measureSessionizeMembers(ctx, c, addrs, admin, stdout, log)
	}
	var ratios []float64
	for round := range c.rounds {
		var raw, job sessionizeResult
		measure := func(what string) error {
			var err error
			prefix := fmt.Sprintf("bench-r%d-", round)
			if what == "raw" {
				if err := createTopics(ctx, admin, int32(c.partitions), prefix+"copy"); err != nil {
					return err
				}
				raw, err = sessionizeRawCopy(ctx, addrs, sessionizeInput, prefix+"copy", int64(c.events))
			} else {
				err = profiled(c.cpuprofile, "job", round, func() (err error) {
					job, err = sessionizeRunJob(ctx, c, addrs, prefix+"sessionize", prefix+"sessions", int64(c.events), log)
					return err
				})
			}
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, what, err)
			}
			return sessionizeDeleteTopics(ctx, admin, prefix)
		}
		order := []string{"raw", "job"}
		if round%2 == 1 {
			order = []string{"job", "raw"}
		}
		for _, what := range order {
			if err := measure(what); err != nil {
				return err
			}
		}
		ratio := job.rate() / raw.rate()
		ratios = append(ratios, ratio)
		fmt.Fprintf(stdout, "round %d: (a) raw copy   %8.0f ev/s  %5.1f µs CPU/event  (%d copies)\n", round, raw.rate(), raw.cpuPerEvent(), raw.outputs)
		fmt.Fprintf(stdout, "round %d: (b) sessionize %8.0f ev/s  %5.1f µs CPU/event  (%d snapshots, window %v)\n", round, job.rate(), job.cpuPerEvent(), job.outputs, c.window)
		fmt.Fprintf(stdout, "round %d:     sessionize tasks, summed: Process %v, Window %v, %d commits %v\n",
			round, job.process.Round(time.Millisecond), job.window.Round(time.Millisecond), job.commits, job.commit.Round(time.Millisecond))
		fmt.Fprintf(stdout, "round %d: b/a = %.2f\n", round, ratio)
	}
	m := median(ratios)
	verdict := "met"
	if m < 0.6 {
		verdict = "NOT met"
	}
	fmt.Fprintf(stdout, "result: sessionize / raw copy = %.2f (median of %d rounds; target >= 0.6: %s)\n", m, len(ratios), verdict)
	return nil
}

// sessionizeRawCopy is the baseline, benchkit.RawCopy: the least a sarama
// program must do to copy the input to output with Grete's producer
// guarantees.
func sessionizeRawCopy(ctx context.Context, addrs []string, input, output string, want int64) (sessionizeResult, error) {
	r, err := benchkit.RawCopy(ctx, addrs, input, output)
	if err == nil && r.Messages != want {
		err = fmt.Errorf("raw copy: copied %d events, want %d", r.Messages, want)
	}
	return sessionizeResult{result: result{messages: r.Messages, elapsed: r.Elapsed, cpu: r.CPU, outputs: r.Outputs}}, err
}

// sessionizeJobConfig is the job the benchmarks run over the input.
func sessionizeJobConfig(c sessionizeConfig, addrs []string, name, output, dir string, log *slog.Logger) sessions.Config {
	return sessions.Config{
		Settings:       sessions.Settings{Output: output, Gap: c.gap, Grace: c.grace},
		Name:           name,
		Kafka:          stream.KafkaConfig{Brokers: addrs, ClientID: "bench-sessionize"},
		Input:          sessionizeInput,
		Window:         c.window,
		CommitInterval: c.commit,
		DataDir:        dir,
		Logger:         log,
	}
}

// sessionizeRunJob runs the sessionize job over the input until its
// checkpoints cover all want events, then stops it (the shutdown is not
// timed).
func sessionizeRunJob(ctx context.Context, c sessionizeConfig, addrs []string, name, output string, want int64, log *slog.Logger) (sessionizeResult, error) {
	dir, err := os.MkdirTemp("", "sessionize-bench-")
	if err != nil {
		return sessionizeResult{}, err
	}
	defer os.RemoveAll(dir)
	stats := &sessions.Stats{}
	job := sessions.NewJob(sessionizeJobConfig(c, addrs, name, output, dir, log), stats)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cpu0, start := benchkit.CPUTime(), time.Now()
	errc := make(chan error, 1)
	go func() { errc <- job.Run(ctx) }()
	// Job.Stats copies every task's checkpoint: polled every 2ms, it took
	// 9% of the CPU measured. 10ms is 0.2% of a 5s run.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	// Every event processed: stop the job, whose final commit waits for
	// every snapshot and changelog record to be acknowledged and writes
	// the checkpoints. The clock stops when they cover the input (or when
	// Run returns, if that is seen first).
	var (
		last     []task.TaskStats
		stopping bool
		runErr   error
		returned bool
	)
wait:
	for {
		select {
		case runErr = <-errc:
			returned = true
			if runErr != nil || !stopping {
				return sessionizeResult{}, fmt.Errorf("job stopped early: %v", runErr)
			}
			break wait
		case <-tick.C:
			ts := job.Stats()
			if ts == nil {
				continue
			}
			last = ts
			if !stopping && sessionizeProcessed(ts) >= want {
				stopping = true
				cancel()
			}
			if checkpointed(ts) >= want {
				break wait
			}
		}
	}
	res := sessionizeResult{result: result{messages: want, elapsed: time.Since(start), cpu: benchkit.CPUTime() - cpu0, outputs: int64(stats.Totals().Snapshots)}}
	for _, s := range last {
		res.process += s.ProcessTime
		res.window += s.WindowTime
		res.commit += s.CommitTime
		res.commits += s.Commits
	}
	if !returned {
		runErr = <-errc
	}
	return res, runErr
}

// sessionizeProcessed sums the events every task has finished with.
func sessionizeProcessed(stats []task.TaskStats) int64 {
	var n int64
	for _, s := range stats {
		n += int64(s.Processed + s.Skipped + s.DeadLettered)
	}
	return n
}

// sessionizeMembers runs the job as members group members (each with its
// own data directory and instance id, as separate processes would be)
// over the input. The clock starts once the members share the tasks (the
// first rebalances are start-up, not throughput) and stops when they have
// processed all want events between them; the result counts the events
// processed in between. Stopping is not timed.
func sessionizeMembers(ctx context.Context, c sessionizeConfig, addrs []string, name, output string, want int64, members int, log *slog.Logger) (sessionizeResult, error) {
	dir, err := os.MkdirTemp("", "sessionize-bench-")
	if err != nil {
		return sessionizeResult{}, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(ctx)
	stats := &sessions.Stats{}
	jobs := make([]*task.Job, members)
	errc := make(chan error, members)
	// However this returns, the members stop before their directory is
	// removed: a store deleted under a running member is corruption to
	// Pebble, which panics, and the panic would hide the error returned.
	var (
		stopped int
		errs    []error
	)
	stop := func() error {
		cancel()
		for ; stopped < len(jobs); stopped++ {
			errs = append(errs, <-errc)
		}
		return errors.Join(errs...)
	}
	defer stop()
	for i := range jobs {
		jc := sessionizeJobConfig(c, addrs, name, output, fmt.Sprintf("%s/m%d", dir, i), log)
		jc.InstanceID = fmt.Sprintf("m%d", i)
		jobs[i] = sessions.NewJob(jc, stats)
		go func() { errc <- jobs[i].Run(ctx) }()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	// A task's counters restart when it moves: count each task's events
	// as the largest checkpointed or processed position seen.
	done := map[string]int64{}
	var (
		settled    bool
		from       int64
		start      time.Time
		cpu0       time.Duration
		sum, tasks int
	)
	for {
		select {
		case err := <-errc:
			stopped++
			return sessionizeResult{}, fmt.Errorf("a member stopped early: %v", err)
		case <-tick.C:
		}
		sum, tasks = 0, 0
		share := true
		for _, j := range jobs {
			st := j.Stats()
			share = share && len(st) > 0
			tasks += len(st)
			for _, s := range st {
				var at int64
				for _, off := range s.LastCheckpoint.Inputs {
					at += off
				}
				done[s.Task] = max(done[s.Task], at, int64(s.Processed+s.Skipped+s.DeadLettered))
			}
		}
		for _, n := range done {
			sum += int(n)
		}
		if !settled && share && tasks == c.partitions {
			settled, from, start, cpu0 = true, int64(sum), time.Now(), benchkit.CPUTime()
		}
		if int64(sum) >= want {
			break
		}
	}
	if !settled || int64(sum)-from < want/2 {
		return sessionizeResult{}, fmt.Errorf("the members settled after %d of %d events: use more events", from, want)
	}
	res := sessionizeResult{result: result{messages: int64(sum) - from, elapsed: time.Since(start), cpu: benchkit.CPUTime() - cpu0, outputs: int64(stats.Totals().Snapshots)}}
	return res, stop()
}

// measureSessionizeMembers compares the job run by one group member with
// the job run by c.members members, in alternating order, on the same
// input.
func measureSessionizeMembers(ctx context.Context, c sessionizeConfig, addrs []string, admin *kgo.Client, stdout io.Writer, log *slog.Logger) error {
	var ratios []float64
	for round := range c.rounds {
		res := map[int]sessionizeResult{}
		order := []int{1, c.members}
		if round%2 == 1 {
			order = []int{c.members, 1}
		}
		for _, m := range order {
			prefix := fmt.Sprintf("bench-r%d-m%d-", round, m)
			r, err := sessionizeMembers(ctx, c, addrs, prefix+"sessionize", prefix+"sessions", int64(c.events), m, log)
			if err != nil {
				return fmt.Errorf("round %d, %d members: %w", round, m, err)
			}
			if err := sessionizeDeleteTopics(ctx, admin, prefix); err != nil {
				return err
			}
			res[m] = r
			fmt.Fprintf(stdout, "round %d: %d member(s) %8.0f ev/s  %5.1f µs CPU/event\n", round, m, r.rate(), r.cpuPerEvent())
		}
		ratio := res[c.members].rate() / res[1].rate()
		ratios = append(ratios, ratio)
		fmt.Fprintf(stdout, "round %d: %d members / 1 = %.2f\n", round, c.members, ratio)
	}
	fmt.Fprintf(stdout, "result: %d members / 1 member = %.2f (median of %d rounds; on 2 cores, 1.0 means no regression)\n", c.members, median(ratios), len(ratios))
	return nil
}

// measureSessionizeRSS is -rss: the peak RSS of a job process holding
// c.rss open sessions.
func measureSessionizeRSS(ctx context.Context, c sessionizeConfig, stdout, stderr io.Writer) error {
	addrs, _, stop, err := startBenchBroker(ctx, c.partitions, sessionizeInput)
	if err != nil {
		return err
	}
	defer stop()
	start := time.Now()
	size, err := sessionizeProduce(ctx, addrs, sessionizeInput, c.rss, sessionizeOpenSessions(c.rss))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rss: %d events, each a session of its own (%.0f bytes on average), produced in %s\n",
		c.rss, float64(size)/float64(c.rss), time.Since(start).Round(time.Millisecond))

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"child-sessionize", "-brokers", strings.Join(addrs, ","), "-expect", strconv.Itoa(c.rss),
		"-gap", c.gap.String(), "-grace", c.grace.String(), "-window", c.window.String(), "-commit", c.commit.String(),
		"-timeout", c.timeout.String()}
	if c.cpuprofile != "" {
		args = append(args, "-cpuprofile", c.cpuprofile)
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// The child stops when its stdin closes: at the latest when this
	// process exits, however it exits.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	defer stdin.Close()
	start = time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("job process: %w", err)
	}
	fmt.Fprintf(stdout, "rss: the job process ran for %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// runSessionizeChild is the child-sessionize command, the job process of
// -rss: it runs the job until it has processed c.expect events and every
// task has emitted its sessions once after that, prints the open sessions
// and its peak RSS, and exits. It gives up when stdin closes (the parent
// is gone).
func runSessionizeChild(ctx context.Context, c sessionizeConfig, stdin io.Reader, stdout, stderr io.Writer) error {
	ctx, cancel := benchkit.UntilClosed(ctx, stdin)
	defer cancel()
	stop, err := benchkit.StartProfile(c.cpuprofile)
	if err != nil {
		return err
	}
	defer stop()
	dir, err := os.MkdirTemp("", "sessionize-rss-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	stats := &sessions.Stats{}
	job := sessions.NewJob(sessions.Config{
		Settings:       sessions.Settings{Output: "bench-rss-sessions", Gap: c.gap, Grace: c.grace},
		Name:           "bench-rss",
		Kafka:          stream.KafkaConfig{Brokers: strings.Split(c.brokers, ","), ClientID: "bench-rss"},
		Input:          sessionizeInput,
		Window:         c.window,
		CommitInterval: c.commit,
		DataDir:        dir,
		Logger:         quietLogger(stderr),
	}, stats)
	jobCtx, stopJob := context.WithCancel(ctx)
	defer stopJob()
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- job.Run(jobCtx) }()
	// Peak memory per phase, sampled: while processing, then while
	// emitting every session.
	mem := newSessionizeMemPeak()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var caughtUp []uint64 // each task's Window calls when the input was done
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("job stopped: %v", err)
		case <-tick.C:
		}
		mem.sample()
		ts := job.Stats()
		var in uint64
		for _, s := range ts {
			in += s.Processed
		}
		if caughtUp == nil {
			if in >= uint64(c.expect) {
				for _, s := range ts {
					caughtUp = append(caughtUp, s.WindowCalls)
				}
				fmt.Fprintf(stdout, "rss: job process: %d events processed in %s; peak Go heap %s, runtime total %s\n",
					in, time.Since(start).Round(time.Millisecond), sessionizeMiB(mem.heap), sessionizeMiB(mem.total))
				mem = newSessionizeMemPeak()
			}
			continue
		}
		done := len(ts) == len(caughtUp)
		for i, s := range ts {
			done = done && s.WindowCalls > caughtUp[i]
		}
		if done {
			break
		}
	}
	t := stats.Totals()
	fmt.Fprintf(stdout, "rss: job process: %d open sessions, %d snapshots emitted; while emitting, peak Go heap %s, runtime total %s\n",
		t.Open, t.Snapshots, sessionizeMiB(mem.heap), sessionizeMiB(mem.total))
	stopJob()
	if err := <-errc; err != nil {
		return err
	}
	// The process's own high-water mark: the parent's view of a child's
	// rusage would include the parent's peak (Go starts children with
	// vfork).
	rss := benchkit.PeakRSS()
	fmt.Fprintf(stdout, "result: job process peak RSS %s holding %d open sessions (%.0f bytes per session)\n",
		sessionizeMiB(uint64(rss)), t.Open, float64(rss)/float64(max(1, t.Open)))
	return nil
}

// sessionizeMemPeak samples the Go runtime's memory: live and dead heap
// objects, and all the memory the runtime has mapped.
type sessionizeMemPeak struct {
	samples     []metrics.Sample
	heap, total uint64
}

func newSessionizeMemPeak() *sessionizeMemPeak {
	return &sessionizeMemPeak{samples: []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}}
}

func (m *sessionizeMemPeak) sample() {
	metrics.Read(m.samples)
	m.heap = max(m.heap, m.samples[0].Value.Uint64())
	m.total = max(m.total, m.samples[1].Value.Uint64())
}

func sessionizeMiB(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
