package tasktest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/grete-go/grete/task/tasktest"
	"github.com/stretchr/testify/require"
)

// procTask implements only StreamTask. It records what it sees and fails
// or panics on the values it is told to.
type procTask struct {
	seen    []stream.Message
	process func(m stream.Message, out task.Collector, co task.Coordinator) error
}

func (p *procTask) Process(_ context.Context, m stream.Message, out task.Collector, co task.Coordinator) error {
	p.seen = append(p.seen, m)
	if p.process != nil {
		return p.process(m, out, co)
	}
	return nil
}

func (p *procTask) values() []string {
	var vs []string
	for _, m := range p.seen {
		vs = append(vs, string(m.Value))
	}
	return vs
}

// fullTask implements every optional interface.
type fullTask struct {
	procTask
	init   func(tc task.Context) error
	window func(out task.Collector, co task.Coordinator) error
	close  func() error
	inits  int
	wins   int
	closes int
}

func (f *fullTask) Init(_ context.Context, tc task.Context) error {
	f.inits++
	if f.init != nil {
		return f.init(tc)
	}
	return nil
}

func (f *fullTask) Window(_ context.Context, out task.Collector, co task.Coordinator) error {
	f.wins++
	if f.window != nil {
		return f.window(out, co)
	}
	return nil
}

func (f *fullTask) Close(context.Context) error {
	f.closes++
	if f.close != nil {
		return f.close()
	}
	return nil
}

func msgs(values ...string) []stream.Message {
	ms := make([]stream.Message, len(values))
	for i, v := range values {
		ms[i] = stream.Message{Key: []byte("k" + v), Value: []byte(v)}
	}
	return ms
}

var errBad = errors.New("bad value")

// failOn makes Process fail with errBad, or panic, on the value "bad".
func failOn(panics bool) func(stream.Message, task.Collector, task.Coordinator) error {
	return func(m stream.Message, out task.Collector, _ task.Coordinator) error {
		if string(m.Value) == "bad" {
			if panics {
				panic("cannot handle " + string(m.Value))
			}
			return errBad
		}
		return out.Send(stream.Outgoing{Topic: "out", Key: m.Key, Value: m.Value})
	}
}

func TestErrorPolicies(t *testing.T) {
	ctx := context.Background()
	for _, policy := range []task.ErrorPolicy{task.Fail, task.Skip, task.DeadLetter} {
		for _, panics := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/panic=%v", policy, panics), func(t *testing.T) {
				tk := &procTask{process: failOn(panics)}
				d := tasktest.New(tk, tasktest.JobName("pol"), tasktest.Inputs("in"), tasktest.Partition(3), tasktest.OnError(policy))
				err := d.Feed(ctx, msgs("a", "bad", "c")...)
				in := stream.Partition{Topic: "in", Partition: 3}
				st := d.Stats()

				checkCause := func(t *testing.T, cause error) {
					t.Helper()
					if panics {
						var pe *task.PanicError
						require.ErrorAs(t, cause, &pe)
						require.Equal(t, "cannot handle bad", pe.Value)
						require.Contains(t, string(pe.Stack), "failOn", "the stack shows where the panic happened")
					} else {
						require.ErrorIs(t, cause, errBad)
					}
				}

				switch policy {
				case task.Fail:
					var perr *task.ProcessError
					require.ErrorAs(t, err, &perr)
					require.Equal(t, task.ProcessError{Task: "task-3", Topic: "in", Partition: 3, Offset: 1, Err: perr.Err}, *perr)
					checkCause(t, perr.Err)
					require.True(t, d.Stopped())
					require.Equal(t, []string{"a", "bad"}, tk.values(), "nothing is processed after the failure")
					require.Equal(t, map[stream.Partition]int64{in: 1}, d.Offsets(), "the failed message is not consumed")
					require.EqualValues(t, 1, st.Processed)
					require.Zero(t, st.Skipped)
					require.Zero(t, st.DeadLettered)
					cp, ok := d.Checkpoint()
					require.True(t, ok, "a failing task commits its progress")
					require.Equal(t, map[stream.Partition]int64{in: 1}, cp.Inputs)
					require.ErrorIs(t, d.Feed(ctx, msgs("d")...), tasktest.ErrStopped)
					require.Equal(t, []string{"a", "bad"}, tk.values())
				case task.Skip:
					require.NoError(t, err)
					require.False(t, d.Stopped())
					require.Equal(t, []string{"a", "bad", "c"}, tk.values())
					require.Equal(t, map[stream.Partition]int64{in: 3}, d.Offsets())
					require.EqualValues(t, 2, st.Processed)
					require.EqualValues(t, 1, st.Skipped)
					require.Zero(t, st.DeadLettered)
					require.Len(t, d.Outputs(), 2)
				case task.DeadLetter:
					require.NoError(t, err)
					require.False(t, d.Stopped())
					require.Equal(t, map[stream.Partition]int64{in: 3}, d.Offsets())
					require.EqualValues(t, 2, st.Processed)
					require.EqualValues(t, 1, st.DeadLettered)
					require.Zero(t, st.Skipped)
					require.EqualValues(t, 2, st.Sent, "dead letters are not counted as sent by the task")
					out := d.Outputs()
					require.Len(t, out, 3)
					require.Equal(t, []string{"out", "pol-dlq", "out"}, []string{out[0].Topic, out[1].Topic, out[2].Topic}, "dead letters are recorded in order")
					dead := out[1]
					require.Equal(t, "kbad", string(dead.Key))
					require.Equal(t, "bad", string(dead.Value))
					h := headers(dead.Headers)
					require.Equal(t, "in", h[task.HeaderTopic])
					require.Equal(t, "3", h[task.HeaderPartition])
					require.Equal(t, "1", h[task.HeaderOffset])
					require.Equal(t, "task-3", h[task.HeaderTask])
					if panics {
						require.Contains(t, h[task.HeaderError], "panic: cannot handle bad")
					} else {
						require.Equal(t, errBad.Error(), h[task.HeaderError])
					}
				}
			})
		}
	}
}

