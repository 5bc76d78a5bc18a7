package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/stream"
)

// This file is the wire side of Grete's consumer-group membership: the
// classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
// OffsetCommit, DescribeGroups) spoken on connections of its own to the
// group's coordinator. The state machine that decides when to send what
// lives in internal/group; here each call is one request, answered or
// failed.
//
// Why not sarama's ConsumerGroup: it reads the answer to a JoinGroup within
// Net.ReadTimeout (30 s) although the broker may hold a join for up to the
// rebalance timeout, and a join abandoned that way leaves a member behind
// that the group waits for in the next round, which is abandoned again: a
// member that never gets back in. It also blocks its rejoin on a revoked
// claim's handler, ties the rebalance timeout told to the broker to the time
// a handover may take, and offers no way to ask for a rebalance.

// GroupErrorKind says what a member must do about a failed group request.
type GroupErrorKind int

const (
	// GroupRetry: the request may succeed if sent again after a backoff
	// (a connection broke, the coordinator moved or is loading).
	GroupRetry GroupErrorKind = iota
	// GroupRejoin: the group is rebalancing or moved to a generation this
	// member is not part of; join again.
	GroupRejoin
	// GroupUnknownMember: the coordinator does not know the member id
	// (its session expired, or it was removed): whatever the member held
	// may be someone else's now. Join again as a new member.
	GroupUnknownMember
	// GroupMemberIDRequired: a first join was answered with the member id
	// to join with (KIP-394); join again at once with it.
	GroupMemberIDRequired
	// GroupFenced: another process joined with this member's instance id.
	GroupFenced
	// GroupFatal: retrying cannot help (authorization, a configuration
	// the broker refuses, a protocol no other member speaks).
	GroupFatal
)

// ClassifyGroupError says what a member must do about err, returned by a
// GroupConn call.
func ClassifyGroupError(err error) GroupErrorKind {
	var kerr sarama.KError
	if !errors.As(err, &kerr) {
		return GroupRetry // a connection or a context
	}
	switch kerr {
	case sarama.ErrRebalanceInProgress, sarama.ErrIllegalGeneration:
		return GroupRejoin
	case sarama.ErrUnknownMemberId:
		return GroupUnknownMember
	case sarama.ErrMemberIdRequired:
		return GroupMemberIDRequired
	case sarama.ErrFencedInstancedId:
		return GroupFenced
	case sarama.ErrNotCoordinatorForConsumer, sarama.ErrConsumerCoordinatorNotAvailable,
		sarama.ErrOffsetsLoadInProgress, sarama.ErrRequestTimedOut, sarama.ErrNetworkException,
		sarama.ErrBrokerNotAvailable, sarama.ErrUnknown, sarama.ErrNotEnoughReplicas,
		sarama.ErrKafkaStorageError, sarama.ErrLeaderNotAvailable:
		return GroupRetry
	}
	return GroupFatal
}

// IsRebalanceInProgress reports whether err says that the group is
// rebalancing.
func IsRebalanceInProgress(err error) bool {
	return errors.Is(err, sarama.ErrRebalanceInProgress)
}

// IsInconsistentProtocol reports whether err says that the group's members
// speak a protocol this member does not (another program, or another
// version of Grete, is a member of the group).
func IsInconsistentProtocol(err error) bool {
	return errors.Is(err, sarama.ErrInconsistentGroupProtocol)
}

// IsInvalidSessionTimeout reports whether err says that the broker refuses
// the session timeout (outside its group.min.session.timeout.ms and
// group.max.session.timeout.ms).
func IsInvalidSessionTimeout(err error) bool {
	return errors.Is(err, sarama.ErrInvalidSessionTimeout)
}

// JoinRequest is one JoinGroup request of a member.
type JoinRequest struct {
	MemberID   string // "" for a member's first join
	InstanceID string // static membership; "" for a dynamic member
	// SessionTimeout is how long the coordinator waits for a heartbeat
	// before it removes the member; RebalanceTimeout how long a rebalance
	// waits for every member to join.
	SessionTimeout, RebalanceTimeout time.Duration
	Protocol                         string   // the assignor's name
	Topics                           []string // subscription, for tools
	UserData                         []byte
	Reason                           string
}

// JoinResponse is the answer to a JoinGroup request.
type JoinResponse struct {
	Generation int32
	MemberID   string // the member's id; with GroupMemberIDRequired, the id to join with
	Leader     string // the leader's member id
	// Members are the members of the generation with their user data;
	// only the leader gets them.
	Members []GroupMember
}

