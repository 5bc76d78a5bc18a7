package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
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
// Set GRETE_CRASH_SEED to replay a run's input and kill points.
func TestCrashCountingSIGKILL(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs POSIX signals")
	}
	if testing.Short() {
		t.Skip("crash test takes 30 s or more; skipped with -short")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("GRETE_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("GRETE_CRASH_SEED: %v", err)
		}
	}
	t.Logf("seed %d (replay with GRETE_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0xc4a5))

	bin := crashBuild(t)
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, e2eInput, crashPartitions, nil)
	recs, want := testInput(t, seed, crashEvents, crashExperiments)
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
		return []string{"-brokers", strings.Join(addrs, ","), "-generate", "0", "-window", "300ms", "-commit", "50ms",
			"-top", strconv.Itoa(crashTop), "-quiet", "-duration", "5m", "-data-dir", dir}
	}
	adm := kadm.NewClient(testkit.Client(t, addrs))
	var (
		children    []*crashChild
		kills       int
		duringInput int // kills before the input was all produced
		reused      int // count tasks that restarted on their local store as it was
	)
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range children {
				t.Logf("run %d stderr:\n%s", c.run, c.stderr.Tail(16<<10))
			}
		}
	})
	// start starts run number len(children), after checking what a restart
	// must find, and checks how it resumed.
	start := func() *crashChild {
		run := len(children)
		var rs crashRestart
		if run > 0 {
			rs = crashPrepareRestart(t, addrs)
		}
		c := crashStart(t, bin, args(run), run)
		children = append(children, c)
		c.waitFor(t, crashJobStarted, 60*time.Second)
		if run > 0 {
			crashCheckResumed(t, addrs, c, &rs)
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
		before, _ := crashCommittedSum(adm)
		c := start()
		// Some progress: this run has checkpointed beyond where the last
		// one stopped, unless there is nothing left to do.
		testkit.Eventually(t, 60*time.Second, func() bool {
			if c.exited() {
				t.Fatalf("run %d exited on its own: %v\n%s", c.run, c.err, c.stderr.Tail(8<<10))
			}
			pollProducer()
			sum, err := crashCommittedSum(adm)
			if err != nil {
				return false
			}
			return sum > before || (!producing && sum == crashEvents)
		}, "run %d made no progress", c.run)
		// A random kill point, a short while after progress.
		delay := time.Duration(rng.IntN(700)) * time.Millisecond
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-c.done:
			t.Fatalf("run %d exited on its own: %v\n%s", c.run, c.err, c.stderr.Tail(8<<10))
		}
		c.signal(t, syscall.SIGKILL)
		c.wait(t, 10*time.Second)
		kills++
		if n := produced.Load(); n < crashEvents {
			duringInput++
		}
		sum, _ := crashCommittedSum(adm)
		t.Logf("run %d: killed %v after progress, %s since start; %d events produced, %d checkpointed",
			c.run, delay, time.Since(begin).Round(time.Millisecond), produced.Load(), sum)
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
		if final.exited() {
			t.Fatalf("the final run exited on its own: %v", final.err)
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
	final.signal(t, syscall.SIGTERM)
	final.wait(t, 45*time.Second)
	if final.err != nil {
		t.Fatalf("the program exited with %v after SIGTERM, want exit code 0", final.err)
	}
	if !final.stderr.Contains("job stopped cleanly") {
		t.Errorf("the final run did not log a clean stop")
	}
	if reused == 0 {
		t.Errorf("no counting task restarted on its local store: the data directory was not reused")
	}
	trims := 0
	for _, c := range children {
		trims += len(crashTrimLine.FindAllString(c.stderr.String(), -1))
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
	t.Logf("%d events over %d experiments counted exactly; %d global tops written; top 3: %v", crashEvents, len(want), len(gs), wantTop[:3])
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

// crashBuild builds the program once per test, without -race so that it
// starts and runs fast.
func crashBuild(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	out := filepath.Join(t.TempDir(), "topexperiments")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, ".")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, msg)
	}
	return out
}

