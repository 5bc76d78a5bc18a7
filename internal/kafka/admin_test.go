package kafka

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func admin(t *testing.T, addrs []string) *kadm.Client {
	t.Helper()
	return kadm.NewClient(testkit.Client(t, addrs))
}

// describe returns the partition count and the cleanup.policy of topic as
// franz-go sees them.
func describe(t *testing.T, adm *kadm.Client, topic string) (int, string) {
	t.Helper()
	ctx := context.Background()
	td, err := adm.ListTopics(ctx, topic)
	require.NoError(t, err)
	require.NoError(t, td.Error())
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	require.NoError(t, err)
	rc, err := rcs.On(topic, nil)
	require.NoError(t, err)
	policy := ""
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" {
			policy = c.MaybeValue()
		}
	}
	return len(td[topic].Partitions), policy
}

func TestEnsureTopicCreates(t *testing.T) {
	b := testkit.Broker(t)
	conn := dial(t, b.Addrs())
	adm := admin(t, b.Addrs())

	require.NoError(t, conn.EnsureTopic(context.Background(), TopicSpec{Name: "changelog", Partitions: 3, Compact: true, Configs: map[string]string{"retention.ms": "1234"}}))
	n, policy := describe(t, adm, "changelog")
	require.Equal(t, 3, n)
	require.Equal(t, "compact", policy)
	rcs, err := adm.DescribeTopicConfigs(context.Background(), "changelog")
	require.NoError(t, err)
	rc, err := rcs.On("changelog", nil)
	require.NoError(t, err)
	found := false
	for _, c := range rc.Configs {
		if c.Key == "retention.ms" {
			found = true
			require.Equal(t, "1234", c.MaybeValue())
		}
	}
	require.True(t, found, "extra configs are applied")

	require.NoError(t, conn.EnsureTopic(context.Background(), TopicSpec{Name: "plain", Partitions: 2}))
	n, policy = describe(t, adm, "plain")
	require.Equal(t, 2, n)
	require.NotEqual(t, "compact", policy)

	// Ensuring again checks and accepts what it created.
	require.NoError(t, conn.EnsureTopic(context.Background(), TopicSpec{Name: "changelog", Partitions: 3, Compact: true, MinPartitions: 3}))
	parts, err := conn.Partitions(context.Background(), "changelog")
	require.NoError(t, err)
	require.EqualValues(t, 3, parts)
}

