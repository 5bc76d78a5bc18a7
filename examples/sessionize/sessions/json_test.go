package sessions

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzParseEvent checks the fast path of parseEvent against decodeEvent:
// whatever it accepts, decodeEvent accepts and decodes the same way.
func FuzzParseEvent(f *testing.F) {
	for _, e := range Simulate(DefaultTraffic(1, 100, time.Minute, time.Second), 50, time.UnixMilli(t0), 10*time.Millisecond) {
		b, _ := json.Marshal(e)
		f.Add(b)
	}
	for _, s := range []string{
		`{}`, `{"ts":1e3}`, `{"ts":01}`, `{"ts":-0}`, `{"ts":9223372036854775808}`, `{"TS":1}`, `{"ts":1,"ts":2}`,
		`{"event_id":"a\"b"}`, `{"event_id":"\u00e9"}`, `{"event_id":"é"}`, `{"event_id":null}`, `{"revenue":12.5}`,
		`{"revenue":1.25e1}`, `{"revenue":0.0}`, `{"revenue":12.50,"ts":1.7e12}`, `{"revenue":-}`, `{"revenue":1e}`,
		` { "type" : "x" , "ip":"1" } `, `{"type":"x",}`, `{"type":"x"} x`, "{\"type\":\"\xff\"}", `{"other":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, slow Event
		if !parsePlainEvent(b, &fast) {
			return
		}
		if err := decodeEvent(b, &slow); err != nil {
			t.Fatalf("fast path accepted %q, decodeEvent refuses it: %v", b, err)
		}
		if fast != slow {
			t.Fatalf("%q: fast path %+v, decodeEvent %+v", b, fast, slow)
		}
	})
}

// Events are decoded by the rules of JSON, not of Go's types: a number is
// a number however it is written, unknown members are ignored, and a
// member of the wrong kind is an error that names it.
func TestParseEvent(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Event
	}{
		{`{"event_id":"a\u00e9","Session_ID":"s","ts":1}`, Event{EventID: "aé", SessionID: "s", TS: 1}},
		{`{"revenue":12.5}`, Event{Revenue: 12_500_000}},
		{`{"revenue":12.50}`, Event{Revenue: 12_500_000}},
		{`{"revenue":1.25e1,"ts":1.7e12}`, Event{Revenue: 12_500_000, TS: 1_700_000_000_000}},
		{`{"revenue":0.0}`, Event{}},
		{`{"revenue":151.57}`, Event{Revenue: 151_570_000}},
		{`{"revenue":null,"type":null}`, Event{}},
		{`{"unknown":{"nested":[1,2]},"type":"x"}`, Event{Type: "x"}},
		{` {"type" : "x", "ip":"1"} `, Event{Type: "x", IP: "1"}},
	} {
		var e Event
		require.NoError(t, parseEvent([]byte(c.in), &e), c.in)
		require.Equal(t, c.want, e, c.in)
	}
	for in, field := range map[string]string{
		`{"session_id":12}`:        "session_id",
		`{"event_id":true}`:        "event_id",
		`{"revenue":"12.50"}`:      "revenue",
		`{"revenue":{}}`:           "revenue",
		`{"ts":"1700000000000"}`:   "ts",
		`{"ts":1700000000000.5}`:   "ts",
		`{"ts":1e30}`:              "ts",
		`{"type":["click"]}`:       "type",
		`{"visitor_id":{"id":1}}`:  "visitor_id",
		`{"revenue":1e400}`:        "revenue",
		`{"ip":12,"session_id":1}`: "", // the first of several, whichever
	} {
		var e Event
		err := parseEvent([]byte(in), &e)
		var fe *FieldError
		require.ErrorAs(t, err, &fe, in)
		if field != "" {
			require.Equal(t, field, fe.Field, in)
			require.Contains(t, err.Error(), `"`+field+`"`, in)
		}
	}
	for _, in := range []string{`[]`, `12`, `"x"`, `{"type":"x"`, `{"type":"x"} {}`} {
		var e Event
		require.Error(t, parseEvent([]byte(in), &e), in)
	}
}

// TestAppendJSONMatchesMarshal checks that the snapshot encoder writes what
// json.Marshal writes, awkward strings included.
func TestAppendJSONMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "é", "<", ">", "&", "\"", "\\", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\u2028", "\u2029", "\xff", "\xe2\x82", "😀", " ", "/"}
	str := func() string {
		var s string
		for range rng.IntN(6) {
			s += pieces[rng.IntN(len(pieces))]
		}
		return s
	}
	for i := range 2000 {
		s := Snapshot{SessionID: str(), VisitorID: str(), Start: rng.Int64() - rng.Int64(), End: rng.Int64(), EventCount: rng.IntN(100),
			Revenue: -Amount(rng.Int64N(1e9)), Browser: str(), Country: str(), IP: str(), Final: i%2 == 0}
		if i%7 != 0 {
			s.Events = []Item{}
		}
		for range rng.IntN(4) {
			s.Events = append(s.Events, Item{EventID: str(), TS: rng.Int64(), Type: str(), Experiment: str(), Revenue: Amount(rng.Int64N(1e12))})
		}
		want, err := json.Marshal(&s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(s.appendJSON(nil)))
	}
}
