package runtime

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/ddtest"
	"github.com/grete-go/grete/internal/state"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
)

// The commit and restore protocols, run without a broker: a task loop on
// the in-memory plugs, with faults injected at every step of a commit, a
// crash (the process dies: buffered writes and unacknowledged records are
// lost, what reached "Kafka" stays) and a restart (the store reopened from
// its directory, or lost with its machine, and restored from the
// changelog). Each file in testdata/ is a script of commands and their
// expected output (see internal/ddtest):
//
//	start [policy=fail|skip]   restart the task: restore, resume
//	process W...               one message per word; the task counts words
//	                           in store "counts" and sends each new count;
//	                           the word "bad" fails
//	fail POINT [after=N]       the next commit fails at POINT: output-ack,
//	                           flush (after N changelog records reached
//	                           Kafka), changelog-ack, checkpoint (not
//	                           written) or checkpoint-ack (written, its
//	                           acknowledgement lost)
//	commit                     run a commit
//	crash                      the process dies
//	lose-disk                  the machine's store directory is gone
//	store | changelog | checkpoint | outputs
//	check                      the store against counts computed from the
//	                           input the loop has consumed
//
// go test ./internal/runtime -run TestProtocol -rewrite rewrites the
// expected output; review the diff before committing it.

var rewrite = flag.Bool("rewrite", false, "rewrite testdata expectations")

func TestProtocol(t *testing.T) {
	Register(API{
		Adapt: func(any) (Task, error) { return Task{}, errors.New("unused") },
		ProcessError: func(task, topic string, p int32, off int64, err error) error {
			return fmt.Errorf("%s/%d@%d: %w", topic, p, off, err)
		},
		PanicError:  func(v any, _ []byte) error { return fmt.Errorf("panic: %v", v) },
		Stopping:    errors.New("stopping"),
		Unreachable: func(err error) error { return err },
	})
	files, err := filepath.Glob("testdata/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata files (%v)", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			w := &world{t: t, dir: filepath.Join(t.TempDir(), "counts"), changelog: NewMemChangelog("counts-changelog/0"),
				outputs: &MemOutputs{}, cps: checkpoint.NewMemory()}
			defer w.crash()
			ddtest.Run(t, f, *rewrite, w.run)
		})
	}
}

// world is what outlives a process: the store's directory, and what
// reached Kafka (the changelog, the acknowledged outputs, the checkpoints,
// the input).
type world struct {
	t         *testing.T
	dir       string
	changelog *MemChangelog
	outputs   *MemOutputs
	cps       *checkpoint.Memory
	input     []string

	// The running process.
	loop  *Loop
	local *state.Local
	fault fault
}

// fault is the failure armed for the next commit.
type fault struct {
	point string
	after int // flush: records that reach Kafka first
	sent  int
}

func (f *fault) at(point string) bool {
	if f.point != point {
		return false
	}
	if point == "flush" && f.sent < f.after {
		f.sent++
		return false
	}
	*f = fault{}
	return true
}

var errInjected = errors.New("injected fault")

// The plugs of the running process, failing where the fault says.
type (
	faultyOut  struct{ w *world }
	faultySink struct{ w *world }
	faultyCPs  struct{ w *world }
)

func (o faultyOut) Send(ctx context.Context, m stream.Outgoing) error {
	return o.w.outputs.Send(ctx, m)
}
func (o faultyOut) Sent() int64 { return o.w.outputs.Sent() }
func (o faultyOut) Err() error  { return nil }
func (o faultyOut) Wait(context.Context) error {
	if o.w.fault.at("output-ack") {
		return errInjected
	}
	return nil
}

func (s faultySink) Send(ctx context.Context, k, v []byte) error {
	if s.w.fault.at("flush") {
		return errInjected
	}
	return s.w.changelog.Send(ctx, k, v)
}
func (s faultySink) Err() error { return nil }
func (s faultySink) Wait(ctx context.Context) (int64, error) {
	if s.w.fault.at("changelog-ack") {
		return 0, errInjected
	}
	return s.w.changelog.Wait(ctx)
}

func (c faultyCPs) Write(ctx context.Context, cp checkpoint.Checkpoint) error {
	if c.w.fault.at("checkpoint") {
		return errInjected
	}
	if err := c.w.cps.Write(ctx, cp); err != nil {
		return err
	}
	if c.w.fault.at("checkpoint-ack") {
		return errInjected
	}
	return nil
}

// counter counts words in store "counts" and sends every new count.
func counter(l *Loop) Task {
	return Task{Process: func(_ context.Context, m stream.Message, out Collector, _ Coordinator) error {
		s, _ := l.Store("counts")
		n := 0
		v, ok, err := s.Get(m.Value)
		if err != nil {
			return err
		}
		if ok {
			n, _ = strconv.Atoi(string(v))
		}
		if err := s.Put(m.Value, []byte(strconv.Itoa(n+1))); err != nil {
			return err
		}
		if err := out.Send(stream.Outgoing{Topic: "counts", Key: m.Value, Value: []byte(strconv.Itoa(n + 1))}); err != nil {
			return err
		}
		if string(m.Value) == "bad" {
			return errors.New("bad word")
		}
		return nil
	}}
}

var input = stream.Partition{Topic: "words"}

