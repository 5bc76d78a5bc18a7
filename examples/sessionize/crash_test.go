package main

import (
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grete-go/grete/examples/sessionize/internal/reference"
	"github.com/grete-go/grete/examples/sessionize/sessions"
	"github.com/grete-go/grete/internal/crashkit"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The crash test's parameters. The input is produced in chunks at a bounded
// pace, so that it is still flowing while the job is killed; its event time
// covers 50 minutes, with a gap of one minute, so sessions close, merge and
// reopen throughout.
const (
	crashInput      = "events"
	crashOutput     = "sessions"
	crashLate       = "late"
	crashPartitions = 8
	crashEvents     = 300_000
	crashChunk      = 1000
	crashChunkEvery = 50 * time.Millisecond // 20k events/s: production spans the first kills
	crashMinKills   = 5
	crashMaxKills   = 10
	crashGroup      = "sessionize"
	crashGap        = time.Minute
	crashGrace      = 10 * time.Second
)

// TestCrashSessionizeSIGKILL runs the job as a child process with the
// README's flags (its instance id derived from its data directory),
// SIGKILLs it at random points while 300k events flow, and restarts it
// each time with the same data directory, except once with a fresh one (a
// new machine: the store is rebuilt from its changelog; the run after it
// goes back to the old directory, which is then behind its checkpoint),
// all under a fault soak (1% of the requests failed with retriable errors,
// a few connections dropped). After a final run has caught up, emitted
// once more and stopped cleanly on SIGTERM, every session's last snapshot
// must equal the reference's, exactly: no event lost or counted twice,
// none in the wrong session, every closed session final. Duplicated
// snapshots are allowed (at-least-once output).
//
// Set GRETE_CRASH_SEED to replay a run's input and kill points.
func TestCrashSessionizeSIGKILL(t *testing.T) {
	crashSessionize(t, crashEvents, crashMinKills, crashMaxKills, nil, true)
}

// TestCrashSessionizeSIGKILLWithInstance is the crash test with a fixed
// -instance, on less input.
func TestCrashSessionizeSIGKILLWithInstance(t *testing.T) {
	crashSessionize(t, crashEvents/3, 3, 4, []string{"-instance", "crash"}, false)
}

func crashSessionize(t *testing.T, events, minKills, maxKills int, extraArgs []string, soak bool) {
	seed := testkit.CrashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0xc4a5))

	bin := testkit.Build(t, ".")
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, crashInput, crashPartitions, nil)
	if soak {
		faults := testkit.StartSoak(t, b.Cluster, seed, 0.01, 0.0005)
		t.Cleanup(func() { t.Logf("fault soak: %d requests faulted (%v)", faults.Total(), faults) })
	}

	cfg := sessions.Traffic{Seed: seed, Gap: crashGap, Grace: crashGrace, Active: 1000, Visitors: 20000, OutOfOrder: 0.08, Late: 0.005}
	recs := records(t, sessions.Simulate(cfg, events, time.UnixMilli(t0), 10*time.Millisecond))

	prod := testkit.ProduceInBackground(t, addrs, crashInput, recs, crashChunk, crashChunkEvery)

	adm := kadm.NewClient(testkit.Client(t, addrs))
	dir, freshDir := t.TempDir(), t.TempDir()
	args := func(dir string) []string {
		return append(crashArgs(addrs, dir), extraArgs...)
	}
	// Kill points spread over the whole input: each run is killed at a
	// random moment once the checkpoints cover a random share of it.
	kills := minKills + rng.IntN(maxKills-minKills+1)
	at := make([]int64, kills)
	for i := range at {
		at[i] = int64(float64(events) * (0.02 + 0.93*rng.Float64()))
	}
	slices.Sort(at)
	fresh := 1 + rng.IntN(kills-1) // the run that starts on a fresh directory
	var children []*testkit.Child
	t.Cleanup(func() {
		if t.Failed() {
			for i, c := range children {
				t.Logf("run %d stderr:\n%s", i, c.Stderr.Tail(8<<10))
			}
		}
	})
	start := time.Now()
	for run := range kills {
		d := dir
		if run == fresh {
			d = freshDir
		}
		before, _ := testkit.CommittedSum(adm, crashGroup, crashInput)
		c := testkit.Start(t, bin, args(d), run)
		children = append(children, c)
		// No stall: whatever the killed run left behind, this one runs
		// every task within the session timeout + 5 s of its start.
		crashkit.WaitAllTasks(t, c, crashPartitions, task.DefaultSessionTimeout+5*time.Second)
		// Progress beyond where the last run stopped, and beyond this
		// run's share of the input, unless an earlier run already
		// processed all of it (the job can outrun the kill points).
		testkit.Eventually(t, 90*time.Second, func() bool {
			if c.Exited() {
				t.Fatalf("run %d exited on its own: %v\n%s", run, c.Err(), c.Stderr.Tail(8<<10))
			}
			producing := prod.Producing(t) // fails the test if the producer failed
			sum, err := testkit.CommittedSum(adm, crashGroup, crashInput)
			return err == nil && (sum > before && sum >= at[run] || !producing && sum == int64(events))
		}, "run %d did not get past %d events", run, at[run])
		// A random kill point, a short while after that.
		delay := time.Duration(rng.IntN(700)) * time.Millisecond
		crashkit.KillAfter(t, c, delay)
		sum, _ := testkit.CommittedSum(adm, crashGroup, crashInput)
		t.Logf("run %d (%s data dir): killed %v after %d events were checkpointed; %d at the kill (%s since start)",
			run, map[bool]string{true: "fresh", false: "first"}[d == freshDir], delay, at[run], sum, time.Since(start).Round(time.Millisecond))
	}
	if !children[fresh].Stderr.Contains("restoring store from changelog") {
		t.Errorf("run %d, on a fresh data directory, did not restore its store from the changelog", fresh)
	}

	// The producer has finished; one more run catches up, emits once more
	// after that, and stops gracefully.
	prod.Wait(t, 60*time.Second)
	final := testkit.Start(t, bin, append(args(dir), "-log-level", "debug"), len(children))
	children = append(children, final)
	final.WaitFor(t, "job started", 60*time.Second)
	testkit.WaitCaughtUp(t, adm, crashGroup, crashInput, crashPartitions, 2*time.Minute, func() {
		if final.Exited() {
			t.Fatalf("final run exited on its own: %v", final.Err())
		}
	})
	// Every event is processed: stop once every snapshot is sent.
	stopAfterIdleWindows(t, final)
	t.Logf("%d kills; caught up and stopped cleanly %s after start", kills, time.Since(start).Round(time.Millisecond))

	res, ref := verifyRun(t, addrs, adm, recs)
	t.Logf("%d events: %d sessions (%d closed, %d keys with several sessions), %d late; %d snapshots",
		len(recs), res.Sessions, res.Finals, res.MultiKeys, len(ref.Late), res.Snapshots)
	if res.Finals == 0 || len(ref.Late) == 0 || res.Finals == res.Sessions {
		t.Errorf("the input exercises too little: %d of %d sessions closed, %d late events", res.Finals, res.Sessions, len(ref.Late))
	}
}

