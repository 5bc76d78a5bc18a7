package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grete-go/grete/examples/topexperiments/experiments"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vmihailenco/msgpack/v5"
)

// The end-to-end tests run the program (both jobs) against an embedded
// broker, read every topic back with an independent client (kgo), and
// compare what they find with counts computed from the input by the test.

const (
	e2eInput     = "events"
	e2eOutput    = "top-experiments"
	e2eCountJob  = "topexperiments-count"
	e2eChangelog = e2eCountJob + "-" + experiments.CountsStore + "-changelog"
)

// testInput makes n generated events over distinct experiments, keyed by
// experiment, and the true count of every experiment, counted here from the
// records themselves.
func testInput(t *testing.T, seed uint64, n, distinct int) ([]*kgo.Record, map[string]int64) {
	t.Helper()
	g := experiments.NewTraffic(seed, distinct)
	recs := make([]*kgo.Record, n)
	counts := map[string]int64{}
	at := time.UnixMilli(1_700_000_000_000)
	for i := range recs {
		k, v := g.Next(at.Add(time.Duration(i) * time.Millisecond))
		var e struct{ Experiment string }
		require.NoError(t, json.Unmarshal(v, &e))
		require.Equal(t, string(k), e.Experiment)
		counts[e.Experiment]++
		recs[i] = &kgo.Record{Key: k, Value: v}
	}
	return recs, counts
}

// readCounts reads the counting store's changelog as a restore on a new
// machine would, the last record of every key winning, and decodes the
// counts: engine key 'd' + experiment, value 0 (plain header) + msgpack.
func readCounts(t *testing.T, addrs []string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, r := range testkit.ReadAll(t, addrs, time.Minute, e2eChangelog) {
		if len(r.Key) == 0 {
			t.Fatalf("changelog record at %d/%d has no key", r.Partition, r.Offset)
		}
		if r.Key[0] != 'd' {
			continue // change markers
		}
		name := string(r.Key[1:])
		if r.Value == nil {
			delete(out, name)
			continue
		}
		if len(r.Value) < 2 || r.Value[0] != 0 {
			t.Fatalf("changelog value of %s at %d/%d: %x is not a plain value", name, r.Partition, r.Offset, r.Value)
		}
		var c int64
		if err := msgpack.Unmarshal(r.Value[1:], &c); err != nil {
			t.Fatalf("changelog value of %s at %d/%d: %v", name, r.Partition, r.Offset, err)
		}
		out[name] = c
	}
	return out
}

// readGlobals reads every global top written so far, in order.
func readGlobals(t *testing.T, addrs []string) []experiments.Global {
	t.Helper()
	var out []experiments.Global
	for _, r := range testkit.ReadAll(t, addrs, time.Minute, e2eOutput) {
		var g experiments.Global
		if err := json.Unmarshal(r.Value, &g); err != nil {
			t.Fatalf("output at offset %d: %v: %s", r.Offset, err, r.Value)
		}
		out = append(out, g)
	}
	return out
}

// checkGlobals checks the shape of every global top: at most n entries,
// ranked, distinct experiments.
func checkGlobals(t *testing.T, gs []experiments.Global, n int) {
	t.Helper()
	for i, g := range gs {
		if len(g.Top) > n || len(g.Top) == 0 {
			t.Errorf("global %d has %d entries, want 1 to %d", i, len(g.Top), n)
		}
		if !slices.IsSortedFunc(g.Top, compareRankRef) {
			t.Errorf("global %d is not ranked: %v", i, g.Top)
		}
		seen := map[string]bool{}
		for _, e := range g.Top {
			if seen[e.Experiment] {
				t.Errorf("global %d lists %s twice", i, e.Experiment)
			}
			seen[e.Experiment] = true
		}
	}
}

