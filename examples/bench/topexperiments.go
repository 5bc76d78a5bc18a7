package main

// The restore and counting commands measure, each in one run on an
// embedded broker (in this process), what Grete costs over plain sarama on
// the two heavy paths of the topexperiments example (package
// examples/topexperiments/experiments):
//
//	go run ./examples/bench restore -keys 1000000 -value 100   # (b)
//	go run ./examples/bench counting -events 1000000           # (c)
//
//	(b) restore: -keys keys with -value-byte values are written to a
//	    store's changelog (-partitions partitions, in the changelog's
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
//	(c) counting: -events generated events over -experiments experiments,
//	    keyed by experiment, are produced into an input topic. A child
//	    runs the example's counting job (experiments.CountJob, fresh data
//	    directory) until its final checkpoints cover every event; another
//	    child copies the input to an output topic with a sarama consumer
//	    and one AsyncProducer configured like Grete's (idempotent,
//	    acks=all), until every copy is acknowledged. Target: job rate /
//	    copy rate >= 0.7.
//
// Each measurement runs in a child process of its own (this program,
// re-executed as child-restore or child-counting, with -raw for the
// baseline), so that its CPU time and memory are its own and not the
// broker's. A child stops when its standard input closes, so it never
// outlives the program. Peak memory is the child's VmHWM: its rusage
// ru_maxrss is printed too, but it starts from the parent's peak (see
// benchkit.PeakRSS). With -rounds R the measurements run R times in
// alternating order and the medians are compared; on a shared machine use
// several rounds, and compare CPU per event as well as rates.
//
// Flags of both commands: -partitions, -rounds, -cpuprofile (a profile of
// every child, <prefix>.<what>.<round>.pprof), -log-level (of the
// children), -timeout. restore: -keys, -value. counting: -events,
// -experiments, and -top, -window and -commit of the job measured.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/examples/kit"
	"github.com/grete-go/grete/examples/topexperiments/experiments"
	"github.com/grete-go/grete/internal/benchkit"
	"github.com/grete-go/grete/internal/embedded"
	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func init() {
	register(command{name: "restore", summary: "topexperiments: restoring a store of -keys keys from its changelog vs a raw sarama consume of it",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			var c topexpConfig
			parse := flags("restore", stderr, func(fs *flag.FlagSet) {
				c.flags(fs)
				fs.IntVar(&c.keys, "keys", 1_000_000, "keys in the store's changelog")
				fs.IntVar(&c.valueSize, "value", 100, "value size in `bytes`")
			})
			if err := parse(args, func() error { return c.check(c.keys > 0 && c.valueSize >= 0) }); err != nil {
				return err
			}
			return topexpBench(ctx, c, stdout, stderr, restoreBench)
		}})
	register(command{name: "counting", summary: "topexperiments: the counting job vs a raw sarama copy of its -events events",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			var c topexpConfig
			parse := flags("counting", stderr, func(fs *flag.FlagSet) {
				c.flags(fs)
				fs.IntVar(&c.events, "events", 1_000_000, "generated events to count")
				fs.IntVar(&c.experiments, "experiments", 500, "distinct experiments in the events (Zipf-distributed)")
				c.job.flags(fs)
			})
			if err := parse(args, func() error { return c.check(c.events > 0 && c.experiments > 0 && c.job.ok()) }); err != nil {
				return err
			}
			return topexpBench(ctx, c, stdout, stderr, countingBench)
		}})
	register(command{name: "child-restore", child: true, summary: "restore the restore benchmark's store (-raw: consume its changelog) and print the result",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			var c topexpChildConfig
			parse := flags("child-restore", stderr, func(fs *flag.FlagSet) {
				c.flags(fs, "restore (raw-consume with -raw)", "consume the changelog with sarama instead")
				fs.IntVar(&c.partitions, "partitions", 8, "partitions of the changelog: the job's tasks")
			})
			if err := parse(args, c.check); err != nil {
				return err
			}
			what := "restore"
			if c.raw {
				what = "raw-consume"
			}
			return topexpChild(ctx, c, what, stdout, stderr, func(ctx context.Context, kc stream.KafkaConfig, log *slog.Logger) (topexpResult, error) {
				if c.raw {
					return restoreRawConsume(ctx, kc, c.expect)
				}
				return restoreRunJob(ctx, kc, c.dataDir, c.partitions, c.expect, log)
			})
		}})
	register(command{name: "child-counting", child: true, summary: "run the counting job (-raw: a raw sarama copy) over -expect events and print the result",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			var c topexpChildConfig
			parse := flags("child-counting", stderr, func(fs *flag.FlagSet) {
				c.flags(fs, "count (raw-copy with -raw)", "copy the input with sarama instead")
				fs.StringVar(&c.input, "input", "", "input `topic`")
				fs.StringVar(&c.name, "name", "", "job name `prefix` of the counting job")
				fs.StringVar(&c.output, "output", "", "global-top `topic` of the example: the counting job writes its partial tops to <output>-partial")
				fs.StringVar(&c.copyTo, "copy-to", "", "output `topic` of the raw copy")
				c.job.flags(fs)
			})
			if err := parse(args, func() error {
				if err := c.check(); err != nil {
					return err
				}
				if c.input == "" || (c.raw && c.copyTo == "") || (!c.raw && (c.name == "" || c.output == "" || !c.job.ok())) {
					return errors.New("needs -input, and -copy-to with -raw, -name and -output without")
				}
				return nil
			}); err != nil {
				return err
			}
			what := "count"
			if c.raw {
				what = "raw-copy"
			}
			return topexpChild(ctx, c, what, stdout, stderr, func(ctx context.Context, kc stream.KafkaConfig, log *slog.Logger) (topexpResult, error) {
				if c.raw {
					return countingRawCopy(ctx, kc, c.input, c.copyTo, c.expect)
				}
				job := c.job.countJob(c.name, kc, c.input, c.output)
				job.DataDir, job.Logger = c.dataDir, log
				return countingRunJob(ctx, job, c.expect)
			})
		}})
}

