package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grete-go/grete/internal/benchkit"
	"github.com/grete-go/grete/internal/embedded"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The benchmarks, run by the program itself (go run ./examples/sessionize
// -bench N, or -rss N), on the embedded broker:
//
// -bench N produces N generated events (three hours of event time, with
// the -gap and -grace of the flags: sessions open, merge and close while
// the job runs) into an input of -partitions partitions, then measures,
// in rounds of alternating order:
//
//	(a) raw copy: sarama partition consumers hand every event to one sarama
//	    AsyncProducer, configured like Grete's own producer
//	    (internal/kafka.Config: idempotent, acks=all), that copies it to
//	    another topic; the clock stops when every copy is acknowledged.
//	(b) the sessionize job, as main runs it (store with changelog, commits
//	    every -commit, snapshots every -window, default 1s here so that the
//	    periodic emits are in the measurement); once every event is
//	    processed the job is stopped, and the clock stops when the final
//	    checkpoints cover the whole input, so every snapshot and changelog
//	    record is acknowledged.
//
// and prints events per second for both, CPU time per event (this
// process, broker included), where the job's tasks spent their time, and
// the ratio b/a (target ≥ 0.6). The broker runs in this process: its CPU
// is in both measurements, so compare ratios, not rates, across machines;
// on a shared machine, compare the CPU per event.
//
// -rss N produces N events, each the first of its own session, all within
// ten minutes of event time (none closes with the default gap), then runs
// the job alone in a child process until it has processed them and every
// task has run its Window once more (emitting every session), and prints
// the child's peak resident set size (its own VmHWM: the parent's rusage of
// a child would count the parent's peak too, since Go starts children with
// vfork): the memory it takes to hold N open sessions. The child also
// prints the peak of its Go heap while processing and while emitting.

const (
	benchInput = "bench-events"
	benchSpan  = 3 * time.Hour // event time the -bench input covers
)

func benchAdmin(addrs []string) (*kgo.Client, *kadm.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		return nil, nil, err
	}
	return cl, kadm.NewClient(cl), nil
}

func createTopics(ctx context.Context, adm *kadm.Client, partitions int32, topics ...string) error {
	resp, err := adm.CreateTopics(ctx, partitions, 1, nil, topics...)
	if err != nil {
		return err
	}
	return resp.Error()
}

// deleteTopics deletes the topics a measurement wrote, so that the
// in-memory broker does not grow from round to round.
func deleteTopics(ctx context.Context, adm *kadm.Client, prefix string, keep ...string) error {
	ts, err := adm.ListTopics(ctx)
	if err != nil {
		return err
	}
	var del []string
	for _, name := range ts.Names() {
		if strings.HasPrefix(name, prefix) && !slices.Contains(keep, name) {
			del = append(del, name)
		}
	}
	if len(del) == 0 {
		return nil
	}
	_, err = adm.DeleteTopics(ctx, del...)
	return err
}

