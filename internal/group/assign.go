package task

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/IBM/sarama"
	"github.com/vmihailenco/msgpack/v5"
)

// assignorName is the group protocol name of Grete's task assignor. Every
// process of a job must run it: the group refuses members that share no
// protocol.
const assignorName = "grete-tasks-v1"

// memberInfo is what a process tells the group's leader when it joins: the
// tasks it runs now and the tasks it keeps local state for. The leader's
// assignor (assignTasks) reads it from every member.
type memberInfo struct {
	Version  int     `msgpack:"v"`
	Instance string  `msgpack:"instance"`
	Owned    []int32 `msgpack:"owned"`
	Standby  []int32 `msgpack:"standby"` // tasks it keeps a standby copy of
	Warm     []int32 `msgpack:"warm"`
	id       string  // group member id, filled in by the leader
}

// assignTasks decides which member runs each of tasks 0..n-1.
//
//   - Balance: every member gets n/M or n/M+1 tasks (M members). The larger
//     shares go to the members that run the most tasks now, so that as few
//     tasks as possible move.
//   - Stickiness: a member keeps the tasks it runs, up to its share; it
//     gives up its highest-numbered ones beyond that.
//   - Warmth: a task without an owner goes preferably to a member with room
//     that keeps a standby of it, then to one with older local state for it
//     (either replays only a changelog tail), otherwise to the member with
//     room that runs the fewest tasks.
//   - Handover (cooperative rebalancing): a task moving away from a member
//     that runs it is assigned to nobody in this round. Its owner stops it
//     (finishes the current message, commits, closes), then rejoins, and
//     the next round gives it to its new owner. A task never runs in two
//     places at once.
//
// The result maps member id to tasks, ascending; every member is present.
// It depends only on its arguments (members are ordered by id).
func assignTasks(n int32, members []memberInfo) map[string][]int32 {
	out := make(map[string][]int32, len(members))
	if len(members) == 0 {
		return out
	}
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b memberInfo) int { return cmp.Compare(a.id, b.id) })

	// Current owners; a task claimed twice (a process that was presumed
	// dead came back) stays with the first claimant in id order.
	owner := make([]int, n)
	for t := range owner {
		owner[t] = -1
	}
	held := make([][]int32, len(ms))
	for i, m := range ms {
		for _, t := range m.Owned {
			if t >= 0 && t < n && owner[t] < 0 {
				owner[t] = i
				held[i] = append(held[i], t)
			}
		}
		slices.Sort(held[i])
	}
	current := slices.Clone(owner)

	// Shares: the n mod M larger shares go to the members holding most.
	order := make([]int, len(ms))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(len(held[b]), len(held[a])) })
	share := make([]int, len(ms))
	base, extra := int(n)/len(ms), int(n)%len(ms)
	for rank, i := range order {
		share[i] = base
		if rank < extra {
			share[i]++
		}
	}

	// Members beyond their share give up their highest tasks.
	count := make([]int, len(ms))
	for i := range ms {
		keep := min(len(held[i]), share[i])
		for _, t := range held[i][keep:] {
			owner[t] = -1
		}
		count[i] = keep
	}

	// warm[i][t]: 2 when member i keeps a standby of t (current up to the
	// last checkpoint), 1 when it has older local state for t.
	warm := make([]map[int32]int, len(ms))
	for i, m := range ms {
		warm[i] = make(map[int32]int, len(m.Warm)+len(m.Standby))
		for _, t := range m.Warm {
			warm[i][t] = 1
		}
		for _, t := range m.Standby {
			warm[i][t] = 2
		}
	}
	for t := range n {
		if owner[t] >= 0 {
			continue
		}
		best := -1
		for i := range ms {
			if count[i] >= share[i] {
				continue
			}
			switch {
			case best < 0:
				best = i
			case warm[i][t] != warm[best][t]:
				if warm[i][t] > warm[best][t] {
					best = i
				}
			case count[i] < count[best]:
				best = i
			}
		}
		owner[t] = best // shares add up to n: some member has room
		count[best]++
	}

	for i := range ms {
		out[ms[i].id] = []int32{}
	}
	for t := range n {
		if c := current[t]; c >= 0 && c != owner[t] {
			continue // moving: its owner hands it over first
		}
		id := ms[owner[t]].id
		out[id] = append(out[id], t)
	}
	return out
}

