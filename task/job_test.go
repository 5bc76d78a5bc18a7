package task_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// copyTask copies every message to "out" with the same key, upper-casing
// nothing: outputs are checkable byte for byte.
type copyTask struct{ out string }

func (c *copyTask) Process(_ context.Context, m stream.Message, out task.Collector, _ task.Coordinator) error {
	return out.Send(stream.Outgoing{Topic: c.out, Key: m.Key, Value: m.Value})
}

func records(n int) []*kgo.Record {
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Key: []byte("k" + strconv.Itoa(i%97)), Value: []byte(strconv.Itoa(i))}
	}
	return recs
}

func TestCopyJobDeliversEverythingAndCheckpoints(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "in", 4, nil)
	testkit.CreateTopic(t, b.Addrs(), "out", 4, nil)
	const n = 20000
	testkit.Produce(t, b.Addrs(), "in", records(n))

	cps := checkpoint.NewMemory()
	job := &task.Job{
		Name: "copy", Kafka: stream.KafkaConfig{Brokers: b.Addrs()}, Inputs: []string{"in"},
		NewTask:     func() task.StreamTask { return &copyTask{out: "out"} },
		Checkpoints: cps, Logger: quiet(), CommitInterval: 100 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	testkit.Eventually(t, time.Minute, func() bool {
		var sum uint64
		for _, s := range job.Stats() {
			sum += s.Processed
		}
		return sum == n
	}, "job did not process %d messages", n)
	cancel()
	require.NoError(t, <-done)

	got := testkit.ReadAll(t, b.Addrs(), time.Minute, "out")
	require.Len(t, got, n)
	// Per key order is preserved: values of one key increase.
	last := map[string]int{}
	for _, r := range got {
		v, _ := strconv.Atoi(string(r.Value))
		if prev, ok := last[string(r.Key)]; ok {
			require.Greater(t, v, prev, "key %s out of order", r.Key)
		}
		last[string(r.Key)] = v
	}
	// The final checkpoints cover every input message.
	total := int64(0)
	for i := range 4 {
		cp, ok, err := cps.Load(context.Background(), fmt.Sprintf("task-%d", i))
		require.NoError(t, err)
		require.True(t, ok)
		total += cp.Inputs[stream.Partition{Topic: "in", Partition: int32(i)}]
	}
	require.EqualValues(t, n, total)
}

func TestInputsNotCopartitioned(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "a", 4, nil)
	testkit.CreateTopic(t, b.Addrs(), "b", 3, nil)
	job := &task.Job{
		Name: "cop", Kafka: stream.KafkaConfig{Brokers: b.Addrs()}, Inputs: []string{"a", "b"},
		NewTask: func() task.StreamTask { return &copyTask{out: "out"} }, Logger: quiet(),
	}
	err := job.Run(context.Background())
	require.ErrorContains(t, err, "not co-partitioned")
	require.False(t, errors.Is(err, context.Canceled))
}
