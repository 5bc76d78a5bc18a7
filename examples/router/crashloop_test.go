package main

import (
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/crashkit"
	"github.com/grete-go/grete/internal/testkit"
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
	bin := testkit.Build(t, ".")
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, crashInput, crashPartitions, nil)
	recs := testEvents(rand.New(rand.NewPCG(seed, 2)), 40_000, 2000, 0.005)
	ref, err := crashReference(recs)
	if err != nil {
		t.Fatal(err)
	}
	live := crashkit.CrashLoop{
		Bin: bin, Addrs: addrs, Group: crashGroup, Input: crashInput, Tasks: crashPartitions, Recs: recs, Seed: seed,
		Args: []string{"-brokers", strings.Join(addrs, ","), "-input", crashInput, "-generate", "0", "-quiet", "-duration", "5m"},
	}.Run(t)
	live.Signal(t, syscall.SIGTERM)
	live.Wait(t, 45*time.Second)
	if live.Err() != nil {
		t.Fatalf("router exited with %v after SIGTERM, want exit code 0", live.Err())
	}
	// A crash loop restarts too fast to record what each restart could
	// reprocess: duplicates are not bounded here, losses are.
	crashVerify(t, addrs, kadm.NewClient(testkit.Client(t, addrs)), recs, ref, nil)
}
