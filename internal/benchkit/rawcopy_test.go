package benchkit

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/testkit"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestRawCopyCopiesEverything(t *testing.T) {
	b := testkit.Broker(t)
	testkit.CreateTopic(t, b.Addrs(), "in", 3, nil)
	testkit.CreateTopic(t, b.Addrs(), "out", 3, nil)
	recs := make([]*kgo.Record, 3000)
	for i := range recs {
		recs[i] = &kgo.Record{Key: []byte("k" + strconv.Itoa(i%50)), Value: []byte(strconv.Itoa(i))}
	}
	testkit.Produce(t, b.Addrs(), "in", recs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := RawCopy(ctx, b.Addrs(), "in", "out")
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages != 3000 || res.Outputs != 3000 || res.Elapsed <= 0 || res.CPU <= 0 {
		t.Fatalf("result %+v", res)
	}
	got := map[string]bool{}
	for _, r := range testkit.ReadAll(t, b.Addrs(), time.Minute, "out") {
		got[string(r.Value)] = true
	}
	if len(got) != 3000 {
		t.Fatalf("%d distinct values copied, want 3000", len(got))
	}
}
