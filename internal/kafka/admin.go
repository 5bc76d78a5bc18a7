package kafka

import (
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

// Conn bundles the sarama client and the pieces built on it that one
// process shares.
type Conn struct {
	Client   sarama.Client
	Admin    sarama.ClusterAdmin
	Consumer sarama.Consumer
	// Patience is how long reads retry fetches that fail for a reason
	// that may pass; zero means DefaultPatience.
	Patience time.Duration

	mu      sync.Mutex
	reading map[stream.Partition]bool // partitions Consumer reads
}

// Dial connects to the cluster.
func Dial(cfg *sarama.Config, brokers []string) (*Conn, error) {
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
	return &Conn{Client: client, Admin: admin, Consumer: consumer, reading: map[stream.Partition]bool{}}, nil
}

// Close closes everything Dial opened.
func (c *Conn) Close() error {
	err := c.Consumer.Close()
	// Closing the admin closes the shared client too.
	return errors.Join(err, c.Admin.Close())
}

// Partitions returns the partition count of topic, refreshing metadata
// first so a topic created moments ago is seen.
func (c *Conn) Partitions(topic string) (int32, error) {
	if err := c.Client.RefreshMetadata(topic); err != nil {
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return 0, fmt.Errorf("topic %q does not exist", topic)
		}
		return 0, fmt.Errorf("topic %q: %w", topic, err)
	}
	ps, err := c.Client.Partitions(topic)
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
func (c *Conn) EnsureTopic(s TopicSpec) error {
	// One DescribeTopics request: asking metadata for a missing topic makes
	// sarama retry with backoff, which would stall a task for a second.
	md, err := c.Admin.DescribeTopics([]string{s.Name})
	if err != nil {
		return fmt.Errorf("describe topic %q: %w", s.Name, err)
	}
	var n int32
	missing := len(md) == 0 || errors.Is(md[0].Err, sarama.ErrUnknownTopicOrPartition)
	if !missing {
		if md[0].Err != sarama.ErrNoError {
			return fmt.Errorf("describe topic %q: %w", s.Name, md[0].Err)
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
		cerr := c.Admin.CreateTopic(s.Name, detail, false)
		if cerr != nil && !errors.Is(cerr, sarama.ErrTopicAlreadyExists) {
			var te *sarama.TopicError
			if !errors.As(cerr, &te) || te.Err != sarama.ErrTopicAlreadyExists {
				return fmt.Errorf("create topic %q: %w", s.Name, cerr)
			}
		}
		return c.waitTopic(s.Name)
	}
	if s.MinPartitions > 0 && n < s.MinPartitions {
		return fmt.Errorf("topic %q has %d partitions, needs at least %d", s.Name, n, s.MinPartitions)
	}
	if s.Compact {
		res, err := c.Admin.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: s.Name, ConfigNames: []string{"cleanup.policy"}}}, sarama.DescribeConfigsOptions{})
		if err != nil {
			return fmt.Errorf("describe topic %q: %w", s.Name, err)
		}
		policy := "delete"
		for _, r := range res {
			if r.ErrorCode != sarama.ErrNoError {
				return fmt.Errorf("describe topic %q: %w: %s", s.Name, r.ErrorCode, r.ErrorMsg)
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
			return fmt.Errorf("topic %q has cleanup.policy=%s, must be exactly compact (it must keep the last value of every key for ever)", s.Name, policy)
		}
	}
	return nil
}

// waitTopic waits, bounded, until metadata shows a just-created topic.
func (c *Conn) waitTopic(topic string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Partitions(topic)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %q created but not visible: %w", topic, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
