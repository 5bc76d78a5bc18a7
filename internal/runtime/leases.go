package runtime

import (
	"context"
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

	grp "github.com/grete-go/grete/internal/group"
	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// leases is a process's membership in its job's consumer group, and the
// tasks the group gave it.
//
// The group is Kafka's: processes with the same job name join the consumer
// group named after the job, and Grete's assignor (grp.AssignTasks) hands
// out whole tasks. A member's assignment lists its tasks (and, for tools,
// partition i of every input for task i) and its standbys. Tasks read their
// inputs from their checkpoints with their own consumers: the group's
// offsets never decide where processing resumes; they mirror the
// checkpoints, for lag tools.
//
// Rebalancing is cooperative: tasks that stay where they are keep running
// through a rebalance, and a task that moves is first handed over (its
// owner finishes the current message, commits and closes it, reporting it
// as releasing meanwhile, then asks for a rebalance) and only then started
// by its new owner (which restores its stores, from local state when it is
// current, and resumes from the checkpoint).
type leases struct {
	c        *Container
	member   *grp.Member
	conn     *kafka.GroupConn
	slot     *grp.Slot
	instance string
	topics   []string // lease topics: task i is partition i of each
	standby  bool     // the job keeps standbys

	mu       sync.Mutex
	tasks    map[int32]*lease // tasks held: starting or running
	standbys map[int32]*lease // standby copies held
	// releasing are leases given up that are still stopping, by task;
	// their tasks are reported Releasing until they stop or are fenced.
	releasing        map[int32]*lease
	releasingStandby map[int32]*lease
	stopping         bool // the process is stopping: start nothing more

	assigned, revoked, fenced atomic.Uint64
	pausedNs                  atomic.Int64 // assignment to first message ready, summed
}

// lease is one task (or standby) this process holds.
type lease struct {
	id     int32
	r      *runner       // set once the runner exists
	revoke chan struct{} // closed when the group takes the task away
	// fence is when a handover must have committed by (Unix ns), set on
	// revoke; zero while the task is held.
	fence    atomic.Int64
	fenceNow atomic.Bool   // the membership was lost: do not commit at all
	done     chan struct{} // closed when the task has stopped
	started  time.Time     // when the group gave the task to this process
	prev     *lease        // an earlier lease of the same stores, still stopping
	// standbyLag is, for a standby, how many changelog records it was
	// behind the task's checkpoint when it last looked; standbyAt is the
	// id of the checkpoint it has applied.
	standbyLag atomic.Int64
	standbyAt  atomic.Uint64
}

// joinTimeout is how long a rebalance waits for the members to join (the
// rebalance timeout told to the broker). Members join as soon as their
// next heartbeat tells them of a rebalance, whatever they are handing
// over, so a few seconds is plenty; a longer one would only make a
// rebalance wait longer for a member that died while it joined.
func joinTimeout(session time.Duration) time.Duration {
	return min(max(session/2, 3*time.Second), 10*time.Second)
}

func newLeases(c *Container) (*leases, error) {
	j := &c.cfg
	g := &leases{
		c: c, tasks: map[int32]*lease{}, standbys: map[int32]*lease{},
		releasing: map[int32]*lease{}, releasingStandby: map[int32]*lease{},
	}
	g.topics = j.Inputs
	if len(g.topics) == 0 {
		g.topics = j.Broadcast[:1]
	}
	if j.Standbys > 0 {
		g.standby = slices.ContainsFunc(j.Stores, func(s store.Spec) bool { return ChangelogTopic(j.Name, s) != "" })
	}
	var err error
	if g.instance, err = j.instanceID(); err != nil {
		return nil, err
	}
	clientID := j.Kafka.ClientID
	if clientID == "" {
		clientID = "grete"
	}
	if g.instance == "" {
		// A dynamic member: take a slot, so that a restart removes what
		// a killed predecessor left in the group.
		if g.slot, err = grp.AcquireSlot(filepath.Join(j.DataDir, j.Name, "members")); err != nil {
			c.log.Warn("no member slot; a restart after a crash waits for the session timeout", "err", err)
		} else {
			clientID = g.slot.ClientID(clientID)
		}
	}
	st := j.SessionTimeout
	jt := joinTimeout(st)
	// A coordinator holds a join until the rebalance completes (up to the
	// join timeout, restarted by every member that comes or goes) and a
	// sync until the leader's assignment arrives: wait long enough never
	// to abandon one.
	g.conn = c.conn.NewGroupConn(j.Name, clientID, jt+st+5*time.Second)
	g.member = grp.New(g.conn, grp.Config{
		Group: j.Name, InstanceID: g.instance, Slot: g.slot,
		Protocol: grp.AssignorName, Topics: g.topics,
		SessionTimeout: st, RebalanceTimeout: jt,
		// Members learn of a rebalance from their next heartbeat: a
		// short interval keeps the pause of a handover short.
		HeartbeatInterval: min(st/3, 500*time.Millisecond),
		Patience:          j.CommitTimeout,
		Logger:            c.log,
	}, g)
	return g, nil
}

// participate takes part in the group until ctx ends.
func (g *leases) participate(ctx context.Context) error {
	err := g.member.Run(ctx)
	if err != nil {
		// The membership cannot go on (e.g. another process took this
		// one's instance id): nothing may commit any more.
		g.Lost(err)
	}
	return err
}

// leave hands every task over at once: the member leaves the group (a
// static member too: a graceful stop should not wait for the session
// timeout) and its connections close.
func (g *leases) leave() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := g.member.Leave(ctx)
	g.conn.Close()
	if g.slot != nil {
		err = errors.Join(err, g.slot.Release())
	}
	return err
}

