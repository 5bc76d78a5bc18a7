// Package group keeps one process's membership in its job's Kafka consumer
// group: it joins, takes part in rebalances, heartbeats, mirrors offsets to
// the group, and leaves. What the members are assigned is the caller's
// business (a Handler plans and receives assignments); this package makes
// the membership heal itself.
//
// # What it guarantees
//
//   - A join the coordinator holds is waited for as long as the coordinator
//     may hold it, never abandoned: an abandoned join leaves a member behind
//     that the next round waits for.
//   - The member heartbeats on a connection of its own, also while it waits
//     to join or sync, so a long rebalance never costs it its session.
//   - Rejoins are never blocked by the caller: handing over what a member
//     gives up is the caller's work, done while the membership goes on.
//   - A member that cannot reach the coordinator for a session timeout, or
//     that the coordinator no longer knows, reports its membership lost
//     (Handler.Lost) before it joins again as a new member: whatever it
//     held may have been given to others.
//   - A process that restarts in the slot of one that died removes its dead
//     predecessor from the group at once (see Slot), instead of waiting a
//     session timeout for the coordinator to notice.
//
// # Brokers differ
//
// Grete relies on what Apache Kafka does, and copes with what the
// in-process broker it tests against (kfake) does differently:
//
//   - Kafka starts a member's session timer when it answers the member's
//     join. kfake starts it only when the answer is delivered: a member
//     killed while it waited for its first join stays in the group, with
//     whatever the leader assigned it, until a later rebalance completes
//     without it (and a member whose sync the leader's sync completed stays
//     too). So the leader asks for one more rebalance (a probe) whenever it
//     assigned partitions to a member in its first join: a live member
//     joins again at once, a dead one does not and is dropped after the
//     rebalance timeout. Against Kafka the probe is one quick extra round.
//   - Kafka keeps a member that waits in JoinGroup alive; kfake lets its
//     session lapse meanwhile, and never answers its join. Members
//     heartbeat on their own connection while they wait, which keeps them
//     alive there and is harmless on Kafka.
//   - kfake restarts a rebalance's timer whenever a member comes or goes,
//     so a rebalance can take longer than the rebalance timeout: joins are
//     waited for longer than that (the session timeout more, plus 5 s).
//
// The rebalance timeout told to the broker is a few seconds: members join
// at their next heartbeat whatever they are handing over, and a short
// timeout drops a member that died while it joined soon.
package group

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/grete-go/grete/internal/kafka"
	"github.com/grete-go/grete/stream"
)

// Coordinator is what a Member sends its requests to: a *kafka.GroupConn.
type Coordinator interface {
	Join(ctx context.Context, r kafka.JoinRequest) (kafka.JoinResponse, error)
	Sync(ctx context.Context, r kafka.SyncRequest) (kafka.GroupAssignment, error)
	Heartbeat(ctx context.Context, memberID, instanceID string, generation int32) error
	Leave(ctx context.Context, members []kafka.GroupMember) error
	CommitOffsets(ctx context.Context, memberID, instanceID string, generation int32, offsets map[stream.Partition]int64, metadata string) error
	Describe(ctx context.Context) ([]kafka.GroupMemberInfo, error)
}

// Config configures a Member.
type Config struct {
	Group      string
	InstanceID string // static membership; "" for a dynamic member
	// Slot, for a dynamic member, identifies the process's place on its
	// machine; its dead predecessors are removed from the group at start.
	// The Coordinator's connections must announce Slot.ClientID.
	Slot     *Slot
	Protocol string   // the assignor's name; every member must speak it
	Topics   []string // the subscription tools show
	// SessionTimeout: the coordinator removes a member it has not heard
	// from for this long. RebalanceTimeout: how long a rebalance waits for
	// the members to join. HeartbeatInterval: how often a member
	// heartbeats (and so how soon it learns of a rebalance).
	SessionTimeout, RebalanceTimeout, HeartbeatInterval time.Duration
	// Patience is how long joining may keep failing for reasons that may
	// pass (the coordinator cannot be reached) before Run gives up with a
	// *kafka.UnreachableError; zero means for ever.
	Patience time.Duration
	Logger   *slog.Logger
}