// GroupMember is a member of a generation as the leader sees it.
type GroupMember struct {
	MemberID   string
	InstanceID string
	UserData   []byte
}

// SyncRequest is one SyncGroup request. Only the leader sends assignments.
type SyncRequest struct {
	Generation           int32
	MemberID, InstanceID string
	Protocol             string
	Assignments          map[string]GroupAssignment // by member id
}

// GroupAssignment is what the leader assigns one member: partitions, shown
// by tools as the member's assignment, and the assignor's own data.
type GroupAssignment struct {
	Topics   map[string][]int32
	UserData []byte
}

// GroupMemberInfo is a member as DescribeGroups reports it. ClientID is the
// client id of the member's last JoinGroup request.
type GroupMemberInfo struct {
	MemberID, InstanceID, ClientID, ClientHost string
}

// GroupConn sends one member's group requests to the group's coordinator.
// Joins and syncs, which the coordinator holds until a rebalance completes,
// go on a connection of their own with a read timeout long enough for that;
// heartbeats, offset commits and the rest go on another, so that a member
// keeps heartbeating while it waits to join. Every call takes a context:
// cancelling it closes the call's connection, which ends the call.
type GroupConn struct {
	client sarama.Client
	group  string
	join   lane // JoinGroup and SyncGroup
	beat   lane // everything else
}

// lane is one connection to the coordinator, opened on first use and
// dropped after a failure.
type lane struct {
	cfg  *sarama.Config
	dial *cuttableDialer
	mu   sync.Mutex
	b    *sarama.Broker
}

// cuttableDialer dials like sarama does and remembers the connection, so
// that a call can be ended by closing its socket: sarama holds a broker's
// lock for as long as it waits for a response, so closing the broker
// itself would wait for the response too.
type cuttableDialer struct {
	d    net.Dialer
	mu   sync.Mutex
	conn net.Conn
}

func (c *cuttableDialer) Dial(network, addr string) (net.Conn, error) {
	conn, err := c.d.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	return conn, nil
}

// cut closes the last connection dialled.
func (c *cuttableDialer) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

func newLane(base *sarama.Config, clientID string, readTimeout time.Duration) lane {
	cfg := *base
	cfg.ClientID = clientID
	if readTimeout > 0 {
		cfg.Net.ReadTimeout = readTimeout
	}
	d := &cuttableDialer{d: net.Dialer{Timeout: cfg.Net.DialTimeout, KeepAlive: cfg.Net.KeepAlive, LocalAddr: cfg.Net.LocalAddr}}
	cfg.Net.Proxy.Enable = true
	cfg.Net.Proxy.Dialer = d
	return lane{cfg: &cfg, dial: d}
}

// NewGroupConn returns a GroupConn for group on c's cluster. Its
// connections announce clientID (DescribeGroups reports it per member).
// joinTimeout bounds waiting for the answer to a join or a sync: it must
// exceed the longest a coordinator holds one (the rebalance timeout, and a
// session timeout for a leader that never syncs).
func (c *Conn) NewGroupConn(group, clientID string, joinTimeout time.Duration) *GroupConn {
	base := c.client.Config()
	return &GroupConn{client: c.client, group: group, join: newLane(base, clientID, joinTimeout), beat: newLane(base, clientID, 0)}
}

// Close closes the connections, ending calls in flight.
func (g *GroupConn) Close() {
	for _, l := range []*lane{&g.join, &g.beat} {
		l.dial.cut()
		l.drop(nil)
	}
}

// broker returns the lane's connection to the coordinator, opening it.
func (g *GroupConn) broker(l *lane) (*sarama.Broker, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b != nil {
		return l.b, nil
	}
	coord, err := g.client.Coordinator(g.group)
	if err != nil {
		return nil, fmt.Errorf("find the coordinator of group %q: %w", g.group, err)
	}
	b := sarama.NewBroker(coord.Addr())
	if err := b.Open(l.cfg); err != nil && !errors.Is(err, sarama.ErrAlreadyConnected) {
		return nil, fmt.Errorf("connect to the coordinator of group %q at %s: %w", g.group, coord.Addr(), err)
	}
	l.b = b
	return b, nil
}

// drop closes the lane's connection if it is b (any, for nil).
func (l *lane) drop(b *sarama.Broker) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b != nil && (b == nil || l.b == b) {
		_ = l.b.Close()
		l.b = nil
	}
}

