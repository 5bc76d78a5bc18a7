package checkpoint_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vmihailenco/msgpack/v5"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newKafka opens a Kafka manager for job and closes it at cleanup.
func newKafka(t *testing.T, addrs []string, job string, opts checkpoint.KafkaOptions) *checkpoint.Kafka {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet()
	}
	k, err := checkpoint.NewKafka(context.Background(), stream.KafkaConfig{Brokers: addrs}, job, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, k.Close()) })
	return k
}

func ckp(task string, id uint64, inputs map[stream.Partition]int64) checkpoint.Checkpoint {
	return checkpoint.Checkpoint{
		ID: id, Task: task, Inputs: inputs,
		Changelogs: map[string]int64{"store": int64(id) * 10},
		WrittenAt:  time.UnixMilli(1_700_000_000_000 + int64(id)),
	}
}

func load(t *testing.T, m checkpoint.Manager, task string) (checkpoint.Checkpoint, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, ok, err := m.Load(ctx, task)
	require.NoError(t, err)
	return c, ok
}

func write(t *testing.T, m checkpoint.Manager, c checkpoint.Checkpoint) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, m.Write(ctx, c))
}

func TestKafkaRefusesEmptyJob(t *testing.T) {
	_, err := checkpoint.NewKafka(context.Background(), stream.KafkaConfig{Brokers: []string{"127.0.0.1:1"}}, "", checkpoint.KafkaOptions{})
	require.ErrorContains(t, err, "job name is empty")
	_, err = checkpoint.NewKafka(context.Background(), stream.KafkaConfig{}, "job", checkpoint.KafkaOptions{})
	require.ErrorContains(t, err, "no brokers")
}

func TestKafkaCreatesCompactedTopic(t *testing.T) {
	b := testkit.Broker(t)
	k := newKafka(t, b.Addrs(), "jobx", checkpoint.KafkaOptions{})
	require.Equal(t, "jobx-checkpoints", k.Topic())

	adm := kadm.NewClient(testkit.Client(t, b.Addrs()))
	ctx := context.Background()
	td, err := adm.ListTopics(ctx, "jobx-checkpoints")
	require.NoError(t, err)
	require.NoError(t, td.Error())
	require.Len(t, td["jobx-checkpoints"].Partitions, 1)
	require.Equal(t, "compact", topicConfig(t, adm, "jobx-checkpoints", "cleanup.policy"))

	k2 := newKafka(t, b.Addrs(), "jobx", checkpoint.KafkaOptions{Topic: "elsewhere"})
	require.Equal(t, "elsewhere", k2.Topic())
	require.Equal(t, "compact", topicConfig(t, adm, "elsewhere", "cleanup.policy"))
}

func topicConfig(t *testing.T, adm *kadm.Client, topic, name string) string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(context.Background(), topic)
	require.NoError(t, err)
	rc, err := rcs.On(topic, nil)
	require.NoError(t, err)
	require.NoError(t, rc.Err)
	for _, c := range rc.Configs {
		if c.Key == name {
			return c.MaybeValue()
		}
	}
	t.Fatalf("topic %s has no config %s", topic, name)
	return ""
}

func TestKafkaLoadMissingTask(t *testing.T) {
	b := testkit.Broker(t)
	k := newKafka(t, b.Addrs(), "empty", checkpoint.KafkaOptions{})
	_, ok := load(t, k, "task-0")
	require.False(t, ok)

	write(t, k, ckp("task-1", 1, nil))
	_, ok = load(t, newKafka(t, b.Addrs(), "empty", checkpoint.KafkaOptions{}), "task-0")
	require.False(t, ok, "another task's checkpoint is not this one's")
}

func TestKafkaWriteThenLoad(t *testing.T) {
	b := testkit.Broker(t)
	in := map[stream.Partition]int64{{Topic: "in", Partition: 0}: 15, {Topic: "rules", Partition: 2}: 4}
	cp := ckp("task-0", 1, in)

	k := newKafka(t, b.Addrs(), "wl", checkpoint.KafkaOptions{})
	write(t, k, cp)
	got, ok := load(t, k, "task-0")
	require.True(t, ok)
	sameCheckpoint(t, cp, got)

	// Another process, starting fresh, reads it from the topic.
	other := newKafka(t, b.Addrs(), "wl", checkpoint.KafkaOptions{})
	got, ok = load(t, other, "task-0")
	require.True(t, ok)
	sameCheckpoint(t, cp, got)

	// The record in the topic is keyed by task and decodes on its own.
	recs := testkit.ReadAll(t, b.Addrs(), 30*time.Second, "wl-checkpoints")
	require.Len(t, recs, 1)
	require.Equal(t, "task-0", string(recs[0].Key))
	dec, err := checkpoint.Decode(recs[0].Value)
	require.NoError(t, err)
	sameCheckpoint(t, cp, dec)
}

