// Package routing is the routing task of the router example: Netflix
// Keystone's job of splitting one stream of events into many topics,
// filtering some and copying others.
//
// Rules are small and declarative. With the defaults, for an input topic
// "events":
//
//   - every event goes to "events.<type>", or "events.unknown" when it has
//     no "type" field;
//   - an event with "debug": true is dropped;
//   - an event with "revenue" > 0 is also copied to "events.revenue";
//   - a message that is not a JSON object (or whose type is not a string
//     usable in a topic name) makes Process return an error, which the job's
//     dead-letter policy sends to "<job>-dlq".
//
// A rules file replaces the defaults; see [Rules] for its JSON form.
package routing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// Rules decide where an event goes. The JSON form is
//
//	{
//	  "type_field": "type",
//	  "unknown": "unknown",
//	  "drop": [{"field": "debug", "equals": true}],
//	  "copy": [{"if": {"field": "revenue", "gt": 0}, "to": "revenue"}]
//	}
//
// Every event goes to "<input>.<value of type_field>" (or
// "<input>.<unknown>" when the field is missing or null), unless a drop
// condition matches; each matching copy rule also sends it to
// "<input>.<to>".
type Rules struct {
	TypeField string     `json:"type_field"`
	Unknown   string     `json:"unknown"`
	Drop      []Cond     `json:"drop"`
	Copy      []CopyRule `json:"copy"`
}

// Cond tests one top-level field of an event. Exactly one of Equals, GT
// and Exists is set.
type Cond struct {
	Field string `json:"field"`
	// Equals matches when the field's JSON value equals this one.
	Equals json.RawMessage `json:"equals,omitempty"`
	// GT matches when the field is a number greater than this.
	GT *float64 `json:"gt,omitempty"`
	// Exists matches when the field is present (true) or absent (false).
	Exists *bool `json:"exists,omitempty"`

	equals any // Equals, decoded
}

// CopyRule sends a copy of every event matching If to "<input>.<To>".
type CopyRule struct {
	If Cond   `json:"if"`
	To string `json:"to"`
}

// DefaultRules are the rules described in the package documentation.
func DefaultRules() *Rules {
	zero := 0.0
	r := &Rules{
		TypeField: "type",
		Unknown:   "unknown",
		Drop:      []Cond{{Field: "debug", Equals: json.RawMessage("true")}},
		Copy:      []CopyRule{{If: Cond{Field: "revenue", GT: &zero}, To: "revenue"}},
	}
	if err := r.compile(); err != nil {
		panic(err) // the defaults are constant; this cannot happen
	}
	return r
}

// ParseRules reads rules in their JSON form and checks them. Missing
// type_field and unknown take their defaults ("type", "unknown").
func ParseRules(b []byte) (*Rules, error) {
	var r Rules
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("routing: rules: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("routing: rules: data after the rules object")
	}
	if r.TypeField == "" {
		r.TypeField = "type"
	}
	if r.Unknown == "" {
		r.Unknown = "unknown"
	}
	if err := r.compile(); err != nil {
		return nil, err
	}
	return &r, nil
}

// LoadRules reads a rules file.
func LoadRules(path string) (*Rules, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	return ParseRules(b)
}

func (r *Rules) compile() error {
	var errs []error
	if !validSuffix(r.Unknown) {
		errs = append(errs, fmt.Errorf("unknown %q is not usable in a topic name", r.Unknown))
	}
	for i := range r.Drop {
		if err := r.Drop[i].compile(); err != nil {
			errs = append(errs, fmt.Errorf("drop[%d]: %w", i, err))
		}
	}
	for i := range r.Copy {
		if err := r.Copy[i].If.compile(); err != nil {
			errs = append(errs, fmt.Errorf("copy[%d]: %w", i, err))
		}
		if !validSuffix(r.Copy[i].To) {
			errs = append(errs, fmt.Errorf("copy[%d]: to %q is not usable in a topic name", i, r.Copy[i].To))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("routing: rules: %w", err)
	}
	return nil
}

func (c *Cond) compile() error {
	if c.Field == "" {
		return errors.New("condition has no field")
	}
	n := 0
	if c.Equals != nil {
		n++
		if err := json.Unmarshal(c.Equals, &c.equals); err != nil {
			return fmt.Errorf("equals: %w", err)
		}
	}
	if c.GT != nil {
		n++
	}
	if c.Exists != nil {
		n++
	}
	if n != 1 {
		return fmt.Errorf("condition on %q must set exactly one of equals, gt, exists", c.Field)
	}
	return nil
}

// validSuffix reports whether s can follow "<input>." in a Kafka topic
// name: letters, digits, '.', '_' and '-', at most 200 bytes.
func validSuffix(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
