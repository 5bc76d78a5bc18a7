package main

// The -bench mode measures, in one run on an embedded broker (in this
// process), what Grete costs over plain sarama on this program's two heavy
// paths:
//
//	(b) restore: -bench-keys keys with -bench-value-byte values are written
//	    to a store's changelog (-partitions partitions, in the changelog's
//	    format: engine key 'd'+key, value 0x00+bytes), with one checkpoint
//	    per task that covers them, as a job that wrote them and committed
//	    would have left them. A child process then starts a job with that
//	    store and an empty data directory (a new machine); the clock runs
//	    from Job.Run until every task's Init is called, which Grete does
//	    only once every store is restored, so connecting, loading
//	    checkpoints and opening Pebble are included. Another child reads
//	    the same changelog with sarama partition consumers (Grete's sarama
//	    settings), from the oldest offset to the end, and does nothing
//	    else. Target: restore rate / raw rate >= 0.8.
//	(c) counting: -bench-events generated events, keyed by experiment, are
//	    produced into an input topic. A child runs the program's counting
//	    job (fresh data directory) until its final checkpoints cover every
//	    event; another child copies the input to an output topic with a
//	    sarama consumer and one AsyncProducer configured like Grete's
//	    (idempotent, acks=all), until every copy is acknowledged. Target:
//	    job rate / copy rate >= 0.7.
//
// Each measurement runs in a child process of its own (this program,
// re-executed with -bench-child), so that its CPU time and memory are its
// own and not the broker's. A child stops when its standard input closes,
// so it never outlives the program. Peak memory is the child's VmHWM:
// its rusage ru_maxrss is printed too, but it starts from the parent's
// peak (see benchkit.PeakRSS). With -bench-rounds R the measurements run R times in
// alternating order and the medians are compared; on a shared machine use
// several rounds, and compare CPU per event as well as rates.
//
// Flags: -bench-what (restore,count), -bench-keys, -bench-value,
// -bench-events, -bench-rounds, -bench-cpuprofile, -bench-log-level,
// -bench-timeout; -partitions, -experiments, -window and -commit apply to
// the jobs measured.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/benchkit"
	"github.com/grete-go/grete/internal/embedded"
	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// bench holds the -bench flags.
type bench struct {
	on         bool
	keys       int
	valueSize  int
	events     int
	rounds     int
	cpuprofile string
	timeout    time.Duration
	logLevel   string
	what       string

	// Hidden: the child processes' parameters.
	child  string // restore, raw-consume, count or raw-copy
	job    string
	topic  string
	copyTo string
	expect int64
	round  int
}

func (b *bench) flags(fs *flag.FlagSet) {
	fs.BoolVar(&b.on, "bench", false, "run the benchmarks (restore vs raw consume; counting job vs raw copy) and exit")
	fs.IntVar(&b.keys, "bench-keys", 1_000_000, "keys in the changelog of the restore benchmark")
	fs.IntVar(&b.valueSize, "bench-value", 100, "value size in bytes for the restore benchmark")
	fs.IntVar(&b.events, "bench-events", 1_000_000, "events for the counting benchmark")
	fs.IntVar(&b.rounds, "bench-rounds", 1, "rounds of each benchmark, in alternating order")
	fs.StringVar(&b.cpuprofile, "bench-cpuprofile", "", "write a CPU profile of every child to `prefix`.<what>.<round>.pprof")
	fs.DurationVar(&b.timeout, "bench-timeout", 30*time.Minute, "give up after this long")
	fs.StringVar(&b.what, "bench-what", "restore,count", "which benchmarks to run: `list` of restore and count")
	fs.StringVar(&b.logLevel, "bench-log-level", "warn", "log `level` of the benchmark's children")
	fs.StringVar(&b.child, "bench-child", "", "internal: run one measurement")
	fs.StringVar(&b.job, "bench-job", "", "internal: job name of the measurement")
	fs.StringVar(&b.topic, "bench-topic", "", "internal: topic the measurement reads")
	fs.StringVar(&b.copyTo, "bench-copy-to", "", "internal: topic the raw copy writes")
	fs.Int64Var(&b.expect, "bench-expect", 0, "internal: records the measurement handles")
	fs.IntVar(&b.round, "bench-round", 0, "internal: round number, for profile names")
}