// assignStandbys picks, for every task, up to k members to keep a standby
// copy of its stores: never a member that runs the task now or is given it
// in this round (active, assignTasks' result). A member that already keeps
// a standby of the task is preferred (its copy is current), then one with
// local state for it, then the member with the fewest standbys. The result
// maps member id to tasks, ascending; every member is present.
func assignStandbys(n int32, k int, members []memberInfo, active map[string][]int32) map[string][]int32 {
	out := make(map[string][]int32, len(members))
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b memberInfo) int { return cmp.Compare(a.id, b.id) })
	for _, m := range ms {
		out[m.id] = []int32{}
	}
	if k <= 0 {
		return out
	}
	load := make([]int, len(ms))
	for t := range n {
		cands := make([]int, 0, len(ms))
		for i, m := range ms {
			if !slices.Contains(m.Owned, t) && !slices.Contains(active[m.id], t) {
				cands = append(cands, i)
			}
		}
		rank := func(i int) int {
			switch {
			case slices.Contains(ms[i].Standby, t):
				return 0
			case slices.Contains(ms[i].Warm, t):
				return 1
			}
			return 2
		}
		slices.SortStableFunc(cands, func(a, b int) int {
			if c := cmp.Compare(rank(a), rank(b)); c != 0 {
				return c
			}
			return cmp.Compare(load[a], load[b])
		})
		for _, i := range cands[:min(k, len(cands))] {
			out[ms[i].id] = append(out[ms[i].id], t)
			load[i]++
		}
	}
	return out
}

// taskAssignor is the sarama balance strategy that runs assignTasks on
// whole tasks: task i is partition i of every lease topic.
type taskAssignor struct {
	g *group
}

var (
	_ sarama.BalanceStrategy                     = (*taskAssignor)(nil)
	_ sarama.SubscriptionUserDataBalanceStrategy = (*taskAssignor)(nil)
	_ sarama.RebalanceProtocolBalanceStrategy    = (*taskAssignor)(nil)
)

func (a *taskAssignor) Name() string { return assignorName }

func (a *taskAssignor) SupportedProtocols() []sarama.RebalanceProtocol {
	return []sarama.RebalanceProtocol{sarama.RebalanceProtocolCooperative}
}

// SubscriptionUserData is called before every join: it describes what this
// process runs and what local state it has, now.
func (a *taskAssignor) SubscriptionUserData([]string) ([]byte, error) {
	a.g.rebalances.Add(1)
	return msgpack.Marshal(a.g.info())
}

func (a *taskAssignor) Plan(members map[string]sarama.ConsumerGroupMemberMetadata, topics map[string][]int32) (sarama.BalanceStrategyPlan, error) {
	n, err := a.g.taskCount(topics)
	if err != nil {
		return nil, err
	}
	infos := make([]memberInfo, 0, len(members))
	for id, meta := range members {
		var mi memberInfo
		if err := msgpack.Unmarshal(meta.UserData, &mi); err != nil || mi.Version != 1 {
			// Not a Grete member of this version: it gets a share, but
			// nothing is known of what it runs.
			mi = memberInfo{}
		}
		mi.id = id
		infos = append(infos, mi)
	}
	plan := make(sarama.BalanceStrategyPlan, len(members))
	active := assignTasks(n, infos)
	for id, tasks := range active {
		plan[id] = map[string][]int32{}
		for _, t := range tasks {
			for _, lp := range a.g.leases(t) {
				plan.Add(id, lp.Topic, lp.Partition)
			}
		}
	}
	if a.g.standbyTopic != "" {
		// A standby of task i is leased as partition i of the first
		// changelog.
		for id, tasks := range assignStandbys(n, a.g.c.job.Standbys, infos, active) {
			for _, t := range tasks {
				plan.Add(id, a.g.standbyTopic, t)
			}
		}
	}
	return plan, nil
}

func (a *taskAssignor) AssignmentData(string, map[string][]int32, int32) ([]byte, error) {
	return nil, nil
}

// taskCount is the number of tasks the lease topics define.
func (g *group) taskCount(topics map[string][]int32) (int32, error) {
	if len(g.c.job.Inputs) == 0 {
		return 1, nil
	}
	n := int32(-1)
	for _, t := range g.c.job.Inputs {
		ps, ok := topics[t]
		if !ok {
			return 0, fmt.Errorf("task: input %q is missing from the group's metadata", t)
		}
		if n >= 0 && int32(len(ps)) != n {
			return 0, fmt.Errorf("task: inputs are not co-partitioned (%q has %d partitions)", t, len(ps))
		}
		n = int32(len(ps))
	}
	return n, nil
}