func (w *world) run(c *ddtest.Case) string {
	ctx := context.Background()
	switch c.Cmd {
	case "start":
		return w.start(ctx, c.Opts["policy"])
	case "process":
		var out []string
		for _, word := range c.Args {
			off := int64(len(w.input))
			w.input = append(w.input, word)
			if err := w.loop.Process(ctx, stream.Message{Topic: input.Topic, Offset: off, Value: []byte(word)}); err != nil {
				out = append(out, "error: "+err.Error())
			}
		}
		return strings.Join(out, "\n")
	case "fail":
		w.fault = fault{point: c.Args[0]}
		if a, ok := c.Opts["after"]; ok {
			w.fault.after, _ = strconv.Atoi(a)
		}
		return ""
	case "commit":
		if err := w.loop.Commit(ctx); err != nil {
			return "error: " + err.Error()
		}
		return w.describe(w.loop.Last())
	case "crash":
		w.crash()
		return ""
	case "lose-disk":
		if err := os.RemoveAll(w.dir); err != nil {
			return err.Error()
		}
		return ""
	case "store":
		return dump(w.loop.cfg.Stores[0].view)
	case "changelog":
		var b strings.Builder
		for i, r := range w.changelog.Records() {
			fmt.Fprintf(&b, "%d %s\n", i, record(r))
		}
		return b.String()
	case "checkpoint":
		cp, ok, _ := w.cps.Load(ctx, "task-0")
		if !ok {
			return "none"
		}
		return w.describe(cp)
	case "outputs":
		var b strings.Builder
		for _, m := range w.outputs.Messages() {
			fmt.Fprintf(&b, "%s=%s ", m.Key, m.Value)
		}
		return strings.TrimSpace(b.String())
	case "check":
		return w.check()
	}
	w.t.Fatalf("line %d: unknown command %q", c.Line, c.Cmd)
	return ""
}

// start is a process starting the task: the store reopened from its
// directory (empty if lost), restored to the last checkpoint from the
// changelog (trimming what lies past it), input resumed from it.
func (w *world) start(ctx context.Context, policy string) string {
	if w.loop != nil {
		w.t.Fatal("start: the task is running; crash it first")
	}
	cp, _, _ := w.cps.Load(ctx, "task-0")
	l, err := state.Open(w.dir, store.Spec{Name: "counts"}, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	w.local = l
	target := int64(-1)
	if off, ok := cp.Changelogs["counts"]; ok {
		target = off
	}
	s := &Store{Local: l, Sink: faultySink{w}, Offset: target}
	before := len(w.changelog.Records())
	off, err := state.Restore(ctx, l, w.changelog, s.Sink, state.Meta{CheckpointID: cp.ID, Offset: target}, state.RestoreOptions{})
	if err != nil {
		return "restore error: " + err.Error()
	}
	s.Offset = max(target, off)
	cfg := LoopConfig{
		Job: "job", Name: "task-0", Inputs: []stream.Partition{input}, Offsets: []int64{cp.Inputs[input]},
		Last: cp, Dirty: off > target, Stores: []*Store{s},
		Out: faultyOut{w}, Checkpoints: faultyCPs{w},
	}
	if policy == "skip" {
		cfg.Policy = Skip
	}
	w.loop = NewLoop(cfg, Task{})
	w.loop.task = counter(w.loop)
	if err := w.loop.Init(ctx); err != nil {
		return "init error: " + err.Error()
	}
	w.input = w.input[:cp.Inputs[input]] // Kafka redelivers from the checkpoint
	out := fmt.Sprintf("resumed from checkpoint %d at input offset %d, store at changelog offset %d", cp.ID, cp.Inputs[input], target)
	if n := len(w.changelog.Records()) - before; n > 0 {
		out += fmt.Sprintf("\ntrimmed: %d record(s) rewrite what the crashed run wrote past the checkpoint", n)
	}
	return out
}

// crash drops the process: its store closes without committing.
func (w *world) crash() {
	if w.local != nil {
		_ = w.local.Close()
	}
	w.loop, w.local, w.fault = nil, nil, fault{}
}

func (w *world) describe(cp checkpoint.Checkpoint) string {
	return fmt.Sprintf("checkpoint %d: input %d, changelog %d", cp.ID, cp.Inputs[input], cp.Changelogs["counts"])
}

// check compares the store with the word counts of the input consumed,
// computed here from the input alone (minus the bad words under Skip,
// whose writes are rolled back).
func (w *world) check() string {
	want := map[string]int{}
	for _, word := range w.input[:w.loop.Offsets()[input]] {
		if word != "bad" {
			want[word]++
		}
	}
	got := map[string]int{}
	s := w.loop.cfg.Stores[0].view
	it := s.Range(nil, nil)
	for it.Next() {
		got[string(it.Key())], _ = strconv.Atoi(string(it.Value()))
	}
	_ = it.Close()
	if !maps.Equal(want, got) {
		return fmt.Sprintf("MISMATCH: store %v, input counts %v", got, want)
	}
	return fmt.Sprintf("ok: %d word(s)", len(want))
}

func dump(s store.Store) string {
	var lines []string
	it := s.Range(nil, nil)
	for it.Next() {
		lines = append(lines, fmt.Sprintf("%s=%s", it.Key(), it.Value()))
	}
	_ = it.Close()
	slices.Sort(lines)
	return strings.Join(lines, " ")
}

// record prints a changelog record as the store package documents its
// format: a namespace byte and the key; for an entry ('d'), a header byte
// (0: no TTL) and the value; nil for a tombstone.
func record(r store.Record) string {
	ns, key := r.Key[0], r.Key[1:]
	switch {
	case r.Value == nil:
		return fmt.Sprintf("%c %s <tombstone>", ns, key)
	case ns == 'd' && len(r.Value) > 0 && r.Value[0] == 0:
		return fmt.Sprintf("%c %s=%s", ns, key, r.Value[1:])
	}
	return fmt.Sprintf("%c %s %q", ns, key, r.Value)
}
