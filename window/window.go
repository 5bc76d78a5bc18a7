package window

import (
	"errors"
	"fmt"
	"time"
)

// Kind is the kind of windows an Aggregator keeps.
type Kind int

// The kinds of windows.
const (
	KindTumbling Kind = iota + 1
	KindHopping
	KindSession
)

// Spec describes how events are assigned to windows. Build it with
// Tumbling, Hopping or Sessions.
type Spec struct {
	Kind Kind
	// Size of tumbling and hopping windows.
	Size time.Duration
	// Advance of hopping windows (a new window starts every Advance).
	Advance time.Duration
	// Gap of session windows: a session ends after Gap without events.
	Gap time.Duration
}

// Tumbling windows are fixed, adjacent and non-overlapping: [0, size),
// [size, 2·size), ... in Unix time.
func Tumbling(size time.Duration) Spec { return Spec{Kind: KindTumbling, Size: size} }

// Hopping windows have a fixed size and start every advance, so an event
// belongs to size/advance windows.
func Hopping(size, advance time.Duration) Spec {
	return Spec{Kind: KindHopping, Size: size, Advance: advance}
}

// Sessions are windows of activity per key: an event within gap of a
// session's events joins it, and an event that bridges two sessions merges
// them. A session closes once stream time passes its last event by gap.
func Sessions(gap time.Duration) Spec { return Spec{Kind: KindSession, Gap: gap} }

// Validate reports what is wrong with the spec.
func (s Spec) Validate() error {
	const ms = time.Millisecond
	switch s.Kind {
	case KindTumbling:
		if s.Size < ms {
			return errors.New("window: tumbling windows need a Size of at least 1ms")
		}
	case KindHopping:
		if s.Size < ms || s.Advance < ms {
			return errors.New("window: hopping windows need a Size and an Advance of at least 1ms")
		}
		if s.Advance > s.Size {
			return fmt.Errorf("window: hopping Advance %v is larger than Size %v: events between windows would be lost", s.Advance, s.Size)
		}
	case KindSession:
		if s.Gap < ms {
			return errors.New("window: session windows need a Gap of at least 1ms")
		}
	default:
		return errors.New("window: no window kind (use Tumbling, Hopping or Sessions)")
	}
	for _, d := range []time.Duration{s.Size, s.Advance, s.Gap} {
		if d%ms != 0 {
			return fmt.Errorf("window: %v is not a whole number of milliseconds (event time has millisecond precision)", d)
		}
	}
	return nil
}

// Window is one window. For tumbling and hopping windows it is the
// interval [Start, End). For a session, Start and End are the timestamps of
// its first and last events (both included).
type Window struct {
	Start, End time.Time
}

func (w Window) String() string {
	return fmt.Sprintf("[%s, %s]", w.Start.UTC().Format(time.RFC3339Nano), w.End.UTC().Format(time.RFC3339Nano))
}

// ms is milliseconds since the Unix epoch, Kafka's timestamp unit.
func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v) }

// assign returns the [start, end) windows (in ms) of a tumbling or hopping
// spec that contain ts.
func (s Spec) assign(ts int64, out [][2]int64) [][2]int64 {
	size := s.Size.Milliseconds()
	adv := size
	if s.Kind == KindHopping {
		adv = s.Advance.Milliseconds()
	}
	// The last window starting at or before ts.
	last := floorDiv(ts, adv) * adv
	for start := last; start > ts-size; start -= adv {
		out = append(out, [2]int64{start, start + size})
	}
	// Oldest first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
