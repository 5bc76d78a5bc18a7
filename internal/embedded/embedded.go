// Package embedded runs the in-process Kafka-protocol broker (kfake) that
// the examples use when no brokers are given, and that the tests use in
// place of a real cluster. It listens on 127.0.0.1 only.
package embedded

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Options tunes the embedded broker. The zero value is ready to use.
type Options struct {
	// DataDir, when set, persists the broker's logs there so that a
	// restarted example sees the topics of the previous run. Empty keeps
	// everything in memory.
	DataDir string
	// Port defaults to a free port.
	Port int
	// Partitions is the partition count of topics created on first use;
	// default 8.
	Partitions int
	// Topics are created at start with Partitions partitions.
	Topics []string
	// Extra are further kfake options (faults are added on the cluster).
	Extra []kfake.Opt
}

// Broker is a running embedded broker.
type Broker struct {
	Cluster *kfake.Cluster
}

// Start starts a single-node broker that creates topics on first use.
func Start(o Options) (*Broker, error) {
	if o.Partitions == 0 {
		o.Partitions = 8
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(o.Port),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(o.Partitions),
	}
	if o.DataDir != "" {
		opts = append(opts, kfake.DataDir(o.DataDir))
	}
	if len(o.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(o.Partitions), o.Topics...))
	}
	opts = append(opts, o.Extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded broker: %w", err)
	}
	return &Broker{Cluster: c}, nil
}

// Addrs are the broker's "host:port" addresses.
func (b *Broker) Addrs() []string { return b.Cluster.ListenAddrs() }

// Close stops the broker (persisting its data when DataDir was set).
func (b *Broker) Close() { b.Cluster.Close() }