// childResult is what a child prints, as one "result {json}" line.
type childResult struct {
	Records int64         `json:"records"`
	Bytes   int64         `json:"bytes"`
	Elapsed time.Duration `json:"elapsed"`
	Restore time.Duration `json:"restore,omitempty"` // longest restore of one task (restore)
	Startup time.Duration `json:"startup,omitempty"` // until the first record
	CPU     time.Duration `json:"cpu"`
	HWM     int64         `json:"hwm"` // the child's peak RSS (VmHWM), bytes
	MaxRSS  int64         `json:"-"`   // bytes, from the parent's rusage: see peakRSS
}

func (r childResult) rate() float64 { return float64(r.Records) / r.Elapsed.Seconds() }

// memory describes the child's peak RSS: its own (VmHWM), and what rusage
// says, which also counts the parent's peak (see benchkit.PeakRSS).
func (r childResult) memory() string {
	return fmt.Sprintf("peak RSS %.1f MiB (rusage ru_maxrss %.1f MiB)", float64(r.HWM)/(1<<20), float64(r.MaxRSS)/(1<<20))
}

const (
	benchStore   = "kv"
	benchRestore = "bench-restore"
)

func runBench(ctx context.Context, c config, stdout, stderr io.Writer) error {
	b := c.bench
	if b.keys < 1 || b.events < 1 || b.rounds < 1 || b.valueSize < 0 {
		return errors.New("-bench-keys, -bench-events and -bench-rounds must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	broker, err := embedded.Start(embedded.Options{Partitions: c.partitions})
	if err != nil {
		return err
	}
	defer broker.Close()
	addrs := broker.Addrs()
	c.brokers = strings.Join(addrs, ",") // for the children
	tmp, err := os.MkdirTemp("", "topexperiments-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(stdout, "bench: embedded broker at %s (in this process); GOMAXPROCS %d; %d partitions\n",
		strings.Join(addrs, ","), runtime.GOMAXPROCS(0), c.partitions)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(50_000),
		kgo.RecordPartitioner(kgo.ManualPartitioner())) // records name their partition
	if err != nil {
		return err
	}
	defer cl.Close()

	var restores, raws, counts, copies []childResult
	var what []string
	for w := range strings.SplitSeq(b.what, ",") {
		if w = strings.TrimSpace(w); w != "restore" && w != "count" {
			return fmt.Errorf("-bench-what: unknown benchmark %q (want restore, count)", w)
		}
		what = append(what, w)
	}
	if slices.Contains(what, "restore") {
		if err := benchRestores(ctx, c, cl, tmp, stdout, stderr, &restores, &raws); err != nil {
			return err
		}
	}
	if slices.Contains(what, "count") {
		if err := benchCounts(ctx, c, cl, tmp, stdout, stderr, &counts, &copies); err != nil {
			return err
		}
	}

	rate := func(rs []childResult) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = r.rate()
		}
		return median(xs)
	}
	rss := func(rs []childResult) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = float64(r.HWM) / (1 << 20)
		}
		return median(xs)
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	if len(restores) > 0 {
		rb := rate(restores) / rate(raws)
		fmt.Fprintf(stdout, "result: (b) restore %.0f rec/s vs raw sarama consume %.0f rec/s: ratio %.2f (target >= 0.8: %s); restore peak RSS %.1f MiB (raw consume %.1f MiB)\n",
			rate(restores), rate(raws), rb, verdict(rb >= 0.8), rss(restores), rss(raws))
	}
	if len(counts) > 0 {
		rc := rate(counts) / rate(copies)
		fmt.Fprintf(stdout, "result: (c) counting job %.0f ev/s vs raw sarama copy %.0f ev/s: ratio %.2f (target >= 0.7: %s)\n",
			rate(counts), rate(copies), rc, verdict(rc >= 0.7))
	}
	return nil
}

