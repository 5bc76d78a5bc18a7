package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/examples/topexperiments/experiments"
	"github.com/grete-go/grete/internal/crashkit"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The crash test's parameters. The input is produced in chunks at a bounded
// pace so that it is still flowing while the program is killed.
const (
	crashPartitions  = 8
	crashEvents      = 200_000
	crashExperiments = 500
	crashTop         = 10
	crashChunk       = 1000
	crashChunkEvery  = 60 * time.Millisecond // ~16k events/s, but see crashProduce
	crashMinKills    = 5
	crashMaxKills    = 12
)

// TestCrashCountingSIGKILL runs the program (both jobs) as a child process,
// SIGKILLs it at random points while 200k events flow, and restarts it each
// time: with the same data directory, so that the counting tasks reuse
// their local Pebble stores, except from one restart on, which gets a new
// directory (a new machine: every store is restored from its changelog).
// Once a last run has caught up and stopped on SIGTERM, the counts in the
// counting store's changelog must equal the true counts exactly (nothing
// lost, nothing counted twice), and the last global top must be the true
// top.
//
// The program runs with the README's flags (each job's instance id is its
// default); TestCrashCountingSIGKILLWithInstance repeats the test with a
// fixed -instance, on less input.
//
// Set GRETE_CRASH_SEED to replay a run's input and kill points.
func TestCrashCountingSIGKILL(t *testing.T) {
	crashCounting(t, crashEvents, nil)
}

func TestCrashCountingSIGKILLWithInstance(t *testing.T) {
	crashCounting(t, crashEvents/2, []string{"-instance", "crash"})
}