// Generation is a completed rebalance as one member sees it.
type Generation struct {
	ID       int32
	MemberID string
	Leader   bool
}

// Handler plans and receives a member's assignments. Its methods are called
// from the Member's goroutines, never two at once, and must not block on
// the network or on work that a rebalance may wait for.
type Handler interface {
	// UserData describes the member to the leader for the next join.
	UserData() ([]byte, error)
	// Plan, on the leader, assigns every member of the generation.
	Plan(gen int32, members []kafka.GroupMember) (map[string]kafka.GroupAssignment, error)
	// Assigned hands the member its assignment of a completed rebalance.
	Assigned(gen Generation, a kafka.GroupAssignment)
	// Lost says that the membership is lost: whatever the member was
	// assigned may belong to another member now, so it must stop without
	// committing. The member then joins again as a new member.
	Lost(cause error)
}

// Member is one process's membership of a group.
type Member struct {
	conn Coordinator
	cfg  Config
	h    Handler
	log  *slog.Logger

	rejoin chan string     // asks the run loop to join again (buffered, 1)
	lostCh chan lostSignal // the heartbeats found the membership lost (buffered, 1)

	mu       sync.Mutex
	memberID string
	gen      int32     // generation of the last join; -1 before the first
	stable   bool      // synced in gen, not yet rejoining
	held     bool      // Assigned was called since the last Lost
	acked    time.Time // when the coordinator last answered for this member (request sent at)
	first    bool      // no join of this member id has been answered yet
	pending  map[stream.Partition]int64
	leaving  bool

	rebalances int64
}

// New returns a member; Run makes it join.
func New(conn Coordinator, cfg Config, h Handler) *Member {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Member{
		conn: conn, cfg: cfg, h: h, log: cfg.Logger,
		rejoin: make(chan string, 1), lostCh: make(chan lostSignal, 1),
		gen: -1, first: true, pending: map[stream.Partition]int64{},
	}
}

// envelope is the member's own header on the handler's user data: a
// version byte and flags.
const (
	envelopeVersion = 1
	flagFirstJoin   = 1 << 0
)

func wrapUserData(first bool, data []byte) []byte {
	flags := byte(0)
	if first {
		flags |= flagFirstJoin
	}
	return append([]byte{envelopeVersion, flags}, data...)
}

// unwrapUserData returns the handler's data and whether the member was in
// its first join. Data from another version is passed on whole.
func unwrapUserData(b []byte) (data []byte, first bool) {
	if len(b) < 2 || b[0] != envelopeVersion {
		return b, false
	}
	return b[2:], b[1]&flagFirstJoin != 0
}

// Run joins the group and keeps the membership until ctx ends. It returns
// nil then, or an error when the membership cannot go on (another process
// took this member's instance id, the broker refuses the group's
// configuration, the handler's plan failed). Run does not leave the group:
// call Leave once what the member holds is handed over.
func (m *Member) Run(ctx context.Context) error {
	bctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { m.heartbeats(bctx) })
	wg.Go(func() { m.commits(bctx) })
	defer wg.Wait()
	defer cancel()

	m.expelPredecessors(ctx)
	reason := "start"
	for {
		if err := m.joinSync(ctx, reason); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case reason = <-m.rejoin:
		case l := <-m.lostCh:
			reason = "the group has moved on"
			if m.current(l.id, l.gen) {
				m.lose(l.err)
				reason = "membership lost"
			}
		}
	}
}

// Rejoin asks for a rebalance: the member joins again with fresh user
// data. Requests made while a join is under way lead to one more join.
func (m *Member) Rejoin(reason string) {
	select {
	case m.rejoin <- reason:
	default:
	}
}