// benchRestores is (b): restore vs raw consume, b.rounds times.
func benchRestores(ctx context.Context, c config, cl *kgo.Client, tmp string, stdout, stderr io.Writer, restores, raws *[]childResult) error {
	b := c.bench
	changelog := benchRestore + "-" + benchStore + "-changelog"
	input := benchRestore + "-in"
	start := time.Now()
	if err := fillChangelog(ctx, cl, strings.Split(c.brokers, ","), c.partitions, b.keys, b.valueSize, input, changelog); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bench: (b) %d keys with %d-byte values written to %s and checkpointed in %s\n",
		b.keys, b.valueSize, changelog, time.Since(start).Round(time.Millisecond))
	for r := range b.rounds {
		restore := func() error {
			dir := filepath.Join(tmp, fmt.Sprintf("restore-%d", r))
			res, err := runChild(ctx, c, stderr, r, "restore", "-bench-job", benchRestore, "-bench-topic", input,
				"-data-dir", dir, "-bench-expect", strconv.Itoa(b.keys))
			if err == nil {
				*restores = append(*restores, res)
				fmt.Fprintf(stdout, "bench: (b) round %d: restore     %8d records in %-9s = %8.0f rec/s  %5.1f MB/s  CPU %-8s %s; longest task restore %s\n",
					r+1, res.Records, res.Elapsed.Round(time.Millisecond), res.rate(), float64(res.Bytes)/res.Elapsed.Seconds()/1e6,
					res.CPU.Round(time.Millisecond), res.memory(), res.Restore.Round(time.Millisecond))
			}
			os.RemoveAll(dir)
			return err
		}
		raw := func() error {
			res, err := runChild(ctx, c, stderr, r, "raw-consume", "-bench-topic", changelog, "-bench-expect", strconv.Itoa(b.keys))
			if err == nil {
				*raws = append(*raws, res)
				fmt.Fprintf(stdout, "bench: (b) round %d: raw consume %8d records in %-9s = %8.0f rec/s  %5.1f MB/s  CPU %-8s %s\n",
					r+1, res.Records, res.Elapsed.Round(time.Millisecond), res.rate(), float64(res.Bytes)/res.Elapsed.Seconds()/1e6,
					res.CPU.Round(time.Millisecond), res.memory())
			}
			return err
		}
		if err := alternate(r, restore, raw); err != nil {
			return err
		}
	}
	return deleteTopics(ctx, cl, changelog, input, benchRestore+"-checkpoints")
}

// benchCounts is (c): the counting job vs a raw copy, b.rounds times.
func benchCounts(ctx context.Context, c config, cl *kgo.Client, tmp string, stdout, stderr io.Writer, counts, copies *[]childResult) error {
	b := c.bench
	events := "bench-events"
	start := time.Now()
	if err := produceEvents(ctx, cl, events, c.partitions, b.events, c.experiments); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bench: (c) %d events over %d experiments produced in %s\n", b.events, c.experiments, time.Since(start).Round(time.Millisecond))
	for r := range b.rounds {
		job := fmt.Sprintf("bench-count-%d", r)
		output := fmt.Sprintf("bench-top-%d", r)
		copyTo := fmt.Sprintf("bench-copy-%d", r)
		count := func() error {
			dir := filepath.Join(tmp, job)
			res, err := runChild(ctx, c, stderr, r, "count", "-bench-job", job, "-bench-topic", events, "-output", output,
				"-data-dir", dir, "-bench-expect", strconv.Itoa(b.events))
			if err == nil {
				*counts = append(*counts, res)
				fmt.Fprintf(stdout, "bench: (c) round %d: counting job %8d events in %-9s = %8.0f ev/s  CPU %5.2f µs/event  %s\n",
					r+1, res.Records, res.Elapsed.Round(time.Millisecond), res.rate(), res.CPU.Seconds()*1e6/float64(res.Records), res.memory())
				fmt.Fprintf(stdout, "bench: (c)          (first event processed %s after Run)\n", res.Startup.Round(time.Millisecond))
			}
			os.RemoveAll(dir)
			return err
		}
		raw := func() error {
			if err := createTopics(ctx, cl, int32(c.partitions), copyTo); err != nil {
				return err
			}
			res, err := runChild(ctx, c, stderr, r, "raw-copy", "-bench-topic", events, "-bench-copy-to", copyTo, "-bench-expect", strconv.Itoa(b.events))
			if err == nil {
				*copies = append(*copies, res)
				fmt.Fprintf(stdout, "bench: (c) round %d: raw copy     %8d events in %-9s = %8.0f ev/s  CPU %5.2f µs/event  %s\n",
					r+1, res.Records, res.Elapsed.Round(time.Millisecond), res.rate(), res.CPU.Seconds()*1e6/float64(res.Records), res.memory())
			}
			return err
		}
		if err := alternate(r, count, raw); err != nil {
			return err
		}
		if err := deleteTopics(ctx, cl, copyTo, output, partialTopic(output), job+"-"+countsStore+"-changelog", job+"-checkpoints"); err != nil {
			return err
		}
	}

	return deleteTopics(ctx, cl, events)
}

