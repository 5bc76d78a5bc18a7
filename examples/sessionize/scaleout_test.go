package main

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grete-go/grete/examples/sessionize/sessions"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/twmb/franz-go/pkg/kadm"
)

// TestScaleOutSessionize runs the job as three processes sharing its eight
// tasks, each task with one standby copy, while 300k events flow. During the run one process is SIGKILLed
// (the others take its tasks over once its session times out), a fourth
// joins (it gets a share), and then every live process is restarted one by
// one (each hands its tasks over on SIGTERM and gets tasks back when it
// rejoins). After the input is processed, every session's last snapshot
// must equal the independently computed reference, exactly.
func TestScaleOutSessionize(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	seed := testkit.CrashSeed(t)
	bin := testkit.Build(t, ".")
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, crashInput, crashPartitions, nil)

	cfg := sessions.Traffic{Seed: seed, Gap: crashGap, Grace: crashGrace, Active: 1000, Visitors: 20000, OutOfOrder: 0.08, Late: 0.005}
	recs := records(t, sessions.Simulate(cfg, crashEvents, time.UnixMilli(t0), 10*time.Millisecond))
	adm := kadm.NewClient(testkit.Client(t, addrs))

	type proc struct {
		id      string
		dir     string
		c       *testkit.Child
		stopped bool // killed or stopped by the test
	}
	var (
		all   []*testkit.Child
		procs []*proc
	)
	t.Cleanup(func() {
		if t.Failed() {
			for i, c := range all {
				t.Logf("run %d stdout:\n%s\nstderr:\n%s", i, c.Stdout.Tail(2<<10), c.Stderr.Tail(6<<10))
			}
		}
	})
	launch := func(p *proc) {
		args := []string{"-brokers", strings.Join(addrs, ","), "-input", crashInput, "-output", crashOutput, "-late-topic", crashLate,
			"-gap", crashGap.String(), "-grace", crashGrace.String(), "-window", "500ms", "-commit", "200ms",
			"-generate", "0", "-quiet", "-duration", "5m", "-data-dir", p.dir, "-instance", p.id, "-standbys", "1", "-log-level", "debug"}
		p.c = testkit.Start(t, bin, args, len(all))
		all = append(all, p.c)
		p.c.WaitFor(t, "job started", 60*time.Second)
	}
	live := func() []*proc {
		var out []*proc
		for _, p := range procs {
			switch {
			case p.stopped:
			case p.c.Exited():
				t.Fatalf("%s exited on its own: %v\n%s", p.id, p.c.Err(), p.c.Stderr.Tail(8<<10))
			default:
				out = append(out, p)
			}
		}
		return out
	}
	// balanced waits until the live processes run every task between them,
	// each at least one.
	balanced := func(what string) {
		t.Helper()
		var state string
		testkit.Eventually(t, 90*time.Second, func() bool {
			var got []int
			var parts []string
			ok := true
			for _, p := range live() {
				ts := runsTasks(p.c)
				ok = ok && len(ts) > 0
				got = append(got, ts...)
				parts = append(parts, fmt.Sprintf("%s:%v", p.id, ts))
			}
			slices.Sort(got)
			state = strings.Join(parts, " ")
			return ok && slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7})
		}, "%s: tasks not shared by the live processes: %v", what, testkit.Lazy(func() string { return state }))
		t.Logf("%s: %s", what, state)
	}
	progress := func(share float64) {
		t.Helper()
		testkit.Eventually(t, 2*time.Minute, func() bool {
			sum, err := testkit.CommittedSum(adm, crashGroup, crashInput)
			return err == nil && sum >= int64(share*crashEvents)
		}, "the group did not get past %.0f%% of the input", share*100)
	}

	for i := range 3 {
		procs = append(procs, &proc{id: fmt.Sprintf("p%d", i), dir: t.TempDir()})
		launch(procs[i])
	}
	balanced("three processes")
	prod := testkit.ProduceInBackground(t, addrs, crashInput, recs, crashChunk, crashChunkEvery)
	start := time.Now()

	progress(0.15)
	procs[1].stopped = true
	procs[1].c.Signal(t, syscall.SIGKILL)
	procs[1].c.Wait(t, 10*time.Second)
	balanced("p1 killed")

	progress(0.35)
	procs = append(procs, &proc{id: "p3", dir: t.TempDir()})
	launch(procs[3])
	balanced("p3 joined")

	progress(0.5)
	for _, p := range live() {
		p.stopped = true
		p.c.Signal(t, syscall.SIGTERM)
		p.c.Wait(t, 60*time.Second)
		if err := p.c.Err(); err != nil {
			t.Fatalf("%s exited with %v after SIGTERM, want exit code 0", p.id, err)
		}
		p.stopped = false
		launch(p)
		balanced(p.id + " restarted")
	}

	prod.Wait(t, 2*time.Minute)
	testkit.WaitCaughtUp(t, adm, crashGroup, crashInput, crashPartitions, 2*time.Minute, func() { live() })
	// Every task, wherever it runs, then logs an idle window: its
	// snapshots cover every event. A graceful stop then commits them.
	marks := map[*testkit.Child]int{}
	for _, p := range live() {
		marks[p.c] = p.c.Stderr.Len()
	}
	testkit.Eventually(t, time.Minute, func() bool {
		idle := map[string]bool{}
		for c, off := range marks {
			for _, m := range crashIdleLine.FindAllStringSubmatch(c.Stderr.From(off), -1) {
				idle[m[1]] = true
			}
		}
		return len(idle) == crashPartitions
	}, "not every task ran an idle window after catching up")
	for _, p := range live() {
		p.stopped = true
		p.c.Signal(t, syscall.SIGTERM)
	}
	for _, p := range procs {
		p.c.Wait(t, 60*time.Second)
	}
	t.Logf("4 processes, 1 kill, %d graceful restarts; caught up and stopped %s after the input started", len(all)-4, time.Since(start).Round(time.Millisecond))

	res, ref := verifyRun(t, addrs, adm, recs)
	t.Logf("%d events: %d sessions (%d closed), %d late; %d snapshots", len(recs), res.Sessions, res.Finals, len(ref.Late), res.Snapshots)
}

var runsTasksLine = regexp.MustCompile(`runs tasks \[([0-9 ]*)\]`)

// runsTasks returns the tasks a process said it runs last.
func runsTasks(c *testkit.Child) []int {
	ms := runsTasksLine.FindAllStringSubmatch(c.Stdout.String(), -1)
	if len(ms) == 0 {
		return nil
	}
	var ts []int
	for _, f := range strings.Fields(ms[len(ms)-1][1]) {
		n, _ := strconv.Atoi(f)
		ts = append(ts, n)
	}
	return ts
}