// joinSync joins the group and syncs, retrying until a generation is
// complete, and hands its assignment to the handler.
func (m *Member) joinSync(ctx context.Context, reason string) error {
	bo := backoff{min: 50 * time.Millisecond, max: 5 * time.Second}
	var failing time.Time // since when joins fail for a reason that may pass
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Whatever asked for a rebalance before this join is covered by it.
		select {
		case <-m.rejoin:
		default:
		}
		// A loss the heartbeats found while joins keep failing (the
		// coordinator is away): what the member holds must stop now.
		select {
		case l := <-m.lostCh:
			if m.current(l.id, l.gen) {
				m.lose(l.err)
			}
		default:
		}
		data, err := m.h.UserData()
		if err != nil {
			return fmt.Errorf("group %q: describe member: %w", m.cfg.Group, err)
		}
		m.mu.Lock()
		m.stable = false
		req := kafka.JoinRequest{
			MemberID: m.memberID, InstanceID: m.cfg.InstanceID,
			SessionTimeout: m.cfg.SessionTimeout, RebalanceTimeout: m.cfg.RebalanceTimeout,
			Protocol: m.cfg.Protocol, Topics: m.cfg.Topics, UserData: wrapUserData(m.first, data), Reason: reason,
		}
		m.mu.Unlock()
		sent := time.Now()
		resp, err := m.conn.Join(ctx, req)
		if err != nil {
			switch kafka.ClassifyGroupError(err) {
			case kafka.GroupMemberIDRequired:
				m.mu.Lock()
				m.memberID = resp.MemberID
				m.mu.Unlock()
				continue
			case kafka.GroupUnknownMember:
				m.lose(err)
				bo.wait(ctx)
				continue
			case kafka.GroupFenced:
				return fmt.Errorf("group %q: another process joined with this process's instance id %q: %w", m.cfg.Group, m.cfg.InstanceID, err)
			case kafka.GroupFatal:
				switch {
				case kafka.IsInconsistentProtocol(err):
					// During a rolling upgrade the members of another
					// version of Grete are still there: wait for them.
					m.log.Warn("the group's members speak another protocol (another version of Grete, or another program using the job's group name); waiting for them to leave",
						"group", m.cfg.Group, "protocol", m.cfg.Protocol, "backoff", bo.next())
					bo.wait(ctx)
					continue
				case kafka.IsInvalidSessionTimeout(err):
					return fmt.Errorf("group %q: the broker refuses the session timeout %s (see its group.min.session.timeout.ms and group.max.session.timeout.ms): %w", m.cfg.Group, m.cfg.SessionTimeout, err)
				}
				return fmt.Errorf("group %q: %w", m.cfg.Group, err)
			}
			if failing.IsZero() {
				failing = time.Now()
				if acked := m.LastAck(); !acked.IsZero() && acked.Before(failing) {
					failing = acked
				}
			}
			if m.cfg.Patience > 0 && time.Since(failing) > m.cfg.Patience && kafka.Transient(err) {
				return &kafka.UnreachableError{Since: failing, Err: err}
			}
			if ctx.Err() == nil {
				m.log.Warn("joining the group failed; retrying", "group", m.cfg.Group, "err", err, "backoff", bo.next())
			}
			bo.wait(ctx)
			continue
		}
		failing = time.Time{}
		m.mu.Lock()
		m.memberID, m.gen, m.first, m.acked = resp.MemberID, resp.Generation, false, sent
		m.rebalances++
		m.mu.Unlock()
		leader := resp.Leader == resp.MemberID

		var plan map[string]kafka.GroupAssignment
		probe := false
		if leader {
			if plan, probe, err = m.plan(resp); err != nil {
				return err
			}
		}
		a, err := m.conn.Sync(ctx, kafka.SyncRequest{
			Generation: resp.Generation, MemberID: resp.MemberID, InstanceID: m.cfg.InstanceID,
			Protocol: m.cfg.Protocol, Assignments: plan,
		})
		if err != nil {
			switch kafka.ClassifyGroupError(err) {
			case kafka.GroupUnknownMember:
				m.lose(err)
			case kafka.GroupFenced:
				return fmt.Errorf("group %q: another process joined with this process's instance id %q: %w", m.cfg.Group, m.cfg.InstanceID, err)
			case kafka.GroupRejoin:
				continue // a newer rebalance began: join it at once
			}
			if ctx.Err() == nil {
				m.log.Warn("syncing with the group failed; joining again", "group", m.cfg.Group, "err", err, "backoff", bo.next())
			}
			bo.wait(ctx)
			continue
		}
		m.mu.Lock()
		m.stable, m.held, m.acked = true, true, sent
		m.mu.Unlock()
		m.h.Assigned(Generation{ID: resp.Generation, MemberID: resp.MemberID, Leader: leader}, a)
		if probe {
			m.Rejoin("probe: a member in its first join was given partitions")
		}
		return nil
	}
}

