package experiments

import (
	"errors"
	"fmt"

	"github.com/grete-go/grete/examples/eventjson"
	"github.com/grete-go/grete/stream"
)

// The counting task reads one top-level member of every event, with the
// examples' eventjson scanner: decoding whole events would cost more than
// the rest of the task together.

// Errors of experimentOf, inside a *stream.DecodeError.
var (
	errNotObject    = errors.New("not a JSON object")
	errNoExperiment = errors.New(`no "experiment" member`)
)

// experimentOf returns the top-level "experiment" member of a JSON object,
// which must be a non-empty string; other members are ignored. With
// duplicate names the last one counts, as in encoding/json. An error names
// what is wrong: not an object, no such member, or a member of the wrong
// kind.
func experimentOf(b []byte) (string, error) {
	if !eventjson.IsObject(b) {
		return "", &stream.DecodeError{Format: "JSON event", Err: errNotObject}
	}
	var name string
	var raw []byte
	found, isString := false, false
	eventjson.EachMember(b, func(key, v []byte) bool {
		if eventjson.KeyIs(key, "experiment") {
			raw = v
			name, isString = eventjson.String(v)
			found = string(v) != "null"
		}
		return true
	})
	switch {
	case !found:
		return "", &stream.DecodeError{Format: "JSON event", Err: errNoExperiment}
	case !isString && raw[0] == '"':
		return "", &stream.DecodeError{Format: "JSON event", Err: fmt.Errorf(`%w: member "experiment" is not a valid JSON string`, errNoExperiment)}
	case !isString:
		return "", &stream.DecodeError{Format: "JSON event", Err: fmt.Errorf(`%w: member "experiment" is %s, want a string`, errNoExperiment, eventjson.Describe(raw))}
	case name == "":
		return "", &stream.DecodeError{Format: "JSON event", Err: fmt.Errorf(`%w: member "experiment" is empty`, errNoExperiment)}
	}
	return name, nil
}
