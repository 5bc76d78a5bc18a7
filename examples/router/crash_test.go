package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/crashkit"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The crash test's parameters. The input is produced in chunks at a bounded
// pace so that it is still flowing while the router is killed.
const (
	crashInput      = "events"
	crashPartitions = 8
	crashEvents     = 200_000
	crashChunk      = 1000
	crashChunkEvery = 60 * time.Millisecond // ~16k events/s: production spans the first kills
	crashMinKills   = 5
	crashMaxKills   = 12
	crashGroup      = "router"
)

// TestCrashRouterSIGKILL runs the router as a child process with the
// README's flags (dynamic membership), SIGKILLs it at random points while
// 200k events flow, and restarts it each time, while a fault soak fails 1%
// of the requests it depends on with retriable errors and drops a few
// connections. It then checks against the reference (refRoute) that no
// event was lost (duplicates are allowed, counted, and bounded by what a
// restart could reprocess), that each restart resumed from exactly the
// checkpoints that existed, and that no restart re-emitted an input its
// checkpoint had covered. After each restart the job must make progress
// within the session timeout + 5 s.
//
// Set GRETE_CRASH_SEED to replay a run's kill points.
func TestCrashRouterSIGKILL(t *testing.T) {
	crashRouter(t, crashEvents, nil, true)
}

// TestCrashRouterSIGKILLWithInstance is the crash test with a fixed
// -instance (static membership: a restart takes its tasks back at once).
func TestCrashRouterSIGKILLWithInstance(t *testing.T) {
	crashRouter(t, crashEvents/4, []string{"-instance", "crash"}, false)
}

func crashRouter(t *testing.T, events int, extraArgs []string, soak bool) {
	seed := testkit.CrashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0xc4a5))

	bin := testkit.Build(t, ".")
	b := testkit.Broker(t)
	addrs := b.Addrs()
	brokers := strings.Join(addrs, ",")
	testkit.CreateTopic(t, addrs, crashInput, crashPartitions, nil)
	if soak {
		faults := testkit.StartSoak(t, b.Cluster, seed, 0.01, 0.0005)
		t.Cleanup(func() { t.Logf("fault soak: %d requests faulted (%v)", faults.Total(), faults) })
	}

	// The input, and where the independent reference says every event
	// must end up. The reference is only needed at the end: it is computed
	// while the router runs.
	recs := testEvents(rand.New(rand.NewPCG(seed, 1)), events, 2000, 0.005)
	var ref crashRef
	var refErr error
	refDone := make(chan struct{})
	go func() {
		defer close(refDone)
		ref, refErr = crashReference(recs)
	}()
	t.Cleanup(func() { <-refDone })

	prod := testkit.ProduceInBackground(t, addrs, crashInput, recs, crashChunk, crashChunkEvery)
	producing := true

	adm := kadm.NewClient(testkit.Client(t, addrs))
	args := append([]string{"-brokers", brokers, "-input", crashInput, "-generate", "0", "-commit", "200ms", "-quiet", "-duration", "5m"}, extraArgs...)
	var (
		children []*testkit.Child
		restarts []crashRestart // restarts[i] precedes children[i+1]
		kills    int
	)
	t.Cleanup(func() {
		if t.Failed() {
			for i, c := range children {
				t.Logf("router run %d stderr (dead-letter warnings left out):\n%s", i, c.Stderr.Without("dead-lettered message", 16<<10))
			}
		}
	})
	start := time.Now()
	for run := 0; ; run++ {
		producing = prod.Producing(t)
		if kills >= crashMaxKills || (kills >= crashMinKills && !producing) {
			break
		}
		if run > 0 {
			restarts = append(restarts, crashPrepareRestart(t, addrs, adm))
		}
		before, _ := testkit.CommittedSum(adm, crashGroup, crashInput)
		c := testkit.Start(t, bin, args, run)
		children = append(children, c)
		c.WaitFor(t, "job started", 60*time.Second)
		if run > 0 {
			crashkit.CheckResumed(t, addrs, crashGroup, crashPartitions, c, restarts[run-1].checkpoints)
		}
		// Some progress: this run has checkpointed (and mirrored) beyond
		// where the last one stopped, unless there is nothing left to do.
		testkit.Eventually(t, task.DefaultSessionTimeout+5*time.Second, func() bool {
			if c.Exited() {
				t.Fatalf("router run %d exited on its own: %v\n%s", run, c.Err(), c.Stderr.Tail(8<<10))
			}
			producing = prod.Producing(t)
			sum, err := testkit.CommittedSum(adm, crashGroup, crashInput)
			if err != nil {
				return false
			}
			return sum > before || (!producing && sum == int64(events))
		}, "router run %d made no progress within the session timeout + 5 s of its start", run)
		// A random kill point, a short while after progress.
		delay := time.Duration(rng.IntN(700)) * time.Millisecond
		crashkit.KillAfter(t, c, delay)
		kills++
		t.Logf("run %d: killed %v after progress (%s since start)", run, delay, time.Since(start).Round(time.Millisecond))
	}
	if kills < crashMinKills {
		t.Fatalf("only %d kills", kills)
	}
	// The producer has finished; one more run catches up and stops
	// gracefully.
	prod.Wait(t, 60*time.Second)
	restarts = append(restarts, crashPrepareRestart(t, addrs, adm))
	final := testkit.Start(t, bin, args, len(children))
	children = append(children, final)
	final.WaitFor(t, "job started", 60*time.Second)
	crashkit.CheckResumed(t, addrs, crashGroup, crashPartitions, final, restarts[len(restarts)-1].checkpoints)
	testkit.WaitCaughtUp(t, adm, crashGroup, crashInput, crashPartitions, 90*time.Second, func() {
		if final.Exited() {
			t.Fatalf("final router run exited on its own: %v", final.Err())
		}
	})
	final.Signal(t, syscall.SIGTERM)
	final.Wait(t, 45*time.Second)
	if final.Err() != nil {
		t.Fatalf("router exited with %v after SIGTERM, want exit code 0", final.Err())
	}
	t.Logf("%d kills; caught up and stopped cleanly %s after start", kills, time.Since(start).Round(time.Millisecond))

	// The final checkpoints cover the whole input.
	last := crashkit.Checkpoints(t, addrs, crashGroup, crashPartitions)
	ends := testkit.EndOffsets(t, adm, crashInput)
	for p := range int32(crashPartitions) {
		name := "task-" + strconv.Itoa(int(p))
		cp, ok := last[name]
		if !ok {
			t.Fatalf("%s has no final checkpoint", name)
		}
		if got := cp.Inputs[stream.Partition{Topic: crashInput, Partition: p}]; got != ends[p] {
			t.Errorf("final checkpoint of %s is at %d, end of input %d", name, got, ends[p])
		}
	}

	<-refDone
	if refErr != nil {
		t.Fatal(refErr)
	}
	t.Logf("%d events: %d routed to %d topics, %d dead-lettered, %d dropped by the rules",
		len(recs), ref.routed, len(ref.topics)-1, ref.dead, ref.dropped)
	crashVerify(t, addrs, adm, recs, ref, restarts)
}

