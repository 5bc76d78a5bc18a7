package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/internal/kafka"
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
	cfg, err := kafka.Config(kc)
	if err != nil {
		return err
	}
	cfg.Producer.Partitioner = sarama.NewHashPartitioner
	p, err := sarama.NewAsyncProducer(kc.Brokers, cfg)
	if err != nil {
		return err
	}
	errs := make(chan error, 1)
	go func() {
		for range p.Successes() {
		}
	}()
	go func() {
		for e := range p.Errors() {
			select {
			case errs <- e.Err:
			default:
			}
		}
	}()
	defer p.Close()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	var n uint64
	credit := 0.0
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err
		case now := <-t.C:
			credit += float64(rate) * tick.Seconds()
			for ; credit >= 1; credit-- {
				n++
				e := newEvent(rng, n, now)
				var value []byte
				if rng.Float64() < malformed {
					value = []byte(fmt.Sprintf("not json %d", n))
				} else {
					value, _ = json.Marshal(e)
				}
				select {
				case p.Input() <- &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(e.User), Value: sarama.ByteEncoder(value)}:
				case <-ctx.Done():
					return nil
				}
			}
		}
	}
}