// crashChild is one run of the program.
type crashChild struct {
	run    int
	cmd    *exec.Cmd
	spawn  time.Time
	stderr *syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, set before done is closed
}

func crashStart(t *testing.T, bin string, args []string, run int) *crashChild {
	t.Helper()
	c := &crashChild{run: run, stderr: &syncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stderr = c.stderr
	c.spawn = time.Now()
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start run %d: %v", run, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	// Never leave a child behind, whatever happens to the test.
	t.Cleanup(func() {
		if !c.exited() {
			_ = c.cmd.Process.Kill()
			select {
			case <-c.done:
			case <-time.After(10 * time.Second):
				t.Errorf("run %d (pid %d) did not die", run, c.cmd.Process.Pid)
			}
		}
	})
	return c
}

func (c *crashChild) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *crashChild) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil && !c.exited() {
		t.Fatalf("signal run %d: %v", c.run, err)
	}
}

func (c *crashChild) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		t.Fatalf("run %d did not exit within %v", c.run, timeout)
	}
}

// waitFor waits until a line of the child's stderr matches re, failing if
// the child exits first.
func (c *crashChild) waitFor(t *testing.T, re *regexp.Regexp, timeout time.Duration) {
	t.Helper()
	testkit.Eventually(t, timeout, func() bool {
		if re.MatchString(c.stderr.String()) {
			return true
		}
		if c.exited() {
			t.Fatalf("run %d exited (%v) before logging %v:\n%s", c.run, c.err, re, c.stderr.Tail(8<<10))
		}
		return false
	}, "run %d never logged %v", c.run, re)
}