// topexpConfig holds the flags of the restore and counting commands.
type topexpConfig struct {
	partitions int
	rounds     int
	cpuprofile string
	timeout    time.Duration
	logLevel   string

	keys      int // restore
	valueSize int

	events      int // counting
	experiments int
	job         countingParams
}

func (c *topexpConfig) flags(fs *flag.FlagSet) {
	fs.IntVar(&c.partitions, "partitions", 8, "partitions of the topics, hence tasks of the job")
	fs.IntVar(&c.rounds, "rounds", 1, "measurement rounds, in alternating order")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of every child to `prefix`.<what>.<round>.pprof")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "give up after this long")
	fs.StringVar(&c.logLevel, "log-level", "warn", "log `level` of the children")
}

func (c *topexpConfig) check(ok bool) error {
	if !ok || c.partitions < 1 || c.rounds < 1 || c.timeout <= 0 {
		return errors.New("sizes, -partitions, -rounds and -timeout must be positive")
	}
	return nil
}

// countingParams are the parameters of the counting job measured, set by
// flags of the same names and defaults as the example's.
type countingParams struct {
	top    int
	window time.Duration
	commit time.Duration
}

func (p *countingParams) flags(fs *flag.FlagSet) {
	fs.IntVar(&p.top, "top", 10, "`N`, the number of experiments in a top")
	fs.DurationVar(&p.window, "window", 10*time.Second, "how often every counting task emits its top-N")
	fs.DurationVar(&p.commit, "commit", task.DefaultCommitInterval, "commit `interval`")
}

func (p countingParams) ok() bool { return p.top > 0 && p.window > 0 && p.commit >= 0 }

// args are the flags that pass the parameters on to a child.
func (p countingParams) args() []string {
	return []string{"-top", strconv.Itoa(p.top), "-window", p.window.String(), "-commit", p.commit.String()}
}

// countJob is the example's counting job (experiments.CountJob) with these
// parameters.
func (p countingParams) countJob(name string, kc stream.KafkaConfig, input, output string) *task.Job {
	job := experiments.CountJob(name, kc, input, output, p.top, p.window, &experiments.Counters{})
	job.CommitInterval = p.commit
	return job
}

