package group

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/vmihailenco/msgpack/v5"
)

// AssignorName is the group protocol name of Grete's task assignor. Every
// process of a job must speak it: the group refuses members that share no
// protocol. Version 1 was the protocol of Grete's sarama-based membership.
const AssignorName = "grete-tasks-v2"

// InfoVersion is the version of MemberInfo and TaskAssignment.
const InfoVersion = 2

// MemberInfo is what a process tells the group's leader when it joins: the
// tasks it runs now, the ones it is still handing over, and the tasks it
// keeps local state for. The leader's assignor (AssignTasks) reads it from
// every member.
type MemberInfo struct {
	Version  int     `msgpack:"v"`
	Instance string  `msgpack:"instance"`
	Owned    []int32 `msgpack:"owned"` // tasks it runs or is starting
	// Releasing are tasks it was asked to give up and is still stopping
	// (finishing the current message, committing): no one may start them
	// yet.
	Releasing []int32 `msgpack:"releasing"`
	Standby   []int32 `msgpack:"standby"` // tasks it keeps a standby copy of
	Warm      []int32 `msgpack:"warm"`
	ID        string  `msgpack:"-"` // group member id, filled in by the leader
}

// AssignTasks decides which member runs each of tasks 0..n-1.
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
//     the next round gives it to its new owner. A task a member reports
//     Releasing is assigned to nobody until it is released. A task never
//     runs in two places at once.
//
// The result maps member id to tasks, ascending; every member is present.
// It depends only on its arguments (members are ordered by id).
func AssignTasks(n int32, members []MemberInfo) map[string][]int32 {
	out := make(map[string][]int32, len(members))
	if len(members) == 0 {
		return out
	}
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b MemberInfo) int { return cmp.Compare(a.ID, b.ID) })

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
	releasing := make([]bool, n)
	for _, m := range ms {
		for _, t := range m.Releasing {
			if t >= 0 && t < n {
				releasing[t] = true
			}
		}
	}

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
		out[ms[i].ID] = []int32{}
	}
	for t := range n {
		if c := current[t]; c >= 0 && c != owner[t] {
			continue // moving: its owner hands it over first
		}
		if current[t] < 0 && releasing[t] {
			continue // still stopping where it was
		}
		id := ms[owner[t]].ID
		out[id] = append(out[id], t)
	}
	return out
}

// AssignStandbys picks, for every task, up to k members to keep a standby
// copy of its stores: never a member that runs the task now or is given it
// in this round (active, AssignTasks' result). A member that already keeps
// a standby of the task is preferred (its copy is current), then one with
// local state for it, then the member with the fewest standbys. The result
// maps member id to tasks, ascending; every member is present.
func AssignStandbys(n int32, k int, members []MemberInfo, active map[string][]int32) map[string][]int32 {
	out := make(map[string][]int32, len(members))
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b MemberInfo) int { return cmp.Compare(a.ID, b.ID) })
	for _, m := range ms {
		out[m.ID] = []int32{}
	}
	if k <= 0 {
		return out
	}
	load := make([]int, len(ms))
	for t := range n {
		cands := make([]int, 0, len(ms))
		for i, m := range ms {
			if !slices.Contains(m.Owned, t) && !slices.Contains(active[m.ID], t) {
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
			out[ms[i].ID] = append(out[ms[i].ID], t)
			load[i]++
		}
	}
	return out
}

// TaskAssignment is what the leader assigns one member, in the user data of
// its group assignment.
type TaskAssignment struct {
	Version  int     `msgpack:"v"`
	Tasks    []int32 `msgpack:"tasks"`
	Standbys []int32 `msgpack:"standbys"`
}

// Plan assigns tasks 0..n-1 and k standbys of each to members (AssignTasks
// and AssignStandbys), and returns each member's assignment by member id.
func Plan(n int32, k int, members []MemberInfo) map[string]TaskAssignment {
	active := AssignTasks(n, members)
	standbys := AssignStandbys(n, k, members, active)
	out := make(map[string]TaskAssignment, len(members))
	for _, m := range members {
		out[m.ID] = TaskAssignment{Version: InfoVersion, Tasks: active[m.ID], Standbys: standbys[m.ID]}
	}
	return out
}

// EncodeInfo and DecodeInfo convert a member's description for the group.
// A member of another version (or not a Grete member) decodes as one that
// holds nothing: it still gets a share.
func EncodeInfo(mi MemberInfo) ([]byte, error) {
	mi.Version = InfoVersion
	return msgpack.Marshal(mi)
}

// DecodeInfo: see EncodeInfo.
func DecodeInfo(id string, b []byte) MemberInfo {
	var mi MemberInfo
	if err := msgpack.Unmarshal(b, &mi); err != nil || mi.Version != InfoVersion {
		mi = MemberInfo{}
	}
	mi.ID = id
	return mi
}

// EncodeAssignment and DecodeAssignment convert a member's assignment.
func EncodeAssignment(a TaskAssignment) ([]byte, error) {
	a.Version = InfoVersion
	return msgpack.Marshal(a)
}

// DecodeAssignment: see EncodeAssignment. An empty assignment (a member
// the leader did not plan for) decodes as no tasks.
func DecodeAssignment(b []byte) (TaskAssignment, error) {
	var a TaskAssignment
	if len(b) == 0 {
		return a, nil
	}
	if err := msgpack.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("decode task assignment: %w", err)
	}
	if a.Version != InfoVersion {
		return TaskAssignment{}, fmt.Errorf("task assignment of version %d, this process speaks %d", a.Version, InfoVersion)
	}
	return a, nil
}