// produceEvents writes evs, as JSON keyed by visitor_id, with franz-go
// (a client independent of the job's), and returns the bytes written.
func produceEvents(ctx context.Context, addrs []string, topic string, n int, next func() Event) (int64, error) {
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

// result is one measurement.
type result struct {
	events  int64
	elapsed time.Duration
	cpu     time.Duration // CPU time of this process (broker included)
	outputs int64
	// The job's tasks' time in Process, Window and commits, summed.
	process, window, commit time.Duration
	commits                 uint64
}

func (r result) rate() float64 { return float64(r.events) / r.elapsed.Seconds() }

func (r result) cpuPerEvent() float64 { return r.cpu.Seconds() * 1e6 / float64(r.events) }

func measureBench(ctx context.Context, c config, stdout, stderr io.Writer) error {
	log := quiet(stderr)
	b, err := embedded.Start(embedded.Options{Partitions: c.partitions})
	if err != nil {
		return err
	}
	defer b.Close()
	addrs := b.Addrs()
	cl, adm, err := benchAdmin(addrs)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := createTopics(ctx, adm, int32(c.partitions), benchInput); err != nil {
		return err
	}
	step := benchSpan / time.Duration(c.bench)
	cfg := genConfig{Seed: 1, Gap: c.gap, Grace: c.grace, Active: max(50, int(30*time.Second/step)), OutOfOrder: 0.05, Late: 0.005}
	cfg.Visitors = 10 * cfg.Active
	g := newSimulator(cfg)
	now := time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)
	var pending []Event
	next := func() Event {
		for len(pending) == 0 {
			pending = g.Next(now.UnixMilli(), pending)
			now = now.Add(step)
		}
		e := pending[0]
		pending = pending[1:]
		return e
	}
	start := time.Now()
	size, err := produceEvents(ctx, addrs, benchInput, c.bench, next)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bench: %d events (%.0f bytes on average, %v of event time, gap %v, grace %v) produced in %s\n",
		c.bench, float64(size)/float64(c.bench), benchSpan, c.gap, c.grace, time.Since(start).Round(time.Millisecond))

	window := time.Second
	if c.windowSet {
		window = c.window
	}
	if c.benchMembers > 1 {
		return measureMembers(ctx, c, addrs, adm, window, stdout, log)
	}
	var ratios []float64
	for round := range c.rounds {
		var raw, job result
		measure := func(what string) error {
			var err error
			prefix := fmt.Sprintf("bench-r%d-", round)
			if what == "raw" {
				if err := createTopics(ctx, adm, int32(c.partitions), prefix+"copy"); err != nil {
					return err
				}
				raw, err = rawCopy(ctx, addrs, benchInput, prefix+"copy", int64(c.bench))
			} else {
				err = profiled(c.cpuprofile, round, func() error {
					job, err = benchJob(ctx, c, addrs, prefix+"sessionize", prefix+"sessions", window, int64(c.bench), log)
					return err
				})
			}
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, what, err)
			}
			return deleteTopics(ctx, adm, prefix)
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
		fmt.Fprintf(stdout, "round %d: (b) sessionize %8.0f ev/s  %5.1f µs CPU/event  (%d snapshots, window %v)\n", round, job.rate(), job.cpuPerEvent(), job.outputs, window)
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

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// profiled runs f under the CPU profiler when path is set, into
// path.<round>.
func profiled(path string, round int, f func() error) error {
	if path != "" {
		path = fmt.Sprintf("%s.%d", path, round)
	}
	stop, err := benchkit.StartProfile(path)
	if err != nil {
		return err
	}
	defer stop()
	return f()
}

// benchJobConfig is the job the benchmarks run over the input.
func benchJobConfig(c config, addrs []string, name, output string, window time.Duration, dir string, log *slog.Logger) jobConfig {
	return jobConfig{
		settings:       settings{Output: output, Gap: c.gap, Grace: c.grace},
		Name:           name,
		Kafka:          stream.KafkaConfig{Brokers: addrs, ClientID: "bench-sessionize"},
		Input:          benchInput,
		Window:         window,
		CommitInterval: c.commit,
		DataDir:        dir,
		Logger:         log,
	}
}

// benchJob runs the sessionize job over the input until its checkpoints
// cover all want events, then stops it (the shutdown is not timed).
func benchJob(ctx context.Context, c config, addrs []string, name, output string, window time.Duration, want int64, log *slog.Logger) (result, error) {
	dir, err := os.MkdirTemp("", "sessionize-bench-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	stats := &Stats{}
	job := newJob(benchJobConfig(c, addrs, name, output, window, dir, log), stats)
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
				return result{}, fmt.Errorf("job stopped early: %v", runErr)
			}
			break wait
		case <-tick.C:
			ts := job.Stats()
			if ts == nil {
				continue
			}
			last = ts
			if !stopping && processed(ts) >= want {
				stopping = true
				cancel()
			}
			if checkpointed(ts) >= want {
				break wait
			}
		}
	}
	res := result{events: want, elapsed: time.Since(start), cpu: benchkit.CPUTime() - cpu0, outputs: int64(stats.Totals().Snapshots)}
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

