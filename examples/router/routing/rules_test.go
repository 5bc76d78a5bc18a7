package routing_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grete-go/grete/examples/router/routing"
	"github.com/stretchr/testify/require"
)

func TestParseRulesFillsDefaults(t *testing.T) {
	for _, in := range []string{`{}`, `{"type_field":"","unknown":""}`, " \n{ }\n"} {
		r, err := routing.ParseRules([]byte(in))
		require.NoError(t, err, in)
		require.Equal(t, "type", r.TypeField, in)
		require.Equal(t, "unknown", r.Unknown, in)
		require.Empty(t, r.Drop, in)
		require.Empty(t, r.Copy, in)

		// With no drop or copy rules every object goes to its type only.
		topics, err := routing.NewTask(r, nil).Route("in", []byte(`{"type":"a","debug":true,"revenue":9}`))
		require.NoError(t, err)
		require.Equal(t, []string{"in.a"}, topics)
	}
}

func TestParseRulesReadsEveryField(t *testing.T) {
	r, err := routing.ParseRules([]byte(`{
		"type_field": "kind",
		"unknown": "misc",
		"drop": [{"field": "test", "exists": true}, {"field": "env", "equals": "dev"}],
		"copy": [{"if": {"field": "amount", "gt": 99.5}, "to": "big"}]
	}`))
	require.NoError(t, err)
	require.Equal(t, "kind", r.TypeField)
	require.Equal(t, "misc", r.Unknown)
	require.Len(t, r.Drop, 2)
	require.Equal(t, "test", r.Drop[0].Field)
	require.NotNil(t, r.Drop[0].Exists)
	require.True(t, *r.Drop[0].Exists)
	require.Nil(t, r.Drop[0].GT)
	require.Nil(t, r.Drop[0].Equals)
	require.Equal(t, "env", r.Drop[1].Field)
	require.JSONEq(t, `"dev"`, string(r.Drop[1].Equals))
	require.Len(t, r.Copy, 1)
	require.Equal(t, "big", r.Copy[0].To)
	require.Equal(t, "amount", r.Copy[0].If.Field)
	require.NotNil(t, r.Copy[0].If.GT)
	require.InDelta(t, 99.5, *r.Copy[0].If.GT, 0)
}

func TestParseRulesRefusesBadRules(t *testing.T) {
	cases := []struct {
		name, rules string
		mention     []string // substrings the error must contain
	}{
		{"not json", `drop everything`, nil},
		{"truncated", `{"drop":[`, nil},
		{"not an object", `[]`, nil},
		{"wrong field type", `{"drop":{"field":"x","exists":true}}`, nil},
		{"unknown top-level field", `{"type":"kind"}`, []string{`"type"`}},
		{"unknown condition field", `{"drop":[{"field":"x","eq":1}]}`, []string{`"eq"`}},
		{"unknown copy field", `{"copy":[{"if":{"field":"x","exists":true},"to":"y","also":"z"}]}`, []string{`"also"`}},
		{"condition with nothing to test", `{"drop":[{"field":"x"}]}`, []string{"drop[0]", "exactly one of equals, gt, exists"}},
		{"condition with equals and gt", `{"drop":[{"field":"x","equals":1,"gt":0}]}`, []string{"drop[0]", "exactly one"}},
		{"condition with gt and exists", `{"copy":[{"if":{"field":"x","gt":0,"exists":true},"to":"y"}]}`, []string{"copy[0]", "exactly one"}},
		{"condition with all three", `{"drop":[{"field":"x","equals":1,"gt":0,"exists":false}]}`, []string{"exactly one"}},
		{"condition without field", `{"drop":[{"exists":true}]}`, []string{"drop[0]", "no field"}},
		{"copy without if", `{"copy":[{"to":"y"}]}`, []string{"copy[0]", "no field"}},
		{"copy without to", `{"copy":[{"if":{"field":"x","exists":true}}]}`, []string{"copy[0]", "to"}},
		{"to with slash", `{"copy":[{"if":{"field":"x","exists":true},"to":"a/b"}]}`, []string{"copy[0]", `"a/b"`}},
		{"to with space", `{"copy":[{"if":{"field":"x","exists":true},"to":"a b"}]}`, []string{`"a b"`}},
		{"to too long", `{"copy":[{"if":{"field":"x","exists":true},"to":"` + strings.Repeat("t", 201) + `"}]}`, []string{"copy[0]"}},
		{"unknown with slash", `{"unknown":"no/type"}`, []string{`"no/type"`}},
		{"unknown not ascii", `{"unknown":"ünknown"}`, []string{"unknown"}},
		{"gt not a number", `{"drop":[{"field":"x","gt":"5"}]}`, nil},
		{"exists not a bool", `{"drop":[{"field":"x","exists":"yes"}]}`, nil},
		{"every problem at once", `{"unknown":"a b","drop":[{"field":"x"}],"copy":[{"if":{"field":"y","exists":true},"to":""}]}`,
			[]string{`"a b"`, "drop[0]", "copy[0]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := routing.ParseRules([]byte(c.rules))
			require.Error(t, err, "rules %s were accepted", c.rules)
			require.Nil(t, r)
			require.ErrorContains(t, err, "routing: rules")
			for _, s := range c.mention {
				require.ErrorContains(t, err, s)
			}
		})
	}
}