func TestKafkaLastWriteWinsPerTask(t *testing.T) {
	b := testkit.Broker(t)
	k := newKafka(t, b.Addrs(), "lww", checkpoint.KafkaOptions{})
	p0, p1 := stream.Partition{Topic: "in", Partition: 0}, stream.Partition{Topic: "in", Partition: 1}
	write(t, k, ckp("task-0", 1, map[stream.Partition]int64{p0: 10}))
	write(t, k, ckp("task-1", 1, map[stream.Partition]int64{p1: 5}))
	write(t, k, ckp("task-0", 2, map[stream.Partition]int64{p0: 20}))
	write(t, k, ckp("task-0", 3, map[stream.Partition]int64{p0: 30}))

	for name, m := range map[string]checkpoint.Manager{
		"same manager":  k,
		"fresh manager": newKafka(t, b.Addrs(), "lww", checkpoint.KafkaOptions{}),
	} {
		t.Run(name, func(t *testing.T) {
			got, ok := load(t, m, "task-0")
			require.True(t, ok)
			sameCheckpoint(t, ckp("task-0", 3, map[stream.Partition]int64{p0: 30}), got)
			got, ok = load(t, m, "task-1")
			require.True(t, ok)
			sameCheckpoint(t, ckp("task-1", 1, map[stream.Partition]int64{p1: 5}), got)
		})
	}
}

func TestKafkaLoadSeesOtherProcessesWrites(t *testing.T) {
	b := testkit.Broker(t)
	reader := newKafka(t, b.Addrs(), "multi", checkpoint.KafkaOptions{})
	writer := newKafka(t, b.Addrs(), "multi", checkpoint.KafkaOptions{})
	p := stream.Partition{Topic: "in"}

	write(t, writer, ckp("task-0", 1, map[stream.Partition]int64{p: 1}))
	got, ok := load(t, reader, "task-0")
	require.True(t, ok)
	require.EqualValues(t, 1, got.ID)

	// The reader has caught up once; a later Load reads what came since.
	write(t, writer, ckp("task-0", 2, map[stream.Partition]int64{p: 2}))
	got, ok = load(t, reader, "task-0")
	require.True(t, ok)
	require.EqualValues(t, 2, got.ID)
}

func TestKafkaTombstoneRemovesCheckpoint(t *testing.T) {
	b := testkit.Broker(t)
	k := newKafka(t, b.Addrs(), "tomb", checkpoint.KafkaOptions{})
	write(t, k, ckp("task-0", 1, nil))
	write(t, k, ckp("task-1", 1, nil))
	testkit.Produce(t, b.Addrs(), "tomb-checkpoints", []*kgo.Record{{Key: []byte("task-0"), Value: nil}})

	fresh := newKafka(t, b.Addrs(), "tomb", checkpoint.KafkaOptions{})
	_, ok := load(t, fresh, "task-0")
	require.False(t, ok, "a tombstone deletes the task's checkpoint")
	_, ok = load(t, fresh, "task-1")
	require.True(t, ok)
	_, ok = load(t, k, "task-0")
	require.False(t, ok, "a manager that wrote the checkpoint sees the tombstone too")
}

func TestKafkaRefusesNewerRecordVersion(t *testing.T) {
	b := testkit.Broker(t)
	k := newKafka(t, b.Addrs(), "future", checkpoint.KafkaOptions{})
	future, err := msgpack.Marshal(map[string]any{
		"version": checkpoint.Version + 1, "id": 7, "task": "task-0",
		"inputs": map[string]int64{"in/0": 100}, "written_at": int64(1),
	})
	require.NoError(t, err)
	testkit.Produce(t, b.Addrs(), k.Topic(), []*kgo.Record{{Key: []byte("task-0"), Value: future}})

	_, _, err = k.Load(context.Background(), "task-0")
	require.ErrorIs(t, err, checkpoint.ErrUnsupportedVersion)
	require.ErrorContains(t, err, `task "task-0"`)
}

