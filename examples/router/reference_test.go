package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// This file is the tests' independent reference for the default rules:
// it decodes events with encoding/json into maps and applies the rules as
// the README states them, sharing no code with package routing.

// refRoute returns the topics an event read from input must reach under the
// default rules, and whether it must be dead-lettered instead.
func refRoute(input string, value []byte) (topics []string, dead bool) {
	var ev map[string]any
	if err := json.Unmarshal(value, &ev); err != nil || ev == nil {
		return nil, true
	}
	if d, ok := ev["debug"].(bool); ok && d {
		return nil, false
	}
	typ := "unknown"
	switch t := ev["type"].(type) {
	case nil:
	case string:
		typ = t
	default:
		return nil, true
	}
	topics = append(topics, input+"."+typ)
	if r, ok := ev["revenue"].(float64); ok && r > 0 {
		topics = append(topics, input+".revenue")
	}
	return topics, false
}

// testEvents makes n events for input topic: JSON objects with a unique
// "id" and a per-key sequence number "seq", keyed by user, with every rule
// exercised. A fraction bad of them (chosen by the seeded rng) are not JSON;
// those carry their id in the raw text so they can be recognised too.
func testEvents(rng *rand.Rand, n int, users int, bad float64) []*kgo.Record {
	types := []string{"click", "view", "purchase", "signup"}
	seq := make(map[string]int, users)
	recs := make([]*kgo.Record, n)
	for i := range recs {
		user := "u" + strconv.Itoa(rng.IntN(users))
		seq[user]++
		id := "e" + strconv.Itoa(i)
		var value []byte
		if rng.Float64() < bad {
			value = []byte("garbage " + id + " {")
		} else {
			ev := map[string]any{"id": id, "user": user, "seq": seq[user]}
			switch k := rng.IntN(100); {
			case k < 5: // no type
			case k < 7:
				ev["type"] = nil
			default:
				ev["type"] = types[rng.IntN(len(types))]
			}
			if ev["type"] == "purchase" || rng.IntN(50) == 0 {
				ev["revenue"] = float64(1+rng.IntN(10000)) / 100
			} else {
				ev["revenue"] = 0
			}
			if rng.IntN(100) < 3 {
				ev["debug"] = true
			} else if rng.IntN(10) == 0 {
				ev["debug"] = false
			}
			value, _ = json.Marshal(ev)
		}
		recs[i] = &kgo.Record{Key: []byte(user), Value: value}
	}
	return recs
}

// eventID extracts the id of an event produced by testEvents, valid or not.
func eventID(value []byte) (string, error) {
	var ev struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(value, &ev); err == nil && ev.ID != "" {
		return ev.ID, nil
	}
	var id string
	if _, err := fmt.Sscanf(string(value), "garbage %s {", &id); err == nil {
		return id, nil
	}
	return "", fmt.Errorf("no id in %q", value)
}
