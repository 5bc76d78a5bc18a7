package task

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/stream"
)

// group is a process's membership in its job's consumer group, and the
// tasks the group gave it.
//
// The group is Kafka's: processes with the same job name join the consumer
// group named after the job, and Grete's assignor (assignTasks) hands out
// whole tasks. A task is leased through the group's partition claims: task
// i holds partition i of every partitioned input (a job with only
// broadcast inputs leases its one task as partition 0 of its first
// broadcast input). The claims carry no data: a task reads its inputs from
// its checkpoint with its own consumers, as before, so the group's offsets
// never decide where processing resumes. They mirror the checkpoints, for
// lag tools.
//
// Rebalancing is cooperative: tasks that stay where they are keep running
// through a rebalance, and a task that moves is first handed over (its
// owner finishes the current message, commits and closes it) and only then
// started by its new owner (which restores its stores, from local state
// when it is current, and resumes from the checkpoint).
type group struct {
	c         *container
	conn      *kafka.Conn
	cg        sarama.ConsumerGroup
	topics    []string // lease topics: task i is partition i of each
	subscribe []string // topics the group subscribes to: leases and standbys
	instance  string
	// standbyTopic leases standbys (Job.Standbys): partition i of the
	// first changelog is a standby of task i. Empty without standbys.
	standbyTopic string

	mu       sync.Mutex
	tasks    map[int32]*lease // tasks held: starting, running or handing over
	standbys map[int32]*lease // standby copies held
	sess     sarama.ConsumerGroupSession

	rebalances, assigned, revoked, fenced atomic.Uint64
	pausedNs                              atomic.Int64 // assignment to first message ready, summed
}

// lease is one task this process holds.
type lease struct {
	id     int32
	claims int           // group claims held (one per lease topic)
	r      *runner       // set once the runner exists
	revoke chan struct{} // closed when the group takes the task away
	// fence is when a handover must have committed by (Unix ns), set on
	// revoke; zero while the task is held.
	fence    atomic.Int64
	fenceNow atomic.Bool   // the membership was lost: do not commit at all
	done     chan struct{} // closed when the task has stopped
	started  time.Time     // when the group gave the task to this process
	// standbyLag is, for a standby, how many changelog records it was
	// behind the task's checkpoint when it last looked; standbyAt is the
	// id of the checkpoint it has applied.
	standbyLag atomic.Int64
	standbyAt  atomic.Uint64
}

// errFenced ends a task whose handover came too late to commit safely.
var errFenced = errors.New("task was fenced: its handover did not finish within half the rebalance timeout, or the process lost its group membership; it closes without committing and its new owner resumes from the last checkpoint")

func newGroup(c *container) (*group, error) {
	j := c.job
	g := &group{c: c, tasks: map[int32]*lease{}, standbys: map[int32]*lease{}}
	g.topics = j.Inputs
	if len(g.topics) == 0 {
		g.topics = j.Broadcast[:1]
	}
	if j.Standbys > 0 {
		for _, sp := range j.Stores {
			if t := j.changelogTopic(sp); t != "" {
				g.standbyTopic = t
				break
			}
		}
	}
	g.subscribe = g.topics
	if g.standbyTopic != "" {
		g.subscribe = append(slices.Clone(g.topics), g.standbyTopic)
	}
	var err error
	if g.instance, err = j.instanceID(); err != nil {
		return nil, err
	}
	cfg, err := kafka.Config(j.Kafka)
	if err != nil {
		return nil, err
	}
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{&taskAssignor{g: g}}
	cfg.Consumer.Group.InstanceId = g.instance
	cfg.Consumer.Group.Session.Timeout = j.sessionTimeout()
	// Members learn of a rebalance from their next heartbeat: a short
	// interval keeps the pause of a handover short.
	cfg.Consumer.Group.Heartbeat.Interval = min(j.sessionTimeout()/3, 500*time.Millisecond)
	cfg.Consumer.Group.Rebalance.Timeout = j.rebalanceTimeout()
	cfg.Consumer.Offsets.Initial = sarama.OffsetNewest
	cfg.Consumer.Offsets.AutoCommit.Enable = true
	cfg.Consumer.Offsets.AutoCommit.Interval = time.Second
	cfg.Consumer.Return.Errors = true
	// The claims' own consumers are paused at once: keep what they fetch
	// before that small.
	cfg.ChannelBufferSize = 1
	cfg.Consumer.Fetch.Default = 1
	if g.conn, err = kafka.Dial(cfg, j.Kafka.Brokers); err != nil {
		return nil, err
	}
	if g.cg, err = sarama.NewConsumerGroupFromClient(j.Name, g.conn.Client); err != nil {
		_ = g.conn.Close()
		return nil, fmt.Errorf("join group %q: %w", j.Name, err)
	}
	go func() {
		for err := range g.cg.Errors() {
			c.log.Warn("consumer group", "err", err)
		}
	}()
	return g, nil
}

