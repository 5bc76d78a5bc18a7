package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grete-go/grete/examples/router/routing"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kadm"
)

// TestInteropKcat checks the router against kcat (librdkafka), a client
// that no one here wrote: events produced with kcat are routed, the outputs
// read back with kcat match the reference, and the job's progress is
// visible to standard tools through the consumer group offsets.
func TestInteropKcat(t *testing.T) {
	kcat := interopKcat(t)
	b := testkit.Broker(t)
	addrs := b.Addrs()
	brokers := strings.Join(addrs, ",")
	const input, partitions, n = "events", 8, 1000
	testkit.CreateTopic(t, addrs, input, partitions, nil)

	// The input, produced by kcat with librdkafka's Java-compatible
	// partitioner (murmur2), so that Grete's outputs must land on the same
	// partition as their input for the same key.
	recs := testEvents(rand.New(rand.NewPCG(20260918, 7)), n, 40, 0.02)
	var lines bytes.Buffer
	want := map[string][]string{} // topic -> ids in input order
	values := map[string]string{} // id -> value
	keys := map[string]string{}   // id -> key
	var dead []string
	for _, r := range recs {
		if bytes.ContainsAny(r.Key, "\t\n") || bytes.ContainsAny(r.Value, "\t\n") {
			t.Fatalf("record %q/%q cannot be sent as one kcat line", r.Key, r.Value)
		}
		fmt.Fprintf(&lines, "%s\t%s\n", r.Key, r.Value)
		id, err := eventID(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		values[id] = string(r.Value)
		keys[id] = string(r.Key)
		topics, isDead := refRoute(input, r.Value)
		if isDead {
			dead = append(dead, id)
		}
		for _, tp := range topics {
			want[tp] = append(want[tp], id)
		}
	}
	if len(dead) == 0 || len(want[input+".revenue"]) == 0 {
		t.Fatalf("the events exercise too little: %d dead-lettered, %d revenue copies", len(dead), len(want[input+".revenue"]))
	}
	interopRun(t, kcat, &lines, "-P", "-b", brokers, "-t", input, "-K", `\t`, "-X", "partitioner=murmur2_random")

	// kcat's own view of the input: where each event is, and that every
	// line became exactly one record.
	type where struct {
		partition int32
		offset    int64
		ts        string
	}
	at := map[string]where{}
	keyPart := map[string]int32{}
	for _, m := range interopConsume(t, kcat, brokers, input) {
		id, err := eventID([]byte(m.value))
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := at[id]; dup {
			t.Fatalf("kcat wrote %s twice", id)
		}
		if m.value != values[id] {
			t.Fatalf("input %s is %q, kcat was given %q", id, m.value, values[id])
		}
		if ts, err := strconv.ParseInt(m.ts, 10, 64); err != nil || ts <= 0 {
			t.Fatalf("input %s has timestamp %q", id, m.ts)
		}
		at[id] = where{m.partition, m.offset, m.ts}
		keyPart[m.key] = m.partition
	}
	if len(at) != n {
		t.Fatalf("kcat produced %d of %d events", len(at), n)
	}

	// Route them.
	logs := &testkit.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("router log:\n%s", logs.String())
		}
	})
	job := &task.Job{
		Name:              "router",
		Kafka:             stream.KafkaConfig{Brokers: addrs, ClientID: "interop-test"},
		Inputs:            []string{input},
		NewTask:           func() task.StreamTask { return routing.NewTask(routing.DefaultRules(), nil) },
		OnError:           task.DeadLetter,
		AutoCreateOutputs: true,
		CommitInterval:    100 * time.Millisecond,
		Logger:            slog.New(slog.NewTextHandler(logs, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	stopped := false
	stop := func() error {
		cancel()
		select {
		case err := <-done:
			stopped = true
			return err
		case <-time.After(45 * time.Second):
			return fmt.Errorf("job did not stop within 45s of cancellation")
		}
	}
	t.Cleanup(func() {
		if !stopped {
			_ = stop()
		}
	})
	adm := kadm.NewClient(testkit.Client(t, addrs))
	var lastLag string
	testkit.Eventually(t, 60*time.Second, func() bool {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("job stopped before routing everything: %v", err)
		default:
		}
		committed, end, err := testkit.GroupOffsets(adm, "router", input)
		if err != nil {
			lastLag = err.Error()
			return false
		}
		lastLag = fmt.Sprintf("committed %v, end %v", committed, end)
		return len(committed) == partitions && maps.Equal(committed, end)
	}, "the job's group offsets never reached the end of %s (%v)", input, testkit.Lazy(func() string { return lastLag }))
	if err := stop(); err != nil {
		t.Fatalf("job stopped with %v", err)
	}

	// The group offsets after the stop, read by an independent admin
	// client: lag 0 on every partition.
	committed, end, err := testkit.GroupOffsets(adm, "router", input)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for p := range int32(partitions) {
		if committed[p] != end[p] {
			t.Errorf("group router, %s/%d: committed %d, end %d", input, p, committed[p], end[p])
		}
		total += end[p]
	}
	if total != n {
		t.Errorf("end offsets of %s add up to %d, want %d", input, total, n)
	}

	// kcat's metadata shows the job's internal topics and the outputs, and
	// no output the reference does not expect.
	topics := interopTopics(t, kcat, brokers)
	if got := topics["router-checkpoints"]; got != 1 {
		t.Errorf("kcat -L: router-checkpoints has %d partitions, want 1 (0 = missing); topics %v", got, topics)
	}
	if got := topics["router-dlq"]; got != partitions {
		t.Errorf("kcat -L: router-dlq has %d partitions, want %d", got, partitions)
	}
	for tp, np := range topics {
		if !strings.HasPrefix(tp, input+".") {
			continue
		}
		if _, ok := want[tp]; !ok {
			t.Errorf("kcat -L: unexpected output topic %s", tp)
		} else if np != partitions {
			t.Errorf("kcat -L: %s has %d partitions, want %d", tp, np, partitions)
		}
	}
	// The checkpoint topic has one record key per task.
	// (Values are msgpack, which may hold newlines: print keys only.)
	var cpKeys []string
	for key := range strings.Lines(string(interopRun(t, kcat, nil, "-C", "-b", brokers, "-t", "router-checkpoints", "-e", "-q", "-f", `%k\n`))) {
		if key = strings.TrimSuffix(key, "\n"); !slices.Contains(cpKeys, key) {
			cpKeys = append(cpKeys, key)
		}
	}
	slices.Sort(cpKeys)
	if wantKeys := []string{"task-0", "task-1", "task-2", "task-3", "task-4", "task-5", "task-6", "task-7"}; !slices.Equal(cpKeys, wantKeys) {
		t.Errorf("router-checkpoints keys %v, want %v", cpKeys, wantKeys)
	}

	// Every output, read with kcat, holds exactly the events the reference
	// sends there, unchanged (timestamp too), once each (a clean run), in
	// input order per key, and on the partition of the key's input.
	for tp, ids := range want {
		msgs := interopConsume(t, kcat, brokers, tp)
		byKey := map[string][]string{}
		var got []string
		for _, m := range msgs {
			id, err := eventID([]byte(m.value))
			if err != nil {
				t.Fatalf("%s: %v", tp, err)
			}
			if m.value != values[id] {
				t.Errorf("%s: %s is %q, want %q", tp, id, m.value, values[id])
			}
			if m.ts != at[id].ts {
				t.Errorf("%s: %s has timestamp %s, its input %s", tp, id, m.ts, at[id].ts)
			}
			if m.partition != keyPart[m.key] {
				t.Errorf("%s: %s (key %s) on partition %d, its input on %d", tp, id, m.key, m.partition, keyPart[m.key])
			}
			byKey[m.key] = append(byKey[m.key], id)
			got = append(got, id)
		}
		if !interopSameSet(got, ids) {
			t.Errorf("%s holds %d events, want %d; missing %v, unexpected or repeated %v", tp, len(got), len(ids), interopMinus(ids, got), interopMinus(got, ids))
			continue
		}
		// Per key, output order is input order.
		wantByKey := map[string][]string{}
		for _, id := range ids {
			wantByKey[keys[id]] = append(wantByKey[keys[id]], id)
		}
		for k, w := range wantByKey {
			if !slices.Equal(byKey[k], w) {
				t.Errorf("%s, key %s: order %v, want %v", tp, k, byKey[k], w)
			}
		}
	}

	// The dead-letter topic: the bad events, unchanged, with their origin
	// in Grete's headers.
	var gotDead []string
	for _, m := range interopConsumeJSON(t, kcat, brokers, "router-dlq") {
		id, err := eventID([]byte(m.Payload))
		if err != nil {
			t.Fatalf("router-dlq: %v", err)
		}
		gotDead = append(gotDead, id)
		if m.Payload != values[id] {
			t.Errorf("router-dlq: %s is %q, want %q", id, m.Payload, values[id])
		}
		h := map[string]string{}
		for i := 0; i+1 < len(m.Headers); i += 2 {
			h[m.Headers[i]] = m.Headers[i+1]
		}
		w := at[id]
		if m.Partition != keyPart[m.Key] {
			t.Errorf("router-dlq: %s (key %s) on partition %d, its input on %d", id, m.Key, m.Partition, keyPart[m.Key])
		}
		wantH := map[string]string{
			task.HeaderTopic:     input,
			task.HeaderPartition: strconv.Itoa(int(w.partition)),
			task.HeaderOffset:    strconv.FormatInt(w.offset, 10),
			task.HeaderTask:      "task-" + strconv.Itoa(int(w.partition)),
		}
		for k, v := range wantH {
			if h[k] != v {
				t.Errorf("router-dlq: %s header %s = %q, want %q (headers %v)", id, k, h[k], v, h)
			}
		}
		if !strings.Contains(h[task.HeaderError], routing.ErrNotObject.Error()) {
			t.Errorf("router-dlq: %s header %s = %q, want the cause", id, task.HeaderError, h[task.HeaderError])
		}
	}
	if !interopSameSet(gotDead, dead) {
		t.Errorf("router-dlq holds %v, want %v", gotDead, dead)
	}

	// kcat sees the group offsets too: after a few more events, a kcat
	// consumer in group "router" starting at the stored offsets reads
	// exactly those events and nothing the job had processed.
	var more bytes.Buffer
	var moreIDs []string
	for i := range 16 {
		id := fmt.Sprintf("late%d", i)
		moreIDs = append(moreIDs, id)
		fmt.Fprintf(&more, "u%d\t{\"id\":%q}\n", i, id)
	}
	interopRun(t, kcat, &more, "-P", "-b", brokers, "-t", input, "-K", `\t`, "-X", "partitioner=murmur2_random")
	var stored []string
	for _, m := range interopConsume(t, kcat, brokers, input, "-X", "group.id=router", "-X", "enable.auto.commit=false", "-o", "stored") {
		id, err := eventID([]byte(m.value))
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, id)
	}
	if !interopSameSet(stored, moreIDs) {
		t.Errorf("kcat -o stored in group router read %v, want only %v", stored, moreIDs)
	}
}

