package task_test

import (
	"testing"
	"time"

	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A cluster unreachable for longer than CommitTimeout ends Run with an
// error that says so (task.ErrUnreachable) and since when; run again once
// the cluster is back, the job resumes from its checkpoints with its state
// exact: every message counted once.
func TestOutageLongerThanCommitTimeoutEndsRunAndARestartRecovers(t *testing.T) {
	br := testkit.RestartableBroker(t)
	addrs := br.Addrs()
	testkit.CreateTopic(t, addrs, "in", 4, nil)
	first, second := records(3000), records(6000)[3000:]
	testkit.Produce(t, addrs, "in", first)
	sink := newSink()
	dir := t.TempDir()
	mk := func() *task.Job {
		return &task.Job{
			Name: "outage", Kafka: stream.KafkaConfig{Brokers: addrs}, Inputs: []string{"in"},
			NewTask: func() task.StreamTask { return &counter{sink: sink} },
			Stores:  []store.Spec{{Name: "counts"}}, DataDir: dir, Logger: quiet(),
			CommitInterval: 100 * time.Millisecond, CommitTimeout: 4 * time.Second, SessionTimeout: 6 * time.Second,
			ShutdownTimeout: 2 * time.Second,
		}
	}
	job := mk()
	_, done := start(t, job)
	testkit.Eventually(t, time.Minute, func() bool { return running(job, 4) && total(job, processed) == uint64(len(first)) }, "the job did not process the input")
	stopped := time.Now()
	br.Stop()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("Run did not end while the cluster was unreachable")
	}
	took := time.Since(stopped)
	require.ErrorIs(t, err, task.ErrUnreachable)
	require.ErrorContains(t, err, "unreachable since")
	require.Less(t, took, 4*time.Second+6*time.Second+10*time.Second, "Run waited far longer than CommitTimeout")
	t.Logf("Run ended %s after the broker stopped: %v", took.Round(time.Millisecond), err)

	// Back: produce more and run again; the counts are exact.
	br.Start()
	testkit.Produce(t, addrs, "in", second)
	all := append(append([]*kgo.Record(nil), first...), second...)
	job = mk()
	runUntilCounted(t, job, sink, expectedCounts(all))
}

// runUntilCounted runs job until it has checkpointed its whole input,
// stops it, and compares the counts its tasks held at Close with want.
func runUntilCounted(t *testing.T, job *task.Job, sink *stateSink, want map[string]int64) {
	t.Helper()
	stop, _ := start(t, job)
	adm := kadm.NewClient(testkit.Client(t, job.Kafka.Brokers))
	testkit.WaitCaughtUp(t, adm, job.Name, "in", 4, time.Minute, func() {})
	require.NoError(t, stop())
	sink.mu.Lock()
	got := merged(sink.state)
	sink.mu.Unlock()
	require.Equal(t, want, got, "after the outage and the restart, every message is counted exactly once")
}