// refTop is the tests' own reading of "top n by traffic": every experiment
// sorted by compareRankRef, cut at n. It shares no code with the program.
func refTop(n int, counts map[string]int64) []experiments.Entry {
	all := make([]experiments.Entry, 0, len(counts))
	for name, c := range counts {
		all = append(all, experiments.Entry{Experiment: name, Count: c})
	}
	slices.SortFunc(all, compareRankRef)
	return all[:min(n, len(all))]
}

// compareRankRef is the tests' own statement of the ranking: the higher
// count first, and between equal counts the smaller name first.
func compareRankRef(a, b experiments.Entry) int {
	switch {
	case a.Count > b.Count:
		return -1
	case a.Count < b.Count:
		return 1
	}
	return strings.Compare(a.Experiment, b.Experiment)
}

// caughtUp reports whether group has committed every offset of topic.
func caughtUp(adm *kadm.Client, group, topic string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		return false, err.Error()
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return false, err.Error()
	}
	ok := true
	var sb strings.Builder
	ends.Each(func(o kadm.ListedOffset) {
		c, found := offs.Lookup(topic, o.Partition)
		at := int64(-1)
		if found {
			at = c.At
		}
		if at != o.Offset {
			ok = false
		}
		fmt.Fprintf(&sb, " %d:%d/%d", o.Partition, at, o.Offset)
	})
	return ok, "committed/end" + sb.String()
}

func TestEndToEnd50kEvents(t *testing.T) {
	const n, partitions, top = 50_000, 8, 10
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, e2eInput, partitions, nil)
	recs, want := testInput(t, 50, n, 300)
	testkit.Produce(t, addrs, e2eInput, recs)
	wantTop := refTop(top, want)

	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testkit.Buffer
	done := make(chan error, 1)
	args := []string{"-brokers", strings.Join(addrs, ","), "-generate", "0", "-window", "200ms", "-commit", "200ms",
		"-quiet", "-top", fmt.Sprint(top), "-data-dir", t.TempDir()}
	go func() { done <- run(ctx, args, &stdout, &stderr) }()
	stopped := false
	stop := func() error {
		cancel()
		select {
		case err := <-done:
			stopped = true
			return err
		case <-time.After(time.Minute):
			return fmt.Errorf("the program did not stop within a minute")
		}
	}
	t.Cleanup(func() {
		if !stopped {
			_ = stop()
		}
		if t.Failed() {
			t.Logf("stderr:\n%s", stderr.String())
		}
	})

	adm := kadm.NewClient(testkit.Client(t, addrs))
	var state string
	testkit.Eventually(t, 2*time.Minute, func() bool {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("the program stopped on its own: %v", err)
		default:
		}
		ok, lag := caughtUp(adm, e2eCountJob, e2eInput)
		state = lag
		if !ok {
			return false
		}
		gs := readGlobals(t, addrs)
		if len(gs) == 0 {
			state += "; no global top yet"
			return false
		}
		last := gs[len(gs)-1]
		state += fmt.Sprintf("; last global %v", last.Top)
		return slices.Equal(last.Top, wantTop)
	}, "the global top never became %v: %v", wantTop, lazy(func() string { return state }))
	require.NoError(t, stop())

	gs := readGlobals(t, addrs)
	checkGlobals(t, gs, top)
	require.Equal(t, wantTop, gs[len(gs)-1].Top, "the last global top")
	// Without crashes counts only grow from one global top to the next.
	seen := map[string]int64{}
	for i, g := range gs {
		for _, e := range g.Top {
			require.GreaterOrEqual(t, e.Count, seen[e.Experiment], "global %d: %s went down", i, e.Experiment)
			seen[e.Experiment] = e.Count
		}
	}
	require.Equal(t, want, readCounts(t, addrs), "the counts in the changelog")
	require.Contains(t, stdout.String(), "final top 10")
	t.Logf("%d events, %d experiments; %d global tops written; top: %v", n, len(want), len(gs), wantTop[:3])
}

// lazy formats as the string f returns when printed, for failure messages
// about state that changes while a condition is polled.
type lazy func() string

func (f lazy) String() string { return f() }
