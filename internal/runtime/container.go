package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/kafka"
)

// Container is one running process of a job: its Kafka connections, its
// producer, its checkpoints, its group membership, and the tasks the group
// gave it.
//
// A process keeps three sarama clients apart, because sarama sends one
// request at a time per broker connection: conn (metadata, admin, offset
// look-ups, the group's coordinator look-ups, the checkpoint topic's and
// the changelogs' reads, which fetch on connections of their own), input
// (partition consumers, whose fetches wait for data and would hold every
// other request behind them) and out (the producer, whose requests wait
// for acks=all, and whose leader look-ups wait for a restarting broker).
// The group's joins and heartbeats go on two connections of their own.
type Container struct {
	cfg        Config
	log        *slog.Logger
	conn       *kafka.Conn
	input      *kafka.Conn
	out        *kafka.Conn
	producer   *kafka.Producer
	cps        checkpoint.Manager
	grp        *leases
	lock       io.Closer     // the process's hold on <DataDir>/<Name>
	restoreSem chan struct{} // bounds the tasks restoring at once

	// hardCtx is cancelled when the job must stop at once; Process and
	// Send see it.
	hardCtx    context.Context
	hardCancel context.CancelFunc

	ready      atomic.Bool // start succeeded: grp is set
	tasks      int32
	known      sync.Map   // output topics known to exist (AutoCreateOutputs)
	createMu   sync.Mutex // serialises topic creation
	stopOnce   sync.Once
	stop       chan struct{} // closed to ask every runner to stop gracefully
	shutdownRq chan struct{} // a task called Coordinator.Shutdown
	shutOnce   sync.Once
	failMu     sync.Mutex
	failures   []error
	failed     chan struct{} // closed on the first task failure
	failOnce   sync.Once
}

// New returns the container of a job, ready to Run once.
func New(cfg Config) *Container {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Container{
		cfg: cfg, log: cfg.Logger.With("job", cfg.Name),
		stop: make(chan struct{}), shutdownRq: make(chan struct{}), failed: make(chan struct{}),
	}
}

// Run runs the job until ctx is cancelled, a task asks for a shutdown, or
// a task fails; see task.Job.Run.
func (c *Container) Run(ctx context.Context) (err error) {
	c.hardCtx, c.hardCancel = context.WithCancel(context.WithoutCancel(ctx))
	defer c.hardCancel()
	defer func() { err = errors.Join(err, c.close()) }()
	if err := c.start(ctx); err != nil {
		if ctx.Err() != nil {
			c.log.Info("stopped while starting", "err", err)
			return nil
		}
		return c.api(err)
	}
	c.ready.Store(true)
	return c.run(ctx)
}