func TestEnsureTopicChecksExistingTopic(t *testing.T) {
	b := testkit.Broker(t)
	del, compact, both := "delete", "compact", "compact,delete"
	testkit.CreateTopic(t, b.Addrs(), "deleting", 4, map[string]*string{"cleanup.policy": &del})
	testkit.CreateTopic(t, b.Addrs(), "both", 1, map[string]*string{"cleanup.policy": &both})
	testkit.CreateTopic(t, b.Addrs(), "default-policy", 4, nil)
	testkit.CreateTopic(t, b.Addrs(), "compacted", 2, map[string]*string{"cleanup.policy": &compact})
	conn := dial(t, b.Addrs())

	tests := []struct {
		spec    TopicSpec
		wantErr string
	}{
		{TopicSpec{Name: "deleting", Partitions: 4, Compact: true}, `topic "deleting" has cleanup.policy=delete, must be exactly compact`},
		{TopicSpec{Name: "default-policy", Partitions: 4, Compact: true}, `topic "default-policy" has cleanup.policy=delete, must be exactly compact`},
		{TopicSpec{Name: "both", Partitions: 1, Compact: true}, `topic "both" has cleanup.policy=compact,delete, must be exactly compact`},
		{TopicSpec{Name: "deleting", Partitions: 4}, ""},
		{TopicSpec{Name: "compacted", Partitions: 2, Compact: true}, ""},
		{TopicSpec{Name: "compacted", Compact: true, MinPartitions: 2}, ""},
		{TopicSpec{Name: "compacted", Compact: true, MinPartitions: 3}, `topic "compacted" has 2 partitions, needs at least 3`},
		{TopicSpec{Name: "deleting", MinPartitions: 8}, `topic "deleting" has 4 partitions, needs at least 8`},
		// Partitions is what to create; an existing topic is held to
		// MinPartitions only.
		{TopicSpec{Name: "compacted", Partitions: 10, Compact: true}, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/compact=%v/min=%d", tt.spec.Name, tt.spec.Compact, tt.spec.MinPartitions), func(t *testing.T) {
			err := conn.EnsureTopic(context.Background(), tt.spec)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
	// Nothing was changed by the checks.
	adm := admin(t, b.Addrs())
	n, policy := describe(t, adm, "deleting")
	require.Equal(t, 4, n)
	require.Equal(t, "delete", policy)
}

func TestPartitionsOfMissingTopic(t *testing.T) {
	b := testkit.Broker(t)
	conn := dial(t, b.Addrs())
	_, err := conn.Partitions(context.Background(), "absent")
	require.ErrorContains(t, err, `topic "absent" does not exist`)
}

func TestCommitGroupOffsets(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "in", 3, nil)
	testkit.CreateTopic(t, b.Addrs(), "rules", 1, nil)
	conn := dial(t, b.Addrs())
	adm := admin(t, b.Addrs())

	require.NoError(t, conn.CommitGroupOffsets(context.Background(), "g", nil), "nothing to commit")

	first := map[stream.Partition]int64{{Topic: "in", Partition: 0}: 5, {Topic: "in", Partition: 2}: 17, {Topic: "rules"}: 0}
	require.NoError(t, conn.CommitGroupOffsets(context.Background(), "g", first))
	require.Equal(t, first, fetched(t, adm, "g"))

	// A later commit replaces the offsets it names and keeps the others.
	require.NoError(t, conn.CommitGroupOffsets(context.Background(), "g", map[stream.Partition]int64{{Topic: "in", Partition: 0}: 9}))
	require.Equal(t, map[stream.Partition]int64{{Topic: "in", Partition: 0}: 9, {Topic: "in", Partition: 2}: 17, {Topic: "rules"}: 0}, fetched(t, adm, "g"))

}

func fetched(t *testing.T, adm *kadm.Client, group string) map[stream.Partition]int64 {
	t.Helper()
	resp, err := adm.FetchOffsets(context.Background(), group)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	out := map[stream.Partition]int64{}
	resp.Each(func(o kadm.OffsetResponse) { out[stream.Partition{Topic: o.Topic, Partition: o.Partition}] = o.At })
	return out
}

func TestHighWatermark(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "hw", 2, nil)
	conn := dial(t, b.Addrs())
	p0, p1 := stream.Partition{Topic: "hw"}, stream.Partition{Topic: "hw", Partition: 1}
	hw, err := conn.HighWatermark(context.Background(), p0)
	require.NoError(t, err)
	require.Zero(t, hw)
	// testkit.Produce places records by key hash, which PartitionFor
	// reproduces: pick a key of partition 1.
	key := []byte("k0")
	for i := 1; PartitionFor(key, 2) != 1; i++ {
		key = fmt.Appendf(nil, "k%d", i)
	}
	testkit.Produce(t, b.Addrs(), "hw", []*kgo.Record{{Key: key}, {Key: key}, {Key: key}})
	hw, err = conn.HighWatermark(context.Background(), p1)
	require.NoError(t, err)
	require.EqualValues(t, 3, hw)
	hw, err = conn.HighWatermark(context.Background(), p0)
	require.NoError(t, err)
	require.Zero(t, hw)
}

func TestSubscribeDeliversInOrder(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "a", 2, nil)
	testkit.CreateTopic(t, b.Addrs(), "b", 1, nil)
	var recs []*kgo.Record
	for i := range 50 {
		recs = append(recs, &kgo.Record{Topic: "a", Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprint(i)),
			Headers: []kgo.RecordHeader{{Key: "n", Value: []byte(fmt.Sprint(i))}}})
	}
	for i := range 10 {
		recs = append(recs, &kgo.Record{Topic: "b", Value: []byte(fmt.Sprint(i))})
	}
	testkit.Produce(t, b.Addrs(), "a", recs)
	conn := dial(t, b.Addrs())

	out := make(chan stream.Message, 4) // smaller than the backlog: forwarding blocks
	sub, err := conn.Subscribe([]Input{
		{Partition: stream.Partition{Topic: "a", Partition: 0}, Offset: Oldest},
		{Partition: stream.Partition{Topic: "a", Partition: 1}, Offset: 10}, // an exact next offset
		{Partition: stream.Partition{Topic: "b"}, Offset: Newest},
	}, out, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	defer sub.Close()

	next := map[stream.Partition]int64{{Topic: "a"}: 0, {Topic: "a", Partition: 1}: 10}
	got := 0
	want := 50 - 10 // a/0 from the start, a/1 from offset 10, nothing old from b
	timeout := time.After(30 * time.Second)
	for got < want {
		select {
		case m := <-out:
			p := m.Position()
			require.Equal(t, next[p], m.Offset, "messages of %s in offset order with no gap", p)
			next[p]++
			h, ok := m.Header("n")
			require.True(t, ok)
			require.Equal(t, string(m.Value), string(h))
			require.False(t, m.Timestamp.IsZero())
			got++
		case <-timeout:
			t.Fatalf("received %d of %d messages", got, want)
		}
	}
	// "Newest" on b means only what is produced from now on.
	testkit.Produce(t, b.Addrs(), "b", []*kgo.Record{{Value: []byte("new")}})
	select {
	case m := <-out:
		require.Equal(t, "b", m.Topic)
		require.Equal(t, "new", string(m.Value))
		require.EqualValues(t, 10, m.Offset)
	case <-time.After(30 * time.Second):
		t.Fatal("the new message on b did not arrive")
	}
}