// alternate runs a then b in even rounds, b then a in odd ones.
func alternate(round int, a, b func() error) error {
	if round%2 == 1 {
		a, b = b, a
	}
	if err := a(); err != nil {
		return err
	}
	return b()
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// fillChangelog writes keys records in the changelog format of a plain
// (non-TTL) store to changelog, spread over its partitions, and one
// checkpoint per task that covers them, as a job that had written them and
// committed would have left them.
func fillChangelog(ctx context.Context, cl *kgo.Client, addrs []string, partitions, keys, valueSize int, input, changelog string) error {
	if err := createTopics(ctx, cl, int32(partitions), input); err != nil {
		return err
	}
	compact := "compact"
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, int32(partitions), 1, map[string]*string{"cleanup.policy": &compact}, changelog)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", changelog, err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	perPartition := make([]int64, partitions)
	var (
		mu    sync.Mutex
		first error
	)
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			first = cmpErr(first, err)
			mu.Unlock()
		}
	}
	for i := range keys {
		k := fmt.Appendf(make([]byte, 0, 16), "dkey-%09d", i)
		v := make([]byte, 1+valueSize) // header 0: a plain value
		for j := 1; j < len(v); j += 8 {
			x := rng.Uint64()
			for b := 0; b < 8 && j+b < len(v); b++ {
				v[j+b] = 'a' + byte(x>>(8*b))%26
			}
		}
		p := int32(i % partitions)
		perPartition[p]++
		cl.Produce(ctx, &kgo.Record{Topic: changelog, Partition: p, Key: k, Value: v}, done)
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if first != nil {
		return fmt.Errorf("produce changelog: %w", first)
	}
	mgr, err := checkpoint.NewKafka(context.Background(), stream.KafkaConfig{Brokers: addrs, ClientID: "bench"}, benchRestore, checkpoint.KafkaOptions{})
	if err != nil {
		return err
	}
	defer mgr.Close()
	for p := range partitions {
		cp := checkpoint.Checkpoint{
			ID:         1,
			Task:       fmt.Sprintf("task-%d", p),
			Inputs:     map[stream.Partition]int64{{Topic: input, Partition: int32(p)}: 0},
			Changelogs: map[string]int64{benchStore: perPartition[p] - 1},
			WrittenAt:  time.Now(),
		}
		if err := mgr.Write(ctx, cp); err != nil {
			return err
		}
	}
	return nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// produceEvents writes n generated events (seeded) to a new topic, keyed by
// experiment.
func produceEvents(ctx context.Context, cl *kgo.Client, topic string, partitions, n, experiments int) error {
	if err := createTopics(ctx, cl, int32(partitions), topic); err != nil {
		return err
	}
	var (
		mu    sync.Mutex
		first error
	)
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			first = cmpErr(first, err)
			mu.Unlock()
		}
	}
	g := newTraffic(1, experiments)
	at := time.UnixMilli(1_700_000_000_000)
	partitioner := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
	for i := range n {
		k, v := g.next(at.Add(time.Duration(i) * time.Millisecond))
		r := &kgo.Record{Topic: topic, Key: k, Value: v}
		r.Partition = int32(partitioner.Partition(r, partitions))
		cl.Produce(ctx, r, done)
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if first != nil {
		return fmt.Errorf("produce events: %w", first)
	}
	return nil
}

