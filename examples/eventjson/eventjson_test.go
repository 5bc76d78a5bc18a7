package eventjson

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestIsObject(t *testing.T) {
	for in, want := range map[string]bool{
		`{}`: true, ` {"a":1} `: true, `{"a":{"b":[1,"}"]}}`: true,
		``: false, `[]`: false, `"{}"`: false, `{`: false, `{"a":}`: false, `{} {}`: false, `null`: false,
	} {
		if got := IsObject([]byte(in)); got != want {
			t.Errorf("IsObject(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestEachMemberAgreesWithEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{}`,
		`{"a":1,"b":"x,y}","c":{"d":[1,{"e":"]"}]},"f":null,"g":true,"h":-1.5e3}`,
		" {\n\t\"a\" : \"q\\\"uote\" ,\r\n \"b\":[ ] } ",
		`{"esc\u0061ped":"v","":0}`,
	} {
		var want map[string]json.RawMessage
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		EachMember([]byte(in), func(key, raw []byte) bool {
			var k string
			if err := json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &k); err != nil {
				t.Fatalf("%s: key %q: %v", in, key, err)
			}
			got[k] = string(raw)
			return true
		})
		if len(got) != len(want) {
			t.Fatalf("%s: members %v, want %d", in, got, len(want))
		}
		for k, v := range want {
			if got[k] != string(v) {
				t.Errorf("%s: member %q = %q, want %q", in, k, got[k], v)
			}
		}
	}
}

func TestEachMemberStopsWhenAsked(t *testing.T) {
	n := 0
	EachMember([]byte(`{"a":1,"b":2,"c":3}`), func(_, _ []byte) bool { n++; return n < 2 })
	if n != 2 {
		t.Fatalf("visited %d members after asking to stop at 2", n)
	}
}

func TestKeyIs(t *testing.T) {
	cases := []struct {
		raw, name string
		want      bool
	}{
		{`type`, "type", true}, {`ty\u0070e`, "type", true}, {`typ`, "type", false}, {`t\"`, `t"`, true}, {`bad\u00`, "bad", false},
	}
	for _, c := range cases {
		if got := KeyIs([]byte(c.raw), c.name); got != c.want {
			t.Errorf("KeyIs(%q, %q) = %v, want %v", c.raw, c.name, got, c.want)
		}
	}
}

func TestStringAndDescribe(t *testing.T) {
	for raw, want := range map[string]string{`"a"`: "a", `"\u00e9t\u00e9"`: "été", `"x\ny"`: "x\ny"} {
		if got, ok := String([]byte(raw)); !ok || got != want {
			t.Errorf("String(%s) = %q, %v; want %q", raw, got, ok, want)
		}
	}
	for _, raw := range []string{`1`, `null`, `{"a":1}`, `"\x"`} {
		if got, ok := String([]byte(raw)); ok {
			t.Errorf("String(%s) = %q, want not a string", raw, got)
		}
	}
	for raw, want := range map[string]string{`"12"`: `a string "12"`, `12.5`: "a number 12.5", `[1]`: "an array [1]", `true`: "a boolean true", `null`: "null",
		`"` + strings.Repeat("x", 50) + `"`: "a string"} {
		if got := Describe([]byte(raw)); got != want {
			t.Errorf("Describe(%s) = %q, want %q", raw, got, want)
		}
	}
}
