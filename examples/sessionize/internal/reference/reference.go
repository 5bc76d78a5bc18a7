// Package reference is the sessionize job's documented semantics, written
// again from scratch for the tests, and the checks that compare a job's
// output with it. It uses nothing of the job (not package window, not
// package sessions' Event, state or Snapshot; it imports neither), so
// that a mistake in either shows up as a difference. The unit tests of
// package sessions and the tests of the command, which run the job in
// processes they kill, check the job against it. The semantics, as the
// reference has them:
//
//   - Per input partition, in offset order, stream time is the largest ts
//     seen so far.
//   - A session is open while its last ts + gap + grace > stream time.
//   - An event joins every open session of its session_id whose
//     [start-gap, end+gap] holds its ts (several: it bridges them into one).
//   - An event that joins none starts a session, unless that session's own
//     close time (ts + gap + grace) has already passed: then it is late,
//     and dropped.
//   - A session's snapshot: metadata of its first event (smallest ts, ties
//     by the smaller event_id), events by ts then event_id, revenue the
//     exact sum of the numbers as written (math/big), final when it has
//     closed by the end of the input.
package reference

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// event is an input event as the reference reads it.
type event struct {
	EventID    string  `json:"event_id"`
	VisitorID  string  `json:"visitor_id"`
	SessionID  string  `json:"session_id"`
	TS         int64   `json:"ts"`
	Type       string  `json:"type"`
	Experiment string  `json:"experiment"`
	Revenue    Decimal `json:"revenue"`
	Browser    string  `json:"browser"`
	Country    string  `json:"country"`
	IP         string  `json:"ip"`
}

// Decimal is a JSON number held exactly, as math/big reads it: its
// canonical fraction, so that equal values compare equal however they are
// spelled ("" is zero).
type Decimal string

func (d *Decimal) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		return fmt.Errorf("revenue %s is not a number", b)
	}
	r, ok := new(big.Rat).SetString(string(b))
	if !ok {
		return fmt.Errorf("revenue %s is not a number", b)
	}
	*d = Decimal(r.RatString())
	return nil
}

func (d Decimal) rat() *big.Rat {
	r, ok := new(big.Rat).SetString(string(cmp.Or(d, "0")))
	if !ok {
		panic("bad Decimal " + d)
	}
	return r
}

func (d Decimal) plus(o Decimal) Decimal {
	return Decimal(new(big.Rat).Add(d.rat(), o.rat()).RatString())
}

// norm is d with zero written as "0".
func (d Decimal) norm() Decimal { return Decimal(d.rat().RatString()) }

// Input is one input record: its partition and, in offset order, its
// place in the partition.
type Input struct {
	Partition int32
	Offset    int64
	Value     []byte
}

// Session is one session the reference finds.
type Session struct {
	id         string
	partition  int32
	events     []event
	start, end int64
	closed     bool
}

// Result is everything the reference says about an input.
type Result struct {
	sessions []*Session          // every session, in order of creation
	owner    map[string]*Session // event_id -> its session
	Late     map[string]bool     // event_ids of late events
	byKey    map[string][]*Session
}

// Snapshot is a snapshot as the reference writes it, and as the tests
// decode the output (strictly: an unknown field is an error).
type Snapshot struct {
	SessionID  string  `json:"session_id"`
	VisitorID  string  `json:"visitor_id"`
	Start      int64   `json:"start"`
	End        int64   `json:"end"`
	EventCount int     `json:"event_count"`
	Revenue    Decimal `json:"revenue"`
	Browser    string  `json:"browser"`
	Country    string  `json:"country"`
	IP         string  `json:"ip"`
	Final      bool    `json:"final"`
	Events     []Item  `json:"events"`
}

// Item is an event inside a Snapshot.
type Item struct {
	EventID    string  `json:"event_id"`
	TS         int64   `json:"ts"`
	Type       string  `json:"type"`
	Experiment string  `json:"experiment"`
	Revenue    Decimal `json:"revenue"`
}

