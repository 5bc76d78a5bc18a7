package main

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzParseEvent checks the fast path of parseEvent against encoding/json:
// whatever it accepts, encoding/json accepts and decodes the same way.
func FuzzParseEvent(f *testing.F) {
	for _, e := range simulate(defaultGen(1, 100, time.Minute, time.Second), 50, time.UnixMilli(t0), 10*time.Millisecond) {
		b, _ := json.Marshal(e)
		f.Add(b)
	}
	for _, s := range []string{
		`{}`, `{"ts":1e3}`, `{"ts":01}`, `{"ts":-0}`, `{"ts":9223372036854775808}`, `{"TS":1}`, `{"ts":1,"ts":2}`,
		`{"event_id":"a\"b"}`, `{"event_id":"\u00e9"}`, `{"event_id":"é"}`, `{"event_id":null}`, `{"revenue":12.5}`,
		` { "type" : "x" , "ip":"1" } `, `{"type":"x",}`, `{"type":"x"} x`, "{\"type\":\"\xff\"}", `{"other":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, std Event
		if !parsePlainEvent(b, &fast) {
			return
		}
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", b, err)
		}
		if fast != std {
			t.Fatalf("%q: fast path %+v, encoding/json %+v", b, fast, std)
		}
	})
}

func TestParseEventFallsBack(t *testing.T) {
	var e Event
	require.NoError(t, parseEvent([]byte(`{"event_id":"a\u00e9","Session_ID":"s","ts":1}`), &e))
	require.Equal(t, Event{EventID: "aé", SessionID: "s", TS: 1}, e)
	require.Error(t, parseEvent([]byte(`{"revenue":12.5}`), &e))
	require.Error(t, parseEvent([]byte(`[]`), &e))
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
			Revenue: -rng.Int64N(1000), Browser: str(), Country: str(), IP: str(), Final: i%2 == 0}
		if i%7 != 0 {
			s.Events = []Item{}
		}
		for range rng.IntN(4) {
			s.Events = append(s.Events, Item{EventID: str(), TS: rng.Int64(), Type: str(), Experiment: str(), Revenue: rng.Int64N(1e9)})
		}
		want, err := json.Marshal(&s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(s.appendJSON(nil)))
	}
}