// interopKcat returns the path of kcat. Without it the test is skipped on
// a developer's machine but fails in CI, where it must be installed.
func interopKcat(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("kcat is required in CI (Debian package kcat): %v", err)
		}
		t.Skipf("kcat not installed (Debian package kcat): %v", err)
	}
	return path
}

// interopRun runs kcat with stdin, bounded, and returns its stdout; a
// failure fails the test with kcat's stderr.
func interopRun(t *testing.T, kcat string, stdin *bytes.Buffer, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// interopMsg is one record as kcat prints it with interopConsume's format.
type interopMsg struct {
	partition int32
	offset    int64
	ts        string // milliseconds, as kcat prints them
	key       string
	value     string
}

// interopConsume reads topic from the start (or where extra says) to its
// end with kcat.
func interopConsume(t *testing.T, kcat, brokers, topic string, extra ...string) []interopMsg {
	t.Helper()
	args := append([]string{"-C", "-b", brokers, "-t", topic, "-e", "-q", "-f", `%p\t%o\t%T\t%k\t%s\n`}, extra...)
	out := interopRun(t, kcat, nil, args...)
	var msgs []interopMsg
	for line := range strings.Lines(string(out)) {
		f := strings.SplitN(strings.TrimSuffix(line, "\n"), "\t", 5)
		if len(f) != 5 {
			t.Fatalf("kcat printed %q for %s", line, topic)
		}
		p, err1 := strconv.ParseInt(f[0], 10, 32)
		o, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("kcat printed %q for %s", line, topic)
		}
		msgs = append(msgs, interopMsg{partition: int32(p), offset: o, ts: f[2], key: f[3], value: f[4]})
	}
	return msgs
}