func crashCounting(t *testing.T, events int, extraArgs []string) {
	seed := testkit.CrashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0xc4a5))

	bin := testkit.Build(t, ".")
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, e2eInput, crashPartitions, nil)
	recs, want := testInput(t, seed, events, crashExperiments)
	wantTop := refTop(crashTop, want)

	// The producer holds back each sixth of the input until one more kill
	// happened, so that at least five kills fall while input is flowing,
	// however fast the machine.
	prodCtx, stopProd := context.WithCancel(context.Background())
	prodDone := make(chan struct{})
	killed := make(chan struct{}, crashMaxKills)
	var produced atomic.Int64
	var prodErr error // set before prodDone is closed
	go func() {
		defer close(prodDone)
		prodErr = crashProduce(prodCtx, addrs, recs, killed, &produced)
	}()
	t.Cleanup(func() {
		stopProd()
		select {
		case <-prodDone:
		case <-time.After(30 * time.Second):
			t.Error("producer did not stop")
		}
	})
	producing := true
	pollProducer := func() {
		if !producing {
			return
		}
		select {
		case <-prodDone:
			producing = false
			if prodErr != nil {
				t.Fatalf("producer: %v", prodErr)
			}
		default:
		}
	}

	// From run fresh on, the program runs on a new data directory. The
	// short commit interval makes some kills land inside a commit, between
	// the changelog flush and the checkpoint, so that restarts also trim
	// changelog records no checkpoint covers.
	fresh := 2 + rng.IntN(3)
	oldDir, newDir := t.TempDir(), t.TempDir()
	args := func(run int) []string {
		dir := oldDir
		if run >= fresh {
			dir = newDir
		}
		return append([]string{"-brokers", strings.Join(addrs, ","), "-generate", "0", "-window", "300ms", "-commit", "50ms",
			"-top", strconv.Itoa(crashTop), "-quiet", "-duration", "5m", "-data-dir", dir}, extraArgs...)
	}
	adm := kadm.NewClient(testkit.Client(t, addrs))
	var (
		children    []*testkit.Child
		kills       int
		duringInput int // kills before the input was all produced
		reused      int // count tasks that restarted on their local store as it was
	)
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range children {
				t.Logf("run %d stderr:\n%s", c.Run, c.Stderr.Tail(16<<10))
			}
		}
	})
	// start starts run number len(children), after checking what a restart
	// must find, and checks how it resumed.
	start := func() *testkit.Child {
		run := len(children)
		var rs crashRestart
		if run > 0 {
			rs = crashPrepareRestart(t, addrs)
		}
		c := testkit.Start(t, bin, args(run), run)
		children = append(children, c)
		c.WaitForMatch(t, crashJobStarted, 60*time.Second)
		if run > 0 {
			crashkit.CheckResumed(t, addrs, e2eCountJob, crashPartitions, c, rs.checkpoints)
			reused += crashCheckRestore(t, c, &rs, run == fresh)
		}
		return c
	}
	begin := time.Now()
	for {
		pollProducer()
		if kills >= crashMaxKills || (kills >= crashMinKills && !producing) {
			break
		}
		before, _ := testkit.CommittedSum(adm, e2eCountJob, e2eInput)
		c := start()
		// Some progress: this run has checkpointed beyond where the last
		// one stopped, unless there is nothing left to do.
		testkit.Eventually(t, 60*time.Second, func() bool {
			if c.Exited() {
				t.Fatalf("run %d exited on its own: %v\n%s", c.Run, c.Err(), c.Stderr.Tail(8<<10))
			}
			pollProducer()
			sum, err := testkit.CommittedSum(adm, e2eCountJob, e2eInput)
			if err != nil {
				return false
			}
			return sum > before || (!producing && sum == int64(events))
		}, "run %d made no progress", c.Run)
		// A random kill point, a short while after progress.
		delay := time.Duration(rng.IntN(700)) * time.Millisecond
		crashkit.KillAfter(t, c, delay)
		kills++
		if n := produced.Load(); n < int64(events) {
			duringInput++
		}
		sum, _ := testkit.CommittedSum(adm, e2eCountJob, e2eInput)
		t.Logf("run %d: killed %v after progress, %s since start; %d events produced, %d checkpointed",
			c.Run, delay, time.Since(begin).Round(time.Millisecond), produced.Load(), sum)
		killed <- struct{}{}
	}
	if duringInput < crashMinKills {
		t.Fatalf("only %d kills while the input was being produced", duringInput)
	}
	if kills < crashMinKills || len(children) <= fresh {
		t.Fatalf("only %d kills (the fresh data directory starts at run %d)", kills, fresh)
	}
	select {
	case <-prodDone:
		if prodErr != nil {
			t.Fatalf("producer: %v", prodErr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("producer did not finish")
	}

	// A last run catches up and stops gracefully.
	final := start()
	var state string
	testkit.Eventually(t, 90*time.Second, func() bool {
		if final.Exited() {
			t.Fatalf("the final run exited on its own: %v", final.Err())
		}
		ok, lag := caughtUp(adm, e2eCountJob, e2eInput)
		state = lag
		if !ok {
			return false
		}
		gs := readGlobals(t, addrs)
		if len(gs) == 0 {
			return false
		}
		state += fmt.Sprintf("; last global %v", gs[len(gs)-1].Top)
		return slices.Equal(gs[len(gs)-1].Top, wantTop)
	}, "the final run did not catch up to the true top %v: %v", wantTop, lazy(func() string { return state }))
	final.Signal(t, syscall.SIGTERM)
	final.Wait(t, 45*time.Second)
	if final.Err() != nil {
		t.Fatalf("the program exited with %v after SIGTERM, want exit code 0", final.Err())
	}
	if !final.Stderr.Contains("job stopped cleanly") {
		t.Errorf("the final run did not log a clean stop")
	}
	if reused == 0 {
		t.Errorf("no counting task restarted on its local store: the data directory was not reused")
	}
	trims := 0
	for _, c := range children {
		trims += len(crashTrimLine.FindAllString(c.Stderr.String(), -1))
	}
	t.Logf("%d kills, restarts on a new data directory from run %d, %d task restarts reused their local store, %d changelog trims of records no checkpoint covered; caught up and stopped cleanly %s after start",
		kills, fresh, reused, trims, time.Since(begin).Round(time.Millisecond))

	// Exactly the true counts: nothing lost, nothing counted twice.
	got := readCounts(t, addrs)
	var lost, twice []string
	for name, w := range want {
		switch g := got[name]; {
		case g < w:
			lost = append(lost, fmt.Sprintf("%s: %d of %d", name, g, w))
		case g > w:
			twice = append(twice, fmt.Sprintf("%s: %d, true count %d", name, g, w))
		}
	}
	for name, g := range got {
		if _, ok := want[name]; !ok {
			twice = append(twice, fmt.Sprintf("%s: %d, not in the input", name, g))
		}
	}
	slices.Sort(lost)
	slices.Sort(twice)
	if len(lost) > 0 {
		t.Errorf("%d experiments lost events, e.g. %v", len(lost), lost[:min(10, len(lost))])
	}
	if len(twice) > 0 {
		t.Errorf("%d experiments counted events twice, e.g. %v", len(twice), twice[:min(10, len(twice))])
	}
	gs := readGlobals(t, addrs)
	checkGlobals(t, gs, crashTop)
	if last := gs[len(gs)-1]; !slices.Equal(last.Top, wantTop) {
		t.Errorf("the last global top is %v, want %v", last.Top, wantTop)
	}
	t.Logf("%d events over %d experiments counted exactly; %d global tops written; top 3: %v", events, len(want), len(gs), wantTop[:3])
}

// crashProduce writes recs into the input in chunks, at a bounded pace,
// partitioned by key (murmur2, like Kafka's default partitioner). It
// stops at the end of each of the first five sixths of the input until it
// receives from killed. produced counts what has been acknowledged.
func crashProduce(ctx context.Context, addrs []string, recs []*kgo.Record, killed <-chan struct{}, produced *atomic.Int64) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addrs...),
		kgo.DefaultProduceTopic(e2eInput),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(2*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	tick := time.NewTicker(crashChunkEvery)
	defer tick.Stop()
	sixth := len(recs) / 6
	for i := 0; i < len(recs); i += crashChunk {
		if i > 0 && i%sixth < crashChunk && i < 6*sixth {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-killed:
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		chunk := recs[i:min(i+crashChunk, len(recs))]
		err := cl.ProduceSync(pctx, chunk...).FirstErr()
		cancel()
		if err != nil {
			return fmt.Errorf("chunk at %d: %w", i, err)
		}
		produced.Add(int64(len(chunk)))
	}
	return nil
}

// Log lines of the counting job that the test reads.
var (
	crashJobStarted  = regexp.MustCompile(`msg="job started" job=` + e2eCountJob + ` `)
	crashCurrentLine = regexp.MustCompile(`msg="store is current; no replay" job=` + e2eCountJob + ` task=(task-\d+) store=` + experiments.CountsStore + ` `)
	crashReplayLine  = regexp.MustCompile(`msg="restoring store from changelog" job=` + e2eCountJob + ` task=(task-\d+) store=` + experiments.CountsStore + ` changelog=\S+ from=(\d+) to=(\d+)`)
	crashTrimLine    = regexp.MustCompile(`msg="trimming changelog records written after the last checkpoint" job=` + e2eCountJob + ` `)
	crashWipeLine    = regexp.MustCompile(`msg="local store is ahead of its checkpoint.*" job=` + e2eCountJob + ` task=(task-\d+)`)
)

// crashRestart is what the test knew before a restart: the counting job's
// checkpoints, loaded with a manager of the test's own.
type crashRestart struct {
	checkpoints map[string]checkpoint.Checkpoint
}

func crashPrepareRestart(t *testing.T, addrs []string) crashRestart {
	t.Helper()
	return crashRestart{checkpoints: crashkit.Checkpoints(t, addrs, e2eCountJob, crashPartitions)}
}

// crashCheckRestore checks how every counting task with a checkpointed
// changelog brought its store back. On the first run with a new data
// directory each must replay its changelog from the start. Otherwise each
// must either find its local store current or replay the records after
// it, never rebuild it. It returns how many tasks found their store
// current.
func crashCheckRestore(t *testing.T, c *testkit.Child, rs *crashRestart, fresh bool) (reused int) {
	t.Helper()
	log := c.Stderr.String()
	current := map[string]bool{}
	for _, m := range crashCurrentLine.FindAllStringSubmatch(log, -1) {
		current[m[1]] = true
	}
	replayFrom := map[string]int64{}
	for _, m := range crashReplayLine.FindAllStringSubmatch(log, -1) {
		replayFrom[m[1]], _ = strconv.ParseInt(m[2], 10, 64)
	}
	for _, m := range crashWipeLine.FindAllStringSubmatch(log, -1) {
		t.Errorf("run %d: %s found its local store ahead of its checkpoint", c.Run, m[1])
	}
	for name, cp := range rs.checkpoints {
		off, ok := cp.Changelogs[experiments.CountsStore]
		if !ok || off < 0 {
			continue // nothing to restore
		}
		from, replayed := replayFrom[name]
		switch {
		case fresh && (!replayed || from != 0 || current[name]):
			t.Errorf("run %d (new data directory): %s did not replay its changelog from the start (replay from %d: %v; current: %v)",
				c.Run, name, from, replayed, current[name])
		case fresh:
		case current[name] == replayed:
			t.Errorf("run %d: %s logged current: %v, replay: %v; want exactly one", c.Run, name, current[name], replayed)
		case current[name]:
			reused++
		}
	}
	if fresh {
		t.Logf("run %d: new data directory; %d counting tasks restored their store from the changelog", c.Run, len(replayFrom))
	}
	return reused
}
