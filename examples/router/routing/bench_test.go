package routing_test

import (
	"strings"
	"testing"

	"github.com/grete-go/grete/examples/router/routing"
)

// BenchmarkRoute measures the routing decision alone (no Kafka): the cost
// the router adds to every event on top of moving its bytes.
func BenchmarkRoute(b *testing.B) {
	big := `{"id":"e123456","user":"u4711","seq":17,"ctx":{"page":"/home","ref":"{\"type\":\"x\"}","tags":["a","b","c"],` +
		`"items":[` + strings.TrimSuffix(strings.Repeat(`{"sku":"s-1","qty":2,"price":9.99},`, 20), ",") + `]},` +
		`"type":"purchase","revenue":59.94,"debug":false,"ts":1700000000000}`
	cases := []struct{ name, event string }{
		{"typical", `{"id":"e123456","user":"u4711","seq":17,"type":"click","revenue":0,"ts":1700000000000}`},
		{"revenue", `{"id":"e123456","user":"u4711","seq":17,"type":"purchase","revenue":12.34,"ts":1700000000000}`},
		{"debug", `{"id":"e123456","user":"u4711","seq":17,"type":"click","revenue":0,"debug":true}`},
		{"escaped-keys", `{"\u0069d":"e1","ty\u0070e":"view","r\u0065venue":0,"d\u0065bug":false}`},
		{"large-nested", big},
		{"not-json", `garbage e123456 {"type":"click"`},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			rt := routing.NewTask(routing.DefaultRules(), nil)
			event := []byte(c.event)
			if _, err := rt.Route("events", event); err != nil && c.name != "not-json" {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(event)))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = rt.Route("events", event)
			}
		})
	}
}