// Tail returns at most the last n bytes.
func (b *syncBuffer) Tail(n int) string {
	s := b.String()
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (b *syncBuffer) Contains(s string) bool { return strings.Contains(b.String(), s) }

// Log lines of the counting job that the test reads.
var (
	crashJobStarted  = regexp.MustCompile(`msg="job started" job=` + e2eCountJob + ` `)
	crashResumeLine  = regexp.MustCompile(`msg="resuming from checkpoint" job=` + e2eCountJob + ` task=(task-\d+) id=(\d+)`)
	crashCurrentLine = regexp.MustCompile(`msg="store is current; no replay" job=` + e2eCountJob + ` task=(task-\d+) store=` + countsStore + ` `)
	crashReplayLine  = regexp.MustCompile(`msg="restoring store from changelog" job=` + e2eCountJob + ` task=(task-\d+) store=` + countsStore + ` changelog=\S+ from=(\d+) to=(\d+)`)
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
	rs := crashRestart{checkpoints: map[string]checkpoint.Checkpoint{}}
	mgr, err := checkpoint.NewKafka(stream.KafkaConfig{Brokers: addrs, ClientID: "crash-test"}, e2eCountJob, checkpoint.KafkaOptions{NoMirror: true})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	for p := range crashPartitions {
		name := "task-" + strconv.Itoa(p)
		cp, ok, err := mgr.Load(context.Background(), name)
		if err != nil {
			t.Fatalf("load checkpoint of %s: %v", name, err)
		}
		if ok {
			rs.checkpoints[name] = cp
		}
	}
	return rs
}

// crashCheckResumed checks that run c logged "resuming from checkpoint" for
// exactly the counting tasks that had a checkpoint before it started, with
// the ids of those checkpoints.
//
// One race is allowed for: a checkpoint the killed run had sent just
// before SIGKILL can be appended after the test's load. Then the new run
// resumes from a checkpoint one id newer, which must exist in the
// checkpoint topic, written before the new run was spawned; it becomes the
// restart's checkpoint for the later checks.
func crashCheckResumed(t *testing.T, addrs []string, c *crashChild, rs *crashRestart) {
	t.Helper()
	got := map[string]uint64{}
	for _, m := range crashResumeLine.FindAllStringSubmatch(c.stderr.String(), -1) {
		id, _ := strconv.ParseUint(m[2], 10, 64)
		if _, dup := got[m[1]]; dup {
			t.Errorf("run %d: %s resumed twice", c.run, m[1])
		}
		got[m[1]] = id
	}
	var history []checkpoint.Checkpoint // read only when needed
	for p := range crashPartitions {
		name := "task-" + strconv.Itoa(p)
		want, had := rs.checkpoints[name]
		id, resumed := got[name]
		switch {
		case !had && !resumed:
		case had && resumed && id == want.ID:
		case resumed && id == want.ID+1: // want.ID is 0 when !had
			if history == nil {
				history = crashCheckpointHistory(t, addrs)
			}
			i := slices.IndexFunc(history, func(cp checkpoint.Checkpoint) bool {
				return cp.Task == name && cp.ID == id && cp.WrittenAt.Before(c.spawn)
			})
			if i < 0 {
				t.Errorf("run %d: %s resumed from checkpoint %d; %d was the last before the restart", c.run, name, id, want.ID)
				continue
			}
			t.Logf("run %d: %s resumed from checkpoint %d, written by the killed run just before it died", c.run, name, id)
			rs.checkpoints[name] = history[i]
		case had && !resumed:
			t.Errorf("run %d: %s did not log resuming from checkpoint %d", c.run, name, want.ID)
		case had:
			t.Errorf("run %d: %s resumed from checkpoint %d, want %d", c.run, name, id, want.ID)
		default:
			t.Errorf("run %d: %s resumed from checkpoint %d, but it had none", c.run, name, id)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// crashCheckpointHistory reads every record of the counting job's
// checkpoint topic (the embedded broker compacts only when told to).
func crashCheckpointHistory(t *testing.T, addrs []string) []checkpoint.Checkpoint {
	t.Helper()
	var out []checkpoint.Checkpoint
	for _, r := range testkit.ReadAll(t, addrs, 30*time.Second, e2eCountJob+"-checkpoints") {
		if r.Value == nil {
			continue
		}
		cp, err := checkpoint.Decode(r.Value)
		if err != nil {
			t.Fatalf("checkpoint record at offset %d: %v", r.Offset, err)
		}
		out = append(out, cp)
	}
	return out
}

// crashCheckRestore checks how every counting task with a checkpointed
// changelog brought its store back. On the first run with a new data
// directory each must replay its changelog from the start. Otherwise each
// must either find its local store current or replay the records after
// it, never rebuild it. It returns how many tasks found their store
// current.
func crashCheckRestore(t *testing.T, c *crashChild, rs *crashRestart, fresh bool) (reused int) {
	t.Helper()
	log := c.stderr.String()
	current := map[string]bool{}
	for _, m := range crashCurrentLine.FindAllStringSubmatch(log, -1) {
		current[m[1]] = true
	}
	replayFrom := map[string]int64{}
	for _, m := range crashReplayLine.FindAllStringSubmatch(log, -1) {
		replayFrom[m[1]], _ = strconv.ParseInt(m[2], 10, 64)
	}
	for _, m := range crashWipeLine.FindAllStringSubmatch(log, -1) {
		t.Errorf("run %d: %s found its local store ahead of its checkpoint", c.run, m[1])
	}
	for name, cp := range rs.checkpoints {
		off, ok := cp.Changelogs[countsStore]
		if !ok || off < 0 {
			continue // nothing to restore
		}
		from, replayed := replayFrom[name]
		switch {
		case fresh && (!replayed || from != 0 || current[name]):
			t.Errorf("run %d (new data directory): %s did not replay its changelog from the start (replay from %d: %v; current: %v)",
				c.run, name, from, replayed, current[name])
		case fresh:
		case current[name] == replayed:
			t.Errorf("run %d: %s logged current: %v, replay: %v; want exactly one", c.run, name, current[name], replayed)
		case current[name]:
			reused++
		}
	}
	if fresh {
		t.Logf("run %d: new data directory; %d counting tasks restored their store from the changelog", c.run, len(replayFrom))
	}
	return reused
}

// crashCommittedSum is the sum of the counting job's committed input
// offsets: how many input events it has checkpointed.
func crashCommittedSum(adm *kadm.Client) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := adm.FetchOffsets(ctx, e2eCountJob)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		return 0, err
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == e2eInput {
			sum += o.At
		}
	})
	return sum, nil
}
