package main

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/grete-go/grete/stream"
)

// Every event is decoded and many snapshots are encoded, so both have a
// fast path. The decoder's fast path accepts only the plain form of an
// event (known keys, strings without escapes, integers) and hands anything
// else to encoding/json, so what it accepts and what it makes are
// encoding/json's (FuzzParseEvent checks this). The encoder writes the
// bytes json.Marshal would (TestAppendJSONMatchesMarshal checks this).

// parseEvent decodes an event into e.
func parseEvent(b []byte, e *Event) error {
	*e = Event{}
	if parsePlainEvent(b, e) {
		return nil
	}
	*e = Event{}
	if err := json.Unmarshal(b, e); err != nil {
		return &stream.DecodeError{Format: "json", Err: err}
	}
	return nil
}

// parsePlainEvent decodes b into e when b is valid UTF-8 and a JSON object
// whose keys are exactly Event's, whose strings have no escapes, and whose
// numbers are integers. It reports false for anything else. The strings of
// e are cut from one copy of b.
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
		var num *int64
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
		case "ts":
			num = &e.TS
		case "revenue":
			num = &e.Revenue
		default:
			return false // unknown, or a case-folded match: encoding/json decides
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
			v, j, ok := plainInt(b, i)
			if !ok {
				return false
			}
			*num, i = v, j
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

// plainInt returns the integer at b[i] (JSON syntax, no fraction or
// exponent, within int64) and the index past it.
func plainInt(b []byte, i int) (int64, int, bool) {
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	digits := j
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	switch {
	case j == digits, b[digits] == '0' && j-digits > 1:
		return 0, 0, false
	case j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E'):
		return 0, 0, false
	}
	v, err := strconv.ParseInt(string(b[i:j]), 10, 64)
	return v, j, err == nil
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
	b = strconv.AppendInt(b, s.Revenue, 10)
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
			b = strconv.AppendInt(b, it.Revenue, 10)
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
