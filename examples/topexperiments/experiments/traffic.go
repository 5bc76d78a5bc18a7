package experiments

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// Traffic makes events like those of an A/B-testing SDK, for the example's
// generator, its tests and its benchmarks:
//
//	{"id":"e17","user":"u4242","experiment":"exp-0031","variation":"b","ts":1700000000000}
//
// Experiments are drawn from a Zipf law (a few take most of the traffic, as
// in real deployments), and the popularity ranks are shuffled over the
// names so that alphabetical order says nothing about popularity. The
// sequence is fixed by the seed. A Traffic is not safe for concurrent use.
type Traffic struct {
	rng   *rand.Rand
	zipf  *rand.Zipf
	names []string // names[rank]
	n     uint64
}

// NewTraffic returns the traffic of seed over experiments distinct
// experiments (at least 1), named exp-0000, exp-0001, ...
func NewTraffic(seed uint64, experiments int) *Traffic {
	rng := rand.New(rand.NewPCG(seed, 0x70e))
	names := make([]string, experiments)
	for i, j := range rng.Perm(experiments) {
		names[i] = fmt.Sprintf("exp-%04d", j)
	}
	return &Traffic{rng: rng, zipf: rand.NewZipf(rng, 1.1, 2, uint64(experiments-1)), names: names}
}

var variations = []string{"control", "a", "b"}

// Next returns the next event's key (its experiment: see the package
// documentation for why) and value, with now as its "ts". Both are freshly
// allocated, so a producer may keep them until they are acknowledged.
func (g *Traffic) Next(now time.Time) (key, value []byte) {
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
