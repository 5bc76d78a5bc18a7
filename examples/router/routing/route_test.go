package routing_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/grete-go/grete/examples/router/routing"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/stretchr/testify/require"
)

// routeOutcome is what Route decided for one event: the topics it goes to
// (none = dropped), or one of two kinds of failure.
type routeOutcome int

const (
	routed    routeOutcome = iota // the event goes to want (none: dropped)
	notObject                     // a *stream.DecodeError wrapping ErrNotObject
	badType                       // any other error: the type field is unusable
)

func (o routeOutcome) String() string {
	return [...]string{"routed", "not an object", "bad type"}[o]
}

// classify turns Route's result into an outcome, checking the error's shape
// on the way: bad input must be recognisable by the job's error policy.
func classify(t *testing.T, topics []string, err error) routeOutcome {
	t.Helper()
	if err == nil {
		return routed
	}
	require.Empty(t, topics, "Route returned topics with an error")
	if errors.Is(err, routing.ErrNotObject) {
		var de *stream.DecodeError
		require.ErrorAs(t, err, &de, "not-an-object error is not a *stream.DecodeError")
		require.Equal(t, "json", de.Format)
		return notObject
	}
	return badType
}

func TestRouteDefaultRules(t *testing.T) {
	long := strings.Repeat("a", 200)
	cases := []struct {
		name  string
		event string
		want  []string // topics, without the "events." prefix
		out   routeOutcome
	}{
		// The type field.
		{"type", `{"type":"click"}`, []string{"click"}, routed},
		{"type missing", `{"id":"e1"}`, []string{"unknown"}, routed},
		{"empty object", `{}`, []string{"unknown"}, routed},
		{"type null", `{"type":null}`, []string{"unknown"}, routed},
		{"type number", `{"type":5}`, nil, badType},
		{"type bool", `{"type":true}`, nil, badType},
		{"type object", `{"type":{"name":"click"}}`, nil, badType},
		{"type array", `{"type":["click"]}`, nil, badType},
		{"type empty string", `{"type":""}`, nil, badType},
		{"type with slash", `{"type":"a/b"}`, nil, badType},
		{"type with space", `{"type":"a b"}`, nil, badType},
		{"type with colon", `{"type":"a:b"}`, nil, badType},
		{"type not ascii", `{"type":"klick\u00e9"}`, nil, badType},
		{"type punctuation allowed", `{"type":"A.b_c-9"}`, []string{"A.b_c-9"}, routed},
		{"type of 200 bytes", `{"type":"` + long + `"}`, []string{long}, routed},
		{"type of 201 bytes", `{"type":"` + long + `b"}`, nil, badType},
		{"type escaped", `{"type":"\u0063lick"}`, []string{"click"}, routed},
		{"type escaped to bad char", `{"type":"a\/b"}`, nil, badType},
		{"key escaped", `{"ty\u0070e":"view"}`, []string{"view"}, routed},
		{"key escaped fully", `{"\u0074\u0079\u0070\u0065":"view"}`, []string{"view"}, routed},
		{"key case matters", `{"Type":"view"}`, []string{"unknown"}, routed},
		{"key prefix is not the key", `{"types":"view","typ":"x"}`, []string{"unknown"}, routed},
		{"type after other fields", `{"id":"e1","user":"u1","type":"signup"}`, []string{"signup"}, routed},

		// The drop rule: debug == true.
		{"debug true", `{"type":"click","debug":true}`, nil, routed},
		{"debug true first", `{"debug":true,"type":"click"}`, nil, routed},
		{"debug true, no type", `{"debug":true}`, nil, routed},
		{"debug true wins over bad type", `{"type":5,"debug":true}`, nil, routed},
		{"debug false", `{"type":"click","debug":false}`, []string{"click"}, routed},
		{"debug string", `{"type":"click","debug":"true"}`, []string{"click"}, routed},
		{"debug one", `{"type":"click","debug":1}`, []string{"click"}, routed},
		{"debug null", `{"type":"click","debug":null}`, []string{"click"}, routed},
		{"debug nested", `{"type":"click","ctx":{"debug":true}}`, []string{"click"}, routed},
		{"debug escaped key", `{"type":"click","d\u0065bug":true}`, nil, routed},

		// The copy rule: revenue > 0.
		{"revenue positive", `{"type":"purchase","revenue":12.5}`, []string{"purchase", "revenue"}, routed},
		{"revenue exponent", `{"type":"purchase","revenue":1e2}`, []string{"purchase", "revenue"}, routed},
		{"revenue tiny", `{"type":"purchase","revenue":0.0001}`, []string{"purchase", "revenue"}, routed},
		{"revenue zero", `{"type":"purchase","revenue":0}`, []string{"purchase"}, routed},
		{"revenue zero float", `{"type":"purchase","revenue":0.0}`, []string{"purchase"}, routed},
		{"revenue minus zero", `{"type":"purchase","revenue":-0}`, []string{"purchase"}, routed},
		{"revenue negative", `{"type":"refund","revenue":-3}`, []string{"refund"}, routed},
		{"revenue string", `{"type":"purchase","revenue":"12.5"}`, []string{"purchase"}, routed},
		{"revenue bool", `{"type":"purchase","revenue":true}`, []string{"purchase"}, routed},
		{"revenue null", `{"type":"purchase","revenue":null}`, []string{"purchase"}, routed},
		{"revenue object", `{"type":"purchase","revenue":{"eur":5}}`, []string{"purchase"}, routed},
		{"revenue without type", `{"revenue":5}`, []string{"unknown", "revenue"}, routed},
		// Below float64's smallest positive value a number rounds to 0.
		{"revenue underflows", `{"type":"purchase","revenue":1e-400}`, []string{"purchase"}, routed},
		{"revenue but debug", `{"type":"purchase","revenue":5,"debug":true}`, nil, routed},
		{"revenue nested only", `{"type":"purchase","cart":{"revenue":5}}`, []string{"purchase"}, routed},

		// Values the scanner must skip correctly.
		{"braces in strings", `{"note":"}{\"type\":\"x\"}[","type":"view"}`, []string{"view"}, routed},
		{"nested type ignored", `{"a":{"type":"x","b":[{"type":"y"}]},"type":"view"}`, []string{"view"}, routed},
		{"nested type only", `{"a":{"type":"x"}}`, []string{"unknown"}, routed},
		{"array with braces", `{"a":["{","}",{"debug":true}],"type":"click"}`, []string{"click"}, routed},
		{"escaped backslash before quote", `{"a":"\\","type":"click"}`, []string{"click"}, routed},
		{"escaped quote in key", `{"ty\"pe":"x","type":"click"}`, []string{"click"}, routed},
		{"numbers and literals", `{"a":-1.5e+3,"b":true,"c":null,"d":false,"type":"click","revenue":7}`, []string{"click", "revenue"}, routed},
		{"empty containers", `{"a":{},"b":[],"type":"click"}`, []string{"click"}, routed},
		{"deep nesting", `{"a":[[[[{"b":[{}]}]]]],"type":"click"}`, []string{"click"}, routed},

		// Whitespace anywhere JSON allows it.
		{"whitespace", " \t\r\n{ \"type\" :\t\"click\" ,\n\"revenue\" : 3 ,\"debug\" : false }\r\n ", []string{"click", "revenue"}, routed},
		{"whitespace debug", "{\"debug\"\n:\ntrue\n}", nil, routed},

		// Not JSON objects.
		{"array", `[{"type":"click"}]`, nil, notObject},
		{"empty array", `[]`, nil, notObject},
		{"number", `42`, nil, notObject},
		{"string", `"{\"type\":\"click\"}"`, nil, notObject},
		{"null", `null`, nil, notObject},
		{"true", `true`, nil, notObject},
		{"empty", ``, nil, notObject},
		{"only whitespace", " \n\t", nil, notObject},
		{"not json", `not json`, nil, notObject},
		{"truncated", `{"type":"click"`, nil, notObject},
		{"open brace", `{`, nil, notObject},
		{"extra brace", `{"type":"click"}}`, nil, notObject},
		{"two objects", `{"type":"click"} {"type":"view"}`, nil, notObject},
		{"trailing comma", `{"type":"click",}`, nil, notObject},
		{"single quotes", `{'type':'click'}`, nil, notObject},
		{"unquoted key", `{type:"click"}`, nil, notObject},
		{"bad escape", `{"type":"\x"}`, nil, notObject},
		{"control char in string", "{\"type\":\"cl\nick\"}", nil, notObject},
		{"garbage from the generator", `garbage e17 {`, nil, notObject},
		{"NaN", `{"revenue":NaN}`, nil, notObject},
		{"leading zero", `{"revenue":01}`, nil, notObject},
	}
	rt := routing.NewTask(routing.DefaultRules(), nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			topics, err := rt.Route("events", []byte(c.event))
			out := classify(t, topics, err)
			require.Equal(t, c.out, out, "Route(%s) = %v, %v", c.event, topics, err)
			var want []string
			for _, s := range c.want {
				want = append(want, "events."+s)
			}
			require.Equal(t, want, topics)
		})
	}
}