// topexpChildConfig holds the flags of the child-restore and
// child-counting commands.
type topexpChildConfig struct {
	brokers    string
	raw        bool // measure the baseline
	expect     int64
	dataDir    string
	round      int
	cpuprofile string
	logLevel   string

	partitions int // child-restore

	input, name, output, copyTo string // child-counting
	job                         countingParams
}

func (c *topexpChildConfig) flags(fs *flag.FlagSet, what, raw string) {
	fs.StringVar(&c.brokers, "brokers", "", "comma-separated broker `addresses`")
	fs.BoolVar(&c.raw, "raw", false, raw)
	fs.Int64Var(&c.expect, "expect", 0, "records the measurement handles")
	fs.StringVar(&c.dataDir, "data-dir", "", "data `directory` of the job")
	fs.IntVar(&c.round, "round", 0, "round number, for the profile's name")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile to `prefix`.<what>.<round>.pprof, <what> "+what)
	fs.StringVar(&c.logLevel, "log-level", "warn", "log `level`")
}

func (c *topexpChildConfig) check() error {
	if c.brokers == "" || c.expect < 1 {
		return errors.New("needs -brokers and a positive -expect")
	}
	return nil
}

// topexpResult is what a child prints, as one "result {json}" line.
type topexpResult struct {
	Records int64         `json:"records"`
	Bytes   int64         `json:"bytes"`
	Elapsed time.Duration `json:"elapsed"`
	Restore time.Duration `json:"restore,omitempty"` // longest restore of one task (restore)
	Startup time.Duration `json:"startup,omitempty"` // until the first record
	CPU     time.Duration `json:"cpu"`
	HWM     int64         `json:"hwm"` // the child's peak RSS (VmHWM), bytes
	MaxRSS  int64         `json:"-"`   // bytes, from the parent's rusage: see peakRSS
}

func (r topexpResult) rate() float64 { return float64(r.Records) / r.Elapsed.Seconds() }

// memory describes the child's peak RSS: its own (VmHWM), and what rusage
// says, which also counts the parent's peak (see benchkit.PeakRSS).
func (r topexpResult) memory() string {
	return fmt.Sprintf("peak RSS %.1f MiB (rusage ru_maxrss %.1f MiB)", float64(r.HWM)/(1<<20), float64(r.MaxRSS)/(1<<20))
}

// topexpRates is the median rate of rs, topexpRSS their median peak RSS in
// MiB.
func topexpRates(rs []topexpResult) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = r.rate()
	}
	return median(xs)
}

func topexpRSS(rs []topexpResult) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = float64(r.HWM) / (1 << 20)
	}
	return median(xs)
}

func topexpVerdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// topexpEnv is what the measurements of one run share: the embedded
// broker, a franz-go client of it that produces to the partition each
// record names, and a scratch directory for the children's data.
type topexpEnv struct {
	c       topexpConfig
	brokers []string
	cl      *kgo.Client
	tmp     string
	stderr  io.Writer
}

