package kafka

import (
	"fmt"
	"sync/atomic"

	"github.com/IBM/sarama"
)

// Meta travels with every produced record as sarama's Metadata. It carries
// the routing choice and the tracker to tell when the record is acknowledged.
type Meta struct {
	Tracker      *Tracker
	PartitionKey []byte
	Partition    int32
	HasPartition bool
}

type partitioner struct{ next atomic.Uint32 }

func newPartitioner(string) sarama.Partitioner { return &partitioner{} }

func (p *partitioner) RequiresConsistency() bool { return true }

func (p *partitioner) Partition(m *sarama.ProducerMessage, n int32) (int32, error) {
	var key []byte
	if meta, ok := m.Metadata.(*Meta); ok && meta != nil {
		if meta.HasPartition {
			if meta.Partition < 0 || meta.Partition >= n {
				return -1, fmt.Errorf("partition %d out of range: topic %q has %d partitions", meta.Partition, m.Topic, n)
			}
			return meta.Partition, nil
		}
		key = meta.PartitionKey
	}
	if key == nil && m.Key != nil {
		b, err := m.Key.Encode()
		if err != nil {
			return -1, err
		}
		key = b
	}
	if key == nil {
		return int32(p.next.Add(1) % uint32(n)), nil
	}
	return PartitionFor(key, n), nil
}

// PartitionFor returns the partition the Java client's default partitioner
// picks for key among n partitions: murmur2, made positive, modulo n.
func PartitionFor(key []byte, n int32) int32 {
	return int32(murmur2(key)&0x7fffffff) % n
}

// murmur2 is MurmurHash2 (32-bit) with the seed Kafka uses.
func murmur2(data []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	n := len(data)
	h := seed ^ uint32(n)
	i := 0
	for ; n-i >= 4; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch n - i {
	case 3:
		h ^= uint32(data[i+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[i+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[i])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
