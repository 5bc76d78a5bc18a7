package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/grete-go/grete/internal/jsonscan"
	"github.com/grete-go/grete/stream"
)

// The counting task reads one top-level member of every event, with
// internal/jsonscan: decoding whole events would cost more than the rest of
// the task together.

// Errors of experimentOf, inside a *stream.DecodeError.
var (
	errNotObject    = errors.New("not a JSON object")
	errNoExperiment = errors.New(`no "experiment" string member`)
)

// experimentOf returns the top-level "experiment" member of a JSON object,
// which must be a non-empty string. With duplicate names the last one
// counts, as in encoding/json.
func experimentOf(b []byte) (string, error) {
	if !jsonscan.IsObject(b) {
		return "", &stream.DecodeError{Format: "JSON event", Err: errNotObject}
	}
	var name string
	found := false
	jsonscan.EachMember(b, func(key, raw []byte) bool {
		if jsonscan.KeyIs(key, "experiment") {
			name, found = stringValue(raw)
		}
		return true
	})
	if !found || name == "" {
		return "", &stream.DecodeError{Format: "JSON event", Err: errNoExperiment}
	}
	return name, nil
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