// topexpBench starts the broker, prints what the run measures on, and runs
// measure with it.
func topexpBench(ctx context.Context, c topexpConfig, stdout, stderr io.Writer, measure func(context.Context, *topexpEnv, io.Writer) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	broker, err := embedded.Start(embedded.Options{Partitions: c.partitions})
	if err != nil {
		return err
	}
	defer broker.Close()
	env := &topexpEnv{c: c, brokers: broker.Addrs(), stderr: stderr}
	env.tmp, err = os.MkdirTemp("", "topexperiments-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(env.tmp)
	fmt.Fprintf(stdout, "bench: embedded broker at %s (in this process); GOMAXPROCS %d; %d partitions\n",
		strings.Join(env.brokers, ","), runtime.GOMAXPROCS(0), c.partitions)
	env.cl, err = newKgo(env.brokers, kgo.MaxBufferedRecords(50_000),
		kgo.RecordPartitioner(kgo.ManualPartitioner())) // records name their partition
	if err != nil {
		return err
	}
	defer env.cl.Close()
	return measure(ctx, env, stdout)
}

// runChild re-executes this program as the child command with args (and
// the flags every child takes), waits until it has printed its result and
// exited, and returns the result with the child's rusage peak RSS.
func (env *topexpEnv) runChild(ctx context.Context, command, what string, round int, args ...string) (topexpResult, error) {
	var res topexpResult
	timeout := env.c.timeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	args = append([]string{command, "-brokers", strings.Join(env.brokers, ","), "-round", strconv.Itoa(round),
		"-log-level", env.c.logLevel, "-cpuprofile", env.c.cpuprofile}, args...)
	ch, line, err := startSelf(ctx, env.stderr, timeout, args...)
	if err != nil {
		return res, fmt.Errorf("%s child: %w", what, err)
	}
	// The child exits once it has printed its result; stop waits for it.
	ch.stop()
	if ps := ch.cmd.ProcessState; !ps.Success() {
		if ctx.Err() != nil {
			return res, fmt.Errorf("%s child: %v: %w", what, ps, ctx.Err())
		}
		return res, fmt.Errorf("%s child: %v", what, ps)
	}
	js, ok := strings.CutPrefix(line, "result ")
	if !ok {
		return res, fmt.Errorf("%s child printed no result but %q", what, line)
	}
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		return res, fmt.Errorf("%s child: %w", what, err)
	}
	res.MaxRSS = peakRSS(ch.cmd.ProcessState)
	return res, nil
}