func headers(hs []stream.Header) map[string]string {
	m := map[string]string{}
	for _, h := range hs {
		m[h.Key] = string(h.Value)
	}
	return m
}

func TestDeadLetterKeepsMessageAndHeaders(t *testing.T) {
	ctx := context.Background()
	ts := time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)
	d := tasktest.New(&procTask{process: failOn(false)},
		tasktest.JobName("j"), tasktest.Inputs("in"), tasktest.OnError(task.DeadLetter), tasktest.DeadLetterTopic("graveyard"))
	require.Equal(t, "graveyard", d.DeadLetterTopic())
	m := stream.Message{
		Topic: "in", Offset: 41, Key: []byte("key"), Value: []byte("bad"), Timestamp: ts,
		Headers: []stream.Header{{Key: "trace", Value: []byte("t1")}, {Key: "trace", Value: []byte("t2")}},
	}
	require.NoError(t, d.Feed(ctx, m))
	want := stream.Outgoing{
		Topic: "graveyard", Key: []byte("key"), Value: []byte("bad"), Timestamp: ts,
		Headers: []stream.Header{
			{Key: "trace", Value: []byte("t1")},
			{Key: "trace", Value: []byte("t2")},
			{Key: task.HeaderError, Value: []byte("bad value")},
			{Key: task.HeaderTopic, Value: []byte("in")},
			{Key: task.HeaderPartition, Value: []byte("0")},
			{Key: task.HeaderOffset, Value: []byte("41")},
			{Key: task.HeaderTask, Value: []byte("task-0")},
		},
	}
	require.Equal(t, []stream.Outgoing{want}, d.OutputsTo("graveyard"))
	require.Empty(t, d.OutputsTo("j-dlq"))
}

// clockTask is windowable and records the driver's clock at each Window.
type clockTask struct {
	procTask
	d     *tasktest.Driver
	times []time.Time
}

func (c *clockTask) Window(context.Context, task.Collector, task.Coordinator) error {
	c.times = append(c.times, c.d.Now())
	return nil
}

func TestWindowTiming(t *testing.T) {
	const w = time.Minute
	tests := []struct {
		name     string
		advances []time.Duration
		want     []time.Duration // Window call times, from the start
	}{
		{"nothing elapsed", []time.Duration{0}, nil},
		{"just short of a period", []time.Duration{w - time.Nanosecond}, nil},
		{"exactly one period", []time.Duration{w}, []time.Duration{w}},
		{"two and a half periods", []time.Duration{5 * w / 2}, []time.Duration{w, 2 * w}},
		{"half periods add up", []time.Duration{w / 2, w / 2, w / 2, w / 2}, []time.Duration{w, 2 * w}},
		{"rest of a period", []time.Duration{5 * w / 2, w / 2}, []time.Duration{w, 2 * w, 3 * w}},
		{"ten periods at once", []time.Duration{10 * w}, []time.Duration{w, 2 * w, 3 * w, 4 * w, 5 * w, 6 * w, 7 * w, 8 * w, 9 * w, 10 * w}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			tk := &clockTask{}
			d := tasktest.New(tk, tasktest.Window(w), tasktest.StartTime(start))
			tk.d = d
			var total time.Duration
			for _, a := range tt.advances {
				require.NoError(t, d.Advance(ctx, a))
				total += a
			}
			var want []time.Time
			for _, at := range tt.want {
				want = append(want, start.Add(at))
			}
			require.Equal(t, want, tk.times)
			require.EqualValues(t, len(tt.want), d.Stats().WindowCalls)
			require.Equal(t, start.Add(total), d.Now())
		})
	}
}

func TestWindowNeverCalledWhenNotWindowable(t *testing.T) {
	ctx := context.Background()
	// procTask has no Window method: advancing the clock calls nothing.
	d := tasktest.New(&procTask{}, tasktest.Window(time.Second))
	require.NoError(t, d.Advance(ctx, time.Hour))
	require.Zero(t, d.Stats().WindowCalls)

	// A windowable task with no Window period is not windowed either,
	// like a job with Window zero.
	ft := &fullTask{}
	d = tasktest.New(ft)
	require.NoError(t, d.Advance(ctx, time.Hour))
	require.Zero(t, ft.wins)
	require.Zero(t, d.Stats().WindowCalls)
}

