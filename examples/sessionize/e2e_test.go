package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grete-go/grete/examples/sessionize/internal/reference"
	"github.com/grete-go/grete/examples/sessionize/sessions"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The end-to-end tests run the job in-process on an embedded broker, read
// the output back with an independent client (kgo), and compare it with
// the reference.

const (
	e2eInput  = "events"
	e2eOutput = "sessions"
	e2eLate   = "late"
	e2eGap    = 30 * time.Second
	e2eGrace  = 10 * time.Second
)

// t0 is the event time the tests' generated traffic starts at.
var t0 = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC).UnixMilli()

// e2eTraffic is generated traffic that exercises everything within a few
// minutes of event time: sessions that close, merge and reopen, events out
// of order and late.
func e2eTraffic(seed uint64, n int) []sessions.Event {
	cfg := sessions.Traffic{Seed: seed, Gap: e2eGap, Grace: e2eGrace, Active: 750, Visitors: 5000, OutOfOrder: 0.1, Late: 0.01}
	return sessions.Simulate(cfg, n, time.UnixMilli(t0), 20*time.Millisecond)
}

// records turns events into input records keyed by visitor_id.
//
// Revenue is written in every spelling a JSON producer may use: 12.5 also
// as 12.50, 1.25e1 and 125E-1, and a missing revenue as 0 or 0.0
// sometimes. The job must sum them all exactly.
func records(t testing.TB, evs []sessions.Event) []*kgo.Record {
	t.Helper()
	recs := make([]*kgo.Record, len(evs))
	for i := range evs {
		v, err := json.Marshal(&evs[i])
		require.NoError(t, err)
		recs[i] = &kgo.Record{Key: []byte(evs[i].VisitorID), Value: respellRevenue(v, i)}
	}
	return recs
}

// respellRevenue rewrites the revenue of an encoded event in the k-th
// (mod 6) of its spellings.
func respellRevenue(v []byte, k int) []byte {
	s := string(v)
	i := strings.Index(s, `"revenue":`)
	if i < 0 {
		switch k % 6 {
		case 1:
			return []byte(strings.TrimSuffix(s, "}") + `,"revenue":0}`)
		case 2:
			return []byte(strings.TrimSuffix(s, "}") + `,"revenue":0.0}`)
		}
		return v
	}
	i += len(`"revenue":`)
	j := i + strings.IndexAny(s[i:], ",}")
	return []byte(s[:i] + spellNumber(s[i:j], k) + s[j:])
}

// spellNumber writes the decimal x (as Amount writes it) another way.
func spellNumber(x string, k int) string {
	whole, frac, _ := strings.Cut(x, ".")
	switch k % 6 {
	case 1: // trailing zeros
		if frac == "" {
			return x + ".0"
		}
		return x + "00"
	case 2: // all digits, negative exponent: 1299e-2
		d := strings.TrimLeft(whole+frac, "0")
		if d == "" {
			d = "0"
		}
		return fmt.Sprintf("%se-%d", d, len(frac))
	case 3: // one digit before the point: 1.299e1
		d := whole + frac
		if strings.Trim(d, "0") == "" || strings.HasPrefix(whole, "0") || strings.HasPrefix(x, "-") {
			return x
		}
		return fmt.Sprintf("%s.%s0E+%d", d[:1], d[1:], len(whole)-1)
	}
	return x
}

// refInputs are the produced records as the reference reads them: kgo
// has set the partition and offset of each.
func refInputs(recs []*kgo.Record) []reference.Input {
	in := make([]reference.Input, len(recs))
	for i, r := range recs {
		in[i] = reference.Input{Partition: r.Partition, Offset: r.Offset, Value: r.Value}
	}
	return in
}

// readOutputs reads the snapshot topic and the values of the late topic.
func readOutputs(t testing.TB, addrs []string, output, late string) ([]reference.Output, [][]byte) {
	t.Helper()
	var outs []reference.Output
	var lates [][]byte
	for _, r := range testkit.ReadAll(t, addrs, 2*time.Minute, output, late) {
		if r.Topic == late {
			lates = append(lates, r.Value)
			continue
		}
		outs = append(outs, reference.Output{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value})
	}
	return outs, lates
}