// TestRouteDuplicateKeys pins down which of two equal top-level keys
// counts. RFC 8259 leaves it open; encoding/json, JavaScript's JSON.parse,
// Python's json and Jackson all take the LAST one, so the consumers of the
// routed topics (and the tests' reference) see the last value. The router
// must decide on the same value they read, or a producer could, say, hide a
// debug event from the drop rule ({"debug":false,"debug":true}) or route an
// event to one type's topic while its readers see another type.
func TestRouteDuplicateKeys(t *testing.T) {
	cases := []struct {
		event string
		want  []string
	}{
		{`{"type":"click","type":"view"}`, []string{"events.view"}},
		{`{"type":5,"type":"view"}`, []string{"events.view"}},
		{`{"debug":false,"type":"click","debug":true}`, nil},
		{`{"debug":true,"type":"click","debug":false}`, []string{"events.click"}},
		{`{"type":"purchase","revenue":5,"revenue":0}`, []string{"events.purchase"}},
		{`{"type":"click","ty\u0070e":"view"}`, []string{"events.view"}},
	}
	rt := routing.NewTask(routing.DefaultRules(), nil)
	for _, c := range cases {
		topics, err := rt.Route("events", []byte(c.event))
		require.NoError(t, err, c.event)
		require.Equal(t, c.want, topics, c.event)
	}
}

