package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/grete-go/grete/examples/kit"
	"github.com/grete-go/grete/stream"
)

// traffic makes events like those of an A/B-testing SDK:
//
//	{"id":"e17","user":"u4242","experiment":"exp-0031","variation":"b","ts":1700000000000}
//
// Experiments are drawn from a Zipf law (a few take most of the traffic, as
// in real deployments), and the popularity ranks are shuffled over the
// names so that alphabetical order says nothing about popularity. The
// sequence is fixed by the seed.
type traffic struct {
	rng   *rand.Rand
	zipf  *rand.Zipf
	names []string // names[rank]
	n     uint64
}

func newTraffic(seed uint64, experiments int) *traffic {
	rng := rand.New(rand.NewPCG(seed, 0x70e))
	names := make([]string, experiments)
	for i, j := range rng.Perm(experiments) {
		names[i] = fmt.Sprintf("exp-%04d", j)
	}
	return &traffic{rng: rng, zipf: rand.NewZipf(rng, 1.1, 2, uint64(experiments-1)), names: names}
}

var variations = []string{"control", "a", "b"}

// next returns the next event's key (its experiment: see the package
// documentation for why) and value, both freshly allocated.
func (g *traffic) next(now time.Time) (key, value []byte) {
	g.n++
	exp := g.names[g.zipf.Uint64()]
	v := make([]byte, 0, 112)
	v = append(v, `{"id":"e`...)
	v = strconv.AppendUint(v, g.n, 10)
	v = append(v, `","user":"u`...)
	v = strconv.AppendInt(v, int64(g.rng.IntN(100_000)), 10)
	v = append(v, `","experiment":"`...)
	v = append(v, exp...)
	v = append(v, `","variation":"`...)
	v = append(v, variations[g.rng.IntN(len(variations))]...)
	v = append(v, `","ts":`...)
	v = strconv.AppendInt(v, now.UnixMilli(), 10)
	v = append(v, '}')
	return []byte(exp), v
}

// generate produces about rate events a second into topic until ctx ends,
// keyed by experiment (murmur2, like Kafka's default partitioner).
func generate(ctx context.Context, kc stream.KafkaConfig, topic string, rate, experiments int) error {
	g := newTraffic(uint64(time.Now().UnixNano()), experiments)
	return kit.Generate(ctx, kc, topic, rate, func(now time.Time, emit func(key, value []byte) error) error {
		k, v := g.next(now)
		return emit(k, v)
	})
}