// stopAcquiring makes the group start no more tasks: the process stops.
func (g *leases) stopAcquiring() {
	g.mu.Lock()
	g.stopping = true
	g.mu.Unlock()
}

// leases returns the partitions that lease task t.
func (g *leases) leases(t int32) []stream.Partition {
	if len(g.c.cfg.Inputs) == 0 {
		return []stream.Partition{{Topic: g.topics[0], Partition: 0}}
	}
	ps := make([]stream.Partition, len(g.topics))
	for i, topic := range g.topics {
		ps[i] = stream.Partition{Topic: topic, Partition: t}
	}
	return ps
}

// UserData, Plan, Assigned and Lost make group the membership's handler.

// UserData describes this process to the assignor: what it runs, hands
// over and keeps standbys of, and what local state it has.
func (g *leases) UserData() ([]byte, error) {
	g.mu.Lock()
	mi := grp.MemberInfo{Instance: g.instance}
	for t := range g.tasks {
		mi.Owned = append(mi.Owned, t)
	}
	for t := range g.releasing {
		if _, held := g.tasks[t]; !held {
			mi.Releasing = append(mi.Releasing, t)
		}
	}
	for t := range g.standbys {
		mi.Standby = append(mi.Standby, t)
	}
	g.mu.Unlock()
	slices.Sort(mi.Owned)
	slices.Sort(mi.Releasing)
	slices.Sort(mi.Standby)
	// Local state makes a task warm: it replays only the changelog tail.
	if len(g.c.cfg.Stores) > 0 {
		ents, _ := os.ReadDir(filepath.Join(g.c.cfg.DataDir, g.c.cfg.Name))
		for _, e := range ents {
			if n, ok := strings.CutPrefix(e.Name(), "task-"); ok && e.IsDir() {
				if t, err := strconv.ParseInt(n, 10, 32); err == nil && !slices.Contains(mi.Owned, int32(t)) {
					mi.Warm = append(mi.Warm, int32(t))
				}
			}
		}
	}
	return grp.EncodeInfo(mi)
}