// call runs fn on the lane's connection. A failed connection is dropped, and
// so is the coordinator's address when the coordinator moved, so that the
// next call starts afresh.
func (g *GroupConn) call(ctx context.Context, l *lane, fn func(*sarama.Broker) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	type result struct {
		b   *sarama.Broker
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := g.broker(l)
		if err == nil {
			err = fn(b)
		}
		done <- result{b, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		// Cutting the connection ends the call (its read fails); cut
		// again should the call have been dialling meanwhile.
		for cut := true; cut; {
			l.dial.cut()
			select {
			case res = <-done:
				cut = false
			case <-time.After(100 * time.Millisecond):
			}
		}
		l.drop(res.b)
		return ctx.Err()
	}
	if res.err == nil {
		return nil
	}
	var kerr sarama.KError
	switch {
	case !errors.As(res.err, &kerr):
		l.drop(res.b)
		if res.b == nil {
			_ = g.client.RefreshCoordinator(g.group)
		}
	case kerr == sarama.ErrNotCoordinatorForConsumer || kerr == sarama.ErrConsumerCoordinatorNotAvailable:
		l.drop(res.b)
		_ = g.client.RefreshCoordinator(g.group)
	}
	return res.err
}

// Join sends a JoinGroup request and waits for the rebalance to complete.
// With GroupMemberIDRequired the response carries the id to join with.
func (g *GroupConn) Join(ctx context.Context, r JoinRequest) (JoinResponse, error) {
	req := sarama.NewJoinGroupRequest(Version)
	req.GroupId = g.group
	req.MemberId = r.MemberID
	req.SessionTimeout = int32(r.SessionTimeout / time.Millisecond)
	req.RebalanceTimeout = int32(r.RebalanceTimeout / time.Millisecond)
	req.ProtocolType = "consumer"
	if r.InstanceID != "" {
		req.GroupInstanceId = &r.InstanceID
	}
	if r.Reason != "" && req.Version >= 8 {
		req.Reason = &r.Reason
	}
	meta := &sarama.ConsumerGroupMemberMetadata{Version: 1, Topics: r.Topics, UserData: r.UserData}
	if err := req.AddGroupProtocolMetadata(r.Protocol, meta); err != nil {
		return JoinResponse{}, fmt.Errorf("encode join metadata: %w", err)
	}
	var resp *sarama.JoinGroupResponse
	err := g.call(ctx, &g.join, func(b *sarama.Broker) error {
		var err error
		resp, err = b.JoinGroup(req)
		if err == nil && resp.Err != sarama.ErrNoError {
			err = resp.Err
		}
		return err
	})
	if resp == nil {
		return JoinResponse{}, fmt.Errorf("join group %q: %w", g.group, err)
	}
	out := JoinResponse{Generation: resp.GenerationId, MemberID: resp.MemberId, Leader: resp.LeaderId}
	if err != nil {
		return out, fmt.Errorf("join group %q: %w", g.group, err)
	}
	if resp.GroupProtocol != r.Protocol {
		return out, fmt.Errorf("join group %q: the group chose protocol %q, this member speaks only %q: %w", g.group, resp.GroupProtocol, r.Protocol, sarama.ErrInconsistentGroupProtocol)
	}
	metas, err := resp.GetMembers()
	if err != nil {
		return out, fmt.Errorf("join group %q: decode member metadata: %w", g.group, err)
	}
	for _, m := range resp.Members {
		gm := GroupMember{MemberID: m.MemberId, UserData: metas[m.MemberId].UserData}
		if m.GroupInstanceId != nil {
			gm.InstanceID = *m.GroupInstanceId
		}
		out.Members = append(out.Members, gm)
	}
	return out, nil
}

// Sync sends a SyncGroup request and returns this member's assignment.
func (g *GroupConn) Sync(ctx context.Context, r SyncRequest) (GroupAssignment, error) {
	protocolType := "consumer"
	req := &sarama.SyncGroupRequest{
		Version: 5, GroupId: g.group, GenerationId: r.Generation, MemberId: r.MemberID,
		ProtocolType: &protocolType, ProtocolName: &r.Protocol,
	}
	if r.InstanceID != "" {
		req.GroupInstanceId = &r.InstanceID
	}
	for id, a := range r.Assignments {
		if err := req.AddGroupAssignmentMember(id, &sarama.ConsumerGroupMemberAssignment{Version: 1, Topics: a.Topics, UserData: a.UserData}); err != nil {
			return GroupAssignment{}, fmt.Errorf("encode assignment: %w", err)
		}
	}
	var resp *sarama.SyncGroupResponse
	err := g.call(ctx, &g.join, func(b *sarama.Broker) error {
		var err error
		resp, err = b.SyncGroup(req)
		if err == nil && resp.Err != sarama.ErrNoError {
			err = resp.Err
		}
		return err
	})
	if err != nil {
		return GroupAssignment{}, fmt.Errorf("sync group %q: %w", g.group, err)
	}
	if len(resp.MemberAssignment) == 0 {
		return GroupAssignment{}, nil
	}
	a, err := resp.GetMemberAssignment()
	if err != nil {
		return GroupAssignment{}, fmt.Errorf("sync group %q: decode assignment: %w", g.group, err)
	}
	return GroupAssignment{Topics: a.Topics, UserData: a.UserData}, nil
}

// Heartbeat tells the coordinator the member is alive.
func (g *GroupConn) Heartbeat(ctx context.Context, memberID, instanceID string, generation int32) error {
	req := &sarama.HeartbeatRequest{Version: 3, GroupId: g.group, GenerationId: generation, MemberId: memberID}
	if instanceID != "" {
		req.GroupInstanceId = &instanceID
	}
	err := g.call(ctx, &g.beat, func(b *sarama.Broker) error {
		resp, err := b.Heartbeat(req)
		if err == nil && resp.Err != sarama.ErrNoError {
			err = resp.Err
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("heartbeat to group %q: %w", g.group, err)
	}
	return nil
}

// Leave removes members from the group: each is named by its member id, or
// for a static member by its instance id. A member the coordinator does not
// know is not an error.
func (g *GroupConn) Leave(ctx context.Context, members []GroupMember) error {
	req := &sarama.LeaveGroupRequest{Version: 3, GroupId: g.group}
	for _, m := range members {
		mi := sarama.MemberIdentity{MemberId: m.MemberID}
		if m.InstanceID != "" {
			id := m.InstanceID
			mi.GroupInstanceId = &id
		}
		req.Members = append(req.Members, mi)
	}
	err := g.call(ctx, &g.beat, func(b *sarama.Broker) error {
		resp, err := b.LeaveGroup(req)
		if err != nil {
			return err
		}
		if resp.Err != sarama.ErrNoError && resp.Err != sarama.ErrUnknownMemberId {
			return resp.Err
		}
		for _, m := range resp.Members {
			if m.Err != sarama.ErrNoError && m.Err != sarama.ErrUnknownMemberId {
				return m.Err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("leave group %q: %w", g.group, err)
	}
	return nil
}

// CommitOffsets commits offsets (the next offset to read per partition) as
// the member of generation, with metadata on every partition.
func (g *GroupConn) CommitOffsets(ctx context.Context, memberID, instanceID string, generation int32, offsets map[stream.Partition]int64, metadata string) error {
	if len(offsets) == 0 {
		return nil
	}
	req := &sarama.OffsetCommitRequest{
		Version: 7, ConsumerGroup: g.group, ConsumerGroupGeneration: generation, ConsumerID: memberID, RetentionTime: -1,
	}
	if instanceID != "" {
		req.GroupInstanceId = &instanceID
	}
	for p, off := range offsets {
		req.AddBlock(p.Topic, p.Partition, off, 0, metadata)
	}
	err := g.call(ctx, &g.beat, func(b *sarama.Broker) error {
		resp, err := b.CommitOffset(req)
		if err != nil {
			return err
		}
		for _, parts := range resp.Errors {
			for _, kerr := range parts {
				if kerr != sarama.ErrNoError {
					return kerr
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit offsets of group %q: %w", g.group, err)
	}
	return nil
}

// Describe returns the group's members (none for a group that does not
// exist).
func (g *GroupConn) Describe(ctx context.Context) ([]GroupMemberInfo, error) {
	var out []GroupMemberInfo
	err := g.call(ctx, &g.beat, func(b *sarama.Broker) error {
		resp, err := b.DescribeGroups(&sarama.DescribeGroupsRequest{Version: 4, Groups: []string{g.group}})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, d := range resp.Groups {
			if d.GroupId != g.group {
				continue
			}
			if d.Err != sarama.ErrNoError && d.Err != sarama.ErrGroupIDNotFound {
				return d.Err
			}
			for _, m := range d.Members {
				mi := GroupMemberInfo{MemberID: m.MemberId, ClientID: m.ClientId, ClientHost: m.ClientHost}
				if m.GroupInstanceId != nil {
					mi.InstanceID = *m.GroupInstanceId
				}
				out = append(out, mi)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("describe group %q: %w", g.group, err)
	}
	return out, nil
}
