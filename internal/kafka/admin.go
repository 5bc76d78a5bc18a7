package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/stream"
)

// TopicSpec describes a topic Grete needs.
type TopicSpec struct {
	Name       string
	Partitions int32
	Compact    bool
	// MinPartitions, when set, is the fewest partitions an existing topic may
	// have; an existing topic with fewer is an error. Zero means any count.
	MinPartitions int32
	Configs       map[string]string
}

// Conn is a connection to the cluster: a sarama client, and the admin and
// consumer built on it. Sarama sends one request at a time per broker
// connection, so a process keeps apart what must not wait behind other
// requests: partition consumers (whose fetches wait for data), the
// producer (whose produce requests wait for acks=all), and everything else
// (metadata, admin, offsets, group coordinator look-ups). ReadRange and
// the group's requests open connections of their own.
type Conn struct {
	client   sarama.Client
	admin    sarama.ClusterAdmin
	consumer sarama.Consumer
	patience time.Duration // of ReadRange; see Options.ReadPatience

	mu      sync.Mutex
	reading map[stream.Partition]bool // partitions consumer reads
}

// Options tune a Conn for its use. The zero value suits metadata, admin
// and reads.
type Options struct {
	// ClientID, when set, replaces the configuration's client id.
	ClientID string
	// ProducerPatience, when positive, makes the connection's producer
	// ride through a broker restart or an outage this long (see
	// PatientProducer). Its metadata look-ups then wait for a broker too:
	// give such a connection to the producer alone.
	ProducerPatience time.Duration
	// ReadPatience is how long ReadRange retries a fetch that fails for a
	// reason that may pass; zero means DefaultPatience.
	ReadPatience time.Duration
}

// Dial connects to the cluster kc describes.
func Dial(ctx context.Context, kc stream.KafkaConfig, o Options) (*Conn, error) {
	cfg, err := config(kc)
	if err != nil {
		return nil, err
	}
	if o.ClientID != "" {
		cfg.ClientID = o.ClientID
	}
	if o.ProducerPatience > 0 {
		PatientProducer(cfg, o.ProducerPatience)
	}
	c, err := call(ctx, func() (*Conn, error) { return dialConfig(cfg, kc.Brokers) })
	if err != nil {
		return nil, err
	}
	c.patience = o.ReadPatience
	return c, nil
}

// dialConfig connects with a sarama configuration made by config.
func dialConfig(cfg *sarama.Config, brokers []string) (*Conn, error) {
	client, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to Kafka at %s: %w", strings.Join(brokers, ","), err)
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("start Kafka admin: %w", err)
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("start Kafka consumer: %w", err)
	}
	return &Conn{client: client, admin: admin, consumer: consumer, reading: map[stream.Partition]bool{}}, nil
}

