// Package eventjson reads the top-level members of JSON events without
// decoding them: the examples route, count and sessionize events by a few
// fields and forward the bytes as they are, and decoding whole events
// would cost more than the rest of a job together. An object is validated
// with json.Valid first, then scanned.
//
// It is example code, shared by the example jobs: copy it along with them.
package eventjson

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// IsObject reports whether b is one valid JSON object.
func IsObject(b []byte) bool {
	i := skipSpace(b, 0)
	return i < len(b) && b[i] == '{' && json.Valid(b)
}

// EachMember calls fn with the key and raw value of every top-level member
// of b, a valid JSON object, until fn returns false. key is the key's raw
// bytes without quotes (escapes not decoded).
func EachMember(b []byte, fn func(key, raw []byte) bool) {
	i := skipSpace(b, 0) + 1 // past '{'
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] == '}' {
			return
		}
		end := skipString(b, i)
		key := b[i+1 : end-1]
		i = skipSpace(b, end)
		i = skipSpace(b, i+1) // past ':'
		start := i
		i = skipValue(b, i)
		if !fn(key, b[start:i]) {
			return
		}
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i++
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number, true, false, null
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		return i
	}
}

// KeyIs reports whether a raw key (as EachMember gives it) equals name.
func KeyIs(raw []byte, name string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == name
	}
	var s string
	if err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s); err != nil {
		return false
	}
	return s == name
}

// String decodes raw, a JSON value, when it is a string.
func String(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// Describe names the kind of raw, a JSON value, for an error message:
// "a string", "a number", ..., followed by the value itself when short.
func Describe(raw []byte) string {
	kind := "a number"
	switch raw[0] {
	case '"':
		kind = "a string"
	case '{':
		kind = "an object"
	case '[':
		kind = "an array"
	case 't', 'f':
		kind = "a boolean"
	case 'n':
		kind = "null"
		return kind
	}
	if len(raw) <= 40 {
		return kind + " " + string(raw)
	}
	return kind
}