// crashArgs are the flags the crash tests run the job with: the README's,
// but for the topics, the session timing, and frequent emits and commits.
func crashArgs(addrs []string, dir string) []string {
	return []string{"-brokers", strings.Join(addrs, ","), "-input", crashInput, "-output", crashOutput, "-late-topic", crashLate,
		"-gap", crashGap.String(), "-grace", crashGrace.String(), "-window", "500ms", "-commit", "200ms",
		"-generate", "0", "-quiet", "-duration", "5m", "-data-dir", dir}
}

// verifyRun checks a finished run against the reference computed from the
// input where it landed (kgo set each record's partition and offset):
// every task's final checkpoint is at the end of its input, and every
// session's last snapshot (and every late event) is the reference's.
func verifyRun(t *testing.T, addrs []string, adm *kadm.Client, recs []*kgo.Record) (reference.Verified, reference.Result) {
	t.Helper()
	ref, err := reference.Sessionize(refInputs(recs), crashGap.Milliseconds(), crashGrace.Milliseconds())
	if err != nil {
		t.Fatal(err)
	}
	ends := testkit.EndOffsets(t, adm, crashInput)
	last := crashkit.Checkpoints(t, addrs, crashGroup, crashPartitions)
	if len(last) != crashPartitions {
		t.Fatalf("%d of %d tasks have a final checkpoint", len(last), crashPartitions)
	}
	for name, cp := range last {
		p, _ := strconv.Atoi(strings.TrimPrefix(name, "task-"))
		if got := cp.Inputs[stream.Partition{Topic: crashInput, Partition: int32(p)}]; got != ends[int32(p)] {
			t.Errorf("final checkpoint of %s is at %d, end of input %d", name, got, ends[int32(p)])
		}
	}
	outs, lates := readOutputs(t, addrs, crashOutput, crashLate)
	res := reference.VerifySnapshots(t, outs, ref, false)
	reference.VerifyLate(t, lates, ref, false)
	return res, ref
}

// crashIdleLine is the task's debug log of a Window that found no event
// since the previous one: its snapshots cover everything processed.
var crashIdleLine = regexp.MustCompile(`msg="idle window[^"]*" job=\S+ task=(task-\d+)`)
