// Package crashkit checks what a job killed and restarted by a crash test
// did with its checkpoints: that every restarted task resumed from exactly
// the checkpoint its job had written. The process handling itself is in
// package testkit.
package crashkit

import (
	"context"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Checkpoints loads the checkpoints of job's tasks task-0 .. task-(tasks-1)
// that exist, with a manager of the test's own.
func Checkpoints(t testing.TB, addrs []string, job string, tasks int) map[string]checkpoint.Checkpoint {
	t.Helper()
	mgr, err := checkpoint.NewKafka(context.Background(), stream.KafkaConfig{Brokers: addrs, ClientID: "crash-test"}, job, checkpoint.KafkaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	out := map[string]checkpoint.Checkpoint{}
	for p := range tasks {
		name := "task-" + strconv.Itoa(p)
		cp, ok, err := mgr.Load(context.Background(), name)
		if err != nil {
			t.Fatalf("load checkpoint of %s: %v", name, err)
		}
		if ok {
			out[name] = cp
		}
	}
	return out
}

// History reads every record of job's checkpoint topic (the embedded broker
// compacts only when told to).
func History(t testing.TB, addrs []string, job string) []checkpoint.Checkpoint {
	t.Helper()
	var out []checkpoint.Checkpoint
	for _, r := range testkit.ReadAll(t, addrs, 30*time.Second, job+"-checkpoints") {
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

// CheckResumed waits until run c has started all tasks of job, then
// checks that it logged "resuming from checkpoint" for exactly the tasks
// that had a checkpoint in before (loaded before c started), with the ids
// of those checkpoints.
//
// One race is allowed for: a checkpoint the killed run had sent just
// before SIGKILL can land after the test's load. Then the new run resumes
// from a checkpoint one id newer, which must exist in the checkpoint topic,
// written before the new run was spawned; before is updated to it for the
// test's later checks.
func CheckResumed(t testing.TB, addrs []string, job string, tasks int, c *testkit.Child, before map[string]checkpoint.Checkpoint) {
	t.Helper()
	started := regexp.MustCompile(`msg="task started" job=` + regexp.QuoteMeta(job) + ` task=`)
	testkit.Eventually(t, time.Minute, func() bool {
		return len(started.FindAllStringIndex(c.Stderr.String(), -1)) >= tasks
	}, "run %d did not start its %d tasks", c.Run, tasks)
	line := regexp.MustCompile(`msg="resuming from checkpoint" job=` + regexp.QuoteMeta(job) + ` task=(task-\d+) id=(\d+)`)
	got := map[string]uint64{}
	for _, m := range line.FindAllStringSubmatch(c.Stderr.String(), -1) {
		id, _ := strconv.ParseUint(m[2], 10, 64)
		if _, dup := got[m[1]]; dup {
			t.Errorf("run %d: %s resumed twice", c.Run, m[1])
		}
		got[m[1]] = id
	}
	var history []checkpoint.Checkpoint // read only when needed
	for p := range tasks {
		name := "task-" + strconv.Itoa(p)
		want, had := before[name]
		id, resumed := got[name]
		switch {
		case !had && !resumed:
		case had && resumed && id == want.ID:
		case resumed && id == want.ID+1: // want.ID is 0 when !had
			if history == nil {
				history = History(t, addrs, job)
			}
			i := slices.IndexFunc(history, func(cp checkpoint.Checkpoint) bool {
				return cp.Task == name && cp.ID == id && cp.WrittenAt.Before(c.Spawn)
			})
			if i < 0 {
				t.Errorf("run %d: %s resumed from checkpoint %d; %d was the last before the restart", c.Run, name, id, want.ID)
				continue
			}
			t.Logf("run %d: %s resumed from checkpoint %d, written by the killed run just before it died", c.Run, name, id)
			before[name] = history[i]
		case had && !resumed:
			t.Errorf("run %d: %s did not log resuming from checkpoint %d", c.Run, name, want.ID)
		case had:
			t.Errorf("run %d: %s resumed from checkpoint %d, want %d", c.Run, name, id, want.ID)
		default:
			t.Errorf("run %d: %s resumed from checkpoint %d, but it had none", c.Run, name, id)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// LoopKills and the bounds of LoopGap are the crash loop a supervisor
// (systemd, Kubernetes) makes of a job that keeps dying: ten SIGKILLs, each
// 0.3 to 1.5 s after the process started, each followed by an immediate
// restart.
const (
	LoopKills  = 10
	loopMinGap = 300 * time.Millisecond
	loopMaxGap = 1500 * time.Millisecond
)

// KillAfter SIGKILLs c after delay and waits for it to die, failing the
// test if c exits on its own first.
func KillAfter(t testing.TB, c *testkit.Child, delay time.Duration) {
	t.Helper()
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-c.Done():
		t.Fatalf("run %d exited on its own: %v\n%s", c.Run, c.Err(), c.Stderr.Tail(8<<10))
	}
	c.Signal(t, syscall.SIGKILL)
	c.Wait(t, 10*time.Second)
}

// Loop starts bin with args, then kills the running process kills times
// with SIGKILL, 0.3 to 1.5 s (rng) after it started, restarting it at once
// each time. It returns the process left running; the children's run
// numbers start at first.
func Loop(t testing.TB, bin string, args []string, kills int, rng *rand.Rand, first int) (live *testkit.Child, all []*testkit.Child) {
	t.Helper()
	c := testkit.Start(t, bin, args, first)
	all = append(all, c)
	for i := range kills {
		KillAfter(t, c, loopMinGap+time.Duration(rng.Int64N(int64(loopMaxGap-loopMinGap))))
		c = testkit.Start(t, bin, args, first+i+1)
		all = append(all, c)
	}
	return c, all
}

// CrashLoop is the crash-loop test of an example: half the input is
// produced while the job is killed LoopKills times and restarted at once
// each time, the other half after. The process left running must run all
// Tasks within the session timeout + 5 s of its start, and checkpoint the
// whole input within the session timeout + 10 s of the second half's
// production. It returns that process, still running; the caller stops it
// and checks the outputs.
type CrashLoop struct {
	Bin   string
	Args  []string
	Addrs []string
	Group string // the job's name
	Input string
	Tasks int
	Recs  []*kgo.Record
	Seed  uint64
	// SessionTimeout is the job's; zero means the default.
	SessionTimeout time.Duration
}

// Run runs the crash loop; see CrashLoop.
func (cl CrashLoop) Run(t testing.TB) *testkit.Child {
	t.Helper()
	st := cl.SessionTimeout
	if st == 0 {
		st = 10 * time.Second // task.DefaultSessionTimeout
	}
	during, after := cl.Recs[:len(cl.Recs)/2], cl.Recs[len(cl.Recs)/2:]
	prod := testkit.ProduceInBackground(t, cl.Addrs, cl.Input, during, 500, 50*time.Millisecond)
	live, all := Loop(t, cl.Bin, cl.Args, LoopKills, rand.New(rand.NewPCG(cl.Seed, 0x100b)), 0)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the last run's stderr:\n%s", live.Stderr.Tail(16<<10))
		}
	})
	took := WaitAllTasks(t, live, cl.Tasks, st+5*time.Second)
	t.Logf("after %d kills, the last run (%d) ran every task %s after it started", len(all)-1, live.Run, took.Round(time.Millisecond))
	prod.Wait(t, time.Minute)
	testkit.Produce(t, cl.Addrs, cl.Input, after)
	adm := kadm.NewClient(testkit.Client(t, cl.Addrs))
	produced := time.Now()
	testkit.WaitCaughtUp(t, adm, cl.Group, cl.Input, int32(cl.Tasks), st+10*time.Second, func() {
		if live.Exited() {
			t.Fatalf("the last run exited on its own: %v", live.Err())
		}
	})
	t.Logf("the input produced after the loop was processed and checkpointed %s after it was produced", time.Since(produced).Round(time.Millisecond))
	return live
}

// WaitAllTasks waits until c says it runs all tasks tasks of its job, and
// returns how long after c's start that was. It fails the test after
// timeout, or if c exits.
func WaitAllTasks(t testing.TB, c *testkit.Child, tasks int, timeout time.Duration) time.Duration {
	t.Helper()
	want := "runs tasks [" + taskList(tasks) + "]"
	testkit.Eventually(t, timeout, func() bool {
		if c.Exited() {
			t.Fatalf("run %d exited on its own: %v\n%s", c.Run, c.Err(), c.Stderr.Tail(8<<10))
		}
		return strings.Contains(c.Stdout.String(), want)
	}, "run %d does not run every task %v after its start:\n%s", c.Run, timeout, testkit.Lazy(func() string { return c.Stdout.Tail(2 << 10) }))
	return time.Since(c.Spawn)
}

func taskList(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(i))
	}
	return b.String()
}