func TestSubscribeUnknownPartitionFails(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "one", 1, nil)
	conn := dial(t, b.Addrs())
	_, err := conn.Subscribe([]Input{
		{Partition: stream.Partition{Topic: "one"}, Offset: Oldest},
		{Partition: stream.Partition{Topic: "one", Partition: 5}, Offset: Oldest},
	}, make(chan stream.Message), slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.ErrorContains(t, err, "consume one/5")
}

func TestConfig(t *testing.T) {
	_, err := config(stream.KafkaConfig{})
	require.ErrorContains(t, err, "no brokers")

	c, err := config(stream.KafkaConfig{Brokers: []string{"127.0.0.1:9092"}})
	require.NoError(t, err)
	require.NoError(t, c.Validate(), "sarama accepts Grete's settings")
	require.Equal(t, sarama.V3_6_0_0, c.Version)
	require.Equal(t, "grete", c.ClientID)
	require.True(t, c.Producer.Idempotent)
	require.Equal(t, sarama.WaitForAll, c.Producer.RequiredAcks)
	require.False(t, c.Consumer.Offsets.AutoCommit.Enable)
	require.False(t, c.Metadata.AllowAutoTopicCreation)
	require.False(t, c.Net.SASL.Enable)
	require.False(t, c.Net.TLS.Enable)

	for mech, want := range map[stream.SASLMechanism]sarama.SASLMechanism{
		stream.SASLPlain:       sarama.SASLTypePlaintext,
		stream.SASLScramSHA256: sarama.SASLTypeSCRAMSHA256,
		stream.SASLScramSHA512: sarama.SASLTypeSCRAMSHA512,
	} {
		c, err := config(stream.KafkaConfig{Brokers: []string{"h:1"}, ClientID: "me", SASL: &stream.SASL{Mechanism: mech, User: "u", Password: "p"}})
		require.NoError(t, err)
		require.NoError(t, c.Validate(), "%s", mech)
		require.Equal(t, "me", c.ClientID)
		require.True(t, c.Net.SASL.Enable)
		require.Equal(t, want, c.Net.SASL.Mechanism)
		require.Equal(t, "u", c.Net.SASL.User)
		if mech != stream.SASLPlain {
			require.NotNil(t, c.Net.SASL.SCRAMClientGeneratorFunc)
			require.NoError(t, c.Net.SASL.SCRAMClientGeneratorFunc().Begin("u", "p", ""))
		}
	}
}

func TestSubscribeResumesAtOldestWhenOffsetIsGone(t *testing.T) {
	b := testkit.Broker(t)
	compact := "compact"
	testkit.CreateTopic(t, b.Addrs(), "c", 1, map[string]*string{"cleanup.policy": &compact})
	for i := range 5 {
		// One produce per record: one batch each, so compaction can drop
		// all but the last.
		testkit.Produce(t, b.Addrs(), "c", []*kgo.Record{{Key: []byte("same"), Value: []byte(fmt.Sprint(i))}})
	}
	b.Cluster.Compact()
	conn := dial(t, b.Addrs())
	oldest, err := conn.client.GetOffset("c", 0, Oldest)
	require.NoError(t, err)
	require.Positive(t, oldest, "compaction moved the log start")

	var logs strings.Builder
	out := make(chan stream.Message, 8)
	sub, err := conn.Subscribe([]Input{{Partition: stream.Partition{Topic: "c"}, Offset: 1}}, out, slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	defer sub.Close()
	// Value i was written at offset i; every retained message arrives.
	for off := oldest; off < 5; off++ {
		select {
		case m := <-out:
			require.Equal(t, off, m.Offset)
			require.Equal(t, fmt.Sprint(off), string(m.Value))
		case <-time.After(30 * time.Second):
			t.Fatalf("offset %d not delivered", off)
		}
	}
	require.Contains(t, logs.String(), "resuming at the oldest retained message")
}
