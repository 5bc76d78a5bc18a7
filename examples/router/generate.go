package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/grete-go/grete/examples/kit"
	"github.com/grete-go/grete/stream"
)

// event is what the generator writes: a small clickstream record.
type event struct {
	ID      string  `json:"id"`
	User    string  `json:"user"`
	Type    string  `json:"type,omitempty"`
	Revenue float64 `json:"revenue"`
	Debug   bool    `json:"debug,omitempty"`
	TS      int64   `json:"ts"`
}

var types = []string{"click", "click", "click", "view", "view", "purchase", "signup"}

// newEvent makes the n-th generated event. About 5% have no type, 2% are
// debug events, purchases carry revenue.
func newEvent(rng *rand.Rand, n uint64, now time.Time) event {
	e := event{ID: fmt.Sprintf("e%d", n), User: fmt.Sprintf("u%d", rng.IntN(10000)), TS: now.UnixMilli()}
	if rng.IntN(100) >= 5 {
		e.Type = types[rng.IntN(len(types))]
	}
	if e.Type == "purchase" {
		e.Revenue = float64(1+rng.IntN(10000)) / 100
	}
	e.Debug = rng.IntN(100) < 2
	return e
}

// generate produces about rate events a second into topic until ctx ends,
// keyed by user. A fraction malformed of them are not JSON.
func generate(ctx context.Context, kc stream.KafkaConfig, topic string, rate int, malformed float64) error {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var n uint64
	return kit.Generate(ctx, kc, topic, rate, func(now time.Time, emit func(key, value []byte) error) error {
		n++
		e := newEvent(rng, n, now)
		value, err := json.Marshal(e)
		if rng.Float64() < malformed {
			value, err = []byte(fmt.Sprintf("not json %d", n)), nil
		}
		if err != nil {
			return err
		}
		return emit([]byte(e.User), value)
	})
}