func TestAdvanceRefusesNegative(t *testing.T) {
	d := tasktest.New(&procTask{})
	before := d.Now()
	require.Error(t, d.Advance(context.Background(), -time.Second))
	require.Equal(t, before, d.Now())
}

func TestWindowFailureStopsTask(t *testing.T) {
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("panic=%v", panics), func(t *testing.T) {
			ctx := context.Background()
			ft := &fullTask{}
			ft.window = func(task.Collector, task.Coordinator) error {
				if ft.wins == 2 {
					if panics {
						panic("window exploded")
					}
					return errBad
				}
				return nil
			}
			d := tasktest.New(ft, tasktest.Window(time.Second))
			err := d.Advance(ctx, 5*time.Second)
			require.Error(t, err)
			require.Contains(t, err.Error(), "task task-0: window: ")
			if panics {
				var pe *task.PanicError
				require.ErrorAs(t, err, &pe)
				require.Equal(t, "window exploded", pe.Value)
			} else {
				require.ErrorIs(t, err, errBad)
			}
			require.Equal(t, 2, ft.wins, "no Window after the failing one")
			require.True(t, d.Stopped())
			require.Equal(t, d.Now(), tasktest.New(&procTask{}).Now().Add(5*time.Second), "the clock moves anyway")

			// Later calls report what they could not do.
			require.ErrorIs(t, d.Advance(ctx, 2*time.Second), tasktest.ErrStopped)
			require.NoError(t, d.Advance(ctx, 0), "no Window was due")
			require.ErrorIs(t, d.Feed(ctx, msgs("x")...), tasktest.ErrStopped)
			require.Empty(t, ft.seen)
			require.Equal(t, 2, ft.wins)
			require.NoError(t, d.Close(ctx))
			require.Equal(t, 1, ft.closes, "a failed task is still closed")
		})
	}
}

func TestOffsetsAndMessageDefaults(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	in := func(p int32) stream.Partition { return stream.Partition{Topic: "in", Partition: p} }
	other := stream.Partition{Topic: "other", Partition: 2}
	rules := func(p int32) stream.Partition { return stream.Partition{Topic: "rules", Partition: p} }
	type delivered struct {
		p   stream.Partition
		off int64
	}
	tests := []struct {
		name    string
		opts    []tasktest.Option
		feed    []stream.Message
		wantErr string
		want    []delivered
		offsets map[stream.Partition]int64
	}{
		{
			name: "offsets assigned in sequence",
			feed: []stream.Message{{Topic: "in"}, {Topic: "in"}, {Topic: "in"}},
			want: []delivered{{in(0), 0}, {in(0), 1}, {in(0), 2}},
		},
		{
			name: "empty topic means the first input",
			opts: []tasktest.Option{tasktest.Inputs("other", "in"), tasktest.Partition(2)},
			feed: []stream.Message{{}, {Topic: "in"}},
			want: []delivered{{other, 0}, {in(2), 0}},
		},
		{
			name: "explicit offsets may leave gaps",
			feed: []stream.Message{{Offset: 5}, {}, {Offset: 10}, {}},
			want: []delivered{{in(0), 5}, {in(0), 6}, {in(0), 10}, {in(0), 11}},
		},
		{
			name:    "offset behind the partition is refused",
			feed:    []stream.Message{{Offset: 5}, {Offset: 3}},
			wantErr: "offset 3 of in/0 is behind the next offset 6",
		},
		{
			name:    "negative offset is refused",
			feed:    []stream.Message{{Offset: -1}},
			wantErr: "negative offset",
		},
		{
			name:    "unknown topic is refused",
			feed:    []stream.Message{{}, {Topic: "nope"}},
			wantErr: `"nope" is not an input of task-0`,
		},
		{
			name: "zero partition of a partitioned input is the task's",
			opts: []tasktest.Option{tasktest.Partition(3)},
			feed: []stream.Message{{Topic: "in"}, {Topic: "in", Partition: 3}},
			want: []delivered{{in(3), 0}, {in(3), 1}},
		},
		{
			name:    "another partition of a partitioned input is refused",
			opts:    []tasktest.Option{tasktest.Partition(3)},
			feed:    []stream.Message{{Topic: "in", Partition: 1}},
			wantErr: "task-3 reads partition 3 of \"in\", not partition 1",
		},
		{
			name: "broadcast partitions keep their own offsets",
			opts: []tasktest.Option{tasktest.Partition(1), tasktest.Broadcast("rules", 3)},
			feed: []stream.Message{{Topic: "rules", Partition: 0}, {Topic: "rules", Partition: 2}, {Topic: "rules", Partition: 2}, {Topic: "in"}},
			want: []delivered{{rules(0), 0}, {rules(2), 0}, {rules(2), 1}, {in(1), 0}},
			offsets: map[stream.Partition]int64{
				in(1): 1, rules(0): 1, rules(1): 0, rules(2): 2,
			},
		},
		{
			name:    "broadcast partition out of range is refused",
			opts:    []tasktest.Option{tasktest.Broadcast("rules", 3)},
			feed:    []stream.Message{{Topic: "rules", Partition: 3}},
			wantErr: `broadcast input "rules" has partitions 0 to 2, not 3`,
		},
		{
			name: "resume from a checkpoint",
			opts: []tasktest.Option{tasktest.ResumeFrom(checkpoint.Checkpoint{ID: 7, Task: "task-0", Inputs: map[stream.Partition]int64{in(0): 100}})},
			feed: []stream.Message{{}, {}},
			want: []delivered{{in(0), 100}, {in(0), 101}},
		},
		{
			name:    "resume from a checkpoint refuses older offsets",
			opts:    []tasktest.Option{tasktest.ResumeFrom(checkpoint.Checkpoint{Inputs: map[stream.Partition]int64{in(0): 100}})},
			feed:    []stream.Message{{Offset: 99}},
			wantErr: "behind the next offset 100",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			tk := &procTask{}
			d := tasktest.New(tk, append([]tasktest.Option{tasktest.Inputs("in"), tasktest.StartTime(now)}, tt.opts...)...)
			before := d.Offsets()
			err := d.Feed(ctx, tt.feed...)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Empty(t, tk.seen, "a refused batch delivers nothing")
				require.Equal(t, before, d.Offsets())
				return
			}
			require.NoError(t, err)
			var got []delivered
			for _, m := range tk.seen {
				got = append(got, delivered{m.Position(), m.Offset})
				require.Equal(t, now, m.Timestamp, "a zero timestamp is the driver's clock")
			}
			require.Equal(t, tt.want, got)
			if tt.offsets == nil {
				tt.offsets = before
				for _, dl := range tt.want {
					tt.offsets[dl.p] = dl.off + 1
				}
			}
			require.Equal(t, tt.offsets, d.Offsets())
		})
	}
}

