package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/examples/router/routing"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The end-to-end tests run the router job in-process on an embedded broker,
// read every topic back with an independent client (kgo), and compare what
// they find with refRoute, the tests' own reading of the default rules.

const e2eInput = "events"

func TestEndToEnd100kEvents(t *testing.T) {
	const n, partitions = 100_000, 8
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, e2eInput, partitions, nil)
	testkit.Produce(t, addrs, e2eInput, testEvents(rand.New(rand.NewPCG(1, 100_000)), n, 2000, 0))
	events := e2eReadInput(t, addrs, e2eInput)
	require.Len(t, events, n)

	job := e2eJob(addrs, "router", task.DeadLetter)
	stop := e2eStart(t, job)
	testkit.Eventually(t, 2*time.Minute, func() bool { return e2eHandled(job).all() == n },
		"the job did not handle all %d events", n)
	h := e2eHandled(job)
	require.NoError(t, stop())
	require.Zero(t, h.dead, "nothing is malformed, yet events were dead-lettered")
	require.Zero(t, h.skipped)

	tally := e2eCheckOutputs(t, addrs, e2eInput, "router-dlq", events)
	// The data exercises every rule.
	require.Positive(t, tally.routed)
	require.Positive(t, tally.dropped)
	require.Positive(t, tally.copies)
	e2eCheckCheckpoints(t, addrs, "router", e2eInput, partitions)
}

