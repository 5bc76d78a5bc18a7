package main

import (
	"context"
	"time"

	"github.com/grete-go/grete/examples/kit"
	"github.com/grete-go/grete/examples/topexperiments/experiments"
	"github.com/grete-go/grete/stream"
)

// generate produces about rate events a second into topic until ctx ends,
// keyed by experiment (murmur2, like Kafka's default partitioner), from
// traffic over distinct experiments, seeded by the clock.
func generate(ctx context.Context, kc stream.KafkaConfig, topic string, rate, distinct int) error {
	g := experiments.NewTraffic(uint64(time.Now().UnixNano()), distinct)
	return kit.Generate(ctx, kc, topic, rate, func(now time.Time, emit func(key, value []byte) error) error {
		k, v := g.Next(now)
		return emit(k, v)
	})
}

// startGenerator runs generate in the background when rate is positive,
// until ctx ends. The channel receives generate's error when it returns,
// or nil at once when there is no generator.
func startGenerator(ctx context.Context, kc stream.KafkaConfig, topic string, rate, distinct int) <-chan error {
	done := make(chan error, 1)
	if rate > 0 {
		go func() { done <- generate(ctx, kc, topic, rate, distinct) }()
	} else {
		done <- nil
	}
	return done
}