func TestExplicitTimestampIsKept(t *testing.T) {
	ts := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	tk := &procTask{}
	d := tasktest.New(tk)
	require.NoError(t, d.Feed(context.Background(), stream.Message{Timestamp: ts}))
	require.Equal(t, ts, tk.seen[0].Timestamp)
}

func TestOffsetsListEveryInputFromTheStart(t *testing.T) {
	d := tasktest.New(&procTask{}, tasktest.Inputs("a", "b"), tasktest.Partition(4), tasktest.Broadcast("c", 2))
	require.Equal(t, map[stream.Partition]int64{
		{Topic: "a", Partition: 4}: 0, {Topic: "b", Partition: 4}: 0,
		{Topic: "c", Partition: 0}: 0, {Topic: "c", Partition: 1}: 0,
	}, d.Offsets())
	_, ok := d.Checkpoint()
	require.False(t, ok)
}

func TestCommits(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	in := stream.Partition{Topic: "input"}
	tk := &procTask{process: func(m stream.Message, _ task.Collector, co task.Coordinator) error {
		if string(m.Value) == "commit" {
			co.Commit()
			co.Commit() // asking twice is one commit
		}
		return nil
	}}
	d := tasktest.New(tk, tasktest.CommitInterval(10*time.Second), tasktest.StartTime(start))

	require.NoError(t, d.Feed(ctx, msgs("a", "b")...))
	_, ok := d.Checkpoint()
	require.False(t, ok, "no commit before the interval or a request")

	require.NoError(t, d.Feed(ctx, msgs("commit", "c")...))
	require.Equal(t, 2, d.CommitRequests())
	cp, ok := d.Checkpoint()
	require.True(t, ok)
	require.Equal(t, checkpoint.Checkpoint{
		ID: 1, Task: "task-0", Inputs: map[stream.Partition]int64{in: 3},
		Changelogs: map[string]int64{}, WrittenAt: start,
	}, cp, "the commit happens right after the call that asked for it")
	require.EqualValues(t, 1, d.Stats().Commits)

	// The requested commit restarted the interval, which ends at 10 s.
	require.NoError(t, d.Advance(ctx, 9*time.Second))
	cp, _ = d.Checkpoint()
	require.EqualValues(t, 1, cp.ID)
	require.NoError(t, d.Advance(ctx, time.Second))
	cp, _ = d.Checkpoint()
	require.EqualValues(t, 2, cp.ID, "periodic commit of the progress since the last one")
	require.Equal(t, map[stream.Partition]int64{in: 4}, cp.Inputs)
	require.Equal(t, start.Add(10*time.Second), cp.WrittenAt)

	// Without progress, periodic commits write nothing.
	require.NoError(t, d.Advance(ctx, time.Minute))
	cp, _ = d.Checkpoint()
	require.EqualValues(t, 2, cp.ID)
	require.EqualValues(t, 2, d.Stats().Commits)

	// Close writes the final checkpoint.
	require.NoError(t, d.Feed(ctx, msgs("d")...))
	require.NoError(t, d.Close(ctx))
	cp, _ = d.Checkpoint()
	require.EqualValues(t, 3, cp.ID)
	require.Equal(t, map[stream.Partition]int64{in: 5}, cp.Inputs)
	require.Equal(t, cp, d.Stats().LastCheckpoint)
}