func createTopics(ctx context.Context, cl *kgo.Client, partitions int32, topics ...string) error {
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, partitions, 1, nil, topics...)
	if err != nil {
		return err
	}
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// deleteTopics gives the broker's memory back between measurements.
func deleteTopics(ctx context.Context, cl *kgo.Client, topics ...string) error {
	resp, err := kadm.NewClient(cl).DeleteTopics(ctx, topics...)
	if err != nil {
		return err
	}
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("delete topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// runChild re-executes this program with -bench-child what, waits for it,
// and returns its result with its peak RSS.
func runChild(ctx context.Context, c config, stderr io.Writer, round int, what string, args ...string) (childResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return childResult{}, err
	}
	args = append([]string{"-bench-child", what, "-bench-round", strconv.Itoa(round),
		"-brokers", c.brokers, "-partitions", strconv.Itoa(c.partitions),
		"-top", strconv.Itoa(c.top), "-window", c.window.String(), "-commit", c.commit.String(),
		"-log-level", c.bench.logLevel, "-bench-cpuprofile", c.bench.cpuprofile}, args...)
	cmd := exec.CommandContext(ctx, exe, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, stderr
	// The child stops when its stdin closes: at the latest when this
	// process exits, however it exits.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return childResult{}, err
	}
	defer stdin.Close()
	if err := cmd.Run(); err != nil {
		return childResult{}, fmt.Errorf("%s child: %w\n%s", what, err, out.String())
	}
	var res childResult
	sc := bufio.NewScanner(&out)
	found := false
	for sc.Scan() {
		if js, ok := strings.CutPrefix(sc.Text(), "result "); ok {
			if err := json.Unmarshal([]byte(js), &res); err != nil {
				return res, fmt.Errorf("%s child: %w", what, err)
			}
			found = true
		}
	}
	if !found {
		return res, fmt.Errorf("%s child printed no result:\n%s", what, out.String())
	}
	res.MaxRSS = maxRSS(cmd.ProcessState)
	return res, nil
}

// runBenchChild is one measurement, in a child process.
func runBenchChild(ctx context.Context, c config, stdout io.Writer) error {
	b := c.bench
	if c.brokers == "" || b.topic == "" || b.expect < 1 {
		return errors.New("-bench-child needs -brokers, -bench-topic and -bench-expect")
	}
	ctx, cancel := benchkit.UntilClosed(ctx, os.Stdin)
	defer cancel()
	if b.cpuprofile != "" {
		stop, err := benchkit.StartProfile(fmt.Sprintf("%s.%s.%d.pprof", b.cpuprofile, b.child, b.round))
		if err != nil {
			return err
		}
		defer stop()
	}
	kc := stream.KafkaConfig{Brokers: strings.Split(c.brokers, ","), ClientID: "bench-" + b.child}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	log.Info("bench child started", "child", b.child)
	var res childResult
	var err error
	switch b.child {
	case "restore":
		res, err = benchRestoreJob(ctx, kc, b, c.dataDir, c.partitions, log)
	case "raw-consume":
		res, err = rawConsume(ctx, kc, b.topic, b.expect)
	case "count":
		counters := &Counters{}
		job := countJob(b.job, kc, b.topic, c.output, c.top, c.window, counters)
		job.DataDir, job.CommitInterval, job.Logger = c.dataDir, c.commit, log
		res, err = runUntilCovered(ctx, job, b.expect)
	case "raw-copy":
		res, err = rawCopy(ctx, kc, b.topic, b.copyTo, b.expect)
	default:
		err = fmt.Errorf("unknown -bench-child %q", b.child)
	}
	if err != nil {
		return err
	}
	res.CPU = benchkit.CPUTime()
	res.HWM = benchkit.PeakRSS()
	js, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "result %s\n", js)
	return err
}

// readyTask tells when it is initialised: Grete calls Init only after
// every store of every task is restored.
type readyTask struct{ ready chan<- struct{} }

func (t readyTask) Init(context.Context, task.Context) error {
	t.ready <- struct{}{}
	return nil
}

func (readyTask) Process(context.Context, stream.Message, task.Collector, task.Coordinator) error {
	return nil
}

