package group

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// settle runs the assignor the way a cooperative group does: members
// rejoin with what they were given (a member that lost a task has stopped
// it) until nothing is withheld. It returns the final assignment and the
// number of tasks that changed owner.
func settle(t *testing.T, n int32, members []MemberInfo) (map[string][]int32, int) {
	t.Helper()
	before := map[int32]string{}
	for _, m := range members {
		for _, task := range m.Owned {
			before[task] = m.ID
		}
	}
	ms := slices.Clone(members)
	for round := 0; ; round++ {
		require.Less(t, round, 3, "a handover takes at most two rounds")
		out := AssignTasks(n, ms)
		checkDisjoint(t, n, out)
		total := 0
		for _, ts := range out {
			total += len(ts)
		}
		if total == int(n) {
			moved := 0
			for id, ts := range out {
				for _, task := range ts {
					if owner, ok := before[task]; ok && owner != id {
						moved++
					}
				}
			}
			return out, moved
		}
		for i := range ms {
			ms[i].Owned = out[ms[i].ID]
		}
	}
}

func checkDisjoint(t *testing.T, n int32, out map[string][]int32) {
	t.Helper()
	seen := map[int32]string{}
	for id, ts := range out {
		require.True(t, slices.IsSorted(ts))
		for _, task := range ts {
			require.True(t, task >= 0 && task < n, "task %d out of range", task)
			prev, dup := seen[task]
			require.False(t, dup, "task %d given to %s and %s", task, prev, id)
			seen[task] = id
		}
	}
}

func members(ids ...string) []MemberInfo {
	ms := make([]MemberInfo, len(ids))
	for i, id := range ids {
		ms[i] = MemberInfo{ID: id}
	}
	return ms
}

func TestAssignBalancesAFreshGroup(t *testing.T) {
	out, _ := settle(t, 8, members("a", "b", "c"))
	var sizes []int
	for _, ts := range out {
		sizes = append(sizes, len(ts))
	}
	slices.Sort(sizes)
	require.Equal(t, []int{2, 3, 3}, sizes)
}

// A fourth member joining a balanced group of three takes exactly the
// tasks needed to balance, one from each; when it leaves, they go back to
// the members that still have their state.
func TestAssignMovesOnlyWhatBalanceNeedsAndPrefersWarmMembers(t *testing.T) {
	ms := members("a", "b", "c")
	start, moved := settle(t, 12, ms)
	require.Zero(t, moved)
	for i := range ms {
		ms[i].Owned = start[ms[i].ID]
		require.Len(t, ms[i].Owned, 4)
	}

	joined := append(slices.Clone(ms), MemberInfo{ID: "d"})
	out, moved := settle(t, 12, joined)
	require.Equal(t, 3, moved, "12 tasks over 4 members: each of the 3 gives up one")
	require.Len(t, out["d"], 3)
	for _, m := range ms {
		require.Len(t, out[m.ID], 3)
		require.Subset(t, m.Owned, out[m.ID], "%s kept its own tasks", m.ID)
	}

	// d leaves; a, b and c still have local state for what they gave up.
	left := slices.Clone(ms)
	for i := range left {
		left[i].Owned = out[left[i].ID]
		left[i].Warm = slices.DeleteFunc(slices.Clone(ms[i].Owned), func(t int32) bool { return slices.Contains(out[ms[i].ID], t) })
	}
	back, moved := settle(t, 12, left)
	require.Zero(t, moved, "nothing a, b or c ran moved")
	for _, m := range ms {
		require.Equal(t, m.Owned, back[m.ID], "%s got its own task back", m.ID)
	}
}

// A moving task is never given to its new owner while its old owner still
// runs it.
func TestAssignWithholdsAMovingTaskForOneRound(t *testing.T) {
	ms := []MemberInfo{{ID: "a", Owned: []int32{0, 1, 2, 3}}, {ID: "b"}}
	out := AssignTasks(4, ms)
	require.Equal(t, []int32{0, 1}, out["a"], "a keeps its share")
	require.Empty(t, out["b"], "b waits until a has handed over")
	ms[0].Owned = out["a"]
	out = AssignTasks(4, ms)
	require.Equal(t, []int32{2, 3}, out["b"])
}

func TestAssignGivesATaskClaimedTwiceToOneMember(t *testing.T) {
	out, _ := settle(t, 2, []MemberInfo{{ID: "a", Owned: []int32{0, 1}}, {ID: "b", Owned: []int32{1}}})
	require.Equal(t, []int32{0}, out["a"])
	require.Equal(t, []int32{1}, out["b"])
}

