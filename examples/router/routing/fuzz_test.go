package routing_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/grete-go/grete/examples/router/routing"
)

// The fuzz test checks Route's fast scanner against an oracle that reads
// events the obvious way, with encoding/json, and applies the rules as the
// package documentation states them.
//
// Two choices of the oracle are deliberate:
//
//   - The event is decoded into map[string]json.RawMessage and only the
//     fields the rules name are decoded further. Decoding the whole event
//     into map[string]any would call {"x":1e400} malformed because of a
//     field no rule reads, while it is a valid JSON object.
//   - A "gt" number is compared as the nearest float64, and a number beyond
//     float64's range as ±Inf: 1e400 is greater than 0.
//
// A top-level key given twice takes its last value, in the router as in
// encoding/json (see TestRouteDuplicateKeys).

// fuzzRules are the rule sets the fuzz test runs: the defaults, and a set
// that exercises every kind of condition.
func fuzzRules(t testing.TB) []*routing.Rules {
	custom, err := routing.ParseRules([]byte(`{
		"type_field": "kind",
		"unknown": "none",
		"drop": [
			{"field": "test", "exists": true},
			{"field": "env", "equals": {"name": "dev", "n": [1, null]}}
		],
		"copy": [
			{"if": {"field": "amount", "gt": -2.5}, "to": "amount"},
			{"if": {"field": "vip", "exists": false}, "to": "normal"},
			{"if": {"field": "kind", "equals": "a"}, "to": "a-again"},
			{"if": {"field": "amount", "equals": 3}, "to": "three"}
		]
	}`))
	if err != nil {
		t.Fatal(err)
	}
	return []*routing.Rules{routing.DefaultRules(), custom}
}

var fuzzSeeds = []string{
	`{"type":"click"}`,
	`{"id":"e1","user":"u1","seq":3,"type":"purchase","revenue":12.5,"debug":false}`,
	`{"type":null,"revenue":0}`,
	`{"type":5}`,
	`{"type":"a/b"}`,
	`{"type":"\u0063lick","d\u0065bug":true}`,
	`{"ty\u0070e":"view","revenue":"3"}`,
	`{"debug":"true","revenue":-1}`,
	`{"note":"}{\"type\":\"x\"}[","a":[{"type":"y"},"]"],"type":"view"}`,
	" \t{ \"type\" : \"click\" ,\n\"revenue\" : 1e2 }\r\n",
	`{"kind":"a","amount":3,"vip":true,"env":{"n":[1,null],"name":"dev"}}`,
	`{"kind":"b","amount":-2.5,"test":null}`,
	`{"kind":{"a":1},"amount":"x"}`,
	`{"a":"\\","b":"\"","c":"\/","type":"x_y.z-1"}`,
	`{"revenue":1e-400,"type":"p"}`,
	`[{"type":"click"}]`,
	`"str"`,
	`42`,
	`null`,
	``,
	`{`,
	`{"type":"click"} {}`,
	`garbage e42 {`,
	"{\"type\":\"\xff\"}",
	`{"type":"click","x":1e400}`,
}

func FuzzRoute(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	rules := fuzzRules(f)
	f.Fuzz(func(t *testing.T, event []byte) {
		for i, r := range rules {
			want, ok := oracleRoute(r, "in", event)
			if !ok {
				continue
			}
			topics, err := routing.NewTask(r, nil).Route("in", event)
			got := decision{topics: topics, out: classify(t, topics, err)}
			if got.out != want.out || !slices.Equal(got.topics, want.topics) {
				t.Fatalf("rules %d, event %q:\nRoute:  %v %v (err %v)\noracle: %v %v", i, event, got.out, got.topics, err, want.out, want.topics)
			}
		}
	})
}

// TestOracleAgreesOnSeeds keeps the oracle itself honest on a few events
// whose routing is known by hand.
func TestOracleAgreesOnSeeds(t *testing.T) {
	def := routing.DefaultRules()
	cases := []struct {
		event string
		want  decision
	}{
		{`{"type":"click","revenue":2}`, decision{[]string{"in.click", "in.revenue"}, routed}},
		{`{"debug":true,"type":5}`, decision{nil, routed}},
		{`{"type":false}`, decision{nil, badType}},
		{`{"type":"click","x":1e400}`, decision{[]string{"in.click"}, routed}},
		{`{"revenue":1e400}`, decision{[]string{"in.unknown", "in.revenue"}, routed}},
		{`[]`, decision{nil, notObject}},
		{`null`, decision{nil, notObject}},
	}
	for _, c := range cases {
		got, ok := oracleRoute(def, "in", []byte(c.event))
		if !ok || got.out != c.want.out || !slices.Equal(got.topics, c.want.topics) {
			t.Errorf("oracle(%s) = %v %v (comparable %v), want %v %v", c.event, got.out, got.topics, ok, c.want.out, c.want.topics)
		}
	}
	if got, _ := oracleRoute(def, "in", []byte(`{"type":"a","ty\u0070e":"b"}`)); !slices.Equal(got.topics, []string{"in.b"}) {
		t.Errorf("a duplicate key takes its last value: got %v", got.topics)
	}
}

type decision struct {
	topics []string
	out    routeOutcome
}

var oracleSuffix = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

// oracleRoute decides where r sends event; the bool is always true (kept
// for callers that skip incomparable inputs).
func oracleRoute(r *routing.Rules, input string, event []byte) (decision, bool) {
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(event, &ev); err != nil || ev == nil {
		return decision{out: notObject}, true
	}
	for _, c := range r.Drop {
		if oracleMatch(c, ev) {
			return decision{out: routed}, true
		}
	}
	typ := r.Unknown
	if raw, ok := ev[r.TypeField]; ok {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return decision{out: badType}, true
		}
		switch v := v.(type) {
		case nil:
		case string:
			if !oracleSuffix.MatchString(v) {
				return decision{out: badType}, true
			}
			typ = v
		default:
			return decision{out: badType}, true
		}
	}
	d := decision{topics: []string{input + "." + typ}, out: routed}
	for _, c := range r.Copy {
		if oracleMatch(c.If, ev) {
			d.topics = append(d.topics, input+"."+c.To)
		}
	}
	return d, true
}

func oracleMatch(c routing.Cond, ev map[string]json.RawMessage) bool {
	raw, present := ev[c.Field]
	switch {
	case c.Exists != nil:
		return present == *c.Exists
	case !present:
		return false
	case c.GT != nil:
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			return false
		}
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return false
		}
		return f > *c.GT
	default:
		var want, got any
		if json.Unmarshal(c.Equals, &want) != nil || json.Unmarshal(raw, &got) != nil {
			return false
		}
		return reflect.DeepEqual(want, got)
	}
}