// Plan runs on the group's leader: it assigns the job's tasks and standbys
// to the members.
func (g *leases) Plan(_ int32, members []kafka.GroupMember) (map[string]kafka.GroupAssignment, error) {
	infos := make([]grp.MemberInfo, len(members))
	for i, m := range members {
		infos[i] = grp.DecodeInfo(m.MemberID, m.UserData)
	}
	k := 0
	if g.standby {
		k = g.c.cfg.Standbys
	}
	out := make(map[string]kafka.GroupAssignment, len(members))
	for id, a := range grp.Plan(g.c.tasks, k, infos) {
		b, err := grp.EncodeAssignment(a)
		if err != nil {
			return nil, err
		}
		ga := kafka.GroupAssignment{Topics: map[string][]int32{}, UserData: b}
		for _, t := range a.Tasks {
			for _, p := range g.leases(t) {
				ga.Topics[p.Topic] = append(ga.Topics[p.Topic], p.Partition)
			}
		}
		out[id] = ga
	}
	return out, nil
}

// Assigned starts the tasks and standbys the group gave this process and
// hands over the ones it took away.
func (g *leases) Assigned(gen grp.Generation, ga kafka.GroupAssignment) {
	a, err := grp.DecodeAssignment(ga.UserData)
	if err != nil {
		g.c.log.Error("ignoring an assignment this process cannot read (is another version of Grete running in the job's group?)", "err", err)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for t, l := range g.tasks {
		if !slices.Contains(a.Tasks, t) {
			g.revokeLocked(l, false, false)
		}
	}
	for t, l := range g.standbys {
		if !slices.Contains(a.Standbys, t) {
			g.revokeLocked(l, false, true)
		}
	}
	if g.stopping {
		return
	}
	for _, t := range a.Tasks {
		if _, held := g.tasks[t]; !held && t >= 0 && t < g.c.tasks {
			g.acquireLocked(t, false)
		}
	}
	for _, t := range a.Standbys {
		if _, held := g.standbys[t]; !held && t >= 0 && t < g.c.tasks {
			g.acquireLocked(t, true)
		}
	}
}

// Lost fences every task at once: the group may have given them to other
// processes already, so none may commit.
func (g *leases) Lost(error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, l := range g.tasks {
		g.revokeLocked(l, true, false)
	}
	for _, l := range g.standbys {
		g.revokeLocked(l, true, true)
	}
}

// acquireLocked starts a lease of task t (or of its standby). A task or
// standby of t still stopping from an earlier lease is waited for first, by
// the new lease: they share the task's stores.
func (g *leases) acquireLocked(t int32, standby bool) {
	l := &lease{id: t, revoke: make(chan struct{}), done: make(chan struct{}), started: time.Now()}
	// At most one earlier lease of t can still be stopping: the assignor
	// gives out no task that is being released, and a standby is never
	// given to the task's owner.
	for _, m := range []map[int32]*lease{g.releasing, g.releasingStandby, g.tasks, g.standbys} {
		if o := m[t]; o != nil {
			l.prev = o
		}
	}
	if standby {
		g.standbys[t] = l
		go g.hold(l, g.standbys, g.runStandby)
		return
	}
	g.tasks[t] = l
	g.assigned.Add(1)
	go g.hold(l, g.tasks, g.run)
}

// revokeLocked asks lease l to stop: a task finishes its current message
// and commits (unless lost: then it commits nothing), then closes. Until it
// has stopped, or its fence has passed, its task is reported as releasing;
// then the group is asked to rebalance so the task can go to its new
// owner.
func (g *leases) revokeLocked(l *lease, lost, standby bool) {
	held, releasing := g.tasks, g.releasing
	if standby {
		held, releasing = g.standbys, g.releasingStandby
	}
	if held[l.id] != l {
		return
	}
	delete(held, l.id)
	releasing[l.id] = l
	fence := time.Now().Add(g.c.cfg.RebalanceTimeout / 2)
	l.fenceNow.Store(lost)
	l.fence.Store(fence.UnixNano())
	if !standby {
		g.revoked.Add(1)
	}
	close(l.revoke)
	go func() {
		t := time.NewTimer(time.Until(fence))
		defer t.Stop()
		select {
		case <-l.done:
		case <-t.C:
			g.c.log.Error("task did not stop within half the rebalance timeout; it is fenced and handed over", "task", TaskName(l.id), "standby", standby)
		}
		g.mu.Lock()
		if releasing[l.id] == l {
			delete(releasing, l.id)
		}
		g.mu.Unlock()
		if !standby {
			g.member.Rejoin(fmt.Sprintf("task-%d handed over", l.id))
		}
	}()
}

// hold runs lease l, once any earlier lease of its stores has stopped,
// and forgets it (it was in held) when it stops.
func (g *leases) hold(l *lease, held map[int32]*lease, run func(*lease)) {
	defer func() {
		g.mu.Lock()
		if held[l.id] == l {
			delete(held, l.id)
		}
		g.mu.Unlock()
		close(l.done)
	}()
	if l.prev != nil {
		<-l.prev.done
	}
	run(l)
}

// run runs a leased task until it is revoked or the job stops.
func (g *leases) run(l *lease) {
	err := g.c.runTask(l)
	// A task whose outputs a broken connection lost starts again from its
	// checkpoint, for as long as it keeps making progress: one that cannot
	// commit for CommitTimeout fails the job.
	var rw *rewindError
	for since := time.Now(); errors.As(err, &rw) && time.Since(since) < g.c.cfg.CommitTimeout; {
		select {
		case <-l.revoke:
			return
		case <-g.c.stop:
			return
		default:
		}
		g.c.log.Warn("restarting task from its last checkpoint", "task", TaskName(l.id), "err", rw.err)
		old := l.r
		err = g.c.runTask(l)
		if r := l.r; r != nil && r != old && r.loop.Stats().Commits > 0 {
			since = time.Now() // it made progress before it lost outputs again
		}
	}
	if errors.Is(err, ErrFenced) {
		g.fenced.Add(1)
		g.c.log.Warn("task fenced", "task", TaskName(l.id))
		return
	}
	if err != nil {
		g.c.fail(err)
	}
}

// runStandby keeps a standby of task l.id until it is revoked. A standby
// that cannot open its stores is logged, not fatal: it only saves its task
// restore time.
func (g *leases) runStandby(l *lease) {
	if err := g.c.runStandby(l); err != nil {
		g.c.log.Error("standby failed; the task will restore from the changelog when it moves here", "task", TaskName(l.id), "err", err)
	}
}

// mark mirrors a task's checkpointed input offsets to the group.
func (g *leases) mark(offsets map[stream.Partition]int64) {
	m := make(map[stream.Partition]int64, len(offsets))
	for p, off := range offsets {
		if slices.Contains(g.c.cfg.Inputs, p.Topic) {
			m[p] = off
		}
	}
	g.member.Mark(m)
}

// waitValid waits until the membership is confirmed recently enough for
// lease l to commit, and returns until when it may: a process cut off from
// the group's coordinator for longer than the session timeout has lost its
// tasks to other processes, so it must not write a checkpoint then. It
// fails with ErrFenced once l is fenced, and with ctx's error.
func (g *leases) waitValid(ctx context.Context, l *lease) (time.Time, error) {
	for {
		if l.fenced() {
			return time.Time{}, ErrFenced
		}
		if until := g.member.ValidUntil(); time.Until(until) > 0 {
			return until, nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return time.Time{}, fmt.Errorf("the group's coordinator has not confirmed this process's membership: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// standbyStats returns the standbys held, ascending, their summed lag,
// and the checkpoint each has applied.
func (g *leases) standbyStats() ([]int32, int64, map[int32]uint64) {
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
func (g *leases) runners() []*runner {
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

// all returns every lease held or still stopping.
func (g *leases) all() []*lease {
	g.mu.Lock()
	defer g.mu.Unlock()
	var ls []*lease
	for _, m := range []map[int32]*lease{g.tasks, g.standbys, g.releasing, g.releasingStandby} {
		for _, l := range m {
			ls = append(ls, l)
		}
	}
	return ls
}