func TestCommitNumberingContinuesAfterResume(t *testing.T) {
	ctx := context.Background()
	d := tasktest.New(&procTask{}, tasktest.Partition(1),
		tasktest.ResumeFrom(checkpoint.Checkpoint{ID: 41, Task: "task-1", Inputs: map[stream.Partition]int64{{Topic: "input", Partition: 1}: 7}}))
	require.EqualValues(t, 41, d.Stats().LastCheckpoint.ID)
	require.NoError(t, d.Feed(ctx, stream.Message{}))
	require.NoError(t, d.Close(ctx))
	cp, ok := d.Checkpoint()
	require.True(t, ok)
	require.EqualValues(t, 42, cp.ID)
	require.Equal(t, map[stream.Partition]int64{{Topic: "input", Partition: 1}: 8}, cp.Inputs)
}

func TestWindowAndCommitDueTogether(t *testing.T) {
	ctx := context.Background()
	ft := &fullTask{}
	ft.window = func(out task.Collector, _ task.Coordinator) error {
		return out.Send(stream.Outgoing{Topic: "w"})
	}
	d := tasktest.New(ft, tasktest.Window(5*time.Second), tasktest.CommitInterval(5*time.Second))
	require.NoError(t, d.Advance(ctx, 5*time.Second))
	require.Equal(t, 1, ft.wins)
	cp, ok := d.Checkpoint()
	require.True(t, ok, "Window runs first, then the commit covers what it sent")
	require.Equal(t, d.Now(), cp.WrittenAt)
}

func TestShutdownFromProcess(t *testing.T) {
	ctx := context.Background()
	tk := &procTask{process: func(m stream.Message, _ task.Collector, co task.Coordinator) error {
		if string(m.Value) == "stop" {
			co.Shutdown()
		}
		return nil
	}}
	d := tasktest.New(tk)
	err := d.Feed(ctx, msgs("a", "stop", "b", "c")...)
	require.ErrorIs(t, err, tasktest.ErrStopped)
	require.Contains(t, err.Error(), "shutdown requested")
	require.Contains(t, err.Error(), "2 message(s) not delivered")
	require.True(t, d.ShutdownRequested())
	require.True(t, d.Stopped())
	require.Equal(t, []string{"a", "stop"}, tk.values())
	cp, ok := d.Checkpoint()
	require.True(t, ok, "a task that stops commits")
	require.Equal(t, map[stream.Partition]int64{{Topic: "input"}: 2}, cp.Inputs)
	require.NoError(t, d.Feed(ctx), "feeding nothing leaves nothing undone")
}

func TestShutdownFromWindow(t *testing.T) {
	ctx := context.Background()
	ft := &fullTask{}
	ft.window = func(_ task.Collector, co task.Coordinator) error {
		co.Shutdown()
		return nil
	}
	d := tasktest.New(ft, tasktest.Window(time.Second))
	require.False(t, d.ShutdownRequested())
	err := d.Advance(ctx, 3*time.Second)
	require.ErrorIs(t, err, tasktest.ErrStopped)
	require.Contains(t, err.Error(), "2 Window call(s) not made")
	require.Equal(t, 1, ft.wins)
	require.True(t, d.ShutdownRequested())
	require.NoError(t, d.Close(ctx))
	require.Equal(t, 1, ft.closes)
}

func TestSend(t *testing.T) {
	ctx := context.Background()
	var kept task.Collector
	var errs []error
	tk := &procTask{process: func(m stream.Message, out task.Collector, _ task.Coordinator) error {
		kept = out
		errs = append(errs, out.Send(stream.Outgoing{Value: m.Value}))
		errs = append(errs, out.Send(stream.Outgoing{Topic: "out", Value: m.Value}))
		return nil
	}}
	d := tasktest.New(tk)
	require.NoError(t, d.Feed(ctx, msgs("a")...))
	require.Len(t, errs, 2)
	require.EqualError(t, errs[0], "task: Send: message has no topic", "the runner's error for a message with no topic")
	require.NoError(t, errs[1])
	require.Equal(t, []stream.Outgoing{{Topic: "out", Value: []byte("a")}}, d.Outputs(), "outputs are recorded as sent")
	require.EqualValues(t, 1, d.Stats().Sent)

	require.Error(t, kept.Send(stream.Outgoing{Topic: "out"}), "a Collector is valid only during its call")
	require.Len(t, d.Outputs(), 1)

	// A cancelled context means the job is stopping at once.
	cctx, cancel := context.WithCancel(ctx)
	tk.process = func(_ stream.Message, out task.Collector, _ task.Coordinator) error {
		cancel()
		return out.Send(stream.Outgoing{Topic: "out"})
	}
	err := d.Feed(cctx, msgs("b")...)
	var perr *task.ProcessError
	require.ErrorAs(t, err, &perr)
	require.ErrorIs(t, err, task.ErrStopping)
}

func TestFeedWithEndedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tk := &procTask{}
	d := tasktest.New(tk)
	require.ErrorIs(t, d.Feed(ctx, msgs("a")...), context.Canceled)
	require.Empty(t, tk.seen)
	require.False(t, d.Stopped())
	require.NoError(t, d.Feed(context.Background(), msgs("a")...))
	require.Len(t, tk.seen, 1)
}

func TestOutputsTakeAndFilter(t *testing.T) {
	ctx := context.Background()
	tk := &procTask{process: func(m stream.Message, out task.Collector, _ task.Coordinator) error {
		return errors.Join(
			out.Send(stream.Outgoing{Topic: "odd-even", Value: m.Value}),
			out.Send(stream.Outgoing{Topic: "copy", Value: m.Value}),
		)
	}}
	d := tasktest.New(tk)
	require.NoError(t, d.Feed(ctx, msgs("1", "2")...))
	require.Len(t, d.OutputsTo("copy"), 2)
	require.Empty(t, d.OutputsTo("elsewhere"))
	first := d.TakeOutputs()
	require.Len(t, first, 4)
	require.Empty(t, d.Outputs())
	require.NoError(t, d.Feed(ctx, msgs("3")...))
	require.Equal(t, []stream.Outgoing{{Topic: "copy", Value: []byte("3")}}, d.OutputsTo("copy"))
	require.EqualValues(t, 6, d.Stats().Sent, "taking outputs does not change the counters")

	// The slice handed out is the caller's.
	out := d.Outputs()
	out[0].Topic = "changed"
	require.Equal(t, "odd-even", d.Outputs()[0].Topic)
}

func TestInitContext(t *testing.T) {
	ctx := context.Background()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var tc task.Context
	ft := &fullTask{}
	ft.init = func(c task.Context) error {
		tc = c
		c.Logger().Info("hello")
		return nil
	}
	d := tasktest.New(ft, tasktest.JobName("ctxjob"), tasktest.Partition(2), tasktest.Inputs("a", "b"),
		tasktest.Broadcast("rules", 2), tasktest.Logger(log))
	require.NoError(t, d.Init(ctx))
	require.Equal(t, "ctxjob", tc.JobName())
	require.Equal(t, "task-2", tc.TaskName())
	require.EqualValues(t, 2, tc.Partition())
	require.Equal(t, []stream.Partition{
		{Topic: "a", Partition: 2}, {Topic: "b", Partition: 2},
		{Topic: "rules", Partition: 0}, {Topic: "rules", Partition: 1},
	}, tc.Inputs())
	require.Contains(t, buf.String(), "job=ctxjob task=task-2")
	require.Contains(t, buf.String(), "msg=hello")

	tc.Inputs()[0].Topic = "changed"
	require.Equal(t, "a", tc.Inputs()[0].Topic, "Inputs returns a copy")

	require.ErrorContains(t, d.Init(ctx), "Init called twice")
	require.NoError(t, d.Feed(ctx, stream.Message{}))
	require.Equal(t, 1, ft.inits, "Feed does not call Init again")
}

func TestInitIsImplicitAndFirst(t *testing.T) {
	ctx := context.Background()
	var order []string
	ft := &fullTask{}
	ft.init = func(task.Context) error { order = append(order, "init"); return nil }
	ft.process = func(stream.Message, task.Collector, task.Coordinator) error {
		order = append(order, "process")
		return nil
	}
	ft.window = func(task.Collector, task.Coordinator) error { order = append(order, "window"); return nil }
	ft.close = func() error { order = append(order, "close"); return nil }
	d := tasktest.New(ft, tasktest.Window(time.Second))
	require.NoError(t, d.Advance(ctx, time.Second))
	require.NoError(t, d.Feed(ctx, stream.Message{}))
	require.NoError(t, d.Close(ctx))
	require.NoError(t, d.Close(ctx))
	require.Equal(t, []string{"init", "window", "process", "close"}, order)
}

func TestInitFailure(t *testing.T) {
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("panic=%v", panics), func(t *testing.T) {
			ctx := context.Background()
			ft := &fullTask{}
			ft.init = func(task.Context) error {
				if panics {
					panic("no init for you")
				}
				return errBad
			}
			d := tasktest.New(ft, tasktest.Window(time.Second))
			err := d.Feed(ctx, msgs("a")...)
			require.ErrorIs(t, err, tasktest.ErrStopped)
			require.ErrorContains(t, err, "task task-0: init: ")
			if panics {
				var pe *task.PanicError
				require.ErrorAs(t, err, &pe)
				require.Equal(t, "no init for you", pe.Value)
			} else {
				require.ErrorIs(t, err, errBad)
			}
			require.True(t, d.Stopped())
			require.Empty(t, ft.seen)
			require.ErrorIs(t, d.Advance(ctx, time.Second), tasktest.ErrStopped)
			require.ErrorContains(t, d.Feed(ctx), "task task-0: init: ", "the init error is reported again")
			require.Zero(t, ft.wins)
			require.NoError(t, d.Close(ctx))
			require.Zero(t, ft.closes, "a task whose Init failed is not closed")
			require.Equal(t, 1, ft.inits)
			_, ok := d.Checkpoint()
			require.False(t, ok)
		})
	}
}