// topexpChild is one measurement, in a child process: measure runs (under
// the CPU profiler with -cpuprofile) until it is done or the parent closes
// this process's standard input, and the result goes to stdout with this
// process's CPU time and peak RSS.
func topexpChild(ctx context.Context, c topexpChildConfig, what string, stdout, stderr io.Writer,
	measure func(context.Context, stream.KafkaConfig, *slog.Logger) (topexpResult, error)) error {
	ctx, cancel := benchkit.UntilClosed(ctx, os.Stdin)
	defer cancel()
	log, err := kit.Logger(c.logLevel, stderr)
	if err != nil {
		return err
	}
	log.Info("bench child started", "child", what)
	kc := stream.KafkaConfig{Brokers: strings.Split(c.brokers, ","), ClientID: "bench-" + what}
	var res topexpResult
	if err := profiled(c.cpuprofile, what, c.round, func() (err error) {
		res, err = measure(ctx, kc, log)
		return err
	}); err != nil {
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

// topexpAlternate runs a then b in even rounds, b then a in odd ones.
func topexpAlternate(round int, a, b func() error) error {
	if round%2 == 1 {
		a, b = b, a
	}
	if err := a(); err != nil {
		return err
	}
	return b()
}

// topexpProduced is the callback of asynchronous produces that keeps the
// first error.
type topexpProduced struct {
	mu    sync.Mutex
	first error
}

func (p *topexpProduced) done(_ *kgo.Record, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil && p.first == nil {
		p.first = err
	}
}

// The restore benchmark's job: its store, whose changelog fillChangelog
// writes, and its input, which stays empty.
const (
	restoreJob       = "bench-restore"
	restoreStore     = "kv"
	restoreInput     = restoreJob + "-in"
	restoreChangelog = restoreJob + "-" + restoreStore + "-changelog"
)

// restoreBench is (b): restore vs raw consume, -rounds times.
func restoreBench(ctx context.Context, env *topexpEnv, stdout io.Writer) error {
	c := env.c
	start := time.Now()
	if err := restoreFillChangelog(ctx, env.cl, env.brokers, c.partitions, c.keys, c.valueSize); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bench: (b) %d keys with %d-byte values written to %s and checkpointed in %s\n",
		c.keys, c.valueSize, restoreChangelog, time.Since(start).Round(time.Millisecond))
	var restores, raws []topexpResult
	expect := strconv.Itoa(c.keys)
	for r := range c.rounds {
		restore := func() error {
			dir := filepath.Join(env.tmp, fmt.Sprintf("restore-%d", r))
			res, err := env.runChild(ctx, "child-restore", "restore", r, "-partitions", strconv.Itoa(c.partitions),
				"-data-dir", dir, "-expect", expect)
			if err == nil {
				restores = append(restores, res)
				fmt.Fprintf(stdout, "bench: (b) round %d: restore     %8d records in %-9s = %8.0f rec/s  %5.1f MB/s  CPU %-8s %s; longest task restore %s\n",
					r+1, res.Records, res.Elapsed.Round(time.Millisecond), res.rate(), float64(res.Bytes)/res.Elapsed.Seconds()/1e6,
					res.CPU.Round(time.Millisecond), res.memory(), res.Restore.Round(time.Millisecond))
			}
			os.RemoveAll(dir)
			return err
		}
		raw := func() error {
			res, err := env.runChild(ctx, "child-restore", "raw-consume", r, "-raw", "-expect", expect)
			if err == nil {
				raws = append(raws, res)
				fmt.Fprintf(stdout, "bench: (b) round %d: raw consume %8d records in %-9s = %8.0f rec/s  %5.1f MB/s  CPU %-8s %s\n",
					r+1, res.Records, res.Elapsed.Round(time.Millisecond), res.rate(), float64(res.Bytes)/res.Elapsed.Seconds()/1e6,
					res.CPU.Round(time.Millisecond), res.memory())
			}
			return err
		}
		if err := topexpAlternate(r, restore, raw); err != nil {
			return err
		}
	}
	if err := deleteTopics(ctx, env.cl, restoreChangelog, restoreInput, restoreJob+"-checkpoints"); err != nil {
		return err
	}
	rb := topexpRates(restores) / topexpRates(raws)
	fmt.Fprintf(stdout, "result: (b) restore %.0f rec/s vs raw sarama consume %.0f rec/s: ratio %.2f (target >= 0.8: %s); restore peak RSS %.1f MiB (raw consume %.1f MiB)\n",
		topexpRates(restores), topexpRates(raws), rb, topexpVerdict(rb >= 0.8), topexpRSS(restores), topexpRSS(raws))
	return nil
}

// restoreFillChangelog writes keys records in the changelog format of a
// plain (non-TTL) store to the restore job's changelog, spread over its
// partitions, and one checkpoint per task that covers them, as a job that
// had written them and committed would have left them.
//
// The records are written by hand, in the format package store documents
// ("The changelog format"): engine key 'd' + key, value a header byte 0 (a
// plain entry) + the value's bytes.
func restoreFillChangelog(ctx context.Context, cl *kgo.Client, brokers []string, partitions, keys, valueSize int) error {
	if err := createTopics(ctx, cl, int32(partitions), restoreInput); err != nil {
		return err
	}
	compact := "compact"
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, int32(partitions), 1, map[string]*string{"cleanup.policy": &compact}, restoreChangelog)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", restoreChangelog, err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	perPartition := make([]int64, partitions)
	var produced topexpProduced
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
		cl.Produce(ctx, &kgo.Record{Topic: restoreChangelog, Partition: p, Key: k, Value: v}, produced.done)
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if produced.first != nil {
		return fmt.Errorf("produce changelog: %w", produced.first)
	}
	mgr, err := checkpoint.NewKafka(context.Background(), stream.KafkaConfig{Brokers: brokers, ClientID: "bench"}, restoreJob, checkpoint.KafkaOptions{})
	if err != nil {
		return err
	}
	defer mgr.Close()
	for p := range partitions {
		cp := checkpoint.Checkpoint{
			ID:         1,
			Task:       fmt.Sprintf("task-%d", p),
			Inputs:     map[stream.Partition]int64{{Topic: restoreInput, Partition: int32(p)}: 0},
			Changelogs: map[string]int64{restoreStore: perPartition[p] - 1},
			WrittenAt:  time.Now(),
		}
		if err := mgr.Write(ctx, cp); err != nil {
			return err
		}
	}
	return nil
}

// restoreReadyTask tells when it is initialised: Grete calls Init only
// after every store of every task is restored.
type restoreReadyTask struct{ ready chan<- struct{} }

func (t restoreReadyTask) Init(context.Context, task.Context) error {
	t.ready <- struct{}{}
	return nil
}

func (restoreReadyTask) Process(context.Context, stream.Message, task.Collector, task.Coordinator) error {
	return nil
}