// interopEnvelope is a record in kcat's JSON envelope (-J).
type interopEnvelope struct {
	Partition int32    `json:"partition"`
	Offset    int64    `json:"offset"`
	Key       string   `json:"key"`
	Payload   string   `json:"payload"`
	Headers   []string `json:"headers"` // key, value, key, value...
}

// interopConsumeJSON reads topic with kcat's JSON envelope, which carries
// headers unambiguously (%h joins them with ',' and '=').
func interopConsumeJSON(t *testing.T, kcat, brokers, topic string) []interopEnvelope {
	t.Helper()
	out := interopRun(t, kcat, nil, "-C", "-b", brokers, "-t", topic, "-e", "-q", "-J")
	var msgs []interopEnvelope
	for line := range strings.Lines(string(out)) {
		var m interopEnvelope
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("kcat -J printed %q for %s: %v", line, topic, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// interopTopics lists the cluster's topics and their partition counts
// with kcat -L.
func interopTopics(t *testing.T, kcat, brokers string) map[string]int {
	t.Helper()
	out := interopRun(t, kcat, nil, "-L", "-b", brokers, "-J")
	var md struct {
		Topics []struct {
			Topic      string            `json:"topic"`
			Partitions []json.RawMessage `json:"partitions"`
		} `json:"topics"`
	}
	if err := json.Unmarshal(out, &md); err != nil {
		t.Fatalf("kcat -L -J printed %q: %v", out, err)
	}
	topics := map[string]int{}
	for _, tp := range md.Topics {
		topics[tp.Topic] = len(tp.Partitions)
	}
	return topics
}

// interopSameSet reports whether a and b hold the same strings the same
// number of times.
func interopSameSet(a, b []string) bool {
	return len(interopMinus(a, b)) == 0 && len(interopMinus(b, a)) == 0
}

// interopMinus returns a without b, counting repeats.
func interopMinus(a, b []string) []string {
	n := map[string]int{}
	for _, s := range b {
		n[s]++
	}
	var out []string
	for _, s := range a {
		if n[s] > 0 {
			n[s]--
			continue
		}
		out = append(out, s)
	}
	return out
}