// plan runs the handler's plan over the members' user data, and says
// whether a probe rebalance must follow (see the package doc).
func (m *Member) plan(resp kafka.JoinResponse) (map[string]kafka.GroupAssignment, bool, error) {
	members := make([]kafka.GroupMember, len(resp.Members))
	first := map[string]bool{}
	for i, gm := range resp.Members {
		data, f := unwrapUserData(gm.UserData)
		gm.UserData = data
		members[i] = gm
		first[gm.MemberID] = f && gm.MemberID != resp.MemberID // the leader knows it is alive
	}
	plan, err := m.h.Plan(resp.Generation, members)
	if err != nil {
		return nil, false, fmt.Errorf("group %q: plan the assignment: %w", m.cfg.Group, err)
	}
	probe := false
	for id, a := range plan {
		if first[id] {
			for _, ps := range a.Topics {
				probe = probe || len(ps) > 0
			}
		}
	}
	return plan, probe, nil
}

// lose reports the membership lost (once per membership) and forgets the
// member id, so that the next join is a new member's.
func (m *Member) lose(cause error) {
	m.mu.Lock()
	held := m.held
	m.held, m.stable, m.gen, m.first = false, false, -1, true
	m.memberID = ""
	m.mu.Unlock()
	// Drain a loss the heartbeats found meanwhile: it is this one.
	select {
	case <-m.lostCh:
	default:
	}
	if held {
		m.log.Warn("group membership lost; joining again as a new member", "group", m.cfg.Group, "err", cause)
		m.h.Lost(cause)
	}
}

// heartbeats keeps the session alive, learns of rebalances and of a lost
// membership. It heartbeats while a join or sync is under way too: Kafka
// answers those with REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION, which
// are ignored then, and it keeps a member waiting to join alive on brokers
// that would otherwise let its session lapse meanwhile.
func (m *Member) heartbeats(ctx context.Context) {
	t := time.NewTicker(m.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		id, gen, stable, acked, held := m.memberID, m.gen, m.stable, m.acked, m.held
		m.mu.Unlock()
		if id == "" || gen < 0 {
			continue
		}
		sent := time.Now()
		hctx, cancel := context.WithTimeout(ctx, max(m.cfg.HeartbeatInterval, m.cfg.SessionTimeout/2))
		err := m.conn.Heartbeat(hctx, id, m.cfg.InstanceID, gen)
		cancel()
		if ctx.Err() != nil {
			return
		}
		kind := kafka.ClassifyGroupError(err)
		switch {
		case err == nil:
			m.ack(id, gen, sent)
			continue
		case kind == kafka.GroupRejoin:
			if kafka.IsRebalanceInProgress(err) {
				m.ack(id, gen, sent)
				if stable {
					m.Rejoin("the group is rebalancing")
				}
				continue
			}
			// ILLEGAL_GENERATION while stable: the group went on to a
			// generation this member is not part of.
			if stable {
				m.signalLost(id, gen, err)
			}
			continue
		case kind == kafka.GroupUnknownMember || kind == kafka.GroupFenced:
			m.signalLost(id, gen, err)
			continue
		}
		// The coordinator did not answer. Past a session timeout it has
		// removed the member.
		if held && time.Since(acked) > m.cfg.SessionTimeout {
			m.signalLost(id, gen, fmt.Errorf("no answer from the group coordinator since %s (session timeout %s): %w", acked.Format(time.TimeOnly), m.cfg.SessionTimeout, err))
		}
	}
}

// ack records an answer of the coordinator for member id in generation gen.
func (m *Member) ack(id string, gen int32, sent time.Time) {
	m.mu.Lock()
	if m.memberID == id && m.gen == gen && sent.After(m.acked) {
		m.acked = sent
	}
	m.mu.Unlock()
}

// current reports whether id and gen are still the member's.
func (m *Member) current(id string, gen int32) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.memberID == id && m.gen == gen
}

// lostSignal is a loss the heartbeats found, for member id in generation
// gen: stale once the member has joined again.
type lostSignal struct {
	id  string
	gen int32
	err error
}