// TestRouteHugeRevenue: a number beyond float64's range is still a number
// greater than zero (strconv.ParseFloat returns +Inf with ErrRange).
func TestRouteHugeRevenue(t *testing.T) {
	rt := routing.NewTask(routing.DefaultRules(), nil)
	topics, err := rt.Route("events", []byte(`{"type":"purchase","revenue":1e400}`))
	require.NoError(t, err)
	require.Equal(t, []string{"events.purchase", "events.revenue"}, topics)
	topics, err = rt.Route("events", []byte(`{"type":"refund","revenue":-1e400}`))
	require.NoError(t, err)
	require.Equal(t, []string{"events.refund"}, topics)
}

// TestRouteDoesNotKeepScratch: Route returns fresh slices; a later call must
// not change what an earlier one returned.
func TestRouteDoesNotKeepScratch(t *testing.T) {
	rt := routing.NewTask(routing.DefaultRules(), nil)
	first, err := rt.Route("events", []byte(`{"type":"purchase","revenue":1}`))
	require.NoError(t, err)
	_, err = rt.Route("events", []byte(`{"type":"view"}`))
	require.NoError(t, err)
	require.Equal(t, []string{"events.purchase", "events.revenue"}, first)
}

// recorder is a task.Collector that keeps what was sent.
type recorder struct{ sent []stream.Outgoing }

func (r *recorder) Send(m stream.Outgoing) error {
	r.sent = append(r.sent, m)
	return nil
}

type noCoordinator struct{}

func (noCoordinator) Commit()   {}
func (noCoordinator) Shutdown() {}

var _ task.Coordinator = noCoordinator{}

func TestProcessForwardsTheEventUnchangedAndCounts(t *testing.T) {
	stats := &routing.Stats{}
	a := routing.NewTask(routing.DefaultRules(), stats)
	b := routing.NewTask(routing.DefaultRules(), stats)
	ctx := context.Background()
	var out recorder
	msg := func(v string) stream.Message {
		return stream.Message{
			Topic: "in", Partition: 3, Offset: 7, Key: []byte("u1"), Value: []byte(v),
			Headers: []stream.Header{{Key: "h", Value: []byte("v")}},
		}
	}
	purchase := `{"type":"purchase", "revenue":2}`
	require.NoError(t, a.Process(ctx, msg(purchase), &out, noCoordinator{}))
	require.NoError(t, b.Process(ctx, msg(`{"type":"view"}`), &out, noCoordinator{}))
	require.NoError(t, b.Process(ctx, msg(`{"type":"view","debug":true}`), &out, noCoordinator{}))
	err := a.Process(ctx, msg(`nope`), &out, noCoordinator{})
	require.ErrorIs(t, err, routing.ErrNotObject)

	require.Len(t, out.sent, 3)
	for i, topic := range []string{"in.purchase", "in.revenue"} {
		m := out.sent[i]
		require.Equal(t, topic, m.Topic)
		require.Equal(t, "u1", string(m.Key))
		require.Equal(t, purchase, string(m.Value), "the event must be forwarded byte for byte")
		require.Equal(t, []stream.Header{{Key: "h", Value: []byte("v")}}, m.Headers)
	}
	require.Equal(t, "in.view", out.sent[2].Topic)

	sent, dropped := stats.Snapshot()
	require.Equal(t, []routing.TopicCount{{Topic: "in.purchase", Count: 1}, {Topic: "in.revenue", Count: 1}, {Topic: "in.view", Count: 1}}, sent)
	require.EqualValues(t, 1, dropped)
}