func TestClose(t *testing.T) {
	ctx := context.Background()

	t.Run("never started", func(t *testing.T) {
		ft := &fullTask{}
		d := tasktest.New(ft)
		require.NoError(t, d.Close(ctx))
		require.Zero(t, ft.inits)
		require.Zero(t, ft.closes)
		err := d.Feed(ctx, msgs("a")...)
		require.ErrorIs(t, err, tasktest.ErrStopped)
		require.ErrorContains(t, err, "closed")
		require.Zero(t, ft.inits)
	})
	t.Run("error", func(t *testing.T) {
		ft := &fullTask{close: func() error { return errBad }}
		d := tasktest.New(ft)
		require.NoError(t, d.Init(ctx))
		err := d.Close(ctx)
		require.ErrorIs(t, err, errBad)
		require.ErrorContains(t, err, "task task-0: close: ")
		require.NoError(t, d.Close(ctx), "closing again does nothing")
		require.Equal(t, 1, ft.closes)
	})
	t.Run("panic", func(t *testing.T) {
		ft := &fullTask{close: func() error { panic("close exploded") }}
		d := tasktest.New(ft)
		require.NoError(t, d.Feed(ctx, msgs("a")...))
		var pe *task.PanicError
		require.ErrorAs(t, d.Close(ctx), &pe)
		require.Equal(t, "close exploded", pe.Value)
	})
	t.Run("stops the task", func(t *testing.T) {
		ft := &fullTask{}
		d := tasktest.New(ft, tasktest.Window(time.Second))
		require.NoError(t, d.Feed(ctx, msgs("a")...))
		require.NoError(t, d.Close(ctx))
		require.True(t, d.Stopped())
		require.ErrorIs(t, d.Feed(ctx, msgs("b")...), tasktest.ErrStopped)
		require.ErrorIs(t, d.Advance(ctx, time.Second), tasktest.ErrStopped)
		require.Len(t, ft.seen, 1)
		require.Zero(t, ft.wins)
	})
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		d    func() *tasktest.Driver
		want string
	}{
		{"nil task", func() *tasktest.Driver { return tasktest.New(nil) }, "task is nil"},
		{"empty job name", func() *tasktest.Driver { return tasktest.New(&procTask{}, tasktest.JobName("")) }, "job name is empty"},
		{"negative partition", func() *tasktest.Driver { return tasktest.New(&procTask{}, tasktest.Partition(-1)) }, "partition -1 is negative"},
		{"negative window", func() *tasktest.Driver { return tasktest.New(&procTask{}, tasktest.Window(-time.Second)) }, "must not be negative"},
		{"bad policy", func() *tasktest.Driver { return tasktest.New(&procTask{}, tasktest.OnError(task.ErrorPolicy(9))) }, "is not an error policy"},
		{"no inputs", func() *tasktest.Driver { return tasktest.New(&procTask{}, tasktest.Inputs()) }, "no inputs"},
		{"empty input", func() *tasktest.Driver { return tasktest.New(&procTask{}, tasktest.Inputs("a", "")) }, "input topic name is empty"},
		{"input twice", func() *tasktest.Driver {
			return tasktest.New(&procTask{}, tasktest.Inputs("a"), tasktest.Broadcast("a", 1))
		}, `input "a" is listed twice`},
		{"broadcast without partitions", func() *tasktest.Driver {
			return tasktest.New(&procTask{}, tasktest.Broadcast("b", 0))
		}, `broadcast input "b" needs at least one partition`},
		{"checkpoint of another task", func() *tasktest.Driver {
			return tasktest.New(&procTask{}, tasktest.Partition(1), tasktest.ResumeFrom(checkpoint.Checkpoint{Task: "task-2"}))
		}, "checkpoint is of task-2, the driver runs task-1"},
		{"nil job", func() *tasktest.Driver { return tasktest.FromJob(nil) }, "job is nil"},
		{"job without NewTask", func() *tasktest.Driver { return tasktest.FromJob(&task.Job{Name: "x", Inputs: []string{"a"}}) }, `job "x" has no NewTask`},
		{"NewTask returns nil", func() *tasktest.Driver {
			return tasktest.FromJob(&task.Job{Name: "x", Inputs: []string{"a"}, NewTask: func() task.StreamTask { return nil }})
		}, "returned nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			d := tt.d()
			require.ErrorContains(t, d.Init(ctx), tt.want)
			require.ErrorContains(t, d.Feed(ctx, stream.Message{}), tt.want)
			require.True(t, d.Stopped())
			require.NoError(t, d.Close(ctx))
		})
	}
}

