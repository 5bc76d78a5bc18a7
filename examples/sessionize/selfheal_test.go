package main

import (
	"syscall"
	"testing"
	"time"

	"github.com/grete-go/grete/examples/sessionize/sessions"
	"github.com/grete-go/grete/internal/crashkit"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The self-healing tests: the job run with the README's flags keeps going,
// exactly, through what its operators do to it.

// TestCrashLoopSessionize kills the job ten times, 0.3 to 1.5 s after each
// start, restarting it at once each time (a supervisor with a job that
// keeps dying), while events flow. The process left running must run
// every task within the session timeout + 5 s of its start and process
// the input produced after the loop within the session timeout + 10 s;
// then every session's last snapshot must equal the reference's.
func TestCrashLoopSessionize(t *testing.T) {
	seed := testkit.CrashSeed(t)
	bin := testkit.Build(t, ".")
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, crashInput, crashPartitions, nil)
	recs := selfhealInput(t, seed, 60_000)
	live := crashkit.CrashLoop{
		Bin: bin, Addrs: addrs, Group: crashGroup, Input: crashInput, Tasks: crashPartitions, Recs: recs, Seed: seed,
		Args: append(crashArgs(addrs, t.TempDir()), "-log-level", "debug"),
	}.Run(t)
	stopAfterIdleWindows(t, live)
	res, _ := verifyRun(t, addrs, kadm.NewClient(testkit.Client(t, addrs)), recs)
	t.Logf("%d events: %d sessions (%d closed); %d snapshots", len(recs), res.Sessions, res.Finals, res.Snapshots)
}

// TestBrokerRestartSessionize restarts the job's broker twice while events
// flow: stopped, then started again on the same port and data directory
// after 3 s, and later after 20 s (longer than the session timeout, so the
// job's membership lapses meanwhile). The job must not exit, and every
// session's last snapshot must equal the reference's.
func TestBrokerRestartSessionize(t *testing.T) {
	seed := testkit.CrashSeed(t)
	bin := testkit.Build(t, ".")
	br := testkit.RestartableBroker(t)
	addrs := br.Addrs()
	testkit.CreateTopic(t, addrs, crashInput, crashPartitions, nil)
	recs := selfhealInput(t, seed, 120_000)
	// 4k events/s: production spans both restarts.
	prod := testkit.ProduceInBackground(t, addrs, crashInput, recs, 200, 50*time.Millisecond)
	job := testkit.Start(t, bin, append(crashArgs(addrs, t.TempDir()), "-log-level", "debug"), 0)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("job stderr:\n%s", job.Stderr.Tail(32<<10))
		}
	})
	crashkit.WaitAllTasks(t, job, crashPartitions, task.DefaultSessionTimeout+5*time.Second)
	adm := kadm.NewClient(testkit.Client(t, addrs))
	progress := func(what string) {
		t.Helper()
		before, _ := testkit.CommittedSum(adm, crashGroup, crashInput)
		testkit.Eventually(t, 2*task.DefaultSessionTimeout+20*time.Second, func() bool {
			if job.Exited() {
				t.Fatalf("the job exited: %v", job.Err())
			}
			sum, err := testkit.CommittedSum(adm, crashGroup, crashInput)
			return err == nil && sum > before
		}, "no progress %s", what)
	}
	progress("before the first restart")
	for _, outage := range []time.Duration{3 * time.Second, 20 * time.Second} {
		br.Stop()
		stopped := time.Now()
		// The outage is what this test is about: nothing to wait for.
		time.Sleep(outage)
		if job.Exited() {
			t.Fatalf("the job exited during a %s outage: %v", outage, job.Err())
		}
		br.Start()
		t.Logf("broker stopped for %s", time.Since(stopped).Round(time.Millisecond))
		progress("after a " + outage.String() + " outage")
	}
	prod.Wait(t, 2*time.Minute)
	testkit.WaitCaughtUp(t, adm, crashGroup, crashInput, crashPartitions, 2*time.Minute, func() {
		if job.Exited() {
			t.Fatalf("the job exited: %v", job.Err())
		}
	})
	stopAfterIdleWindows(t, job)
	res, ref := verifyRun(t, addrs, adm, recs)
	t.Logf("%d events: %d sessions (%d closed), %d late; %d snapshots", len(recs), res.Sessions, res.Finals, len(ref.Late), res.Snapshots)
}

// selfhealInput is n events of the crash tests' traffic, keyed by visitor.
func selfhealInput(t *testing.T, seed uint64, n int) []*kgo.Record {
	cfg := sessions.Traffic{Seed: seed, Gap: crashGap, Grace: crashGrace, Active: 1000, Visitors: 20000, OutOfOrder: 0.08, Late: 0.005}
	return records(t, sessions.Simulate(cfg, n, time.UnixMilli(t0), 10*time.Millisecond))
}

// stopAfterIdleWindows waits until every task of c logs an idle window (no
// event since its previous Window, which therefore sent every snapshot),
// then stops c gracefully: its final commit waits until Kafka has
// acknowledged them. c must log at debug level.
func stopAfterIdleWindows(t *testing.T, c *testkit.Child) {
	t.Helper()
	from := c.Stderr.Len()
	testkit.Eventually(t, time.Minute, func() bool {
		idle := map[string]bool{}
		for _, m := range crashIdleLine.FindAllStringSubmatch(c.Stderr.From(from), -1) {
			idle[m[1]] = true
		}
		return len(idle) == crashPartitions
	}, "not every task ran an idle window after catching up")
	c.Signal(t, syscall.SIGTERM)
	c.Wait(t, 45*time.Second)
	if c.Err() != nil {
		t.Fatalf("job exited with %v after SIGTERM, want exit code 0", c.Err())
	}
}
