package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/grete-go/grete/examples/router/routing"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/stretchr/testify/require"
)

// The bad-input tests feed the router 1% of events that are not JSON and
// check each error policy against the input as read back: the tests know
// the partition and offset of every malformed event.

const (
	badEvents     = 20_000
	badPartitions = 8
)

// badSetup starts a broker, produces the events (seed picks them), and
// returns the broker's addresses and the input as read back.
func badSetup(t *testing.T, seed uint64) ([]string, map[string]*e2eEvent) {
	t.Helper()
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, e2eInput, badPartitions, nil)
	testkit.Produce(t, addrs, e2eInput, testEvents(rand.New(rand.NewPCG(seed, 1)), badEvents, 500, 0.01))
	events := e2eReadInput(t, addrs, e2eInput)
	require.Len(t, events, badEvents)
	// 1% of 20k: make sure the data is what the test is about.
	require.Greater(t, e2eCountDead(events), badEvents/200, "too few malformed events to test with")
	return addrs, events
}

// badFirst returns the offset of the first malformed event of every
// partition that has one.
func badFirst(events map[string]*e2eEvent) map[int32]int64 {
	first := map[int32]int64{}
	for _, ev := range events {
		if !ev.dead {
			continue
		}
		if off, ok := first[ev.rec.Partition]; !ok || ev.rec.Offset < off {
			first[ev.rec.Partition] = ev.rec.Offset
		}
	}
	return first
}

// badProcessErrors returns every *task.ProcessError in err's tree: several
// tasks may fail before the job stops.
func badProcessErrors(err error) []*task.ProcessError {
	var out []*task.ProcessError
	var walk func(error)
	walk = func(err error) {
		if pe, ok := err.(*task.ProcessError); ok {
			out = append(out, pe)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

func TestBadInputFailStopsAtTheFirstMalformedEvent(t *testing.T) {
	addrs, events := badSetup(t, 11)
	first := badFirst(events)
	t.Logf("first malformed offset per partition: %v", first)

	job := e2eJob(addrs, "router", task.Fail)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := job.Run(ctx)
	require.Error(t, err, "the job read malformed events under Fail, yet Run returned nil")
	require.NoError(t, ctx.Err(), "the job did not stop by itself")

	var pe *task.ProcessError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, routing.ErrNotObject)
	require.ErrorContains(t, err, fmt.Sprintf("%s/%d offset %d", e2eInput, pe.Partition, pe.Offset),
		"the error does not name the malformed event's position")

	// Every task that failed stopped at the first malformed event of its
	// partition, and checkpointed up to it: a restart begins with it.
	cps := e2eCheckpoints(t, addrs, "router", badPartitions)
	failed := map[int32]bool{}
	for _, pe := range badProcessErrors(err) {
		want, ok := first[pe.Partition]
		require.True(t, ok, "task %s failed on partition %d, which has no malformed event: %v", pe.Task, pe.Partition, pe)
		require.Equal(t, e2eInput, pe.Topic)
		require.Equal(t, want, pe.Offset, "task %s failed past the first malformed event of partition %d", pe.Task, pe.Partition)
		require.Equal(t, fmt.Sprintf("task-%d", pe.Partition), pe.Task)
		require.ErrorIs(t, pe, routing.ErrNotObject)
		var de *stream.DecodeError
		require.ErrorAs(t, pe, &de)
		cp, ok := cps[pe.Partition]
		require.True(t, ok, "failed task %s wrote no checkpoint", pe.Task)
		p := stream.Partition{Topic: e2eInput, Partition: pe.Partition}
		require.Equal(t, pe.Offset, cp.Inputs[p], "checkpoint of failed task %s", pe.Task)
		failed[pe.Partition] = true
	}
	require.True(t, failed[pe.Partition])

	// The others stopped gracefully, never past their first malformed
	// event. One stopped before its first event has no checkpoint: it
	// resumes at the start of the log, offset 0.
	done := map[int32]int64{}
	for i := range int32(badPartitions) {
		cp, ok := cps[i]
		if !ok {
			require.False(t, failed[i])
			continue
		}
		p := stream.Partition{Topic: e2eInput, Partition: i}
		off, ok := cp.Inputs[p]
		require.True(t, ok, "checkpoint of task-%d lacks %s", i, p)
		if bad, ok := first[i]; ok {
			require.LessOrEqual(t, off, bad, "task-%d went past the malformed event at offset %d", i, bad)
		}
		done[i] = off
	}

	// What the checkpoints cover was routed, exactly once, and nothing
	// else was: outputs are acknowledged before a checkpoint moves.
	covered := map[string]*e2eEvent{}
	for id, ev := range events {
		if ev.rec.Offset < done[ev.rec.Partition] {
			require.False(t, ev.dead, "event %s is malformed but before the checkpoint", id)
			covered[id] = ev
		}
	}
	require.Positive(t, e2eCheckOutputs(t, addrs, e2eInput, "", covered).routed)
}

func TestBadInputDeadLetterMovesExactlyTheMalformed(t *testing.T) {
	addrs, events := badSetup(t, 12)
	malformed := e2eCountDead(events)

	job := e2eJob(addrs, "router", task.DeadLetter)
	stop := e2eStart(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return e2eHandled(job).all() == badEvents },
		"the job did not handle all %d events", badEvents)
	h := e2eHandled(job)
	require.NoError(t, stop())
	require.EqualValues(t, malformed, h.dead, "dead-lettered count")
	require.EqualValues(t, badEvents-malformed, h.processed)
	require.Zero(t, h.skipped)

	// The DLQ holds exactly the malformed events, once each, with headers
	// naming where they came from; all the others are routed.
	tally := e2eCheckOutputs(t, addrs, e2eInput, "router-dlq", events)
	require.Equal(t, malformed, tally.dead)
	require.Positive(t, tally.routed)
	e2eCheckCheckpoints(t, addrs, "router", e2eInput, badPartitions)
}

func TestBadInputSkipCountsTheMalformed(t *testing.T) {
	addrs, events := badSetup(t, 13)
	malformed := e2eCountDead(events)

	job := e2eJob(addrs, "router", task.Skip)
	stop := e2eStart(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return e2eHandled(job).all() == badEvents },
		"the job did not handle all %d events", badEvents)
	h := e2eHandled(job)
	require.NoError(t, stop())
	require.EqualValues(t, malformed, h.skipped, "skipped count")
	require.EqualValues(t, badEvents-malformed, h.processed)
	require.Zero(t, h.dead)

	// Skipped events are nowhere (no DLQ topic either); the others are
	// routed; the checkpoints move past the skipped ones.
	require.Positive(t, e2eCheckOutputs(t, addrs, e2eInput, "", events).routed)
	e2eCheckCheckpoints(t, addrs, "router", e2eInput, badPartitions)
}
