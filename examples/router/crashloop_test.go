package main

import (
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/crashkit"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kadm"
)

// TestCrashLoopRouter runs the router the way the README does (dynamic
// membership: no -instance) and has it crash the way a supervisor restarts
// a job that keeps dying: ten SIGKILLs, 0.3 to 1.5 s after each start, each
// followed by an immediate restart, while events flow. The process left
// running must run every task within the session timeout + 5 s of its
// start, whatever its dead predecessors left in the group, and then
// process input produced after the loop within the session timeout + 10 s.
// No event may be lost.
func TestCrashLoopRouter(t *testing.T) {
	seed := testkit.CrashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0x100b))

	bin := testkit.Build(t, ".")
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, crashInput, crashPartitions, nil)
	recs := testEvents(rand.New(rand.NewPCG(seed, 2)), 40_000, 2000, 0.005)
	ref, err := crashReference(recs)
	if err != nil {
		t.Fatal(err)
	}
	during, after := recs[:len(recs)/2], recs[len(recs)/2:]
	prod := testkit.ProduceInBackground(t, addrs, crashInput, during, 500, 50*time.Millisecond)

	args := []string{"-brokers", strings.Join(addrs, ","), "-input", crashInput, "-generate", "0", "-quiet", "-duration", "5m"}
	live, all := crashkit.Loop(t, bin, args, crashkit.LoopKills, rng, 0)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the last run's stderr (dead-letter warnings left out):\n%s", live.Stderr.Without("dead-lettered message", 16<<10))
		}
	})
	took := crashkit.WaitAllTasks(t, live, crashPartitions, task.DefaultSessionTimeout+5*time.Second)
	t.Logf("after %d kills, the last run (%d) ran every task %s after it started", len(all)-1, live.Run, took.Round(time.Millisecond))

	prod.Wait(t, time.Minute)
	testkit.Produce(t, addrs, crashInput, after)
	adm := kadm.NewClient(testkit.Client(t, addrs))
	produced := time.Now()
	testkit.WaitCaughtUp(t, adm, crashGroup, crashInput, crashPartitions, task.DefaultSessionTimeout+10*time.Second, func() {
		if live.Exited() {
			t.Fatalf("the last run exited on its own: %v", live.Err())
		}
	})
	t.Logf("the input produced after the loop was processed and checkpointed %s after it was produced", time.Since(produced).Round(time.Millisecond))
	live.Signal(t, syscall.SIGTERM)
	live.Wait(t, 45*time.Second)
	if live.Err() != nil {
		t.Fatalf("router exited with %v after SIGTERM, want exit code 0", live.Err())
	}
	// A crash loop restarts too fast to record what each restart could
	// reprocess: duplicates are not bounded here, losses are.
	crashVerify(t, addrs, adm, recs, ref, nil)
}