// processed sums the events every task has processed.
func processed(stats []task.TaskStats) int64 {
	var n int64
	for _, s := range stats {
		n += int64(s.Processed + s.Skipped + s.DeadLettered)
	}
	return n
}

// checkpointed sums the next offsets of every task's last checkpoint: the
// input events its checkpoints cover (inputs start at offset 0).
func checkpointed(stats []task.TaskStats) int64 {
	var n int64
	for _, s := range stats {
		for _, off := range s.LastCheckpoint.Inputs {
			n += off
		}
	}
	return n
}

// quiet logs warnings and errors only.
func quiet(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// rawCopy is the baseline, benchkit.RawCopy: the least a sarama program
// must do to copy the input to output with Grete's producer guarantees.
func rawCopy(ctx context.Context, addrs []string, input, output string, want int64) (result, error) {
	r, err := benchkit.RawCopy(ctx, addrs, input, output)
	if err == nil && r.Messages != want {
		err = fmt.Errorf("raw copy: copied %d events, want %d", r.Messages, want)
	}
	return result{events: r.Messages, elapsed: r.Elapsed, cpu: r.CPU, outputs: r.Outputs}, err
}

// measureRSS is -rss: the peak RSS of a job process holding c.rss open
// sessions.
func measureRSS(ctx context.Context, c config, stdout, stderr io.Writer) error {
	b, err := embedded.Start(embedded.Options{Partitions: c.partitions})
	if err != nil {
		return err
	}
	defer b.Close()
	addrs := b.Addrs()
	cl, adm, err := benchAdmin(addrs)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := createTopics(ctx, adm, int32(c.partitions), benchInput); err != nil {
		return err
	}
	// Each event starts a session of its own; ten minutes of event time
	// in all, so none closes under the default gap of 30 minutes.
	base := time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	span := (10 * time.Minute).Milliseconds()
	i := 0
	next := func() Event {
		i++
		id := strconv.Itoa(i)
		return Event{
			EventID: "e" + id, VisitorID: "v" + id, SessionID: "s" + id, TS: base + int64(i)*span/int64(c.rss),
			Type: "pageview", Browser: browsers[i%len(browsers)], Country: countries[i%len(countries)],
			IP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
		}
	}
	start := time.Now()
	size, err := produceEvents(ctx, addrs, benchInput, c.rss, next)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rss: %d events, each a session of its own (%.0f bytes on average), produced in %s\n",
		c.rss, float64(size)/float64(c.rss), time.Since(start).Round(time.Millisecond))

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"-rss-child", "-brokers", strings.Join(addrs, ","), "-expect", strconv.Itoa(c.rss),
		"-partitions", strconv.Itoa(c.partitions), "-gap", c.gap.String(), "-grace", c.grace.String(), "-commit", c.commit.String()}
	if c.cpuprofile != "" {
		args = append(args, "-cpuprofile", c.cpuprofile)
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	stdin, err := cmd.StdinPipe() // the child stops when this process goes
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

// rssChild is the job process of -rss: it runs the job until it has
// processed c.expect events and every task has emitted its sessions once
// after that, prints the open sessions, and exits. It gives up when stdin
// closes (the parent is gone).
func rssChild(ctx context.Context, c config, stdin io.Reader, stdout, stderr io.Writer) error {
	if c.brokers == "" || c.expect < 1 {
		return errors.New("-rss-child needs -brokers and -expect")
	}
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
	stats := &Stats{}
	job := newJob(jobConfig{
		settings:       settings{Output: "bench-rss-sessions", Gap: c.gap, Grace: c.grace},
		Name:           "bench-rss",
		Kafka:          stream.KafkaConfig{Brokers: strings.Split(c.brokers, ","), ClientID: "bench-rss"},
		Input:          benchInput,
		Window:         time.Second,
		CommitInterval: c.commit,
		DataDir:        dir,
		Logger:         quiet(stderr),
	}, stats)
	jobCtx, stopJob := context.WithCancel(ctx)
	defer stopJob()
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- job.Run(jobCtx) }()
	// Peak memory per phase, sampled: while processing, then while
	// emitting every session.
	mem := newMemPeak()
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
					in, time.Since(start).Round(time.Millisecond), mib(mem.heap), mib(mem.total))
				mem = newMemPeak()
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
		t.Open, t.Snapshots, mib(mem.heap), mib(mem.total))
	stopJob()
	if err := <-errc; err != nil {
		return err
	}
	// The process's own high-water mark: the parent's view of a child's
	// rusage would include the parent's peak (Go starts children with
	// vfork).
	rss := benchkit.PeakRSS()
	fmt.Fprintf(stdout, "result: job process peak RSS %s holding %d open sessions (%.0f bytes per session)\n",
		mib(uint64(rss)), t.Open, float64(rss)/float64(max(1, t.Open)))
	return nil
}

