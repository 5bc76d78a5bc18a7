package experiments

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/grete-go/grete/stream"
	"github.com/stretchr/testify/require"
)

func TestExperimentOf(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" means an error
	}{
		{`{"experiment":"exp-1"}`, "exp-1"},
		{` { "user" : "u1" , "experiment" : "checkout-v2" } `, "checkout-v2"},
		{`{"meta":{"experiment":"inner"},"experiment":"outer"}`, "outer"},
		{`{"list":["experiment","x"],"experiment":"e"}`, "e"},
		{`{"experiment":"a","experiment":"b"}`, "b"}, // the last wins, as in encoding/json
		{`{"exp\u0065riment":"escaped-name"}`, "escaped-name"},
		{`{"experiment":"caf\u00e9 \"new\""}`, `café "new"`},
		{`{"experiment":"naïve"}`, "naïve"},
		{`{"n":1.5e3,"ok":true,"no":null,"experiment":"after-scalars"}`, "after-scalars"},
		{`{"meta":{"experiment":"inner"}}`, ""},
		{`{"experiment":""}`, ""},
		{`{"experiment":42}`, ""},
		{`{"experiment":null}`, ""},
		{`{"Experiment":"case-differs"}`, ""},
		{`{}`, ""},
		{`[{"experiment":"in-array"}]`, ""},
		{`"experiment"`, ""},
		{`{"experiment":"truncated"`, ""},
		{`not json`, ""},
		{``, ""},
	} {
		got, err := experimentOf([]byte(tc.in))
		if tc.want == "" {
			var de *stream.DecodeError
			require.True(t, errors.As(err, &de), "%s: want a DecodeError, got %v (%q)", tc.in, err, got)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
}

// A bad event's error says what is wrong with its "experiment" member.
func TestExperimentOfNamesTheMember(t *testing.T) {
	for in, want := range map[string]string{
		`{"experiment":7}`:         `member "experiment" is a number 7, want a string`,
		`{"experiment":["a"]}`:     `member "experiment" is an array ["a"], want a string`,
		`{"experiment":""}`:        `member "experiment" is empty`,
		`{"user":"u1"}`:            `no "experiment" member`,
		`{"experiment":null}`:      `no "experiment" member`,
		`[{"experiment":"x"}]`:     "not a JSON object",
		`{"experiment":"x","n":1}`: "",
	} {
		_, err := experimentOf([]byte(in))
		if want == "" {
			require.NoError(t, err, in)
			continue
		}
		require.ErrorContains(t, err, want, in)
	}
}

func TestGeneratedEventsParse(t *testing.T) {
	g := NewTraffic(1, 50)
	for range 1000 {
		k, v := g.Next(time.UnixMilli(1_700_000_000_000))
		exp, err := experimentOf(v)
		require.NoError(t, err, "%s", v)
		require.Equal(t, string(k), exp, "events are keyed by experiment")
	}
}

// FuzzExperimentOf checks the scanner against encoding/json.
func FuzzExperimentOf(f *testing.F) {
	for _, s := range []string{
		`{"experiment":"exp-1"}`, `{"a":{"experiment":"x"},"experiment":"y"}`, `{"experiment":"\u00e9"}`,
		`{"exp\u0065riment":"z"}`, `{"experiment":1}`, `[1]`, `{"experiment":"a","experiment":"b"}`,
		"{\"experiment\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := experimentOf(b)
		var m map[string]json.RawMessage
		want := ""
		if json.Unmarshal(b, &m) == nil {
			if raw, ok := m["experiment"]; ok {
				var s string
				if json.Unmarshal(raw, &s) == nil {
					want = s
				}
			}
		}
		if want == "" {
			if err == nil {
				t.Fatalf("%q: got %q, encoding/json finds no experiment", b, got)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("%q: got %q, %v; encoding/json says %q", b, got, err, want)
		}
	})
}
