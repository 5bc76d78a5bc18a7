package main

import (
	"context"
	"testing"

	"github.com/grete-go/grete/internal/embedded"
)

func TestProbe(t *testing.T) {
	b, _ := embedded.Start(embedded.Options{})
	defer b.Close()
	ctx := context.Background()
	adm, _ := newKgo(b.Addrs())
	defer adm.Close()
	createTopics(ctx, adm, 8, "in", "out", "out2")
	const n = 200000
	produce(ctx, b.Addrs(), "in", n, 100)
	for i, sep := range []bool{false, true, false, true} {
		separateProducerClient = sep
		out := []string{"o1", "o2", "o3", "o4"}[i]
		createTopics(ctx, adm, 8, out)
		res, err := rawCopy(ctx, b.Addrs(), "in", out)
		t.Logf("separate=%v %v %.0f/s %v", sep, res.elapsed, res.rate(), err)
	}
}