// Random groups: every task ends up with exactly one member, shares differ
// by at most one, and the result does not depend on the members' order.
func TestAssignRandomGroups(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for range 300 {
		n := int32(rng.IntN(40))
		ms := make([]MemberInfo, 1+rng.IntN(6))
		for i := range ms {
			ms[i].ID = fmt.Sprintf("m%d", i)
		}
		for task := range n {
			if rng.IntN(3) > 0 {
				i := rng.IntN(len(ms))
				ms[i].Owned = append(ms[i].Owned, task)
			}
			if rng.IntN(2) == 0 {
				i := rng.IntN(len(ms))
				ms[i].Warm = append(ms[i].Warm, task)
			}
		}
		out, _ := settle(t, n, ms)
		lo, hi := int(n), 0
		for _, m := range ms {
			lo, hi = min(lo, len(out[m.ID])), max(hi, len(out[m.ID]))
		}
		require.LessOrEqual(t, hi-lo, 1, "balanced")
		shuffled := slices.Clone(ms)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		require.Equal(t, AssignTasks(n, ms), AssignTasks(n, shuffled))
	}
}

func TestAssignStandbys(t *testing.T) {
	ms := []MemberInfo{{ID: "a", Owned: []int32{0, 1}}, {ID: "b", Owned: []int32{2, 3}}, {ID: "c", Standby: []int32{0}, Warm: []int32{3}}}
	active := AssignTasks(4, ms)
	sb := AssignStandbys(4, 1, ms, active)
	checkDisjoint(t, 4, sb)
	for id, ts := range sb {
		for _, task := range ts {
			require.NotContains(t, active[id], task, "%s runs task %d and keeps its standby", id, task)
		}
	}
	require.Contains(t, sb["c"], int32(0), "c keeps its current standby")
	require.Contains(t, sb["c"], int32(3), "c has state for task 3")

	// Two standbys per task over three members: every task has both
	// other members, and none its owner.
	sb = AssignStandbys(4, 2, ms, active)
	count := map[int32]int{}
	for _, ts := range sb {
		for _, task := range ts {
			count[task]++
		}
	}
	require.Equal(t, map[int32]int{0: 2, 1: 2, 2: 2, 3: 2}, count)
	require.Empty(t, AssignStandbys(4, 0, ms, active)["c"])
}

// A task moving off a member goes to the member with its standby.
func TestAssignPrefersTheStandby(t *testing.T) {
	ms := []MemberInfo{{ID: "a", Warm: []int32{0, 1}}, {ID: "b", Standby: []int32{0, 1}}, {ID: "c", Owned: []int32{2}}}
	out, _ := settle(t, 3, ms)
	require.Equal(t, []int32{0}, out["b"], "b keeps a standby of 0 and 1; balance gives it one")
	require.Equal(t, []int32{1}, out["a"])
}

// A task that a member is still handing over (Releasing: revoked, not yet
// stopped) goes to nobody, even when its old owner is no longer asked to
// run it and a member has room; once it is released it is assigned.
func TestAssignWithholdsAReleasingTask(t *testing.T) {
	ms := []MemberInfo{{ID: "a", Owned: []int32{0, 1}, Releasing: []int32{3}}, {ID: "b", Owned: []int32{2}}}
	out := AssignTasks(4, ms)
	checkDisjoint(t, 4, out)
	require.Equal(t, []int32{0, 1}, out["a"])
	require.Equal(t, []int32{2}, out["b"], "task 3 is still stopping at a")

	ms[0].Releasing = nil
	out = AssignTasks(4, ms)
	require.Equal(t, []int32{0, 1}, out["a"])
	require.Equal(t, []int32{2, 3}, out["b"])
}

// Plan, EncodeInfo and DecodeInfo: what a leader computes from what the
// members sent survives the trip through the group.
func TestPlanAndEncoding(t *testing.T) {
	var ms []MemberInfo
	for _, mi := range []MemberInfo{{Instance: "x", Owned: []int32{0}}, {Warm: []int32{1}}} {
		b, err := EncodeInfo(mi)
		require.NoError(t, err)
		ms = append(ms, DecodeInfo(fmt.Sprint(len(ms)), b))
	}
	require.Equal(t, "x", ms[0].Instance)
	require.Equal(t, []int32{0}, ms[0].Owned)
	require.Equal(t, "1", ms[1].ID)
	require.Equal(t, MemberInfo{ID: "z"}, DecodeInfo("z", []byte("not msgpack")))

	plan := Plan(2, 1, ms)
	require.Equal(t, []int32{0}, plan["0"].Tasks)
	require.Equal(t, []int32{1}, plan["1"].Tasks, "the warm member gets task 1")
	require.Equal(t, []int32{1}, plan["0"].Standbys)
	require.Equal(t, []int32{0}, plan["1"].Standbys)
	b, err := EncodeAssignment(plan["1"])
	require.NoError(t, err)
	a, err := DecodeAssignment(b)
	require.NoError(t, err)
	require.Equal(t, plan["1"], a)
	a, err = DecodeAssignment(nil)
	require.NoError(t, err)
	require.Empty(t, a.Tasks)
}
