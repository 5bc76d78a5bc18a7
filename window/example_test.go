package window_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/store/storetest"
	"github.com/grete-go/grete/window"
)

// Session windows per user: events within the gap join a session, an event
// that bridges two sessions merges them, and a session closes (its final
// value emitted, its state deleted) once stream time passes its last event
// by the gap plus the grace period.
func ExampleNew_sessions() {
	s, h, err := storetest.Open("", store.Spec{Name: "sessions", Engine: store.Memory})
	if err != nil {
		panic(err)
	}
	defer h.Close()
	agg, err := window.New(s, window.Options[string, string, []string]{
		Windows: window.Sessions(10 * time.Minute),
		Grace:   time.Minute,
		Add:     func(pages []string, page string, _ time.Time) []string { return append(pages, page) },
		Merge:   func(a, b []string) []string { return append(a, b...) },
	})
	if err != nil {
		panic(err)
	}
	show := func(e window.Emit[string, []string]) error {
		fmt.Printf("%s %s-%s %s final=%v\n", e.Key, e.Window.Start.UTC().Format("15:04"),
			e.Window.End.UTC().Format("15:04"), strings.Join(e.Value, ","), e.Final)
		return nil
	}
	at := func(hhmm string) time.Time {
		t, _ := time.Parse("15:04", hhmm)
		return t
	}
	for _, ev := range []struct{ user, page, at string }{
		{"ann", "/home", "09:00"},
		{"ann", "/pricing", "09:05"},
		{"bob", "/docs", "09:06"},
		{"ann", "/signup", "09:30"}, // after the gap: a new session
		{"bob", "/home", "09:50"},   // stream time 09:50 closes ann's first session and bob's
	} {
		if err := agg.Add(ev.user, ev.page, at(ev.at), show, nil); err != nil {
			panic(err)
		}
	}
	// Output:
	// ann 09:00-09:05 /home,/pricing final=true
	// bob 09:06-09:06 /docs final=true
	// ann 09:30-09:30 /signup final=true
}