// benchRestoreJob starts a job whose store must be restored from scratch
// and times it until every task is initialised.
func benchRestoreJob(ctx context.Context, kc stream.KafkaConfig, b bench, dataDir string, partitions int, log *slog.Logger) (childResult, error) {
	var res childResult
	ready := make(chan struct{}, partitions)
	job := &task.Job{
		Name:    b.job,
		Kafka:   kc,
		Inputs:  []string{b.topic},
		Stores:  []store.Spec{{Name: benchStore}},
		DataDir: dataDir,
		Logger:  log,
		NewTask: func() task.StreamTask { return readyTask{ready: ready} },
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- job.Run(ctx) }()
	for range partitions {
		select {
		case <-ready:
		case err := <-errc:
			return res, fmt.Errorf("restore job returned before every task was ready: %v", err)
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	res.Elapsed = time.Since(start)
	// A task shows in Stats only once it runs, a moment after its Init.
	stats := job.Stats()
	for len(stats) < partitions {
		select {
		case err := <-errc:
			return res, fmt.Errorf("restore job returned before every task ran: %v", err)
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(time.Millisecond):
		}
		stats = job.Stats()
	}
	for _, s := range stats {
		st := s.Stores[benchStore]
		res.Records += int64(st.RestoreRecords)
		res.Bytes += int64(st.RestoreBytes)
		res.Restore = max(res.Restore, st.RestoreTime)
	}
	cancel()
	if err := <-errc; err != nil {
		return res, err
	}
	if res.Records != b.expect {
		return res, fmt.Errorf("restored %d records, want %d", res.Records, b.expect)
	}
	return res, nil
}

// rawConsume is the baseline of a restore, kafka.RawConsume.
func rawConsume(ctx context.Context, kc stream.KafkaConfig, topic string, expect int64) (childResult, error) {
	r, err := kafka.RawConsume(ctx, kc, topic)
	res := childResult{Records: r.Records, Bytes: r.Bytes, Elapsed: r.Elapsed, Startup: r.Startup}
	if err == nil && res.Records != expect {
		err = fmt.Errorf("consumed %d records, want %d", res.Records, expect)
	}
	return res, err
}

// rawCopy is the baseline, benchkit.RawCopy: every record of input copied
// to output with sarama configured like Grete (idempotent, acks=all, same
// flush settings and partitioner), from connecting until every copy is
// acknowledged.
func rawCopy(ctx context.Context, kc stream.KafkaConfig, input, output string, expect int64) (childResult, error) {
	r, err := benchkit.RawCopy(ctx, kc.Brokers, input, output)
	if err == nil && r.Messages != expect {
		err = fmt.Errorf("raw copy: copied %d records, want %d", r.Messages, expect)
	}
	return childResult{Records: r.Messages, Elapsed: r.Elapsed, Startup: r.Startup}, err
}

// runUntilCovered runs job until it has processed want input messages,
// then stops it; the clock runs from Run until the final checkpoints cover
// every input message (so every output and changelog record is
// acknowledged). Inputs must start at offset 0.
func runUntilCovered(ctx context.Context, job *task.Job, want int64) (childResult, error) {
	var res childResult
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- job.Run(ctx) }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	processed := func(stats []task.TaskStats) (n int64) {
		for _, s := range stats {
			n += int64(s.Processed + s.Skipped + s.DeadLettered)
		}
		return n
	}
	covered := func(stats []task.TaskStats) (n int64) {
		for _, s := range stats {
			for _, off := range s.LastCheckpoint.Inputs {
				n += off
			}
		}
		return n
	}
	for {
		n := processed(job.Stats())
		if n > 0 && res.Startup == 0 {
			res.Startup = time.Since(start)
		}
		if n >= want {
			break
		}
		select {
		case err := <-errc:
			return res, fmt.Errorf("job returned early: %v", err)
		case <-tick.C:
		}
	}
	cancel()
	var runErr error
	returned := false
	for !returned {
		stats := job.Stats()
		if stats == nil || covered(stats) >= want {
			break
		}
		select {
		case runErr = <-errc:
			returned = true
		case <-tick.C:
		}
	}
	res.Elapsed = time.Since(start)
	if !returned {
		runErr = <-errc
	}
	if runErr != nil {
		return res, runErr
	}
	res.Records = want
	return res, nil
}