// Sessionize runs the reference over inputs (any order: it sorts them
// by partition and offset).
func Sessionize(inputs []Input, gap, grace int64) (Result, error) {
	res := Result{owner: map[string]*Session{}, Late: map[string]bool{}, byKey: map[string][]*Session{}}
	inputs = slices.Clone(inputs)
	slices.SortFunc(inputs, func(a, b Input) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	const none = math.MinInt64
	var (
		part   int32 = -1
		st     int64
		open   map[string][]*Session
		merged = map[*Session]bool{}
		all    []*Session
		final  = map[int32]int64{} // stream time at the end, per partition
	)
	isOpen := func(s *Session) bool { return st == none || s.end+gap+grace > st }
	for _, in := range inputs {
		if in.Partition != part {
			part, st, open = in.Partition, none, map[string][]*Session{}
		}
		var e event
		if err := json.Unmarshal(in.Value, &e); err != nil {
			return res, fmt.Errorf("input %d@%d: %w", in.Partition, in.Offset, err)
		}
		var joined, kept []*Session
		for _, s := range open[e.SessionID] {
			if !isOpen(s) {
				continue // closed for good: stream time never goes back
			}
			kept = append(kept, s)
			if e.TS >= s.start-gap && e.TS <= s.end+gap {
				joined = append(joined, s)
			}
		}
		open[e.SessionID] = kept
		switch {
		case len(joined) == 0 && st != none && e.TS+gap+grace <= st:
			res.Late[e.EventID] = true
		case len(joined) == 0:
			s := &Session{id: e.SessionID, partition: in.Partition, events: []event{e}, start: e.TS, end: e.TS}
			open[e.SessionID] = append(open[e.SessionID], s)
			all = append(all, s)
		default:
			s := joined[0]
			for _, o := range joined[1:] {
				s.events = append(s.events, o.events...)
				s.start, s.end = min(s.start, o.start), max(s.end, o.end)
				merged[o] = true
				open[e.SessionID] = slices.DeleteFunc(open[e.SessionID], func(x *Session) bool { return x == o })
			}
			s.events = append(s.events, e)
			s.start, s.end = min(s.start, e.TS), max(s.end, e.TS)
		}
		if st == none || e.TS > st {
			st = e.TS
		}
		final[part] = st
	}
	for _, s := range all {
		if merged[s] {
			continue
		}
		// Whether it closed is decided by its partition's last stream time.
		s.closed = s.end+gap+grace <= final[s.partition]
		res.sessions = append(res.sessions, s)
		res.byKey[s.id] = append(res.byKey[s.id], s)
		for _, e := range s.events {
			if res.owner[e.EventID] != nil {
				return res, fmt.Errorf("event %s is in two sessions: the input's event ids must be unique", e.EventID)
			}
			res.owner[e.EventID] = s
		}
	}
	return res, nil
}

// Snapshot is the session's expected last snapshot.
func (s *Session) Snapshot() Snapshot {
	evs := slices.Clone(s.events)
	slices.SortStableFunc(evs, func(a, b event) int {
		return cmp.Or(cmp.Compare(a.TS, b.TS), strings.Compare(a.EventID, b.EventID))
	})
	first := evs[0]
	out := Snapshot{
		SessionID: s.id, VisitorID: first.VisitorID, Start: evs[0].TS, End: evs[len(evs)-1].TS,
		EventCount: len(evs), Browser: first.Browser, Country: first.Country, IP: first.IP, Final: s.closed,
		Revenue: "0",
	}
	for _, e := range evs {
		out.Revenue = out.Revenue.plus(e.Revenue)
		out.Events = append(out.Events, Item{EventID: e.EventID, TS: e.TS, Type: e.Type, Experiment: e.Experiment, Revenue: e.Revenue.norm()})
	}
	return out
}

// DecodeSnapshot decodes an output value strictly.
func DecodeSnapshot(b []byte) (Snapshot, error) {
	var s Snapshot
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&s); err != nil {
		return s, err
	}
	if d.More() {
		return s, fmt.Errorf("trailing data after the snapshot")
	}
	return s, nil
}

// Output is one output record: its key and value, in the order of its
// output partition.
type Output struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
}

// Verified counts what VerifySnapshots checked.
type Verified struct {
	Snapshots int // snapshots read
	Sessions  int // sessions of the reference
	Finals    int // of them, closed by the end of the input
	MultiKeys int // session_ids with several sessions
}