func TestKafkaMirrorsInputOffsetsToGroup(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "clicks", 2, nil)
	testkit.CreateTopic(t, b.Addrs(), "rules", 1, nil)
	var logs bytes.Buffer
	k := newKafka(t, b.Addrs(), "mirror", checkpoint.KafkaOptions{Mirror: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c0, c1, rules := stream.Partition{Topic: "clicks", Partition: 0}, stream.Partition{Topic: "clicks", Partition: 1}, stream.Partition{Topic: "rules"}
	adm := kadm.NewClient(testkit.Client(t, b.Addrs()))

	// Task 0 reads clicks/0 and the broadcast rules/0.
	write(t, k, ckp("task-0", 1, map[stream.Partition]int64{c0: 10, rules: 5}))
	require.Equal(t, map[stream.Partition]int64{c0: 10, rules: 5}, groupOffsets(t, adm, "mirror"))

	// Task 1 is behind on rules/0: the group shows the smaller offset.
	write(t, k, ckp("task-1", 1, map[stream.Partition]int64{c1: 20, rules: 3}))
	require.Equal(t, map[stream.Partition]int64{c0: 10, c1: 20, rules: 3}, groupOffsets(t, adm, "mirror"))

	// Once task 1 passes task 0, task 0 is the one furthest behind.
	write(t, k, ckp("task-1", 2, map[stream.Partition]int64{c1: 25, rules: 8}))
	require.Equal(t, map[stream.Partition]int64{c0: 10, c1: 25, rules: 5}, groupOffsets(t, adm, "mirror"))
	require.NotContains(t, logs.String(), "mirroring checkpoint to consumer group failed")

	// A manager that loaded the checkpoints (a restarted process) knows
	// every task's position, so it does not move the group past task 0.
	k2 := newKafka(t, b.Addrs(), "mirror", checkpoint.KafkaOptions{Mirror: true})
	for _, task := range []string{"task-0", "task-1"} {
		_, ok := load(t, k2, task)
		require.True(t, ok)
	}
	write(t, k2, ckp("task-1", 3, map[stream.Partition]int64{c1: 30, rules: 9}))
	require.Equal(t, map[stream.Partition]int64{c0: 10, c1: 30, rules: 5}, groupOffsets(t, adm, "mirror"))
}

func TestKafkaMirrorsToChosenGroup(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "in", 1, nil)
	k := newKafka(t, b.Addrs(), "job", checkpoint.KafkaOptions{Mirror: true, Group: "lag-group"})
	p := stream.Partition{Topic: "in"}
	write(t, k, ckp("task-0", 1, map[stream.Partition]int64{p: 42}))
	adm := kadm.NewClient(testkit.Client(t, b.Addrs()))
	require.Equal(t, map[stream.Partition]int64{p: 42}, groupOffsets(t, adm, "lag-group"))
	require.Empty(t, groupOffsetsOrNone(t, adm, "job"), "the job's own group is left alone")
}

func TestKafkaMirrorsOnlyWhenAsked(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "in", 1, nil)
	k := newKafka(t, b.Addrs(), "nm", checkpoint.KafkaOptions{})
	write(t, k, ckp("task-0", 1, map[stream.Partition]int64{{Topic: "in"}: 42}))
	adm := kadm.NewClient(testkit.Client(t, b.Addrs()))
	require.Empty(t, groupOffsetsOrNone(t, adm, "nm"))
}

// groupOffsets reads the committed offsets of group with franz-go, a
// client independent of the sarama one the manager uses.
func groupOffsets(t *testing.T, adm *kadm.Client, group string) map[stream.Partition]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.FetchOffsets(ctx, group)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	out := map[stream.Partition]int64{}
	resp.Each(func(o kadm.OffsetResponse) {
		out[stream.Partition{Topic: o.Topic, Partition: o.Partition}] = o.At
	})
	return out
}

// groupOffsetsOrNone is groupOffsets for a group that may never have
// committed: kfake answers an offset fetch for an unknown group with an
// error where Kafka returns no offsets.
func groupOffsetsOrNone(t *testing.T, adm *kadm.Client, group string) map[stream.Partition]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return nil
	}
	out := map[stream.Partition]int64{}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At >= 0 {
			out[stream.Partition{Topic: o.Topic, Partition: o.Partition}] = o.At
		}
	})
	return out
}

func TestKafkaRefusesTopicThatIsNotCompacted(t *testing.T) {
	b := testkit.Broker(t)
	del := "delete"
	testkit.CreateTopic(t, b.Addrs(), "strict-checkpoints", 1, map[string]*string{"cleanup.policy": &del})
	_, err := checkpoint.NewKafka(context.Background(), stream.KafkaConfig{Brokers: b.Addrs()}, "strict", checkpoint.KafkaOptions{Logger: quiet()})
	require.Error(t, err)
	require.ErrorContains(t, err, `"strict-checkpoints"`)
	require.ErrorContains(t, err, "cleanup.policy=delete")
	require.ErrorContains(t, err, "must be exactly compact")
}