func TestFromJob(t *testing.T) {
	ctx := context.Background()
	var made []*fullTask
	job := &task.Job{
		Name:            "orders",
		Inputs:          []string{"orders", "payments"},
		Broadcast:       []string{"rates"},
		Window:          30 * time.Second,
		CommitInterval:  time.Second,
		OnError:         task.DeadLetter,
		DeadLetterTopic: "orders-bad",
		NewTask: func() task.StreamTask {
			ft := &fullTask{procTask: procTask{process: failOn(false)}}
			made = append(made, ft)
			return ft
		},
	}
	var tc task.Context
	d := tasktest.FromJob(job, tasktest.Partition(5), tasktest.Broadcast("rates", 2))
	require.Len(t, made, 1)
	ft := made[0]
	require.Same(t, ft, d.Task())
	ft.init = func(c task.Context) error { tc = c; return nil }

	require.NoError(t, d.Feed(ctx, stream.Message{Topic: "payments", Value: []byte("bad")}))
	require.Equal(t, "orders", tc.JobName())
	require.Equal(t, "task-5", tc.TaskName())
	require.Equal(t, []stream.Partition{
		{Topic: "orders", Partition: 5}, {Topic: "payments", Partition: 5},
		{Topic: "rates", Partition: 0}, {Topic: "rates", Partition: 1},
	}, tc.Inputs())
	require.Equal(t, "orders-bad", d.DeadLetterTopic())
	require.Len(t, d.OutputsTo("orders-bad"), 1, "the job's policy and dead-letter topic apply")

	require.NoError(t, d.Advance(ctx, time.Second))
	_, ok := d.Checkpoint()
	require.True(t, ok, "the job's commit interval applies")
	require.NoError(t, d.Advance(ctx, 29*time.Second))
	require.Equal(t, 1, ft.wins, "the job's window applies")
}

func TestFromJobOptionsOverride(t *testing.T) {
	job := &task.Job{Name: "j", Inputs: []string{"a"}, OnError: task.Skip, NewTask: func() task.StreamTask {
		return &procTask{process: failOn(false)}
	}}
	d := tasktest.FromJob(job, tasktest.OnError(task.Fail), tasktest.JobName("renamed"))
	var perr *task.ProcessError
	require.ErrorAs(t, d.Feed(context.Background(), stream.Message{Value: []byte("bad")}), &perr)
	require.Equal(t, "a", perr.Topic)
	require.Equal(t, "renamed-dlq", d.DeadLetterTopic())
}

func TestFromJobWithOnlyBroadcastInputs(t *testing.T) {
	tk := &procTask{}
	job := &task.Job{Name: "b", Broadcast: []string{"rules"}, NewTask: func() task.StreamTask { return tk }}
	d := tasktest.FromJob(job)
	require.NoError(t, d.Feed(context.Background(), stream.Message{}))
	require.Equal(t, stream.Partition{Topic: "rules"}, tk.seen[0].Position())
	require.Equal(t, map[stream.Partition]int64{{Topic: "rules"}: 1}, d.Offsets())
}

// overlapTask fails the test if two of its calls ever overlap.
type overlapTask struct {
	active atomic.Int32
	calls  atomic.Int32
	t      *testing.T
}

func (o *overlapTask) enter() {
	if o.active.Add(1) != 1 {
		o.t.Error("two calls into the task overlap")
	}
	o.calls.Add(1)
}

func (o *overlapTask) leave() { o.active.Add(-1) }

func (o *overlapTask) Process(context.Context, stream.Message, task.Collector, task.Coordinator) error {
	o.enter()
	defer o.leave()
	return nil
}

func (o *overlapTask) Window(context.Context, task.Collector, task.Coordinator) error {
	o.enter()
	defer o.leave()
	return nil
}

func TestCallsNeverOverlap(t *testing.T) {
	ctx := context.Background()
	tk := &overlapTask{t: t}
	d := tasktest.New(tk, tasktest.Window(time.Millisecond))
	var wg sync.WaitGroup
	const workers, rounds = 4, 200
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if err := d.Feed(ctx, stream.Message{}); err != nil {
					t.Error(err)
					return
				}
				if err := d.Advance(ctx, time.Millisecond); err != nil {
					t.Error(err)
					return
				}
				_ = d.Outputs()
				_ = d.Stats()
			}
		}()
	}
	wg.Wait()
	st := d.Stats()
	require.EqualValues(t, workers*rounds, st.Processed)
	require.EqualValues(t, workers*rounds, st.WindowCalls)
	require.EqualValues(t, 2*workers*rounds, tk.calls.Load())
	require.Equal(t, map[stream.Partition]int64{{Topic: "input"}: workers * rounds}, d.Offsets())
}

func TestErrorPolicyNamesInErrors(t *testing.T) {
	// The Fail error names the message as the job's would, so logs and
	// test failures read the same.
	d := tasktest.New(&procTask{process: failOn(false)}, tasktest.Inputs("in"))
	err := d.Feed(context.Background(), stream.Message{Offset: 12, Value: []byte("bad")})
	require.EqualError(t, err, "task task-0: message at in/0 offset 12: bad value")
}
