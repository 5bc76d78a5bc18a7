package eventjson

import (
	"encoding/json"
	"strings"
	"testing"
)

var objectCases = []string{
	`{}`, ` {"a":1} `, `{"a":{"b":[1,"}"]}}`, `{"a":-0.5e+10,"b":true,"c":false,"d":null,"e":"x\"\\\/\b\f\n\r\t\u00e9"}`,
	``, `[]`, `"{}"`, `{`, `{"a":}`, `{} {}`, `null`, `{"a":1,}`, `{"a" 1}`, `{a:1}`, `{"a":01}`, `{"a":1.}`,
	`{"a":.5}`, `{"a":1e}`, `{"a":-}`, `{"a":tru}`, `{"a":"\x"}`, `{"a":"\u12"}`, "{\"a\":\"\x01\"}", `{"a":[1,]}`,
	`{"a":[1 2]}`, `{"a":"` + "\xff" + `"}`, `{"a":1}x`, `{"a":{"b":1}`, `{"a":1,"a":2}`, "{\"a\":\n[ ]\t}",
	`{"a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
}

func TestObjectAgreesWithEncodingJSON(t *testing.T) {
	for _, in := range objectCases {
		checkObject(t, []byte(in))
	}
}

func FuzzObject(f *testing.F) {
	for _, in := range objectCases {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkObject(t, b) })
}

// checkObject compares Object with json.Valid, and its members with those
// encoding/json decodes.
func checkObject(t *testing.T, b []byte) {
	t.Helper()
	var keys []string
	var raws []string
	got := Object(b, func(key, raw []byte) {
		keys = append(keys, string(key))
		raws = append(raws, string(raw))
	})
	i := skipSpace(b, 0)
	want := json.Valid(b) && i < len(b) && b[i] == '{'
	if got != want || got != IsObject(b) {
		t.Fatalf("Object(%q) = %v, json.Valid says %v", b, got, want)
	}
	if !got {
		return
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	var each []string
	EachMember(b, func(key, raw []byte) bool {
		each = append(each, string(key)+"="+string(raw))
		return true
	})
	if len(each) != len(keys) {
		t.Fatalf("%q: Object saw %d members, EachMember %d", b, len(keys), len(each))
	}
	for k := range keys {
		if each[k] != keys[k]+"="+raws[k] {
			t.Fatalf("%q: member %d is %q, EachMember says %q", b, k, keys[k]+"="+raws[k], each[k])
		}
		if !json.Valid([]byte(raws[k])) {
			t.Fatalf("%q: member %q has invalid raw value %q", b, keys[k], raws[k])
		}
	}
}

func BenchmarkValidateAndScan(b *testing.B) {
	ev := []byte(`{"id":"e123456","user":"u789","type":"click","revenue":0,"debug":false,"ts":1733300000000,"pad":"xxxxxxxx"}`)
	b.Run("json.Valid+EachMember", func(b *testing.B) {
		for range b.N {
			if IsObject(ev) {
				EachMember(ev, func(_, _ []byte) bool { return true })
			}
		}
	})
	b.Run("Object", func(b *testing.B) {
		for range b.N {
			Object(ev, func(_, _ []byte) {})
		}
	})
}