// instanceID returns the configured InstanceID or the default one: for a
// job with stores, derived from the data dir it locks; none (dynamic
// membership) for a stateless job, whose processes may share a data dir.
func (j *Job) instanceID() (string, error) {
	if j.InstanceID != "" || len(j.Stores) == 0 {
		return j.InstanceID, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	dir, err := filepath.Abs(filepath.Join(j.dataDir(), j.Name))
	if err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	sum := sha256.Sum256([]byte(dir))
	host = strings.Map(func(r rune) rune {
		if validName.MatchString(string(r)) {
			return r
		}
		return '_'
	}, host)
	return host + "-" + hex.EncodeToString(sum[:6]), nil
}

// consume takes part in the group until ctx ends.
func (g *group) consume(ctx context.Context) error {
	const minBackoff = 100 * time.Millisecond
	backoff := minBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := g.cg.Consume(ctx, g.subscribe, g)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = minBackoff // a session that lasted is not a failure streak
		}
		if errors.Is(err, sarama.ErrClosedConsumerGroup) {
			return err
		}
		if errors.Is(err, sarama.ErrFencedInstancedId) {
			return fmt.Errorf("task: another process joined job %q's group with this process's instance id %q: %w", g.c.job.Name, g.instance, err)
		}
		if err != nil {
			g.c.log.Warn("group session ended; rejoining", "err", err, "backoff", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

// leave hands every task over at once. A static member (one with an
// instance id) does not leave the group when it closes, so that a restart
// keeps its tasks; a graceful stop removes it explicitly.
func (g *group) leave() error {
	err := g.cg.Close()
	if g.instance == "" {
		return errors.Join(err, g.conn.Close()) // Close left the group
	}
	coord, cerr := g.conn.Client.Coordinator(g.c.job.Name)
	if cerr != nil {
		return errors.Join(err, fmt.Errorf("leave group: %w", cerr))
	}
	resp, lerr := coord.LeaveGroup(&sarama.LeaveGroupRequest{
		Version: 3,
		GroupId: g.c.job.Name,
		Members: []sarama.MemberIdentity{{GroupInstanceId: &g.instance}},
	})
	if lerr == nil && resp.Err != sarama.ErrNoError {
		lerr = resp.Err
	}
	if lerr == nil {
		for _, m := range resp.Members {
			if m.Err != sarama.ErrNoError && m.Err != sarama.ErrUnknownMemberId {
				lerr = m.Err
			}
		}
	}
	if lerr != nil {
		err = errors.Join(err, fmt.Errorf("leave group %q as %q: %w", g.c.job.Name, g.instance, lerr))
	}
	return errors.Join(err, g.conn.Close())
}

// leases returns the partitions that lease task t.
func (g *group) leases(t int32) []stream.Partition {
	if len(g.c.job.Inputs) == 0 {
		return []stream.Partition{{Topic: g.topics[0], Partition: 0}}
	}
	ps := make([]stream.Partition, len(g.topics))
	for i, topic := range g.topics {
		ps[i] = stream.Partition{Topic: topic, Partition: t}
	}
	return ps
}

// info describes this process to the assignor.
func (g *group) info() memberInfo {
	g.mu.Lock()
	mi := memberInfo{Version: 1, Instance: g.instance}
	for t, l := range g.tasks {
		if l.fence.Load() == 0 {
			mi.Owned = append(mi.Owned, t)
		}
	}
	for t, l := range g.standbys {
		if l.fence.Load() == 0 {
			mi.Standby = append(mi.Standby, t)
		}
	}
	g.mu.Unlock()
	slices.Sort(mi.Owned)
	slices.Sort(mi.Standby)
	// Local state makes a task warm: it replays only the changelog tail.
	if len(g.c.job.Stores) > 0 {
		ents, _ := os.ReadDir(filepath.Join(g.c.job.dataDir(), g.c.job.Name))
		for _, e := range ents {
			if n, ok := strings.CutPrefix(e.Name(), "task-"); ok && e.IsDir() {
				if t, err := strconv.ParseInt(n, 10, 32); err == nil && !slices.Contains(mi.Owned, int32(t)) {
					mi.Warm = append(mi.Warm, int32(t))
				}
			}
		}
	}
	return mi
}

// Setup, Cleanup and ConsumeClaim make group a sarama.ConsumerGroupHandler.

func (g *group) Setup(s sarama.ConsumerGroupSession) error {
	g.mu.Lock()
	g.sess = s
	g.mu.Unlock()
	return nil
}

func (g *group) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim holds the task a claim leases for as long as the group
// lets this process keep the claim.
func (g *group) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	g.cg.Pause(map[string][]int32{claim.Topic(): {claim.Partition()}})
	t := claim.Partition()
	if len(g.c.job.Inputs) == 0 {
		t = 0
	}
	standby := claim.Topic() == g.standbyTopic
	l := g.acquire(t, standby)
	for range claim.Messages() {
		// The claim only leases the task; its data is read from the
		// checkpoint by the task's own consumers.
	}
	// Closed: revoked, or the session ended. A session that ended for
	// any reason but this process stopping means the membership may be
	// lost already: another process may own the task now.
	cause := context.Cause(s.Context())
	lost := s.Context().Err() != nil && !errors.Is(cause, context.Canceled)
	g.release(l, lost, standby)
	return nil
}

// acquire records one more claim of task t (or of its standby), starting
// it on its first claim. A task or standby of t still stopping from an
// earlier lease is waited for first: they share the task's stores.
func (g *group) acquire(t int32, standby bool) *lease {
	for {
		g.mu.Lock()
		held, other := g.tasks, g.standbys
		if standby {
			held, other = other, held
		}
		if o := other[t]; o != nil {
			// The group revokes a claim before it gives the other.
			g.mu.Unlock()
			<-o.done
			continue
		}
		l := held[t]
		if l != nil && l.fence.Load() != 0 {
			g.mu.Unlock()
			<-l.done
			continue
		}
		if l == nil {
			l = &lease{id: t, revoke: make(chan struct{}), done: make(chan struct{}), started: time.Now()}
			held[t] = l
			if standby {
				go g.runStandby(l)
			} else {
				g.assigned.Add(1)
				go g.run(l)
			}
		}
		l.claims++
		g.mu.Unlock()
		return l
	}
}

// release drops one claim of l; the last one hands the task over and
// waits (up to the rebalance timeout) until it has stopped.
func (g *group) release(l *lease, lost, standby bool) {
	g.mu.Lock()
	l.claims--
	last := l.claims == 0
	if last {
		l.fenceNow.Store(lost)
		l.fence.Store(time.Now().Add(g.c.job.rebalanceTimeout() / 2).UnixNano())
		if !standby {
			g.revoked.Add(1)
		}
		close(l.revoke)
	}
	g.mu.Unlock()
	if !last {
		return
	}
	select {
	case <-l.done:
	case <-time.After(g.c.job.rebalanceTimeout()):
		g.c.log.Error("task did not stop within the rebalance timeout; it is fenced", "task", fmt.Sprintf("task-%d", l.id))
	}
}

// run runs a leased task until it is revoked or the job stops.
func (g *group) run(l *lease) {
	defer func() {
		g.mu.Lock()
		if g.tasks[l.id] == l {
			delete(g.tasks, l.id)
		}
		g.mu.Unlock()
		close(l.done)
	}()
	err := g.c.runTask(l)
	if errors.Is(err, errFenced) {
		g.fenced.Add(1)
		g.c.log.Warn("task fenced", "task", fmt.Sprintf("task-%d", l.id))
		return
	}
	if err != nil {
		g.c.fail(err)
	}
}

// runStandby keeps a standby of task l.id until it is revoked. A standby
// that cannot open its stores is logged, not fatal: it only saves its task
// restore time.
func (g *group) runStandby(l *lease) {
	defer func() {
		g.mu.Lock()
		if g.standbys[l.id] == l {
			delete(g.standbys, l.id)
		}
		g.mu.Unlock()
		close(l.done)
	}()
	if err := g.c.runStandby(l); err != nil {
		g.c.log.Error("standby failed; the task will restore from the changelog when it moves here", "task", fmt.Sprintf("task-%d", l.id), "err", err)
	}
}

// mark mirrors a task's checkpointed input offsets to the group.
func (g *group) mark(offsets map[stream.Partition]int64) {
	g.mu.Lock()
	s := g.sess
	g.mu.Unlock()
	if s == nil {
		return
	}
	for p, off := range offsets {
		if slices.Contains(g.c.job.Inputs, p.Topic) {
			s.MarkOffset(p.Topic, p.Partition, off, "")
		}
	}
}

// standbyStats returns the standbys held, ascending, their summed lag,
// and the checkpoint each has applied.
func (g *group) standbyStats() ([]int32, int64, map[int32]uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var ts []int32
	var lag int64
	at := make(map[int32]uint64, len(g.standbys))
	for t, l := range g.standbys {
		ts = append(ts, t)
		lag += l.standbyLag.Load()
		at[t] = l.standbyAt.Load()
	}
	slices.Sort(ts)
	return ts, lag, at
}

// fenced reports whether task l may no longer commit.
func (l *lease) fenced() bool {
	f := l.fence.Load()
	return l.fenceNow.Load() || (f != 0 && time.Now().UnixNano() > f)
}

// runners returns the running tasks, ordered by partition.
func (g *group) runners() []*runner {
	g.mu.Lock()
	defer g.mu.Unlock()
	rs := make([]*runner, 0, len(g.tasks))
	for _, l := range g.tasks {
		if l.r != nil {
			rs = append(rs, l.r)
		}
	}
	slices.SortFunc(rs, func(a, b *runner) int { return int(a.partition - b.partition) })
	return rs
}