// call runs fn, a sarama call that takes no context, and returns what it
// returns, or ctx's error once ctx ends first; fn then goes on in the
// background until sarama gives it up (its own retries and timeouts bound
// it).
func call[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	if err := ctx.Err(); err != nil {
		var zero T
		return zero, err
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// Close closes everything Dial opened.
func (c *Conn) Close() error {
	err := c.consumer.Close()
	// Closing the admin closes the shared client too.
	return errors.Join(err, c.admin.Close())
}

// Partitions returns the partition count of topic, refreshing metadata
// first so a topic created moments ago is seen.
func (c *Conn) Partitions(ctx context.Context, topic string) (int32, error) {
	return call(ctx, func() (int32, error) { return c.partitions(topic) })
}

func (c *Conn) partitions(topic string) (int32, error) {
	if err := c.client.RefreshMetadata(topic); err != nil {
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return 0, fmt.Errorf("topic %q does not exist", topic)
		}
		return 0, fmt.Errorf("topic %q: %w", topic, err)
	}
	ps, err := c.client.Partitions(topic)
	if err != nil {
		return 0, fmt.Errorf("topic %q: %w", topic, err)
	}
	if len(ps) == 0 {
		return 0, fmt.Errorf("topic %q does not exist", topic)
	}
	return int32(len(ps)), nil
}

// EnsureTopic creates the topic when it is missing and checks an existing
// one against the spec: a topic that should be compacted and is not, or
// that has fewer partitions than required, is an error rather than a silent
// corruption.
func (c *Conn) EnsureTopic(ctx context.Context, s TopicSpec) error {
	created, err := call(ctx, func() (bool, error) { return c.ensureTopic(s) })
	if err != nil || !created {
		return err
	}
	return c.waitTopic(ctx, s.Name)
}

// ensureTopic creates or checks the topic, and reports whether it created
// it.
func (c *Conn) ensureTopic(s TopicSpec) (bool, error) {
	// One DescribeTopics request: asking metadata for a missing topic makes
	// sarama retry with backoff, which would stall a task for a second.
	md, err := c.admin.DescribeTopics([]string{s.Name})
	if err != nil {
		return false, fmt.Errorf("describe topic %q: %w", s.Name, err)
	}
	var n int32
	missing := len(md) == 0 || errors.Is(md[0].Err, sarama.ErrUnknownTopicOrPartition)
	if !missing {
		if md[0].Err != sarama.ErrNoError {
			return false, fmt.Errorf("describe topic %q: %w", s.Name, md[0].Err)
		}
		n = int32(len(md[0].Partitions))
	}
	if missing {
		cfg := map[string]*string{}
		for k, v := range s.Configs {
			cfg[k] = &v
		}
		if s.Compact {
			compact := "compact"
			cfg["cleanup.policy"] = &compact
		}
		detail := &sarama.TopicDetail{NumPartitions: s.Partitions, ReplicationFactor: -1, ConfigEntries: cfg}
		cerr := c.admin.CreateTopic(s.Name, detail, false)
		if cerr != nil && !errors.Is(cerr, sarama.ErrTopicAlreadyExists) {
			var te *sarama.TopicError
			if !errors.As(cerr, &te) || te.Err != sarama.ErrTopicAlreadyExists {
				return false, fmt.Errorf("create topic %q: %w", s.Name, cerr)
			}
		}
		return true, nil
	}
	if s.MinPartitions > 0 && n < s.MinPartitions {
		return false, fmt.Errorf("topic %q has %d partitions, needs at least %d", s.Name, n, s.MinPartitions)
	}
	if s.Compact {
		res, err := c.admin.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: s.Name, ConfigNames: []string{"cleanup.policy"}}}, sarama.DescribeConfigsOptions{})
		if err != nil {
			return false, fmt.Errorf("describe topic %q: %w", s.Name, err)
		}
		policy := "delete"
		for _, r := range res {
			if r.ErrorCode != sarama.ErrNoError {
				return false, fmt.Errorf("describe topic %q: %w: %s", s.Name, r.ErrorCode, r.ErrorMsg)
			}
			for _, e := range r.Configs {
				if e.Name == "cleanup.policy" {
					policy = e.Value
				}
			}
		}
		// "compact,delete" would delete old records even when they hold
		// the latest value of their key: a changelog would lose keys.
		if strings.TrimSpace(policy) != "compact" {
			return false, fmt.Errorf("topic %q has cleanup.policy=%s, must be exactly compact (it must keep the last value of every key for ever)", s.Name, policy)
		}
	}
	return false, nil
}

// waitTopic waits, bounded, until metadata shows a just-created topic. No
// broker tells when a topic it created is visible everywhere: it asks
// again, ever less often.
func (c *Conn) waitTopic(ctx context.Context, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		_, err := c.Partitions(ctx, topic)
		if err == nil {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("topic %q created but not visible: %w", topic, err)
		case <-t.C:
		}
	}
}

// OldestOffset returns the offset of p's oldest retained record (its
// high watermark when it holds none).
func (c *Conn) OldestOffset(ctx context.Context, p stream.Partition) (int64, error) {
	return call(ctx, func() (int64, error) { return c.client.GetOffset(p.Topic, p.Partition, sarama.OffsetOldest) })
}
