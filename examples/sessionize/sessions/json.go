package sessions

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/grete-go/grete/examples/eventjson"
	"github.com/grete-go/grete/stream"
)

// Every event is decoded and many snapshots are encoded, so both have a
// fast path. The decoder's fast path accepts only the plain form of an
// event (known keys, strings without escapes, numbers) and hands anything
// else to decodeEvent, which reads every member with encoding/json's
// rules for names (the last of duplicates counts; case-insensitive
// matches) and Grete's for values, so what the fast path accepts and what
// it makes are decodeEvent's (FuzzParseEvent checks this). The encoder
// writes the bytes json.Marshal would (TestAppendJSONMatchesMarshal checks
// this).

// FieldError says which member of an event has a value of the wrong kind.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("field %q: %v", e.Field, e.Err) }

func (e *FieldError) Unwrap() error { return e.Err }

// parseEvent decodes an event into e.
func parseEvent(b []byte, e *Event) error {
	*e = Event{}
	if parsePlainEvent(b, e) {
		return nil
	}
	*e = Event{}
	return decodeEvent(b, e)
}

// rawEvent is an event whose members are not decoded yet.
type rawEvent struct {
	EventID    json.RawMessage `json:"event_id"`
	VisitorID  json.RawMessage `json:"visitor_id"`
	SessionID  json.RawMessage `json:"session_id"`
	TS         json.RawMessage `json:"ts"`
	Type       json.RawMessage `json:"type"`
	Experiment json.RawMessage `json:"experiment"`
	Revenue    json.RawMessage `json:"revenue"`
	Browser    json.RawMessage `json:"browser"`
	Country    json.RawMessage `json:"country"`
	IP         json.RawMessage `json:"ip"`
}

// decodeEvent decodes b, which must be a JSON object; members it does not
// know are ignored, and a member that is null counts as missing. A member
// of the wrong kind is a *FieldError naming it.
func decodeEvent(b []byte, e *Event) error {
	if i := skipSpace(b, 0); i >= len(b) || b[i] != '{' {
		return &stream.DecodeError{Format: "json", Err: errors.New("not a JSON object")}
	}
	var r rawEvent
	if err := json.Unmarshal(b, &r); err != nil {
		return &stream.DecodeError{Format: "json", Err: err}
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *string
	}{
		{"event_id", r.EventID, &e.EventID}, {"visitor_id", r.VisitorID, &e.VisitorID},
		{"session_id", r.SessionID, &e.SessionID}, {"type", r.Type, &e.Type},
		{"experiment", r.Experiment, &e.Experiment}, {"browser", r.Browser, &e.Browser},
		{"country", r.Country, &e.Country}, {"ip", r.IP, &e.IP},
	} {
		if isNull(f.raw) {
			continue
		}
		if f.raw[0] != '"' {
			return &FieldError{f.name, fmt.Errorf("want a string, got %s", eventjson.Describe(f.raw))}
		}
		if err := json.Unmarshal(f.raw, f.dst); err != nil {
			return &FieldError{f.name, err}
		}
	}
	if !isNull(r.TS) {
		ts, err := parseMillis(r.TS)
		if err != nil {
			return &FieldError{"ts", numberError("whole Unix milliseconds", r.TS, err)}
		}
		e.TS = ts
	}
	if !isNull(r.Revenue) {
		a, err := parseAmount(r.Revenue)
		if err != nil {
			return &FieldError{"revenue", numberError("a number", r.Revenue, err)}
		}
		e.Revenue = a
	}
	return nil
}

// numberError says why raw is not the number wanted: another kind of
// value, or a number out of range or with a fraction.
func numberError(want string, raw json.RawMessage, err error) error {
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return fmt.Errorf("want %s, got %s", want, eventjson.Describe(raw))
	}
	return fmt.Errorf("want %s, got %s: %w", want, eventjson.Describe(raw), err)
}

func isNull(raw json.RawMessage) bool { return raw == nil || string(raw) == "null" }

// parsePlainEvent decodes b into e when b is valid UTF-8 and a JSON object
// whose keys are exactly Event's, whose strings have no escapes, and whose
// ts and revenue are numbers that parse. It reports false for anything
// else. The strings of e are cut from one copy of b.
func parsePlainEvent(b []byte, e *Event) bool {
	if !utf8.Valid(b) {
		return false
	}
	var str string // b as a string, made at the first string value
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		key, j, ok := plainString(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		var dst *string
		switch string(key) {
		case "event_id":
			dst = &e.EventID
		case "visitor_id":
			dst = &e.VisitorID
		case "session_id":
			dst = &e.SessionID
		case "type":
			dst = &e.Type
		case "experiment":
			dst = &e.Experiment
		case "browser":
			dst = &e.Browser
		case "country":
			dst = &e.Country
		case "ip":
			dst = &e.IP
		case "ts", "revenue":
		default:
			return false // unknown, or a case-folded match: decodeEvent decides
		}
		if dst != nil {
			s, j, ok := plainString(b, i)
			if !ok {
				return false
			}
			if str == "" {
				str = string(b)
			}
			*dst, i = str[j-1-len(s):j-1], j
		} else {
			j := plainNumber(b, i)
			if j == i {
				return false
			}
			var err error
			if key[0] == 't' {
				e.TS, err = parseMillis(b[i:j])
			} else {
				e.Revenue, err = parseAmount(b[i:j])
			}
			if err != nil {
				return false
			}
			i = j
		}
		i = skipSpace(b, i)
		switch {
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		case i < len(b) && b[i] == '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString returns the contents of the string at b[i] and the index
// past it, when it has no escapes or control characters.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// plainNumber returns the index past the run of number characters at b[i]
// (i itself when there is none); parseAmount and parseMillis check that
// the run is a JSON number.
func plainNumber(b []byte, i int) int {
	j := i
	for j < len(b) {
		switch c := b[j]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			j++
			continue
		}
		break
	}
	return j
}

// appendJSON appends s as json.Marshal encodes it.
func (s *Snapshot) appendJSON(b []byte) []byte {
	b = append(b, `{"session_id":`...)
	b = appendString(b, s.SessionID)
	b = append(b, `,"visitor_id":`...)
	b = appendString(b, s.VisitorID)
	b = append(b, `,"start":`...)
	b = strconv.AppendInt(b, s.Start, 10)
	b = append(b, `,"end":`...)
	b = strconv.AppendInt(b, s.End, 10)
	b = append(b, `,"event_count":`...)
	b = strconv.AppendInt(b, int64(s.EventCount), 10)
	b = append(b, `,"revenue":`...)
	b = s.Revenue.AppendJSON(b)
	b = append(b, `,"browser":`...)
	b = appendString(b, s.Browser)
	b = append(b, `,"country":`...)
	b = appendString(b, s.Country)
	b = append(b, `,"ip":`...)
	b = appendString(b, s.IP)
	b = append(b, `,"final":`...)
	b = strconv.AppendBool(b, s.Final)
	b = append(b, `,"events":`...)
	if s.Events == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range s.Events {
			it := &s.Events[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"event_id":`...)
			b = appendString(b, it.EventID)
			b = append(b, `,"ts":`...)
			b = strconv.AppendInt(b, it.TS, 10)
			b = append(b, `,"type":`...)
			b = appendString(b, it.Type)
			b = append(b, `,"experiment":`...)
			b = appendString(b, it.Experiment)
			b = append(b, `,"revenue":`...)
			b = it.Revenue.AppendJSON(b)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string the way encoding/json does:
// HTML-safe, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