// memPeak samples the Go runtime's memory: live and dead heap objects, and
// all the memory the runtime has mapped.
type memPeak struct {
	samples     []metrics.Sample
	heap, total uint64
}

func newMemPeak() *memPeak {
	return &memPeak{samples: []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}}
}

func (m *memPeak) sample() {
	metrics.Read(m.samples)
	m.heap = max(m.heap, m.samples[0].Value.Uint64())
	m.total = max(m.total, m.samples[1].Value.Uint64())
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// benchMembers runs the job as members group members (each with its own
// data directory and instance id, as separate processes would be) over the
// input. The clock starts once the members share the tasks (the first
// rebalances are start-up, not throughput) and stops when they have
// processed all want events between them; the result counts the events
// processed in between. Stopping is not timed.
func benchMembers(ctx context.Context, c config, addrs []string, name, output string, window time.Duration, want int64, members int, log *slog.Logger) (result, error) {
	dir, err := os.MkdirTemp("", "sessionize-bench-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stats := &Stats{}
	jobs := make([]*task.Job, members)
	errc := make(chan error, members)
	for i := range jobs {
		jc := benchJobConfig(c, addrs, name, output, window, fmt.Sprintf("%s/m%d", dir, i), log)
		jc.InstanceID = fmt.Sprintf("m%d", i)
		jobs[i] = newJob(jc, stats)
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
			return result{}, fmt.Errorf("a member stopped early: %v", err)
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
		return result{}, fmt.Errorf("the members settled after %d of %d events: use more events", from, want)
	}
	res := result{events: int64(sum) - from, elapsed: time.Since(start), cpu: benchkit.CPUTime() - cpu0, outputs: int64(stats.Totals().Snapshots)}
	cancel()
	var errs []error
	for range jobs {
		errs = append(errs, <-errc)
	}
	return res, errors.Join(errs...)
}

// measureMembers compares the job run by one group member with the job
// run by c.benchMembers members, in alternating order, on the same input.
func measureMembers(ctx context.Context, c config, addrs []string, adm *kadm.Client, window time.Duration, stdout io.Writer, log *slog.Logger) error {
	var ratios []float64
	for round := range c.rounds {
		res := map[int]result{}
		order := []int{1, c.benchMembers}
		if round%2 == 1 {
			order = []int{c.benchMembers, 1}
		}
		for _, m := range order {
			prefix := fmt.Sprintf("bench-r%d-m%d-", round, m)
			r, err := benchMembers(ctx, c, addrs, prefix+"sessionize", prefix+"sessions", window, int64(c.bench), m, log)
			if err != nil {
				return fmt.Errorf("round %d, %d members: %w", round, m, err)
			}
			if err := deleteTopics(ctx, adm, prefix); err != nil {
				return err
			}
			res[m] = r
			fmt.Fprintf(stdout, "round %d: %d member(s) %8.0f ev/s  %5.1f µs CPU/event\n", round, m, r.rate(), r.cpuPerEvent())
		}
		ratio := res[c.benchMembers].rate() / res[1].rate()
		ratios = append(ratios, ratio)
		fmt.Fprintf(stdout, "round %d: %d members / 1 = %.2f\n", round, c.benchMembers, ratio)
	}
	fmt.Fprintf(stdout, "result: %d members / 1 member = %.2f (median of %d rounds; on 2 cores, 1.0 means no regression)\n", c.benchMembers, median(ratios), len(ratios))
	return nil
}