func TestKafkaAcceptsExistingCompactedTopic(t *testing.T) {
	b := testkit.Broker(t)
	policy := "compact"
	testkit.CreateTopic(t, b.Addrs(), "ok-checkpoints", 1, map[string]*string{"cleanup.policy": &policy})
	testkit.Produce(t, b.Addrs(), "ok-checkpoints", []*kgo.Record{{Key: []byte("task-1"), Value: mustEncode(t, ckp("task-1", 4, map[stream.Partition]int64{{Topic: "in", Partition: 1}: 8}))}})
	k := newKafka(t, b.Addrs(), "ok", checkpoint.KafkaOptions{})
	write(t, k, ckp("task-0", 1, nil))
	_, ok := load(t, k, "task-0")
	require.True(t, ok)
	got, ok := load(t, k, "task-1")
	require.True(t, ok, "checkpoints already in the topic are kept")
	sameCheckpoint(t, ckp("task-1", 4, map[stream.Partition]int64{{Topic: "in", Partition: 1}: 8}), got)
}

func mustEncode(t *testing.T, c checkpoint.Checkpoint) []byte {
	t.Helper()
	b, err := checkpoint.Encode(c)
	require.NoError(t, err)
	return b
}

func TestKafkaSurvivesCompaction(t *testing.T) {
	b := testkit.Broker(t)
	k := newKafka(t, b.Addrs(), "compacted", checkpoint.KafkaOptions{})
	const tasks, rounds = 3, 40
	want := map[string]checkpoint.Checkpoint{}
	for id := uint64(1); id <= rounds; id++ {
		for i := range tasks {
			name := fmt.Sprintf("task-%d", i)
			c := ckp(name, id, map[stream.Partition]int64{{Topic: "in", Partition: int32(i)}: int64(id) * 100})
			write(t, k, c)
			want[name] = c
		}
	}
	before := testkit.ReadAll(t, b.Addrs(), 30*time.Second, k.Topic())
	require.Len(t, before, tasks*rounds)

	b.Cluster.Compact()

	after := testkit.ReadAll(t, b.Addrs(), 30*time.Second, k.Topic())
	require.Less(t, len(after), len(before), "compaction removed superseded checkpoints")
	require.Greater(t, after[0].Offset, int64(0), "the log no longer starts at offset 0")

	fresh := newKafka(t, b.Addrs(), "compacted", checkpoint.KafkaOptions{})
	for name, c := range want {
		got, ok := load(t, fresh, name)
		require.True(t, ok, name)
		sameCheckpoint(t, c, got)
	}

	// Writing and loading go on after compaction.
	next := ckp("task-0", rounds+1, map[stream.Partition]int64{{Topic: "in"}: 1})
	write(t, fresh, next)
	got, ok := load(t, newKafka(t, b.Addrs(), "compacted", checkpoint.KafkaOptions{}), "task-0")
	require.True(t, ok)
	sameCheckpoint(t, next, got)
}

// A process loads checkpoints written by another one again and again
// (standbys follow their tasks' checkpoints every second, while tasks
// start): concurrent Loads, each reading what was written before it, never
// trip over each other's reads of the topic.
func TestKafkaLoadsConcurrentlyWhileCheckpointsAreWritten(t *testing.T) {
	b := testkit.Broker(t)
	writer := newKafka(t, b.Addrs(), "quick", checkpoint.KafkaOptions{})
	reader := newKafka(t, b.Addrs(), "quick", checkpoint.KafkaOptions{})
	const writes = 60
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Goroutines report with t.Errorf and stop: FailNow belongs to the
	// test's own goroutine.
	var written atomic.Uint64
	var failed atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for id := uint64(1); id <= writes && !failed.Load(); id++ {
			if err := writer.Write(ctx, ckp("task-0", id, nil)); err != nil {
				t.Errorf("write %d: %v", id, err)
				failed.Store(true)
				return
			}
			written.Store(id)
		}
	})
	for range 4 {
		wg.Go(func() {
			for !failed.Load() {
				before := written.Load()
				got, ok, err := reader.Load(ctx, "task-0")
				switch {
				case err != nil:
					t.Errorf("load: %v", err)
				case before > 0 && !ok:
					t.Errorf("no checkpoint after %d were written", before)
				case ok && got.ID < before:
					t.Errorf("loaded checkpoint %d after %d was written", got.ID, before)
				case before == writes:
					return
				default:
					continue
				}
				failed.Store(true)
				return
			}
		})
	}
	wg.Wait()
}
