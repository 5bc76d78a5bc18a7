package testkit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// This file is the kit of the crash tests: build an example, run it as a
// child process, kill it, and read what the job committed.

// Build builds the package in dir (e.g. "." for the test's own example)
// into a binary in a temporary directory, without -race so that it starts
// and runs fast, and returns its path.
func Build(t testing.TB, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(abs))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, ".")
	cmd.Dir = abs
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", dir, err, msg)
	}
	return out
}

// Child is one run of a binary. Its output is kept in buffers, and it is
// killed at the test's cleanup if still running.
type Child struct {
	Run    int // the run's number, for messages
	Cmd    *exec.Cmd
	Spawn  time.Time
	Stderr *Buffer
	Stdout *Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, set before done is closed
}

// Start starts bin with args as run number run.
func Start(t testing.TB, bin string, args []string, run int) *Child {
	t.Helper()
	c := &Child{Run: run, Stderr: &Buffer{}, Stdout: &Buffer{}, done: make(chan struct{})}
	c.Cmd = exec.Command(bin, args...)
	c.Cmd.Stdout, c.Cmd.Stderr = c.Stdout, c.Stderr
	c.Spawn = time.Now()
	if err := c.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		c.err = c.Cmd.Wait()
		close(c.done)
	}()
	// Never leave a child behind, whatever happens to the test.
	t.Cleanup(func() {
		if !c.Exited() {
			_ = c.Cmd.Process.Kill()
			select {
			case <-c.done:
			case <-time.After(10 * time.Second):
				t.Errorf("run %d (pid %d) did not die", run, c.Cmd.Process.Pid)
			}
		}
	})
	return c
}

// Exited reports whether the process has exited.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err is the process's exit error; it waits for the exit.
func (c *Child) Err() error {
	<-c.done
	return c.err
}

// Signal sends sig to the process, unless it has exited.
func (c *Child) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := c.Cmd.Process.Signal(sig); err != nil && !c.Exited() {
		t.Fatalf("signal run %d: %v", c.Run, err)
	}
}

// Wait waits for the process to exit, failing the test after timeout.
func (c *Child) Wait(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		t.Fatalf("run %d did not exit within %v", c.Run, timeout)
	}
}

// WaitFor waits until the child's stderr contains s, failing if the child
// exits first or timeout passes.
func (c *Child) WaitFor(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	c.WaitForMatch(t, regexp.MustCompile(regexp.QuoteMeta(s)), timeout)
}

// WaitForMatch waits until the child's stderr matches re.
func (c *Child) WaitForMatch(t testing.TB, re *regexp.Regexp, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, func() bool {
		if re.MatchString(c.Stderr.String()) {
			return true
		}
		if c.Exited() {
			t.Fatalf("run %d exited (%v) before logging %q:\n%s", c.Run, c.err, re, c.Stderr.Tail(8<<10))
		}
		return false
	}, "run %d never logged %q", c.Run, re)
}

// Buffer collects a child's output; safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Len is the number of bytes written so far.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// From returns what was written from byte off on.
func (b *Buffer) From(off int) string {
	s := b.String()
	if off > len(s) {
		return ""
	}
	return s[off:]
}

// Contains reports whether s was written.
func (b *Buffer) Contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Contains(b.buf.Bytes(), []byte(s))
}

// Tail returns at most the last n bytes.
func (b *Buffer) Tail(n int) string {
	s := b.String()
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// Without returns the lines that do not contain s, at most the last n
// bytes of them, and how many lines it left out.
func (b *Buffer) Without(s string, n int) string {
	var out strings.Builder
	left := 0
	for line := range strings.Lines(b.String()) {
		if strings.Contains(line, s) {
			left++
			continue
		}
		out.WriteString(line)
	}
	text := out.String()
	if len(text) > n {
		text = "..." + text[len(text)-n:]
	}
	return fmt.Sprintf("%s(%d lines with %q left out)", text, left, s)
}

// Lazy formats as the string f returns when printed, for failure messages
// about state that changes while a condition is polled.
type Lazy func() string

func (f Lazy) String() string { return f() }

// ProducePaced writes recs to topic in chunks of chunk records, one chunk
// every interval, keyed with the sticky key partitioner (as Produce), until
// done or ctx ends.
func ProducePaced(ctx context.Context, addrs []string, topic string, recs []*kgo.Record, chunk int, every time.Duration) error {
	cl, err := kgo.NewClient(clientOpts(addrs,
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(2*time.Millisecond),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := 0; i < len(recs); i += chunk {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := cl.ProduceSync(pctx, recs[i:min(i+chunk, len(recs))]...).FirstErr()
		cancel()
		if err != nil {
			return fmt.Errorf("chunk at %d: %w", i, err)
		}
	}
	return nil
}

// GroupOffsets returns group's committed offsets and the end offsets of
// topic, by partition.
func GroupOffsets(adm *kadm.Client, group, topic string) (committed, end map[int32]int64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("offsets of group %s: %w", group, err)
	}
	if end, err = endOffsets(ctx, adm, topic); err != nil {
		return nil, nil, err
	}
	committed = map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			committed[o.Partition] = o.At
		}
	})
	return committed, end, nil
}

