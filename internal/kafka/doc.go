// Package kafka is Grete's sarama plumbing: client configuration, topic
// administration, the process-wide idempotent producer with per-task
// acknowledgement tracking, partition consumers and range reads, the
// requests of the consumer-group protocol (GroupConn), and the
// classification and retrying of transient errors (Transient, Retry).
// Nothing in it is part of Grete's public API; public packages convert to
// and from their own types at the boundary.
package kafka