// crashRef is what the reference says about the input.
type crashRef struct {
	ids    []string       // ids[i] is the id of recs[i]
	index  map[string]int // the index in recs of every value
	want   [][]string     // want[i]: the topics recs[i] must reach (the DLQ for bad ones)
	topics map[string]bool
	// Counts of events dead-lettered, routed to at least one topic, and
	// dropped by the rules.
	dead, routed, dropped int
}

const crashDLQ = crashGroup + "-dlq"

func crashReference(recs []*kgo.Record) (crashRef, error) {
	ref := crashRef{
		ids:    make([]string, len(recs)),
		index:  make(map[string]int, len(recs)),
		want:   make([][]string, len(recs)),
		topics: map[string]bool{crashDLQ: true},
	}
	for i, r := range recs {
		id, err := eventID(r.Value)
		if err != nil {
			return ref, err
		}
		if _, dup := ref.index[string(r.Value)]; dup {
			return ref, fmt.Errorf("event %s is not unique", id)
		}
		ref.ids[i], ref.index[string(r.Value)] = id, i
		topics, dead := refRoute(crashInput, r.Value)
		switch {
		case dead:
			ref.dead++
			ref.want[i] = []string{crashDLQ}
		case len(topics) == 0:
			ref.dropped++
		default:
			ref.routed++
			ref.want[i] = topics
		}
		for _, tp := range topics {
			ref.topics[tp] = true
		}
	}
	if ref.dead == 0 || ref.dropped == 0 {
		return ref, fmt.Errorf("the input exercises too little: %d dead-lettered, %d dropped", ref.dead, ref.dropped)
	}
	return ref, nil
}

// crashRestart is what the test knew before a restart.
type crashRestart struct {
	// checkpoints are the tasks' checkpoints as loaded before the restart;
	// crashkit.CheckResumed corrects them if the killed run's last checkpoint
	// landed after the load (see there).
	checkpoints map[string]checkpoint.Checkpoint
	// outputEnds are the end offsets of every output topic before the
	// restart: what lies at or past them was written after the kill.
	outputEnds map[string]map[int32]int64
	// inputEnds are the input's end offsets after the kill: the killed
	// run cannot have processed anything past them.
	inputEnds map[int32]int64
}

// crashPrepareRestart reads the checkpoints that exist, with a manager of
// its own, and the end offsets of the input and of every other topic.
func crashPrepareRestart(t *testing.T, addrs []string, adm *kadm.Client) crashRestart {
	t.Helper()
	rs := crashRestart{checkpoints: map[string]checkpoint.Checkpoint{}, outputEnds: map[string]map[int32]int64{}}
	rs.inputEnds = testkit.EndOffsets(t, adm, crashInput)
	rs.checkpoints = crashkit.Checkpoints(t, addrs, crashGroup, crashPartitions)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx) // every topic: a topic made later starts at 0
	if err != nil {
		t.Fatalf("end offsets: %v", err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		if rs.outputEnds[o.Topic] == nil {
			rs.outputEnds[o.Topic] = map[int32]int64{}
		}
		rs.outputEnds[o.Topic][o.Partition] = o.Offset
	})
	return rs
}

