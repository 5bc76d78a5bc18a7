package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/grete-go/grete/stream"
)

// The counting task reads one top-level member of every event. Decoding
// whole events would cost more than the rest of the task together, so an
// event is checked with json.Valid and then scanned for "experiment" only.

// Errors of experimentOf, inside a *stream.DecodeError.
var (
	errNotObject    = errors.New("not a JSON object")
	errNoExperiment = errors.New(`no "experiment" string member`)
)

// experimentOf returns the top-level "experiment" member of a JSON object,
// which must be a non-empty string.
func experimentOf(b []byte) (string, error) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' || !json.Valid(b) {
		return "", &stream.DecodeError{Format: "JSON event", Err: errNotObject}
	}
	i++
	// Scan every member: with duplicate names the last one counts, as in
	// encoding/json.
	var name string
	found := false
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] == '}' {
			break
		}
		end := skipString(b, i)
		key := b[i+1 : end-1]
		i = skipSpace(b, end) + 1 // past ':'
		i = skipSpace(b, i)
		start := i
		i = skipValue(b, i)
		if isName(key, "experiment") {
			name, found = stringValue(b[start:i])
		}
		i = skipSpace(b, i)
		if i < len(b) && b[i] == ',' {
			i++
		}
	}
	if !found || name == "" {
		return "", &stream.DecodeError{Format: "JSON event", Err: errNoExperiment}
	}
	return name, nil
}

// isName reports whether a raw member name (between its quotes, escapes not
// decoded) is name.
func isName(raw []byte, name string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == name
	}
	s, ok := stringValue(append(append([]byte{'"'}, raw...), '"'))
	return ok && s == name
}

// stringValue decodes a raw JSON value that must be a string.
func stringValue(raw []byte) (string, bool) {
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

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string that starts at b[i].
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

// skipValue returns the index just past the (valid) value that starts at
// b[i].
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
				if depth--; depth == 0 {
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