// EndOffsets returns the high watermark of every partition of topic.
func EndOffsets(t testing.TB, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	end, err := endOffsets(ctx, adm, topic)
	if err != nil {
		t.Fatal(err)
	}
	return end
}

func endOffsets(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	end := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset })
	return end, nil
}

// CommittedSum is the sum of group's committed offsets of topic: how many of
// its records the job has checkpointed.
func CommittedSum(adm *kadm.Client, group, topic string) (int64, error) {
	committed, _, err := GroupOffsets(adm, group, topic)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, o := range committed {
		sum += o
	}
	return sum, nil
}

// CaughtUp reports whether group has committed every record of topic.
func CaughtUp(adm *kadm.Client, group, topic string) (bool, error) {
	committed, end, err := GroupOffsets(adm, group, topic)
	if err != nil {
		return false, err
	}
	for p, e := range end {
		if committed[p] < e {
			return false, nil
		}
	}
	return len(end) > 0, nil
}

// WaitCaughtUp waits up to timeout until group's committed offsets reach
// the end of every one of topic's partitions partitions, calling check
// (which may fail the test, e.g. when a child exited) on every look.
func WaitCaughtUp(t testing.TB, adm *kadm.Client, group, topic string, partitions int32, timeout time.Duration, check func()) {
	t.Helper()
	var lag string
	Eventually(t, timeout, func() bool {
		check()
		committed, end, err := GroupOffsets(adm, group, topic)
		if err != nil {
			lag = err.Error()
			return false
		}
		lag = fmt.Sprintf("committed %v, end %v", committed, end)
		for p := range partitions {
			if committed[p] != end[p] {
				return false
			}
		}
		return true
	}, "group %s did not catch up with %s: %v", group, topic, Lazy(func() string { return lag }))
}

// CrashSeed starts a crash test: it skips where POSIX signals are missing
// or under -short, and returns the run's random seed, taken from
// GRETE_CRASH_SEED when set so that a failed run can be replayed, and
// logged.
func CrashSeed(t testing.TB) uint64 {
	t.Helper()
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
	return seed
}

// Background produces records with ProducePaced on its own goroutine,
// stopped at the test's cleanup.
type Background struct {
	done      chan struct{}
	err       error // set before done is closed
	producing bool
}

// ProduceInBackground starts producing recs to topic, chunk records every
// interval.
func ProduceInBackground(t testing.TB, addrs []string, topic string, recs []*kgo.Record, chunk int, every time.Duration) *Background {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Background{done: make(chan struct{}), producing: true}
	go func() {
		defer close(p.done)
		p.err = ProducePaced(ctx, addrs, topic, recs, chunk, every)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Error("producer did not stop")
		}
	})
	return p
}

// Producing reports whether the producer is still at work, failing the
// test if it ended with an error. Call it from the test's goroutine.
func (p *Background) Producing(t testing.TB) bool {
	t.Helper()
	if !p.producing {
		return false
	}
	select {
	case <-p.done:
		p.producing = false
		if p.err != nil {
			t.Fatalf("producer: %v", p.err)
		}
	default:
	}
	return p.producing
}

// Wait waits until the producer has written everything, failing the test
// on its error or after timeout.
func (p *Background) Wait(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
		p.producing = false
		if p.err != nil {
			t.Fatalf("producer: %v", p.err)
		}
	case <-time.After(timeout):
		t.Fatal("producer did not finish")
	}
}