// TestParseRulesRefusesTrailingData: a rules file holds one JSON object; a
// second one (say, a botched merge of two files) must not be ignored.
func TestParseRulesRefusesTrailingData(t *testing.T) {
	for _, in := range []string{
		`{"drop":[]} {"drop":[{"field":"debug","equals":true}]}`,
		`{} garbage`,
		`{}}`,
	} {
		_, err := routing.ParseRules([]byte(in))
		require.Error(t, err, in)
	}
}

// TestEqualsComparesJSONValues: equals matches by JSON value, not by text:
// numbers compare as numbers, objects ignore key order and spacing, and
// null matches a present null only.
func TestEqualsComparesJSONValues(t *testing.T) {
	r, err := routing.ParseRules([]byte(`{"drop":[
		{"field":"n","equals":1},
		{"field":"o","equals":{"a":[1,"x"],"b":null}},
		{"field":"z","equals":null},
		{"field":"s","equals":"\u0041"}
	]}`))
	require.NoError(t, err)
	rt := routing.NewTask(r, nil)
	cases := []struct {
		event string
		drop  bool
	}{
		{`{"n":1}`, true},
		{`{"n":1.0}`, true},
		{`{"n":1e0}`, true},
		{`{"n":10e-1}`, true},
		{`{"n":"1"}`, false},
		{`{"n":true}`, false},
		{`{"n":2}`, false},
		{`{"o":{"b":null,"a":[1,"x"]}}`, true},
		{`{"o": { "a" : [ 1.0 , "\u0078" ] , "b" : null } }`, true},
		{`{"o":{"a":["x",1],"b":null}}`, false},
		{`{"o":{"a":[1,"x"]}}`, false},
		{`{"o":{"a":[1,"x"],"b":null,"c":1}}`, false},
		{`{"z":null}`, true},
		{`{}`, false},
		{`{"z":0}`, false},
		{`{"z":"null"}`, false},
		{`{"s":"A"}`, true},
		{`{"s":"a"}`, false},
		{`{"x":{"n":1}}`, false},
	}
	for _, c := range cases {
		topics, err := rt.Route("in", []byte(c.event))
		require.NoError(t, err, c.event)
		require.Equal(t, c.drop, len(topics) == 0, "event %s: topics %v", c.event, topics)
	}
}

func TestLoadRulesFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.json")
	require.NoError(t, os.WriteFile(path, []byte(`{
		"type_field": "kind",
		"unknown": "misc",
		"drop": [{"field": "test", "exists": true}],
		"copy": [
			{"if": {"field": "country", "equals": "NL"}, "to": "nl"},
			{"if": {"field": "amount", "gt": 100}, "to": "big"},
			{"if": {"field": "vip", "exists": true}, "to": "vip"}
		]
	}`), 0o600))
	r, err := routing.LoadRules(path)
	require.NoError(t, err)
	rt := routing.NewTask(r, nil)
	cases := []struct {
		event string
		want  []string
	}{
		{`{"kind":"order","country":"NL","amount":150,"vip":null}`, []string{"orders.order", "orders.nl", "orders.big", "orders.vip"}},
		{`{"kind":"order","amount":100}`, []string{"orders.order"}},
		{`{"kind":"order","amount":100.01}`, []string{"orders.order", "orders.big"}},
		{`{"country":"BE"}`, []string{"orders.misc"}},
		{`{"type":"order"}`, []string{"orders.misc"}}, // "type" means nothing here
		{`{"kind":"order","test":false}`, nil},        // exists: true drops whatever the value
		{`{"kind":"order","test":null,"amount":1e6}`, nil},
		{`{"debug":true,"kind":"x"}`, []string{"orders.x"}}, // the default drop rule is replaced
	}
	for _, c := range cases {
		topics, err := rt.Route("orders", []byte(c.event))
		require.NoError(t, err, c.event)
		require.Equal(t, c.want, topics, c.event)
	}
	_, err = rt.Route("orders", []byte(`{"kind":7}`))
	require.Error(t, err)
	require.NotErrorIs(t, err, routing.ErrNotObject)
}

func TestLoadRulesErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := routing.LoadRules(filepath.Join(dir, "missing.json"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, "missing.json")

	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"copy":[{"if":{"field":"a","gt":1},"to":"x y"}]}`), 0o600))
	_, err = routing.LoadRules(bad)
	require.ErrorContains(t, err, `"x y"`)
}

// TestDefaultRulesRoundTrip: the defaults, written out in their JSON form
// and parsed back, route like the defaults.
func TestDefaultRulesRoundTrip(t *testing.T) {
	def := routing.DefaultRules()
	b, err := json.Marshal(def)
	require.NoError(t, err)
	back, err := routing.ParseRules(b)
	require.NoError(t, err, "defaults marshal to %s", b)
	a, z := routing.NewTask(def, nil), routing.NewTask(back, nil)
	for _, e := range []string{`{"type":"click"}`, `{"debug":true}`, `{"revenue":3}`, `{"type":"a","revenue":0}`, `{}`} {
		ta, ea := a.Route("in", []byte(e))
		tz, ez := z.Route("in", []byte(e))
		require.Equal(t, ta, tz, e)
		require.Equal(t, ea, ez, e)
	}
}

func ExampleParseRules() {
	rules, err := routing.ParseRules([]byte(`{
		"type_field": "kind",
		"drop": [{"field": "internal", "equals": true}],
		"copy": [{"if": {"field": "amount", "gt": 1000}, "to": "large"}]
	}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	rt := routing.NewTask(rules, nil)
	for _, event := range []string{
		`{"kind": "payment", "amount": 2500}`,
		`{"kind": "payment", "amount": 10}`,
		`{"amount": 5}`,
		`{"kind": "payment", "internal": true}`,
		`[1, 2, 3]`,
	} {
		topics, err := rt.Route("ledger", []byte(event))
		if err != nil {
			fmt.Printf("%-38s error: %v\n", event, err)
			continue
		}
		fmt.Printf("%-38s %v\n", event, topics)
	}
	// Output:
	// {"kind": "payment", "amount": 2500}    [ledger.payment ledger.large]
	// {"kind": "payment", "amount": 10}      [ledger.payment]
	// {"amount": 5}                          [ledger.unknown]
	// {"kind": "payment", "internal": true}  []
	// [1, 2, 3]                              error: stream: decode json: not a JSON object
}