func e2eJob(addrs []string, dir string, window time.Duration, stats *sessions.Stats) *task.Job {
	return sessions.NewJob(sessions.Config{
		Settings:       sessions.Settings{Output: e2eOutput, LateTopic: e2eLate, Gap: e2eGap, Grace: e2eGrace},
		Name:           "sessionize",
		Kafka:          stream.KafkaConfig{Brokers: addrs},
		Input:          e2eInput,
		Window:         window,
		CommitInterval: 200 * time.Millisecond,
		DataDir:        dir,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, stats)
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

// waitWindowAfter waits until the job has processed n events and every
// task has then run its Window: every session changed by the input has had
// its snapshot sent.
func waitWindowAfter(t *testing.T, job *task.Job, n uint64) {
	t.Helper()
	testkit.Eventually(t, 2*time.Minute, func() bool {
		var in uint64
		for _, s := range job.Stats() {
			in += s.Processed + s.Skipped + s.DeadLettered
		}
		return in == n
	}, "the job did not process all %d events", n)
	// A Window call that is under way now started after the last Process,
	// since a task makes one call at a time: any call that ends from now
	// on will do.
	var calls []uint64
	for _, s := range job.Stats() {
		calls = append(calls, s.WindowCalls)
	}
	testkit.Eventually(t, time.Minute, func() bool {
		ts := job.Stats()
		for i, s := range ts {
			if s.WindowCalls <= calls[i] {
				return false
			}
		}
		return len(ts) == len(calls)
	}, "not every task ran its Window after the input")
}

func TestEndToEnd20kEvents(t *testing.T) {
	const n, partitions = 20_000, 8
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, e2eInput, partitions, nil)
	recs := records(t, e2eTraffic(7, n))
	testkit.Produce(t, addrs, e2eInput, recs)
	ref, err := reference.Sessionize(refInputs(recs), e2eGap.Milliseconds(), e2eGrace.Milliseconds())
	require.NoError(t, err)

	stats := &sessions.Stats{}
	job := e2eJob(addrs, t.TempDir(), 200*time.Millisecond, stats)
	stop := e2eStart(t, job)
	waitWindowAfter(t, job, n)
	tot := stats.Totals()
	require.NoError(t, stop())

	outs, lates := readOutputs(t, addrs, e2eOutput, e2eLate)
	res := reference.VerifySnapshots(t, outs, ref, true)
	reference.VerifyLate(t, lates, ref, true)
	require.Equal(t, uint64(len(ref.Late)), tot.Late)
	t.Logf("%d events: %d sessions (%d closed, %d merges, %d keys with several sessions), %d late; %d snapshots",
		n, res.Sessions, res.Finals, tot.Merged, res.MultiKeys, len(ref.Late), res.Snapshots)
	require.NotZero(t, res.Finals)
	require.NotZero(t, tot.Merged)
	require.NotEmpty(t, ref.Late)
	require.Less(t, res.Finals, res.Sessions, "some sessions are still open at the end")

	// The outputs are ordinary delete-policy topics.
	adm := kadm.NewClient(testkit.Client(t, addrs))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfgs, err := adm.DescribeTopicConfigs(ctx, e2eOutput, e2eLate)
	require.NoError(t, err)
	for _, rc := range cfgs {
		require.NoError(t, rc.Err)
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" {
				require.Equal(t, "delete", c.MaybeValue(), "%s", rc.Name)
			}
		}
	}
}

// TestSnapshotsAfterRestart stops the job before any Window ran: the
// sessions changed by then are emitted by the next run, from the changes
// the store tracked, and not from the input, which the restart does not
// reprocess.
func TestSnapshotsAfterRestart(t *testing.T) {
	const n, partitions = 5000, 4
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, e2eInput, partitions, nil)
	recs := records(t, e2eTraffic(8, n))
	testkit.Produce(t, addrs, e2eInput, recs)
	ref, err := reference.Sessionize(refInputs(recs), e2eGap.Milliseconds(), e2eGrace.Milliseconds())
	require.NoError(t, err)
	dir := t.TempDir()

	// First run: no Window within the test's time.
	stats := &sessions.Stats{}
	job := e2eJob(addrs, dir, time.Hour, stats)
	stop := e2eStart(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return stats.Totals().Added+stats.Totals().Late == n },
		"the first run did not process all %d events", n)
	first := stats.Totals()
	require.NoError(t, stop())
	require.Equal(t, first.Snapshots, first.Finals, "only finals before the first Window")

	// Second run: nothing to reprocess, yet every open session is emitted.
	stats = &sessions.Stats{}
	job = e2eJob(addrs, dir, 200*time.Millisecond, stats)
	stop = e2eStart(t, job)
	testkit.Eventually(t, time.Minute, func() bool {
		ts := job.Stats()
		for _, s := range ts {
			if s.WindowCalls == 0 {
				return false
			}
		}
		return len(ts) == partitions
	}, "the second run's tasks did not run their Window")
	second := stats.Totals()
	require.NoError(t, stop())
	require.Zero(t, second.Added+second.Late, "the restart reprocessed input")
	require.Equal(t, first.Open, int(second.Snapshots), "every open session is emitted once")

	outs, lates := readOutputs(t, addrs, e2eOutput, e2eLate)
	reference.VerifySnapshots(t, outs, ref, true)
	reference.VerifyLate(t, lates, ref, true)
}
