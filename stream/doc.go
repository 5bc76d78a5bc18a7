// Package stream holds the vocabulary every other Grete package speaks:
// messages read from and written to Kafka, topic partitions, serdes that turn
// bytes into values, and the configuration that connects a job to a Kafka
// cluster.
//
// # Basics
//
// A [Message] is what a task receives: a record of one input partition, with
// its offset. An [Outgoing] is what a task sends through its collector. Both
// carry raw bytes; a [Serde] converts them to and from typed values:
//
//	events := stream.JSON[Event]()
//	ev, err := events.Decode(m.Value)
//
// [KafkaConfig] says where the brokers are and how to reach them (TLS, SASL
// PLAIN or SCRAM). No type of a Kafka client library appears in this package,
// so Grete can change clients without breaking its users.
//
// # Caveats
//
// The Key, Value and header slices of a [Message] belong to the task for the
// duration of the Process call that received them and stay valid afterwards:
// Grete never reuses them. Slices passed in an [Outgoing] must not be changed
// after Send.
package stream
