package routing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/grete-go/grete/examples/eventjson"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
)

// ErrNotObject is the cause (inside a *stream.DecodeError) of the error
// Process returns for a message that is not a JSON object.
var ErrNotObject = errors.New("not a JSON object")

// Task routes events by the rules. Create it with NewTask.
type Task struct {
	rules  *Rules
	fields []string // distinct fields the rules read; fields[0] is the type field
	counts *counts
	raws   [][]byte // scratch, one per field

	targets    []string          // scratch for Process
	cacheInput string            // the input the cached names are for
	cache      map[string]string // suffix -> "<input>.<suffix>"
}

// NewTask returns a routing task. stats, when non-nil, counts what every
// task made with it routes.
func NewTask(r *Rules, stats *Stats) *Task {
	t := &Task{rules: r, fields: []string{r.TypeField}}
	add := func(f string) {
		for _, g := range t.fields {
			if g == f {
				return
			}
		}
		t.fields = append(t.fields, f)
	}
	for _, c := range r.Drop {
		add(c.Field)
	}
	for _, c := range r.Copy {
		add(c.If.Field)
	}
	t.raws = make([][]byte, len(t.fields))
	t.cache = map[string]string{}
	t.counts = &counts{topics: map[string]uint64{}}
	if stats != nil {
		stats.mu.Lock()
		stats.tasks = append(stats.tasks, t.counts)
		stats.mu.Unlock()
	}
	return t
}

// Process implements task.StreamTask.
func (t *Task) Process(_ context.Context, m stream.Message, out task.Collector, _ task.Coordinator) error {
	targets, err := t.route(t.targets[:0], m.Topic, m.Value)
	t.targets = targets
	if err != nil {
		return err
	}
	if len(targets) == 0 {
		t.counts.dropped.Add(1)
		return nil
	}
	for _, topic := range targets {
		if err := out.Send(stream.Outgoing{Topic: topic, Key: m.Key, Value: m.Value, Headers: m.Headers, Timestamp: m.Timestamp}); err != nil {
			return err
		}
	}
	t.counts.add(targets)
	return nil
}

// Route returns the topics an event read from input goes to: none when it
// is dropped. It fails for a value that is not a JSON object (a
// *stream.DecodeError wrapping ErrNotObject) and for a type that is not a
// string usable in a topic name.
func (t *Task) Route(input string, value []byte) ([]string, error) {
	return t.route(nil, input, value)
}

// topicFor returns "<input>.<suffix>", cached: the names repeat, and
// building one per event would allocate on every message.
func (t *Task) topicFor(input, suffix string) string {
	if input != t.cacheInput {
		t.cacheInput = input
		clear(t.cache)
	}
	if name, ok := t.cache[suffix]; ok {
		return name
	}
	name := input + "." + suffix
	if len(t.cache) < 1024 {
		t.cache[suffix] = name
	}
	return name
}

func (t *Task) route(targets []string, input string, value []byte) ([]string, error) {
	clear(t.raws)
	// One pass checks the event and picks the fields the rules read. A
	// field given twice takes its last value, as encoding/json and every
	// common JSON reader downstream do.
	ok := eventjson.Object(value, func(key, raw []byte) {
		for i, f := range t.fields {
			if eventjson.KeyIs(key, f) {
				t.raws[i] = raw
				break
			}
		}
	})
	if !ok {
		return nil, &stream.DecodeError{Format: "json", Err: ErrNotObject}
	}
	for _, c := range t.rules.Drop {
		if c.match(t.raw(c.Field)) {
			return nil, nil
		}
	}
	typ, err := t.eventType(t.raws[0])
	if err != nil {
		return nil, err
	}
	targets = append(targets, t.topicFor(input, typ))
	for _, c := range t.rules.Copy {
		if c.If.match(t.raw(c.If.Field)) {
			targets = append(targets, t.topicFor(input, c.To))
		}
	}
	return targets, nil
}

func (t *Task) raw(field string) []byte {
	for i, f := range t.fields {
		if f == field {
			return t.raws[i]
		}
	}
	return nil
}

func (t *Task) eventType(raw []byte) (string, error) {
	if raw == nil || string(raw) == "null" {
		return t.rules.Unknown, nil
	}
	if raw[0] != '"' {
		return "", fmt.Errorf("field %q is not a string: %s", t.rules.TypeField, raw)
	}
	var s string
	if len(raw) >= 2 && raw[len(raw)-1] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		s = string(raw[1 : len(raw)-1]) // no escapes: the bytes are the string
	} else if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("field %q: %w", t.rules.TypeField, err)
	}
	if !validSuffix(s) {
		return "", fmt.Errorf("field %q = %q cannot be part of a topic name", t.rules.TypeField, s)
	}
	return s, nil
}

// match evaluates the condition on a field's raw JSON value (nil when the
// event lacks the field).
func (c *Cond) match(raw []byte) bool {
	switch {
	case c.Exists != nil:
		return (raw != nil) == *c.Exists
	case raw == nil:
		return false
	case c.GT != nil:
		if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
			return false
		}
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return false
		}
		return f > *c.GT // ±Inf for numbers beyond float64's range
	default:
		var v any
		switch string(raw) {
		case "true":
			v = true
		case "false":
			v = false
		case "null":
			v = nil
		default:
			if err := json.Unmarshal(raw, &v); err != nil {
				return false
			}
		}
		return reflect.DeepEqual(v, c.equals)
	}
}

// Stats counts what routing tasks sent, by topic. Safe for concurrent use.
type Stats struct {
	mu    sync.Mutex
	tasks []*counts
}

type counts struct {
	mu      sync.Mutex
	topics  map[string]uint64
	dropped atomic.Uint64
}

func (c *counts) add(topics []string) {
	c.mu.Lock()
	for _, t := range topics {
		c.topics[t]++
	}
	c.mu.Unlock()
}

// TopicCount is a number of events sent to one topic.
type TopicCount struct {
	Topic string
	Count uint64
}

// Snapshot returns the events sent per topic, sorted by topic, and the
// number dropped by rules, since the tasks started.
func (s *Stats) Snapshot() (sent []TopicCount, dropped uint64) {
	s.mu.Lock()
	tasks := append([]*counts(nil), s.tasks...)
	s.mu.Unlock()
	sum := map[string]uint64{}
	for _, c := range tasks {
		c.mu.Lock()
		for t, n := range c.topics {
			sum[t] += n
		}
		c.mu.Unlock()
		dropped += c.dropped.Load()
	}
	for t, n := range sum {
		sent = append(sent, TopicCount{t, n})
	}
	sort.Slice(sent, func(i, j int) bool { return sent[i].Topic < sent[j].Topic })
	return sent, dropped
}
