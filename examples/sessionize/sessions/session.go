package sessions

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Event is one input event, as JSON on the input topic, keyed by
// visitor_id. Revenue is a decimal amount, summed exactly (see Amount).
type Event struct {
	EventID    string `json:"event_id"`
	VisitorID  string `json:"visitor_id"`
	SessionID  string `json:"session_id"`
	TS         int64  `json:"ts"` // Unix milliseconds
	Type       string `json:"type"`
	Experiment string `json:"experiment,omitempty"`
	Revenue    Amount `json:"revenue,omitempty"`
	Browser    string `json:"browser,omitempty"`
	Country    string `json:"country,omitempty"`
	IP         string `json:"ip,omitempty"`
}

// validate reports what makes an event unusable: without a session_id,
// an event_id and a positive ts it cannot be placed in a session.
func (e *Event) validate() error {
	var missing []string
	if e.SessionID == "" {
		missing = append(missing, "session_id")
	}
	if e.EventID == "" {
		missing = append(missing, "event_id")
	}
	if e.TS <= 0 {
		missing = append(missing, "ts")
	}
	if len(missing) > 0 {
		return fmt.Errorf("event without %v", missing)
	}
	return nil
}

// Snapshot is what the job emits for a session, as JSON keyed by
// session_id: the session's metadata, taken from its first event (smallest
// ts, ties broken by the smaller event_id, compared bytewise), and its
// events ordered by ts, then event_id. Start and End are the smallest and
// largest ts, Revenue the sum of the events' revenue. Final is true on the
// last snapshot of a session that closed; its state is deleted after it.
type Snapshot struct {
	SessionID  string `json:"session_id"`
	VisitorID  string `json:"visitor_id"`
	Start      int64  `json:"start"`
	End        int64  `json:"end"`
	EventCount int    `json:"event_count"`
	Revenue    Amount `json:"revenue"`
	Browser    string `json:"browser"`
	Country    string `json:"country"`
	IP         string `json:"ip"`
	Final      bool   `json:"final"`
	Events     []Item `json:"events"`
}

// Item is an event's own fields inside a Snapshot.
type Item struct {
	EventID    string `json:"event_id"`
	TS         int64  `json:"ts"`
	Type       string `json:"type"`
	Experiment string `json:"experiment"`
	Revenue    Amount `json:"revenue"`
}

// state is a session's accumulator as the window aggregator stores it: a
// header with the first event's ts, event_id and metadata, then the
// events' own fields, in the order they arrived:
//
//	state  = version(2) varint(ts) str(event_id) str(visitor_id) str(browser) str(country) str(ip) item*
//	item   = varint(ts) str(event_id) str(type) str(experiment) varint(revenue)
//	str    = uvarint(len) bytes
//
// revenue is an Amount (millionths); in version 1, which took revenue as
// an integer, it is whole units. A version 1 state is rewritten as
// version 2 the first time an event is added to it.
//
// Adding an event appends one item and reads only the header, whatever the
// session's size, and merging two sessions concatenates their items: the
// events are decoded and sorted only when a snapshot is made. (Decoding,
// inserting and re-encoding a list on every event would cost in
// proportion to the session's length, per event.)
type state []byte

const (
	stateVersion   = 2
	stateVersionV1 = 1 // revenue in whole units
)

// header is the decoded header of a state; n is its length in bytes.
type header struct {
	version                                byte
	ts                                     int64
	eventID, visitor, browser, country, ip string
	n                                      int
}

// before reports whether (ts, id) orders before (ts2, id2): the order that
// defines a session's first event and the order of its events.
func before(ts int64, id string, ts2 int64, id2 string) bool {
	return ts < ts2 || ts == ts2 && id < id2
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendHeader(b []byte, e *Event) []byte {
	b = append(b, stateVersion)
	b = binary.AppendVarint(b, e.TS)
	b = appendStr(b, e.EventID)
	b = appendStr(b, e.VisitorID)
	b = appendStr(b, e.Browser)
	b = appendStr(b, e.Country)
	return appendStr(b, e.IP)
}

func appendItem(b []byte, e *Event) []byte {
	b = binary.AppendVarint(b, e.TS)
	b = appendStr(b, e.EventID)
	b = appendStr(b, e.Type)
	b = appendStr(b, e.Experiment)
	return binary.AppendVarint(b, int64(e.Revenue))
}

// decoder reads the fields of a state in order; the first error sticks.
type decoder struct {
	b []byte
	// s, when set, is b as a string: strings are cut from it, so that
	// decoding a whole state copies it once, not string by string.
	s   string
	i   int
	err error
}

var errCorrupt = errors.New("sessionize: corrupt session state")

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.i:])
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.i += n
	return v
}

// bytes returns the next string's bytes, which alias the state.
func (d *decoder) bytes() []byte {
	if d.err != nil {
		return nil
	}
	l, n := binary.Uvarint(d.b[d.i:])
	if n <= 0 || l > uint64(len(d.b)-d.i-n) {
		d.err = errCorrupt
		return nil
	}
	d.i += n
	s := d.b[d.i : d.i+int(l)]
	d.i += int(l)
	return s
}

