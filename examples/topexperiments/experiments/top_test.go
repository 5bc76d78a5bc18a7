package experiments

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

// refTop is the tests' own reading of "top n by traffic": sort every
// experiment by count, descending, breaking ties by name, and cut at n.
// It shares no code with the package.
func refTop(n int, counts map[string]int64) []Entry {
	all := make([]Entry, 0, len(counts))
	for name, c := range counts {
		all = append(all, Entry{Experiment: name, Count: c})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Count != all[j].Count {
			return all[i].Count > all[j].Count
		}
		return all[i].Experiment < all[j].Experiment
	})
	if len(all) > n {
		all = all[:n]
	}
	return all
}

func TestCompareRank(t *testing.T) {
	for _, tc := range []struct {
		a, b Entry
		want int
	}{
		{Entry{"x", 5}, Entry{"y", 3}, -1},
		{Entry{"x", 3}, Entry{"y", 5}, 1},
		{Entry{"a", 4}, Entry{"b", 4}, -1}, // tie: smaller name first
		{Entry{"b", 4}, Entry{"a", 4}, 1},
		{Entry{"a", 4}, Entry{"a", 4}, 0},
	} {
		require.Equal(t, tc.want, compareRank(tc.a, tc.b), "%v vs %v", tc.a, tc.b)
	}
}

// TestLeadersFromChangesOnly feeds Leaders only the counters that changed
// in each step and compares its top with a full sort of every counter,
// with many ties (small counts) and with skewed traffic.
func TestLeadersFromChangesOnly(t *testing.T) {
	for _, tc := range []struct {
		name         string
		n, keys      int
		steps, burst int
		skewed       bool
	}{
		{"ties", 5, 40, 300, 3, false},
		{"skewed", 10, 500, 200, 50, true},
		{"n larger than keys", 20, 7, 100, 2, false},
		{"top 1", 1, 30, 300, 4, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.keys), uint64(tc.n)))
			zipf := rand.NewZipf(rng, 1.3, 1, uint64(tc.keys-1))
			counts := map[string]int64{}
			l := NewLeaders(tc.n)
			for step := range tc.steps {
				changed := map[string]bool{}
				for range 1 + rng.IntN(tc.burst) {
					k := rng.IntN(tc.keys)
					if tc.skewed {
						k = int(zipf.Uint64())
					}
					name := fmt.Sprintf("e%03d", k)
					counts[name]++
					changed[name] = true
				}
				for name := range changed {
					require.NoError(t, l.Update(Entry{name, counts[name]}))
				}
				require.Equal(t, refTop(tc.n, counts), l.Top(), "after step %d", step)
			}
		})
	}
}

func TestLeadersRefusesACountGoingDown(t *testing.T) {
	l := NewLeaders(2)
	require.NoError(t, l.Update(Entry{"a", 5}))
	require.NoError(t, l.Update(Entry{"b", 3}))
	require.Error(t, l.Update(Entry{"a", 4}))
	// Outside the top, a lower count cannot matter and is ignored.
	require.NoError(t, l.Update(Entry{"c", 1}))
	require.Equal(t, []Entry{{"a", 5}, {"b", 3}}, l.Top())
}

func TestLeadersTopIsACopy(t *testing.T) {
	l := NewLeaders(3)
	require.NoError(t, l.Update(Entry{"a", 1}))
	top := l.Top()
	top[0].Count = 100
	require.Equal(t, []Entry{{"a", 1}}, l.Top())
}

// TestMergeIsExactWhenEachExperimentHasOneTask splits random counts over
// tasks, as keyed input does, and checks that merging the tasks' top-n
// gives the global top-n, ties included.
func TestMergeIsExactWhenEachExperimentHasOneTask(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := range 200 {
		n := 1 + rng.IntN(6)
		tasks := 1 + rng.IntN(5)
		perTask := make([]map[string]int64, tasks)
		for i := range perTask {
			perTask[i] = map[string]int64{}
		}
		all := map[string]int64{}
		for k := range rng.IntN(40) {
			name := fmt.Sprintf("e%02d", k)
			c := int64(1 + rng.IntN(8)) // many ties
			all[name] = c
			perTask[rng.IntN(tasks)][name] = c
		}
		var partials [][]Entry
		for _, m := range perTask {
			partials = append(partials, refTop(n, m))
		}
		require.Equal(t, refTop(n, all), Merge(n, partials...), "trial %d", trial)
	}
}

func TestMergeAddsCountsOfAnExperimentSeenByTwoTasks(t *testing.T) {
	got := Merge(2, []Entry{{"a", 3}, {"b", 2}}, []Entry{{"b", 2}, {"c", 1}})
	require.Equal(t, []Entry{{"b", 4}, {"a", 3}}, got)
	require.Equal(t, []Entry{}, Merge(3))
}
