package stream

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header is one Kafka record header. Keys need not be unique.
type Header struct {
	Key   string
	Value []byte
}

// Message is one record read from an input partition.
type Message struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time
}

// Header returns the value of the first header named key, and whether there
// was one.
func (m *Message) Header(key string) ([]byte, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

// Position is the message's topic and partition.
func (m *Message) Position() Partition { return Partition{Topic: m.Topic, Partition: m.Partition} }

// Outgoing is a record a task sends. Topic is required.
//
// The destination partition is chosen in this order: Partition when
// HasPartition is set; otherwise a hash of PartitionKey when it is non-nil;
// otherwise a hash of Key when it is non-nil; otherwise the producer spreads
// keyless records over the partitions. Hashing is murmur2, the same as the
// Java client's default partitioner, so Grete and JVM producers place equal
// keys in equal partitions.
type Outgoing struct {
	Topic        string
	Key          []byte
	Value        []byte
	PartitionKey []byte
	Partition    int32
	HasPartition bool
	Headers      []Header
	// Timestamp defaults to the time of Send when zero.
	Timestamp time.Time
}

// Partition names one partition of one topic.
type Partition struct {
	Topic     string
	Partition int32
}

// String formats the partition as "topic/partition", the form used in
// checkpoint records and error messages.
func (p Partition) String() string {
	return p.Topic + "/" + strconv.FormatInt(int64(p.Partition), 10)
}

// ParsePartition parses the "topic/partition" form written by
// [Partition.String]. Topic names may not contain '/', so the last slash
// separates the two.
func ParsePartition(s string) (Partition, error) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 {
		return Partition{}, fmt.Errorf("stream: %q is not of the form topic/partition", s)
	}
	digits := s[i+1:]
	n, err := strconv.ParseInt(digits, 10, 32)
	if err != nil || n < 0 || digits[0] < '0' || digits[0] > '9' {
		return Partition{}, fmt.Errorf("stream: %q is not of the form topic/partition", s)
	}
	return Partition{Topic: s[:i], Partition: int32(n)}, nil
}
