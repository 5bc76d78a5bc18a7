package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/grete-go/grete/examples/kit"
	"github.com/grete-go/grete/examples/sessionize/sessions"
	"github.com/grete-go/grete/stream"
)

// generate produces about rate events a second of traffic into topic until
// ctx ends, keyed by visitor_id, with ts the wall clock at creation
// (delayed events keep the ts they were made with).
func generate(ctx context.Context, kc stream.KafkaConfig, topic string, rate int, traffic sessions.Traffic) error {
	g := sessions.NewGenerator(traffic)
	var batch []sessions.Event
	return kit.Generate(ctx, kc, topic, rate, func(now time.Time, emit func(key, value []byte) error) error {
		batch = g.Next(now.UnixMilli(), batch[:0])
		for i := range batch {
			value, err := json.Marshal(&batch[i])
			if err != nil {
				return err
			}
			if err := emit([]byte(batch[i].VisitorID), value); err != nil {
				return err
			}
		}
		return nil
	})
}