func (c *Container) start(ctx context.Context) error {
	cfg := &c.cfg
	if len(cfg.Stores) > 0 {
		dir := filepath.Join(cfg.DataDir, cfg.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("task: job %q: data dir: %w", cfg.Name, err)
		}
		lock, err := vfs.Default.Lock(filepath.Join(dir, "LOCK"))
		if err != nil {
			return fmt.Errorf("task: job %q: data dir %s is in use by another process of the job (give each process its own DataDir): %w", cfg.Name, dir, err)
		}
		c.lock = lock
	}
	// Every step below waits for a cluster that cannot be reached (yet),
	// for up to CommitTimeout: a job started with its cluster, or while a
	// broker restarts, must not give up at once.
	dial := func(o kafka.Options) (conn *kafka.Conn, err error) {
		err = c.retry(ctx, "connect", func() error {
			conn, err = kafka.Dial(ctx, cfg.Kafka, o)
			if err != nil && cfg.Kafka.SASL != nil && errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNREFUSED) {
				// Some brokers answer a failed SASL authentication by
				// closing the connection: a restart looks the same, but
				// a wrong password is far likelier at start.
				return kafka.Permanent(fmt.Errorf("%w (the broker closed the connection while authenticating: check the SASL mechanism, user and password)", err))
			}
			return err
		})
		return conn, err
	}
	var err error
	if c.conn, err = dial(kafka.Options{ReadPatience: cfg.CommitTimeout}); err != nil {
		return fmt.Errorf("task: job %q: %w", cfg.Name, err)
	}
	if c.input, err = dial(kafka.Options{}); err != nil {
		return fmt.Errorf("task: job %q: %w", cfg.Name, err)
	}
	c.restoreSem = make(chan struct{}, 4)
	var tasks int
	if err := c.retry(ctx, "read input metadata", func() (err error) {
		tasks, err = c.taskCount(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("task: job %q: %w", cfg.Name, err)
	}
	c.tasks = int32(tasks)
	ensure := func(s kafka.TopicSpec) error {
		return c.retry(ctx, "create topic "+s.Name, func() error { return c.conn.EnsureTopic(ctx, s) })
	}
	if cfg.OnError == DeadLetter {
		if err := ensure(kafka.TopicSpec{Name: cfg.DeadLetterTopic, Partitions: int32(tasks)}); err != nil {
			return fmt.Errorf("task: job %q: dead-letter topic: %w", cfg.Name, err)
		}
	}
	// Changelogs: created when missing; an existing one that would
	// corrupt state (not compacted, too few partitions) is refused.
	for _, s := range cfg.Stores {
		if t := ChangelogTopic(cfg.Name, s); t != "" {
			spec := kafka.TopicSpec{Name: t, Partitions: c.tasks, MinPartitions: c.tasks, Compact: true}
			if err := ensure(spec); err != nil {
				return fmt.Errorf("task: job %q: store %q changelog: %w", cfg.Name, s.Name, err)
			}
		}
	}
	for _, o := range cfg.Outputs {
		spec := kafka.TopicSpec{Name: o.Name, Partitions: o.Partitions, Compact: o.Compacted, Configs: o.Configs}
		if spec.Partitions == 0 {
			spec.Partitions = int32(tasks)
		}
		if err := ensure(spec); err != nil {
			return fmt.Errorf("task: job %q: output: %w", cfg.Name, err)
		}
	}
	// The producer's connection waits for a broker that restarts:
	// records sent meanwhile must not fail.
	if c.out, err = dial(kafka.Options{ProducerPatience: cfg.CommitTimeout}); err != nil {
		return fmt.Errorf("task: job %q: %w", cfg.Name, err)
	}
	if c.producer, err = c.out.NewProducer(); err != nil {
		return fmt.Errorf("task: job %q: %w", cfg.Name, err)
	}
	if c.cps = cfg.Checkpoints; c.cps == nil {
		topic := checkpoint.Topic(cfg.Name)
		if err := ensure(kafka.TopicSpec{Name: topic, Partitions: 1, Compact: true}); err != nil {
			return fmt.Errorf("task: job %q: checkpoint topic: %w", cfg.Name, err)
		}
		// The group's members mirror checkpoints to the group's offsets
		// themselves: only a member may commit offsets of a live group.
		c.cps = &checkpoints{latest: kafka.NewLatest(c.conn, c.producer, topic), log: c.log}
	}
	if c.grp, err = newLeases(c); err != nil {
		return fmt.Errorf("task: job %q: %w", cfg.Name, err)
	}
	return nil
}

// taskCount checks that the partitioned inputs are co-partitioned and that
// every input exists, and returns the number of tasks.
func (c *Container) taskCount(ctx context.Context) (int, error) {
	n := int32(-1)
	var first string
	for _, t := range c.cfg.Inputs {
		p, err := c.conn.Partitions(ctx, t)
		if err != nil {
			return 0, fmt.Errorf("input %w", err)
		}
		if n >= 0 && p != n {
			return 0, fmt.Errorf("inputs are not co-partitioned: %q has %d partitions but %q has %d (all partitioned inputs must have the same count; mark small tables as Broadcast)", first, n, t, p)
		}
		n, first = p, t
	}
	for _, t := range c.cfg.Broadcast {
		if _, err := c.conn.Partitions(ctx, t); err != nil {
			return 0, fmt.Errorf("broadcast input %w", err)
		}
	}
	if n < 0 {
		return 1, nil
	}
	return int(n), nil
}

// fail records a task's failure and stops the job.
func (c *Container) fail(err error) {
	c.failMu.Lock()
	c.failures = append(c.failures, err)
	c.failMu.Unlock()
	c.failOnce.Do(func() { close(c.failed) })
}

func (c *Container) run(ctx context.Context) error {
	gctx, gcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer gcancel()
	grpErr := make(chan error, 1)
	go func() { grpErr <- c.grp.participate(gctx) }()
	c.log.Info("job started", "instance", c.grp.instance, "tasks", c.tasks, "inputs", c.cfg.Inputs, "broadcast", c.cfg.Broadcast)

	var gerr error
	grpDone := false
	select {
	case <-ctx.Done():
		c.log.Info("stopping: context cancelled")
	case <-c.shutdownRq:
		c.log.Info("stopping: a task asked for shutdown")
	case <-c.failed:
		c.log.Error("stopping: task failed", "err", c.firstFailure())
	case gerr = <-grpErr:
		grpDone = true
		c.log.Error("stopping: group membership failed", "err", gerr)
	}
	// Every task finishes its current message, commits and closes while
	// the process is still a member (so its commits are valid); then it
	// leaves the group, and the tasks move at once.
	c.grp.stopAcquiring()
	c.stopAll()
	// Bound the graceful stop: past the timeout, cancel in-flight work.
	timer := time.AfterFunc(c.cfg.ShutdownTimeout+5*time.Second, c.hardCancel)
	defer timer.Stop()
	for _, l := range c.grp.all() {
		<-l.done
	}
	gcancel()
	if !grpDone {
		gerr = <-grpErr
	}
	c.failMu.Lock()
	all := append([]error{gerr}, c.failures...)
	c.failMu.Unlock()
	for i, e := range all {
		all[i] = c.api(e)
	}
	err := errors.Join(all...)
	if err == nil {
		c.log.Info("job stopped cleanly")
	}
	return err
}

// api turns an error of the cluster being unreachable into the API's.
func (c *Container) api(err error) error {
	if ue := (*kafka.UnreachableError)(nil); err != nil && errors.As(err, &ue) {
		return theAPI().Unreachable(err)
	}
	return err
}

func (c *Container) firstFailure() error {
	c.failMu.Lock()
	defer c.failMu.Unlock()
	return c.failures[0]
}

// ensureOutput creates topic, once, when AutoCreateOutputs is set.
func (c *Container) ensureOutput(topic string) error {
	if _, ok := c.known.Load(topic); ok {
		return nil
	}
	c.createMu.Lock()
	defer c.createMu.Unlock()
	if _, ok := c.known.Load(topic); ok {
		return nil
	}
	err := c.retry(c.hardCtx, "create topic "+topic, func() error {
		return c.conn.EnsureTopic(c.hardCtx, kafka.TopicSpec{Name: topic, Partitions: c.tasks})
	})
	if err != nil {
		return err
	}
	c.known.Store(topic, true)
	return nil
}

func (c *Container) stopAll() { c.stopOnce.Do(func() { close(c.stop) }) }

func (c *Container) requestShutdown() { c.shutOnce.Do(func() { close(c.shutdownRq) }) }

// close releases everything start opened, in dependency order.
func (c *Container) close() error {
	var errs []error
	if c.grp != nil {
		errs = append(errs, c.grp.leave())
	}
	if c.producer != nil {
		errs = append(errs, c.producer.Close())
	}
	for _, conn := range []*kafka.Conn{c.out, c.input, c.conn} {
		if conn != nil {
			errs = append(errs, conn.Close())
		}
	}
	if c.lock != nil {
		errs = append(errs, c.lock.Close())
	}
	return errors.Join(errs...)
}

// unreachable turns a commit that timed out while the group's coordinator
// did not answer either into an *kafka.UnreachableError that says since
// when the cluster is unreachable.
func (c *Container) unreachable(err error) error {
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	// The coordinator kept silent for most of the commit too.
	since := c.grp.member.LastAck()
	if since.IsZero() || time.Since(since) < c.cfg.CommitTimeout/2 {
		return err
	}
	return &kafka.UnreachableError{Since: since, Err: err}
}

// retry runs fn until it succeeds, fails for good, ctx ends, or the
// cluster has been unreachable for CommitTimeout (see kafka.Retry).
func (c *Container) retry(ctx context.Context, what string, fn func() error) error {
	return kafka.Retry(ctx, c.log, c.cfg.CommitTimeout, what, fn)
}

// MemberStats are task.MemberStats: the fields are the same.
type MemberStats struct {
	Instance           string
	Tasks              []int32
	Rebalances         uint64
	Assigned           uint64
	Revoked            uint64
	Fenced             uint64
	Standbys           []int32
	StandbyLag         int64
	StandbyCheckpoints map[int32]uint64
	Paused             time.Duration
}

// Member returns the process's group counters, false before the process
// has joined (see task.Job.Member). Safe from any goroutine.
func (c *Container) Member() (MemberStats, bool) {
	if !c.ready.Load() {
		return MemberStats{}, false
	}
	g := c.grp
	s := MemberStats{
		Instance:   g.instance,
		Rebalances: uint64(g.member.Rebalances()),
		Assigned:   g.assigned.Load(),
		Revoked:    g.revoked.Load(),
		Fenced:     g.fenced.Load(),
		Paused:     time.Duration(g.pausedNs.Load()),
	}
	for _, r := range g.runners() {
		s.Tasks = append(s.Tasks, r.partition)
	}
	s.Standbys, s.StandbyLag, s.StandbyCheckpoints = g.standbyStats()
	return s, true
}

// Stats returns the counters of the tasks the process runs now, ordered
// by partition (see task.Job.Stats). Safe from any goroutine.
func (c *Container) Stats() []TaskStats {
	if !c.ready.Load() {
		return nil
	}
	rs := c.grp.runners()
	out := make([]TaskStats, len(rs))
	for i, r := range rs {
		out[i] = r.loop.Stats()
	}
	return out
}