// VerifySnapshots checks the output against the reference: every snapshot
// is well formed and holds the events of one reference session, none late;
// every reference session's last snapshot equals the reference's; for every
// session_id with one session, the key's last snapshot equals it too. With
// once, it also checks what holds without crashes: each closed session has
// exactly one final snapshot, and nothing follows it.
func VerifySnapshots(t testing.TB, outs []Output, ref Result, once bool) Verified {
	t.Helper()
	outs = slices.Clone(outs)
	slices.SortFunc(outs, func(a, b Output) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	var (
		errs      []string
		last      = map[*Session]Snapshot{}
		lastByKey = map[string]Snapshot{}
		finals    = map[*Session]int{}
		afterEnd  = map[*Session]bool{}
	)
	fail := func(format string, args ...any) {
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		} else if len(errs) == 20 {
			errs = append(errs, "...")
		}
	}
	for _, o := range outs {
		snap, err := DecodeSnapshot(o.Value)
		if err != nil {
			fail("output %d@%d: %v: %s", o.Partition, o.Offset, err, o.Value)
			continue
		}
		if string(o.Key) != snap.SessionID {
			fail("output %d@%d: key %q, session_id %q", o.Partition, o.Offset, o.Key, snap.SessionID)
		}
		if len(snap.Events) == 0 {
			fail("output %d@%d: a snapshot without events", o.Partition, o.Offset)
			continue
		}
		owner := ref.owner[snap.Events[0].EventID]
		ok := true
		for _, it := range snap.Events {
			switch s := ref.owner[it.EventID]; {
			case ref.Late[it.EventID]:
				fail("output %d@%d: session %s holds late event %s", o.Partition, o.Offset, snap.SessionID, it.EventID)
				ok = false
			case s == nil:
				fail("output %d@%d: session %s holds event %s, which the reference never saw", o.Partition, o.Offset, snap.SessionID, it.EventID)
				ok = false
			case s != owner:
				fail("output %d@%d: session %s mixes events of two reference sessions (%s and %s)", o.Partition, o.Offset, snap.SessionID, snap.Events[0].EventID, it.EventID)
				ok = false
			}
		}
		if !ok || owner == nil {
			continue
		}
		if finals[owner] > 0 {
			afterEnd[owner] = true
		}
		if snap.Final {
			finals[owner]++
		}
		last[owner] = snap
		lastByKey[snap.SessionID] = snap
	}
	var res Verified
	res.Snapshots = len(outs)
	for _, s := range ref.sessions {
		want := s.Snapshot()
		got, ok := last[s]
		switch {
		case !ok:
			fail("session %s (first event %s, %d events) has no snapshot", s.id, want.Events[0].EventID, want.EventCount)
		case !reflect.DeepEqual(got, want):
			fail("session %s: last snapshot\n  got  %s\n  want %s", s.id, jsonOf(got), jsonOf(want))
		}
		if s.closed {
			res.Finals++
		}
		if once {
			if s.closed && finals[s] != 1 {
				fail("session %s closed: %d final snapshots, want 1", s.id, finals[s])
			}
			if afterEnd[s] {
				fail("session %s: a snapshot after its final one", s.id)
			}
		}
	}
	for key, ss := range ref.byKey {
		if len(ss) > 1 {
			res.MultiKeys++
			continue
		}
		if got, ok := lastByKey[key]; ok && !reflect.DeepEqual(got, ss[0].Snapshot()) {
			fail("session_id %s: the key's last snapshot is not the session's:\n  got  %s\n  want %s", key, jsonOf(got), jsonOf(ss[0].Snapshot()))
		}
	}
	for key := range lastByKey {
		if ref.byKey[key] == nil {
			fail("session_id %s has snapshots, but the reference has no such session", key)
		}
	}
	res.Sessions = len(ref.sessions)
	if len(errs) > 0 {
		t.Errorf("%d snapshots checked against %d reference sessions:\n%s", len(outs), len(ref.sessions), strings.Join(errs, "\n"))
	}
	return res
}

// VerifyLate checks that the late topic holds exactly the late events
// (each once, or, with !once, at least once).
func VerifyLate(t testing.TB, late [][]byte, ref Result, once bool) {
	t.Helper()
	seen := map[string]int{}
	for _, v := range late {
		var e event
		if err := json.Unmarshal(v, &e); err != nil {
			t.Errorf("late topic: %v: %s", err, v)
			continue
		}
		seen[e.EventID]++
	}
	var errs []string
	for _, id := range slices.Sorted(maps.Keys(seen)) {
		if !ref.Late[id] {
			errs = append(errs, fmt.Sprintf("%s is on the late topic but is not late", id))
		} else if once && seen[id] != 1 {
			errs = append(errs, fmt.Sprintf("%s is on the late topic %d times", id, seen[id]))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(ref.Late)) {
		if seen[id] == 0 {
			errs = append(errs, fmt.Sprintf("late event %s is missing from the late topic", id))
		}
	}
	if len(errs) > 0 {
		t.Errorf("late topic (%d records, %d late events in the reference):\n%s", len(late), len(ref.Late), strings.Join(errs[:min(20, len(errs))], "\n"))
	}
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