func (m *Member) signalLost(id string, gen int32, err error) {
	if !m.current(id, gen) {
		return
	}
	select {
	case m.lostCh <- lostSignal{id, gen, err}:
	default:
	}
}

// ValidUntil is how long the member may act on its assignment (commit what
// it was assigned) without hearing from the coordinator again: two thirds
// of a session timeout after the coordinator last answered for it, since
// the coordinator removes it a session timeout after that. It is the zero
// time when the member holds no assignment.
func (m *Member) ValidUntil() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.held || m.gen < 0 {
		return time.Time{}
	}
	return m.acked.Add(m.cfg.SessionTimeout * 2 / 3)
}

// LastAck is when the coordinator last answered for this member (when
// the answered request was sent); the zero time before the first answer.
func (m *Member) LastAck() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acked
}

// Rebalances is the number of rebalances the member completed a join of.
func (m *Member) Rebalances() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rebalances
}

// MemberID is the member's current id ("" between memberships).
func (m *Member) MemberID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.memberID
}

// Mark records offsets (next offset to read) to mirror to the group's
// committed offsets; they are committed within a second, as the member of
// the current generation. Mirroring is for lag tools: it is best effort.
func (m *Member) Mark(offsets map[stream.Partition]int64) {
	m.mu.Lock()
	maps.Copy(m.pending, offsets)
	m.mu.Unlock()
}

// commitEvery is how often marked offsets are committed.
const commitEvery = time.Second

func (m *Member) commits(ctx context.Context) {
	t := time.NewTicker(commitEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.commitPending(context.WithoutCancel(ctx), time.Second)
			return
		case <-t.C:
			m.commitPending(ctx, commitEvery*5)
		}
	}
}

func (m *Member) commitPending(ctx context.Context, timeout time.Duration) {
	m.mu.Lock()
	if len(m.pending) == 0 || !m.stable || m.leaving {
		m.mu.Unlock()
		return
	}
	offs := maps.Clone(m.pending)
	id, gen := m.memberID, m.gen
	m.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := m.conn.CommitOffsets(cctx, id, m.cfg.InstanceID, gen, offs, "grete")
	cancel()
	if err != nil {
		// A rebalance or a broken connection: the next tick tries again.
		m.log.Debug("mirroring offsets to the group failed; retrying", "group", m.cfg.Group, "err", err)
		return
	}
	m.mu.Lock()
	for p, off := range offs {
		if m.pending[p] == off {
			delete(m.pending, p)
		}
	}
	m.mu.Unlock()
}

// Leave commits the marked offsets and removes the member from the group,
// so that its partitions move at once. Call it after Run returned and
// everything the member held is handed over.
func (m *Member) Leave(ctx context.Context) error {
	m.commitPending(ctx, 2*time.Second)
	m.mu.Lock()
	m.leaving = true
	id := m.memberID
	m.mu.Unlock()
	if id == "" {
		// Not a member (never joined, or lost): leaving by instance id
		// would remove the process that took it over.
		return nil
	}
	return m.conn.Leave(ctx, []kafka.GroupMember{{MemberID: id, InstanceID: m.cfg.InstanceID}})
}

// expelPredecessors removes from the group the members that earlier
// processes in this member's slot left behind when they died.
func (m *Member) expelPredecessors(ctx context.Context) {
	if m.cfg.Slot == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ms, err := m.conn.Describe(ctx)
	if err != nil {
		m.log.Debug("could not list the group's members", "group", m.cfg.Group, "err", err)
		return
	}
	var dead []kafka.GroupMember
	for _, mi := range ms {
		if m.cfg.Slot.Predecessor(mi.ClientID) {
			dead = append(dead, kafka.GroupMember{MemberID: mi.MemberID})
		}
	}
	if len(dead) == 0 {
		return
	}
	if err := m.conn.Leave(ctx, dead); err != nil {
		m.log.Warn("could not remove the members dead predecessors left in the group", "group", m.cfg.Group, "members", len(dead), "err", err)
		return
	}
	m.log.Info("removed the members dead predecessors of this process left in the group", "group", m.cfg.Group, "members", len(dead))
}

// backoff is an exponential backoff between attempts.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		return b.min
	}
	return b.cur
}

func (b *backoff) wait(ctx context.Context) {
	d := b.next()
	b.cur = min(2*d, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
