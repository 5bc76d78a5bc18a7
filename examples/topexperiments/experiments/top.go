package experiments

import (
	"cmp"
	"fmt"
	"slices"
)

// Entry is one experiment and its count of events.
type Entry struct {
	Experiment string `json:"experiment"`
	Count      int64  `json:"count"`
}

// compareRank orders entries by rank: the higher count first, and between
// equal counts the smaller name first. Every list of top experiments in this
// package (per task, global, and the tests' reference) uses this one total
// order, so that ties cannot make two correct answers differ.
func compareRank(a, b Entry) int {
	if c := cmp.Compare(b.Count, a.Count); c != 0 {
		return c
	}
	return cmp.Compare(a.Experiment, b.Experiment)
}

// Partial is what a counting task emits every window on the partial topic:
// its own top-N, by rank.
type Partial struct {
	Task string  `json:"task"`
	At   int64   `json:"at"` // Unix milliseconds of the window
	Top  []Entry `json:"top"`
}

// Global is what the merging task emits on the output topic: the global
// top-N, by rank, as of the latest partial of every counting task. At is
// the newest partial's At.
type Global struct {
	At  int64   `json:"at"`
	Top []Entry `json:"top"`
}

// Leaders keeps the top n of a set of counters that only grow, from the
// changes alone: Update with every counter that changed, and Top is exact.
//
// Why changes suffice: a counter that did not change cannot enter the top,
// because the n counters that ranked above it still do (theirs only grew).
// So the new top is the top of (old top ∪ changed counters). This is what
// lets a windowed flush cost in proportion to what changed instead of
// scanning every counter.
type Leaders struct {
	n   int
	top []Entry // by rank, at most n
}

// NewLeaders returns an empty Leaders keeping the top n (n >= 1).
func NewLeaders(n int) *Leaders { return &Leaders{n: n, top: make([]Entry, 0, n)} }

// Update records e's new count. A count lower than the one recorded for a
// member of the top is an error: the top would then depend on counters
// Leaders has not seen.
func (l *Leaders) Update(e Entry) error {
	i := slices.IndexFunc(l.top, func(x Entry) bool { return x.Experiment == e.Experiment })
	switch {
	case i >= 0:
		if e.Count < l.top[i].Count {
			return fmt.Errorf("count of %q went down from %d to %d: counts must only grow", e.Experiment, l.top[i].Count, e.Count)
		}
		l.top[i].Count = e.Count
	case len(l.top) < l.n:
		l.top = append(l.top, e)
		i = len(l.top) - 1
	case compareRank(e, l.top[len(l.top)-1]) < 0:
		i = len(l.top) - 1
		l.top[i] = e
	default:
		return nil
	}
	// Move the entry up to its place: it only gained rank.
	for ; i > 0 && compareRank(l.top[i], l.top[i-1]) < 0; i-- {
		l.top[i], l.top[i-1] = l.top[i-1], l.top[i]
	}
	return nil
}

// Top returns a copy of the top entries, by rank.
func (l *Leaders) Top() []Entry { return slices.Clone(l.top) }

// Merge returns the global top n of the partial tops. Counts of an
// experiment found in several partials are added, which is exact when every
// experiment is counted by one task only (the input is keyed by
// experiment): then each partial holds the whole count of its experiments,
// and every member of the global top n is in the top n of its own task
// (fewer than n experiments of that task rank above it), so the union of
// the partial tops contains the global top.
func Merge(n int, partials ...[]Entry) []Entry {
	sum := map[string]int64{}
	for _, p := range partials {
		for _, e := range p {
			sum[e.Experiment] += e.Count
		}
	}
	return TopOf(n, sum)
}

// TopOf returns the top n of counts, by rank.
func TopOf(n int, counts map[string]int64) []Entry {
	out := make([]Entry, 0, len(counts))
	for name, c := range counts {
		out = append(out, Entry{Experiment: name, Count: c})
	}
	slices.SortFunc(out, compareRank)
	return out[:min(n, len(out))]
}
