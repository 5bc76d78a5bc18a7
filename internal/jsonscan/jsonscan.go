// Package jsonscan reads top-level members of JSON objects without decoding
// them: the examples route and count events by a few fields and forward the
// bytes as they are, so decoding whole events would cost more than the rest
// of the job together. Objects are validated with json.Valid first, then
// scanned.
package jsonscan

import (
	"bytes"
	"encoding/json"
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