// e2eJob is the router job as main.go builds it, with a short commit
// interval and a quiet logger.
func e2eJob(addrs []string, name string, policy task.ErrorPolicy) *task.Job {
	stats := &routing.Stats{}
	rules := routing.DefaultRules()
	return &task.Job{
		Name:              name,
		Kafka:             stream.KafkaConfig{Brokers: addrs},
		Inputs:            []string{e2eInput},
		NewTask:           func() task.StreamTask { return routing.NewTask(rules, stats) },
		OnError:           policy,
		AutoCreateOutputs: true,
		CommitInterval:    200 * time.Millisecond,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// e2eStart runs job in the background. stop cancels it and returns what
// Run returned; a test that fails before calling stop still stops the job.
func e2eStart(t *testing.T, job *task.Job) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				err = fmt.Errorf("job %s did not stop within a minute of cancellation", job.Name)
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

type e2eCounts struct{ processed, skipped, dead uint64 }

func (c e2eCounts) all() uint64 { return c.processed + c.skipped + c.dead }

// e2eHandled sums the job's counters over its tasks (zero when it is not
// running).
func e2eHandled(job *task.Job) e2eCounts {
	var c e2eCounts
	for _, s := range job.Stats() {
		c.processed += s.Processed
		c.skipped += s.Skipped
		c.dead += s.DeadLettered
	}
	return c
}

// e2eEvent is one input event as the test knows it: where it is stored and
// where the reference says it must go.
type e2eEvent struct {
	rec    *kgo.Record // as read back from the input: Partition and Offset are set
	id     string
	topics []string // refRoute's topics; none for a dropped event
	dead   bool     // refRoute says malformed
}

// e2eReadInput reads topic back and classifies every event with refRoute,
// by id.
func e2eReadInput(t *testing.T, addrs []string, topic string) map[string]*e2eEvent {
	t.Helper()
	events := map[string]*e2eEvent{}
	for _, r := range testkit.ReadAll(t, addrs, time.Minute, topic) {
		id, err := eventID(r.Value)
		require.NoError(t, err)
		if events[id] != nil {
			t.Fatalf("two input events with id %s", id)
		}
		topics, dead := refRoute(topic, r.Value)
		events[id] = &e2eEvent{rec: r, id: id, topics: topics, dead: dead}
	}
	return events
}

// e2eTopics lists the cluster's topics.
func e2eTopics(t *testing.T, addrs []string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(testkit.Client(t, addrs))
	details, err := adm.ListTopics(ctx)
	require.NoError(t, err)
	require.NoError(t, details.Error())
	names := details.Names()
	slices.Sort(names)
	return names
}

// e2eCheckOutputs reads every topic the job may have written and checks it
// against the reference:
//   - the topics are exactly the ones the reference names (plus dlq, when
//     not empty, and the job's checkpoint topic);
//   - every good event is in exactly its reference topics, once each, with
//     its key and value unchanged; dropped (debug) events are nowhere;
//   - every malformed event is in dlq exactly once with headers naming
//     where it came from (when dlq is empty, nowhere);
//   - per key, order is preserved: within each topic all records of a key
//     are in one partition, in increasing "seq" (in the DLQ, increasing
//     input offset).
func e2eCheckOutputs(t *testing.T, addrs []string, input, dlq string, events map[string]*e2eEvent) e2eTally {
	t.Helper()
	wantTopics := map[string]bool{input: true}
	if dlq != "" {
		wantTopics[dlq] = true
	}
	for _, ev := range events {
		for _, tp := range ev.topics {
			wantTopics[tp] = true
		}
	}
	var outputs []string
	for _, tp := range e2eTopics(t, addrs) {
		if strings.HasSuffix(tp, "-checkpoints") {
			continue
		}
		if !wantTopics[tp] {
			t.Errorf("unexpected topic %q", tp)
		}
		delete(wantTopics, tp)
		if tp != input {
			outputs = append(outputs, tp)
		}
	}
	require.Empty(t, wantTopics, "topics the reference expects are missing")

	recs := testkit.ReadAll(t, addrs, 2*time.Minute, outputs...)
	slices.SortFunc(recs, func(a, b *kgo.Record) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Partition, b.Partition); c != 0 {
			return c
		}
		return cmp.Compare(a.Offset, b.Offset)
	})

	p := e2eProblems{t: t}
	got := map[string]map[string]int{} // id -> topic -> copies
	type keyPos struct {
		partition int32
		last      int64
	}
	order := map[string]map[string]keyPos{} // topic -> key -> last position
	for _, r := range recs {
		id, err := eventID(r.Value)
		if err != nil {
			p.add("%s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
			continue
		}
		ev := events[id]
		if ev == nil {
			p.add("%s/%d@%d: event %s was never produced", r.Topic, r.Partition, r.Offset, id)
			continue
		}
		if !bytes.Equal(r.Value, ev.rec.Value) || !bytes.Equal(r.Key, ev.rec.Key) {
			p.add("%s/%d@%d: event %s changed on the way: key %q value %q", r.Topic, r.Partition, r.Offset, id, r.Key, r.Value)
		}
		if got[id] == nil {
			got[id] = map[string]int{}
		}
		got[id][r.Topic]++

		var pos int64
		if r.Topic == dlq {
			pos = ev.rec.Offset
			if msg := e2eDLQHeaders(r, ev); msg != "" {
				p.add("%s/%d@%d: event %s: %s", r.Topic, r.Partition, r.Offset, id, msg)
			}
		} else {
			var body struct{ Seq int64 }
			if err := json.Unmarshal(r.Value, &body); err != nil || body.Seq == 0 {
				p.add("%s/%d@%d: event %s has no seq", r.Topic, r.Partition, r.Offset, id)
				continue
			}
			pos = body.Seq
		}
		if order[r.Topic] == nil {
			order[r.Topic] = map[string]keyPos{}
		}
		key := string(r.Key)
		if prev, ok := order[r.Topic][key]; ok {
			if prev.partition != r.Partition {
				p.add("%s: key %s is in partitions %d and %d", r.Topic, key, prev.partition, r.Partition)
			} else if pos <= prev.last {
				p.add("%s/%d@%d: key %s out of order: %d after %d", r.Topic, r.Partition, r.Offset, key, pos, prev.last)
			}
		}
		order[r.Topic][key] = keyPos{r.Partition, pos}
	}

	var routed, dead, dropped, copies int
	for id, ev := range events {
		want := map[string]int{}
		switch {
		case ev.dead && dlq != "":
			want[dlq] = 1
			dead++
		case ev.dead:
		case len(ev.topics) == 0:
			dropped++
		default:
			routed++
			if len(ev.topics) > 1 {
				copies++
			}
		}
		for _, tp := range ev.topics {
			want[tp]++
		}
		if !maps.Equal(got[id], want) {
			p.add("event %s (%s/%d@%d, %s): in %v, want %v", id, ev.rec.Topic, ev.rec.Partition, ev.rec.Offset, ev.rec.Value, got[id], want)
		}
	}
	p.report()
	t.Logf("checked %d output records: %d events routed, %d dropped, %d dead-lettered", len(recs), routed, dropped, dead)
	return e2eTally{routed: routed, dropped: dropped, dead: dead, copies: copies}
}

// e2eTally counts the events of a check by what happened to them, so a
// test can tell that its data exercised every rule.
type e2eTally struct {
	routed, dropped, dead int
	copies                int // events sent to more than one topic
}

func e2eCountDead(events map[string]*e2eEvent) int {
	n := 0
	for _, ev := range events {
		if ev.dead {
			n++
		}
	}
	return n
}

// e2eDLQHeaders checks the headers of a dead-lettered record against the
// input event it copies, and describes what is wrong ("" when all is well).
func e2eDLQHeaders(r *kgo.Record, ev *e2eEvent) string {
	want := map[string]string{
		task.HeaderTopic:     ev.rec.Topic,
		task.HeaderPartition: strconv.Itoa(int(ev.rec.Partition)),
		task.HeaderOffset:    strconv.FormatInt(ev.rec.Offset, 10),
		task.HeaderTask:      "task-" + strconv.Itoa(int(ev.rec.Partition)),
	}
	seen := map[string]int{}
	var problems []string
	for _, h := range r.Headers {
		seen[h.Key]++
		if h.Key == task.HeaderError {
			if !strings.Contains(string(h.Value), routing.ErrNotObject.Error()) {
				problems = append(problems, fmt.Sprintf("%s = %q does not give the cause", h.Key, h.Value))
			}
			continue
		}
		if w, ok := want[h.Key]; ok && string(h.Value) != w {
			problems = append(problems, fmt.Sprintf("%s = %q, want %q", h.Key, h.Value, w))
		}
	}
	for _, k := range []string{task.HeaderError, task.HeaderTopic, task.HeaderPartition, task.HeaderOffset, task.HeaderTask} {
		if seen[k] != 1 {
			problems = append(problems, fmt.Sprintf("header %s appears %d times", k, seen[k]))
		}
	}
	return strings.Join(problems, "; ")
}

// e2eProblems collects mismatches and reports the first few with a total,
// so a broken run does not print a hundred thousand lines.
type e2eProblems struct {
	t     *testing.T
	n     int
	first []string
}

func (p *e2eProblems) add(format string, args ...any) {
	p.n++
	if len(p.first) < 20 {
		p.first = append(p.first, fmt.Sprintf(format, args...))
	}
}

func (p *e2eProblems) report() {
	p.t.Helper()
	if p.n > 0 {
		p.t.Fatalf("%d problems, the first %d:\n%s", p.n, len(p.first), strings.Join(p.first, "\n"))
	}
}

// e2eCheckpoints loads the last checkpoint of every task of job with a
// fresh Kafka manager, as a restarted job would. A task with no checkpoint
// is missing from the map.
func e2eCheckpoints(t *testing.T, addrs []string, job string, tasks int) map[int32]checkpoint.Checkpoint {
	t.Helper()
	m, err := checkpoint.NewKafka(context.Background(), stream.KafkaConfig{Brokers: addrs}, job,
		checkpoint.KafkaOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cps := map[int32]checkpoint.Checkpoint{}
	for i := range int32(tasks) {
		name := "task-" + strconv.Itoa(int(i))
		cp, ok, err := m.Load(ctx, name)
		require.NoError(t, err)
		if ok {
			require.Equal(t, name, cp.Task)
			cps[i] = cp
		}
	}
	return cps
}

// e2eCheckCheckpoints checks that the final checkpoints of job cover all of
// input: task i's offset for partition i is the partition's end.
func e2eCheckCheckpoints(t *testing.T, addrs []string, job, input string, partitions int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(testkit.Client(t, addrs)).ListEndOffsets(ctx, input)
	require.NoError(t, err)
	require.NoError(t, ends.Error())
	cps := e2eCheckpoints(t, addrs, job, partitions)
	for i := range int32(partitions) {
		cp, ok := cps[i]
		require.True(t, ok, "no checkpoint for task-%d", i)
		end, ok := ends.Lookup(input, i)
		require.True(t, ok)
		p := stream.Partition{Topic: input, Partition: i}
		require.Equal(t, map[stream.Partition]int64{p: end.Offset}, cp.Inputs, "checkpoint of task-%d", i)
	}
}

// e2eBuffer is an io.Writer safe for the concurrent writers run has.
type e2eBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *e2eBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *e2eBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

var e2eSummary = regexp.MustCompile(`(?m)^routed (\d+) messages to (\d+) topics \((\d+) events dropped by rules\) in \S+: \d+ msg/s$`)

// e2eRun runs main's run with args and returns its output, failing on an
// error, and the numbers of the summary line.
func e2eRun(t *testing.T, args ...string) (stdout string, routed, topics int) {
	t.Helper()
	var out, errOut e2eBuffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err := run(ctx, args, &out, &errOut)
	require.NoError(t, err, "stderr:\n%s", errOut.String())
	require.Less(t, time.Since(start), 30*time.Second, "run overran its -duration")
	stdout = out.String()
	m := e2eSummary.FindStringSubmatch(stdout)
	require.NotNil(t, m, "no summary line in:\n%s", stdout)
	routed, _ = strconv.Atoi(m[1])
	topics, _ = strconv.Atoi(m[2])
	return stdout, routed, topics
}

func TestRunAgainstBrokers(t *testing.T) {
	b := testkit.Broker(t)
	addrs := b.Addrs()
	stdout, routed, topics := e2eRun(t, "-brokers", strings.Join(addrs, ","), "-generate", "500", "-duration", "3s", "-quiet", "-commit", "200ms")
	require.Positive(t, routed, stdout)
	require.NotContains(t, stdout, "embedded broker", "run started its own broker although -brokers was given")
	require.NotContains(t, stdout, "ev/s", "-quiet printed per-second lines")

	// run returned nil, so everything it counted as routed is in Kafka,
	// in the topics it counted, and nothing else is.
	var outputs []string
	for _, tp := range e2eTopics(t, addrs) {
		if strings.HasPrefix(tp, e2eInput+".") {
			outputs = append(outputs, tp)
		}
	}
	require.Len(t, outputs, topics, "topics %v", outputs)
	require.Len(t, testkit.ReadAll(t, addrs, time.Minute, outputs...), routed)
	require.Contains(t, e2eTopics(t, addrs), "router-checkpoints")
}

func TestRunWithEmbeddedBroker(t *testing.T) {
	stdout, routed, _ := e2eRun(t, "-generate", "300", "-duration", "3s", "-commit", "200ms")
	require.Regexp(t, `(?m)^embedded broker at 127\.0\.0\.1:\d+$`, stdout)
	require.Positive(t, routed, stdout)
	require.Regexp(t, `(?m)^\d\d:\d\d:\d\d  in +\d+ ev/s  out +\d+ msg/s \|.* dropped=\d+ dead-lettered=0$`, stdout,
		"no per-second line")
}

func TestRunRefusesBadFlags(t *testing.T) {
	cases := []struct {
		args    []string
		mention string
	}{
		{[]string{"-generate", "-1"}, "-generate"},
		{[]string{"-malformed", "1.5"}, "-malformed"},
		{[]string{"-partitions", "0"}, "-partitions"},
		{[]string{"-duration", "-1s"}, "-duration"},
		{[]string{"-on-error", "retry"}, "unknown error policy"},
		{[]string{"-log-level", "loud"}, "-log-level"},
		{[]string{"-rules", "/nonexistent/rules.json"}, "rules.json"},
		{[]string{"-no-such-flag"}, "no-such-flag"},
		{[]string{"stray"}, "unexpected arguments"},
	}
	for _, c := range cases {
		var out, errOut e2eBuffer
		err := run(context.Background(), c.args, &out, &errOut)
		require.Error(t, err, "run(%q)", c.args)
		require.Contains(t, err.Error()+errOut.String(), c.mention, "run(%q)", c.args)
		require.Empty(t, out.String(), "run(%q) printed to stdout", c.args)
	}
}