// restoreRunJob starts a job whose store must be restored from scratch
// and times it until every task is initialised.
func restoreRunJob(ctx context.Context, kc stream.KafkaConfig, dataDir string, partitions int, expect int64, log *slog.Logger) (topexpResult, error) {
	var res topexpResult
	ready := make(chan struct{}, partitions)
	job := &task.Job{
		Name:    restoreJob,
		Kafka:   kc,
		Inputs:  []string{restoreInput},
		Stores:  []store.Spec{{Name: restoreStore}},
		DataDir: dataDir,
		Logger:  log,
		NewTask: func() task.StreamTask { return restoreReadyTask{ready: ready} },
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
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	stats := job.Stats()
	for len(stats) < partitions {
		select {
		case err := <-errc:
			return res, fmt.Errorf("restore job returned before every task ran: %v", err)
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
		stats = job.Stats()
	}
	for _, s := range stats {
		st := s.Stores[restoreStore]
		res.Records += int64(st.RestoreRecords)
		res.Bytes += int64(st.RestoreBytes)
		res.Restore = max(res.Restore, st.RestoreTime)
	}
	cancel()
	if err := <-errc; err != nil {
		return res, err
	}
	if res.Records != expect {
		return res, fmt.Errorf("restored %d records, want %d", res.Records, expect)
	}
	return res, nil
}

// restoreRawConsume is the baseline of a restore, kafka.RawConsume of the
// changelog: sarama partition consumers with Grete's settings. It is the
// one use of internal/kafka here, because the baseline must consume the
// way Grete's restore does.
func restoreRawConsume(ctx context.Context, kc stream.KafkaConfig, expect int64) (topexpResult, error) {
	r, err := kafka.RawConsume(ctx, kc, restoreChangelog)
	res := topexpResult{Records: r.Records, Bytes: r.Bytes, Elapsed: r.Elapsed, Startup: r.Startup}
	if err == nil && res.Records != expect {
		err = fmt.Errorf("consumed %d records, want %d", res.Records, expect)
	}
	return res, err
}

// countingInput is the counting benchmark's input topic.
const countingInput = "bench-events"

// countingBench is (c): the counting job vs a raw copy, -rounds times.
func countingBench(ctx context.Context, env *topexpEnv, stdout io.Writer) error {
	c := env.c
	start := time.Now()
	if err := countingProduce(ctx, env.cl, c.partitions, c.events, c.experiments); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bench: (c) %d events over %d experiments produced in %s\n", c.events, c.experiments, time.Since(start).Round(time.Millisecond))
	var counts, copies []topexpResult
	expect := strconv.Itoa(c.events)
	for r := range c.rounds {
		name := fmt.Sprintf("bench-%d", r)
		output := fmt.Sprintf("bench-top-%d", r)
		copyTo := fmt.Sprintf("bench-copy-%d", r)
		count := func() error {
			dir := filepath.Join(env.tmp, name)
			args := append([]string{"-name", name, "-input", countingInput, "-output", output, "-data-dir", dir, "-expect", expect}, c.job.args()...)
			res, err := env.runChild(ctx, "child-counting", "count", r, args...)
			if err == nil {
				counts = append(counts, res)
				fmt.Fprintf(stdout, "bench: (c) round %d: counting job %8d events in %-9s = %8.0f ev/s  CPU %5.2f µs/event  %s\n",
					r+1, res.Records, res.Elapsed.Round(time.Millisecond), res.rate(), res.CPU.Seconds()*1e6/float64(res.Records), res.memory())
				fmt.Fprintf(stdout, "bench: (c)          (first event processed %s after Run)\n", res.Startup.Round(time.Millisecond))
			}
			os.RemoveAll(dir)
			return err
		}
		raw := func() error {
			if err := createTopics(ctx, env.cl, int32(c.partitions), copyTo); err != nil {
				return err
			}
			res, err := env.runChild(ctx, "child-counting", "raw-copy", r, "-raw", "-input", countingInput, "-copy-to", copyTo, "-expect", expect)
			if err == nil {
				copies = append(copies, res)
				fmt.Fprintf(stdout, "bench: (c) round %d: raw copy     %8d events in %-9s = %8.0f ev/s  CPU %5.2f µs/event  %s\n",
					r+1, res.Records, res.Elapsed.Round(time.Millisecond), res.rate(), res.CPU.Seconds()*1e6/float64(res.Records), res.memory())
			}
			return err
		}
		if err := topexpAlternate(r, count, raw); err != nil {
			return err
		}
		// Every topic the round wrote goes, to give the broker's memory
		// back: the copy, and the counting job's partials, changelog and
		// checkpoints (named as the job names them).
		job := c.job.countJob(name, stream.KafkaConfig{}, countingInput, output)
		scratch := []string{copyTo, job.Name + "-checkpoints"}
		for _, o := range job.Outputs {
			scratch = append(scratch, o.Name)
		}
		for _, s := range job.Stores {
			scratch = append(scratch, job.Name+"-"+s.Name+"-changelog")
		}
		if err := deleteTopics(ctx, env.cl, scratch...); err != nil {
			return err
		}
	}
	if err := deleteTopics(ctx, env.cl, countingInput); err != nil {
		return err
	}
	rc := topexpRates(counts) / topexpRates(copies)
	fmt.Fprintf(stdout, "result: (c) counting job %.0f ev/s vs raw sarama copy %.0f ev/s: ratio %.2f (target >= 0.7: %s)\n",
		topexpRates(counts), topexpRates(copies), rc, topexpVerdict(rc >= 0.7))
	return nil
}

// countingProduce writes n generated events (seeded) to the counting
// benchmark's input, a new topic, keyed by experiment (murmur2, like
// Kafka's default partitioner).
func countingProduce(ctx context.Context, cl *kgo.Client, partitions, n, distinct int) error {
	if err := createTopics(ctx, cl, int32(partitions), countingInput); err != nil {
		return err
	}
	var produced topexpProduced
	g := experiments.NewTraffic(1, distinct)
	at := time.UnixMilli(1_700_000_000_000)
	partitioner := kgo.StickyKeyPartitioner(nil).ForTopic(countingInput)
	for i := range n {
		k, v := g.Next(at.Add(time.Duration(i) * time.Millisecond))
		r := &kgo.Record{Topic: countingInput, Key: k, Value: v}
		r.Partition = int32(partitioner.Partition(r, partitions))
		cl.Produce(ctx, r, produced.done)
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if produced.first != nil {
		return fmt.Errorf("produce events: %w", produced.first)
	}
	return nil
}

// countingRawCopy is the baseline of the counting job, rawCopy: every
// record of input copied to output with sarama configured like Grete
// (idempotent, acks=all, same flush settings and partitioner), from
// connecting until every copy is acknowledged.
func countingRawCopy(ctx context.Context, kc stream.KafkaConfig, input, output string, expect int64) (topexpResult, error) {
	r, err := rawCopy(ctx, kc.Brokers, input, output)
	if err == nil && r.messages != expect {
		err = fmt.Errorf("raw copy: copied %d records, want %d", r.messages, expect)
	}
	return topexpResult{Records: r.messages, Elapsed: r.elapsed, Startup: r.startup}, err
}

// countingRunJob runs job until it has processed want input messages,
// then stops it; the clock runs from Run until the final checkpoints cover
// every input message (so every output and changelog record is
// acknowledged). Inputs must start at offset 0.
//
// It is runJob's measurement, polled every 5 ms to the end, with errors
// that name the counting job.
func countingRunJob(ctx context.Context, job *task.Job, want int64) (topexpResult, error) {
	var res topexpResult
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- job.Run(ctx) }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		n, _ := done(job)
		if n > 0 && res.Startup == 0 {
			res.Startup = time.Since(start)
		}
		if int64(n) >= want {
			break
		}
		select {
		case err := <-errc:
			return res, fmt.Errorf("counting job returned early: %v", err)
		case <-tick.C:
		}
	}
	cancel()
	var runErr error
	returned := false
	for !returned {
		stats := job.Stats()
		if stats == nil || checkpointed(stats) >= want {
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