func (d *decoder) str() string {
	b := d.bytes()
	if d.s == "" {
		return string(b)
	}
	return d.s[d.i-len(b) : d.i]
}

// header reads the header of the state, from its start.
func (d *decoder) header() (header, error) {
	if len(d.b) == 0 || d.b[0] != stateVersion && d.b[0] != stateVersionV1 {
		return header{}, fmt.Errorf("%w: unknown version", errCorrupt)
	}
	d.i = 1
	h := header{version: d.b[0], ts: d.varint(), eventID: d.str(), visitor: d.str(), browser: d.str(), country: d.str(), ip: d.str()}
	h.n = d.i
	return h, d.err
}

// item reads the next item of a state of version v.
func (d *decoder) item(v byte) Item {
	it := Item{TS: d.varint(), EventID: d.str(), Type: d.str(), Experiment: d.str(), Revenue: Amount(d.varint())}
	if v == stateVersionV1 {
		it.Revenue *= amountScale
	}
	return it
}

// upgrade returns st in the current version: a version 1 state is
// rewritten.
func upgrade(st state) state {
	if len(st) == 0 || st[0] == stateVersion {
		return st
	}
	d := decoder{b: st}
	h, err := d.header()
	if err != nil {
		panic(err)
	}
	out := make(state, 0, len(st)+len(st)/4)
	out = append(out, st[:h.n]...)
	out[0] = stateVersion
	for d.i < len(d.b) && d.err == nil {
		it := d.item(h.version)
		out = appendItem(out, &Event{TS: it.TS, EventID: it.EventID, Type: it.Type, Experiment: it.Experiment, Revenue: it.Revenue})
	}
	if d.err != nil {
		panic(d.err)
	}
	return out
}

func parseHeader(st state) (header, error) {
	d := decoder{b: st}
	return d.header()
}

// firstKey reads only the ts and event_id of a state's first event, without
// copying.
func firstKey(st state) (int64, []byte, error) {
	if len(st) == 0 || st[0] != stateVersion && st[0] != stateVersionV1 {
		return 0, nil, fmt.Errorf("%w: unknown version", errCorrupt)
	}
	d := decoder{b: st, i: 1}
	ts := d.varint()
	id := d.bytes()
	return ts, id, d.err
}

// headerLen is the length of a state's header.
func headerLen(st state) (int, error) {
	h, err := parseHeader(st)
	return h.n, err
}

// addEvent folds e into the session st (nil for a new session). The
// aggregator's Add cannot fail, so a corrupt state, which only a bug can
// make, panics; the job's error policy then reports the message.
func addEvent(st state, e *Event) state {
	if len(st) == 0 {
		st = appendHeader(make(state, 0, 128), e)
		return appendItem(st, e)
	}
	st = upgrade(st)
	ts, id, err := firstKey(st)
	if err != nil {
		panic(err)
	}
	if e.TS < ts || e.TS == ts && e.EventID < string(id) {
		// e is the new first event: its metadata becomes the session's.
		n, err := headerLen(st)
		if err != nil {
			panic(err)
		}
		nst := appendHeader(make(state, 0, len(st)+64), e)
		st = append(nst, st[n:]...)
	}
	return appendItem(st, e)
}

// mergeStates combines two sessions that an event bridged: the header of
// the one whose first event comes first, and the items of both.
func mergeStates(a, b state) state {
	a, b = upgrade(a), upgrade(b)
	ha, err := parseHeader(a)
	if err != nil {
		panic(err)
	}
	hb, err := parseHeader(b)
	if err != nil {
		panic(err)
	}
	first, other := a, b[hb.n:]
	if before(hb.ts, hb.eventID, ha.ts, ha.eventID) {
		first, other = b, a[ha.n:]
	}
	out := make(state, 0, len(first)+len(other))
	out = append(out, first...)
	return append(out, other...)
}

// snapshot decodes a session into its Snapshot, whose strings share one
// copy of the state, and whose Events are appended to events[:0].
func snapshot(sessionID string, st state, final bool, events []Item) (Snapshot, error) {
	d := decoder{b: st, s: string(st)}
	h, err := d.header()
	if err != nil {
		return Snapshot{}, err
	}
	s := Snapshot{
		SessionID: sessionID, VisitorID: h.visitor, Browser: h.browser, Country: h.country, IP: h.ip,
		Final: final, Events: events[:0],
	}
	for d.i < len(d.b) && d.err == nil {
		it := d.item(h.version)
		s.Events = append(s.Events, it)
		s.Revenue += it.Revenue
	}
	if d.err != nil {
		return Snapshot{}, d.err
	}
	if len(s.Events) == 0 {
		return Snapshot{}, fmt.Errorf("%w: no events", errCorrupt)
	}
	slices.SortStableFunc(s.Events, func(x, y Item) int {
		if c := cmp.Compare(x.TS, y.TS); c != 0 {
			return c
		}
		return cmp.Compare(x.EventID, y.EventID)
	})
	s.EventCount = len(s.Events)
	s.Start, s.End = s.Events[0].TS, s.Events[len(s.Events)-1].TS
	return s, nil
}