// crashVerify reads every topic the router wrote and checks it against the
// reference and the restarts. Without restarts, duplicates are not bounded.
func crashVerify(t *testing.T, addrs []string, adm *kadm.Client, recs []*kgo.Record, ref crashRef, restarts []crashRestart) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all, err := adm.ListEndOffsets(ctx)
	if err != nil {
		t.Fatalf("list topics: %v", err)
	}
	var topics []string
	for tp := range all {
		if tp == crashInput || tp == crashGroup+"-checkpoints" || strings.HasPrefix(tp, "__") {
			continue
		}
		topics = append(topics, tp)
		if !ref.topics[tp] {
			t.Errorf("the router wrote to %s, which the reference never sends to", tp)
		}
	}
	slices.Sort(topics)
	for tp := range ref.topics {
		if !slices.Contains(topics, tp) {
			t.Errorf("topic %s is missing", tp)
		}
	}

	copies := make([]map[string]int, len(recs)) // copies[i][topic]
	var unexpected, reemitted []string
	checked := 0 // outputs written after a restart, checked against its checkpoint
	outs := testkit.ReadAll(t, addrs, 2*time.Minute, topics...)
	for _, r := range outs {
		i, ok := ref.index[string(r.Value)]
		if !ok {
			unexpected = append(unexpected, fmt.Sprintf("%q in %s: not an input value", r.Value, r.Topic))
			continue
		}
		if !slices.Contains(ref.want[i], r.Topic) {
			unexpected = append(unexpected, fmt.Sprintf("%s in %s", ref.ids[i], r.Topic))
			continue
		}
		if copies[i] == nil {
			copies[i] = map[string]int{}
		}
		copies[i][r.Topic]++
		// The last restart before this record was written: its checkpoint
		// must not cover the record's input.
		in := recs[i]
		for j := len(restarts) - 1; j >= 0; j-- {
			rs := restarts[j]
			if r.Offset < rs.outputEnds[r.Topic][r.Partition] {
				continue
			}
			checked++
			cp := rs.checkpoints["task-"+strconv.Itoa(int(in.Partition))]
			if next, ok := cp.Inputs[stream.Partition{Topic: crashInput, Partition: in.Partition}]; ok && in.Offset < next {
				reemitted = append(reemitted, fmt.Sprintf("%s (input %d@%d) in %s/%d@%d after restart %d from checkpoint %d at %d",
					ref.ids[i], in.Partition, in.Offset, r.Topic, r.Partition, r.Offset, j+1, cp.ID, next))
			}
			break
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("%d outputs the reference does not send there, e.g. %v", len(unexpected), unexpected[:min(10, len(unexpected))])
	}
	if len(reemitted) > 0 {
		t.Errorf("%d outputs re-emitted for inputs the restart's checkpoint covered, e.g. %v", len(reemitted), reemitted[:min(10, len(reemitted))])
	}

	// No loss. Duplicates only for inputs a restart could reprocess: those
	// from its checkpoint up to the end of the input when the run before it
	// was killed.
	var lost, excess []string
	duplicates, reprocessable := 0, 0
	for _, rs := range restarts { // every restart followed a kill
		for p := range int32(crashPartitions) {
			cp := rs.checkpoints["task-"+strconv.Itoa(int(p))]
			reprocessable += int(rs.inputEnds[p] - cp.Inputs[stream.Partition{Topic: crashInput, Partition: p}])
		}
	}
	for i, in := range recs {
		bound := 1
		if restarts == nil {
			bound = math.MaxInt
		}
		for _, rs := range restarts {
			cp := rs.checkpoints["task-"+strconv.Itoa(int(in.Partition))]
			if cp.Inputs[stream.Partition{Topic: crashInput, Partition: in.Partition}] <= in.Offset && in.Offset < rs.inputEnds[in.Partition] {
				bound++
			}
		}
		for _, tp := range ref.want[i] {
			n := copies[i][tp]
			switch {
			case n == 0:
				lost = append(lost, fmt.Sprintf("%s (input %d@%d) in %s", ref.ids[i], in.Partition, in.Offset, tp))
			case n > bound:
				excess = append(excess, fmt.Sprintf("%s in %s %d times, at most %d possible", ref.ids[i], tp, n, bound))
			}
			duplicates += max(0, n-1)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d outputs lost, e.g. %v", len(lost), lost[:min(10, len(lost))])
	}
	if len(excess) > 0 {
		t.Errorf("%d outputs duplicated more than the restarts explain, e.g. %v", len(excess), excess[:min(10, len(excess))])
	}
	t.Logf("%d output records in %d topics; %d duplicates after %d restarts, which could reprocess at most %d input events; %d outputs written after a restart checked against its checkpoint",
		len(outs), len(topics), duplicates, len(restarts), reprocessable, checked)
}
