// Package kit is the plumbing the example programs share, none of which a
// job needs: running main with signal handling, a logger from a flag, the
// embedded broker behind an empty -brokers flag, creating input topics,
// generating traffic into them at a steady rate, and printing which tasks
// a process runs. It uses franz-go (kgo, kadm) for what Grete does not
// do, producing and administering topics. It is example code: copy it
// along with an example, or use your own tooling instead.
package kit

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/grete-go/grete/internal/embedded"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// RunFunc is an example's body: flags in args, output to stdout and stderr.
type RunFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// Main runs run with a context cancelled by Ctrl-C or SIGTERM, and exits 1
// with the error (2 for a -h request).
func Main(name string, run RunFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Logger returns a text logger to w at the named level (debug, info, warn,
// error).
func Logger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// WithDuration bounds ctx by d when d is positive.
func WithDuration(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return context.WithCancel(ctx)
}

// Cluster is where an example's Kafka is: the brokers given on the command
// line, or an embedded broker started for the run.
type Cluster struct {
	Brokers  []string
	embedded *embedded.Broker
}

// Connect returns the cluster of a comma-separated broker list, or, when the
// list is empty, starts an embedded broker (persisting under
// <dataDir>/broker when dataDir is set) whose topics get partitions
// partitions when created on first use, and says so on stdout.
func Connect(brokers, dataDir string, partitions int, stdout io.Writer) (*Cluster, error) {
	if brokers != "" {
		return &Cluster{Brokers: strings.Split(brokers, ",")}, nil
	}
	opts := embedded.Options{Partitions: partitions}
	if dataDir != "" {
		opts.DataDir = filepath.Join(dataDir, "broker")
	}
	b, err := embedded.Start(opts)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "embedded broker at %s\n", strings.Join(b.Addrs(), ","))
	return &Cluster{Brokers: b.Addrs(), embedded: b}, nil
}

// Close stops the embedded broker, if one was started.
func (c *Cluster) Close() {
	if c.embedded != nil {
		c.embedded.Close()
	}
}

// Kafka returns the connection config of the cluster.
func (c *Cluster) Kafka(clientID string) stream.KafkaConfig {
	return stream.KafkaConfig{Brokers: c.Brokers, ClientID: clientID}
}

// Topic is a topic an example needs.
type Topic struct {
	Name       string
	Partitions int32
}

// EnsureTopics creates the topics that are missing; existing ones are
// left as they are.
func EnsureTopics(kc stream.KafkaConfig, topics ...Topic) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(clientOpts(kc)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for _, t := range topics {
		resp, err := adm.CreateTopic(ctx, t.Partitions, -1, nil, t.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %q: %w", t.Name, err)
		}
	}
	return nil
}

// StateDir returns where an example keeps its stores: <dataDir>/state;
// without a data dir, the job's default for a real cluster, and for an
// in-memory embedded broker, which forgets everything at exit, a temporary
// directory that cleanup removes.
func (c *Cluster) StateDir(dataDir, name string) (dir string, cleanup func(), err error) {
	if dataDir != "" {
		return filepath.Join(dataDir, "state"), func() {}, nil
	}
	if c.embedded == nil {
		return "", func() {}, nil
	}
	tmp, err := os.MkdirTemp("", name+"-")
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { _ = os.RemoveAll(tmp) }, nil
}

// Generate produces generated traffic into topic at about rate events a
// second until ctx ends. Each event is made by next, which is called once
// per event due and hands its records (usually one) to emit; now is the
// time the event is made. Records are partitioned by the key next emits,
// with murmur2 like Kafka's Java client (and Grete's producer).
//
// Like a job, the generator rides through a broker restart: its producer
// waits for the broker, and events it could not deliver are counted and
// reported on stderr (at most every ten seconds), not fatal.
func Generate(ctx context.Context, kc stream.KafkaConfig, topic string, rate int, next func(now time.Time, emit func(key, value []byte) error) error) error {
	opts := append(clientOpts(kc), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), // murmur2, like Kafka's Java client
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordDeliveryTimeout(time.Minute), // rides through a broker restart
		kgo.MaxBufferedRecords(100_000),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	// Records live on for up to 30 s after ctx ends: what was generated
	// before the stop is delivered, and a broker that does not come back
	// does not hold the generator for ever.
	pctx, pcancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-ctx.Done():
		case <-pctx.Done():
			return
		}
		t := time.NewTimer(30 * time.Second)
		defer t.Stop()
		select {
		case <-t.C:
		case <-pctx.Done():
		}
		pcancel()
	}()
	defer func() {
		_ = cl.Flush(pctx)
		pcancel()
		cl.Close()
	}()
	var mu sync.Mutex
	var lost int
	var reported time.Time
	delivered := func(_ *kgo.Record, err error) {
		if err == nil || errors.Is(err, context.Canceled) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		lost++
		if time.Since(reported) > 10*time.Second {
			fmt.Fprintf(os.Stderr, "generator: %d events not delivered so far (last error: %v); generating on\n", lost, err)
			reported = time.Now()
		}
	}
	emit := func(key, value []byte) error {
		cl.Produce(pctx, &kgo.Record{Key: key, Value: value}, delivered)
		return ctx.Err()
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	credit, last := 0.0, time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			// Credit by the time that passed, not by ticks: a ticker drops
			// ticks when the loop falls behind.
			credit += float64(rate) * now.Sub(last).Seconds()
			last = now
			for ; credit >= 1; credit-- {
				if err := next(now, emit); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
			}
		}
	}
}

// clientOpts are the franz-go options that reach the cluster of kc.
func clientOpts(kc stream.KafkaConfig) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(kc.Brokers...)}
	if kc.ClientID != "" {
		opts = append(opts, kgo.ClientID(kc.ClientID))
	}
	if kc.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(kc.TLS.Clone()))
	}
	if s := kc.SASL; s != nil {
		a := scram.Auth{User: s.User, Pass: s.Password}
		switch s.Mechanism {
		case stream.SASLPlain:
			opts = append(opts, kgo.SASL(plain.Auth{User: s.User, Pass: s.Password}.AsMechanism()))
		case stream.SASLScramSHA256:
			opts = append(opts, kgo.SASL(a.AsSha256Mechanism()))
		case stream.SASLScramSHA512:
			opts = append(opts, kgo.SASL(a.AsSha512Mechanism()))
		}
	}
	return opts
}

// ReportTasks prints a line each time the set of tasks this process runs
// changes (several processes of one job share its tasks), until ctx ends.
func ReportTasks(ctx context.Context, w io.Writer, jobs ...*task.Job) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := make([]string, len(jobs))
	for i := range last {
		last[i] = "none"
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, job := range jobs {
			m, ok := job.Member()
			if !ok {
				continue
			}
			now := fmt.Sprint(m.Tasks, m.Standbys)
			if now == last[i] {
				continue
			}
			last[i] = now
			fmt.Fprintf(w, "%s: instance %s runs tasks %v, standbys %v (rebalances %d, tasks assigned %d, handed over %d)\n",
				job.Name, m.Instance, m.Tasks, m.Standbys, m.Rebalances, m.Assigned, m.Revoked)
		}
	}
}
