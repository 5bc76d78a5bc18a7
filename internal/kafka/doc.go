// Package kafka is Grete's sarama plumbing: client configuration, topic
// administration, the process-wide idempotent producer with per-task
// acknowledgement tracking, and consumer-group offset mirroring. Nothing in
// it is part of Grete's public API; public packages convert to and from
// their own types at the boundary.
package kafka
