package sessions

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// Traffic shapes generated events (see Generator).
type Traffic struct {
	// Seed picks the events: the same Traffic makes the same events.
	Seed uint64
	// Gap and Grace are the job's: a session never pauses for Gap or more,
	// so that the events of one session_id form one session when they
	// arrive in order; events delayed by less than Grace are out of order
	// but on time.
	Gap, Grace time.Duration
	// Active is how many sessions are in progress at once; each new event
	// belongs to one of them, picked at random.
	Active int
	// Visitors is the size of the visitor population.
	Visitors int
	// OutOfOrder is the fraction of events delayed by less than Grace, Late
	// the fraction delayed by more (up to 2·(Gap+Grace)): too late for a
	// session that has closed, on time for one that is still going.
	OutOfOrder, Late float64
}

// DefaultTraffic is the traffic of the example's demo at rate events per
// second of event time, for a job with gap and grace: sessions of about
// ten events, some ten seconds apart.
func DefaultTraffic(seed uint64, rate int, gap, grace time.Duration) Traffic {
	active := max(50, 10*rate)
	return Traffic{Seed: seed, Gap: gap, Grace: grace, Active: active, Visitors: 10 * active, OutOfOrder: 0.05, Late: 0.005}
}

var (
	browsers  = []string{"chrome", "chrome", "chrome", "safari", "safari", "firefox", "edge", "samsung"}
	countries = []string{"US", "US", "US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "NL"}
	// experiments is what a visitor can be bucketed into, with the
	// variation name.
	experiments = []string{"checkout_flow:a", "checkout_flow:b", "hero_banner:control", "hero_banner:video", "pricing_page:annual_first", "pricing_page:monthly_first"}
)

// simVisitor is a generated visitor: its attributes stay the same across
// its sessions, except its IP address, which changes now and then.
type simVisitor struct {
	id, browser, country, ip string
	experiment               string // "" when not in an experiment
}

// simSession is a session in progress.
type simSession struct {
	id      string
	visitor *simVisitor
	last    int64 // ts of its last event, ms
	made    int   // events made so far
	left    int   // events still to come
}

// held is an event delayed in transit until due.
type held struct {
	due int64
	seq uint64 // keeps equal due times in creation order
	e   Event
}

type heldHeap []held

func (h heldHeap) Len() int { return len(h) }
func (h heldHeap) Less(i, j int) bool {
	return h[i].due < h[j].due || h[i].due == h[j].due && h[i].seq < h[j].seq
}
func (h heldHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *heldHeap) Push(x any)   { *h = append(*h, x.(held)) }
func (h *heldHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Generator makes a deterministic stream of visitor events from its seed.
// Its clock is the caller's: Next makes an event at ts = now, and releases
// the delayed events that are due by now, in arrival order. Create it with
// NewGenerator.
type Generator struct {
	cfg      Traffic
	rng      *rand.Rand
	prefix   string // makes ids unique across generators
	active   []*simSession
	visitors map[int]*simVisitor
	held     heldHeap
	events   uint64
	sessions uint64
	maxPause int64
}

// NewGenerator returns a generator of cfg's traffic.
func NewGenerator(cfg Traffic) *Generator {
	return &Generator{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x5e55)),
		prefix:   strconv.FormatUint(cfg.Seed%(36*36*36*36), 36),
		active:   make([]*simSession, max(1, cfg.Active)),
		visitors: map[int]*simVisitor{},
		maxPause: max(1, cfg.Gap.Milliseconds()),
	}
}

func (g *Generator) visitor(i int) *simVisitor {
	v := g.visitors[i]
	if v == nil {
		v = &simVisitor{
			id:      "v" + strconv.Itoa(i),
			browser: browsers[g.rng.IntN(len(browsers))],
			country: countries[g.rng.IntN(len(countries))],
		}
		if g.rng.IntN(3) > 0 {
			v.experiment = experiments[g.rng.IntN(len(experiments))]
		}
		g.visitors[i] = v
	}
	if v.ip == "" || g.rng.IntN(5) == 0 {
		v.ip = fmt.Sprintf("10.%d.%d.%d", g.rng.IntN(256), g.rng.IntN(256), 1+g.rng.IntN(254))
	}
	return v
}

func (g *Generator) newSession(now int64) *simSession {
	g.sessions++
	left := 1 // a third of sessions bounce
	if g.rng.IntN(3) > 0 {
		left = 2 + int(g.rng.ExpFloat64()*12)
	}
	return &simSession{
		id:      g.prefix + "-s" + strconv.FormatUint(g.sessions, 10),
		visitor: g.visitor(g.rng.IntN(max(1, g.cfg.Visitors))),
		last:    now,
		left:    left,
	}
}

// Next appends to out the delayed events due by now and one new event at
// now.
func (g *Generator) Next(now int64, out []Event) []Event {
	for len(g.held) > 0 && g.held[0].due <= now {
		out = append(out, heap.Pop(&g.held).(held).e)
	}
	i := g.rng.IntN(len(g.active))
	s := g.active[i]
	if s == nil || s.left == 0 || now-s.last >= g.maxPause {
		s = g.newSession(now)
		g.active[i] = s
	}
	first := s.made == 0
	s.made++
	s.left--
	s.last = now
	g.events++
	e := Event{
		EventID:   g.prefix + "-e" + strconv.FormatUint(g.events, 10),
		VisitorID: s.visitor.id,
		SessionID: s.id,
		TS:        now,
		Browser:   s.visitor.browser,
		Country:   s.visitor.country,
		IP:        s.visitor.ip,
	}
	switch r := g.rng.IntN(100); {
	case first || r < 50:
		e.Type = "pageview"
	case r < 75:
		e.Type = "click"
	case r < 85:
		e.Type = "decision"
		e.Experiment = s.visitor.experiment
		if e.Experiment == "" {
			e.Type = "pageview"
		}
	case r < 93:
		e.Type = "add_to_cart"
	default:
		e.Type = "purchase"
		e.Revenue = Amount(100+g.rng.Int64N(20000)) * (amountScale / 100) // 1.00 to 200.99
		e.Experiment = s.visitor.experiment
	}
	grace, gap := g.cfg.Grace.Milliseconds(), g.cfg.Gap.Milliseconds()
	switch r := g.rng.Float64(); {
	case r < g.cfg.Late:
		g.hold(now+grace+1+g.rng.Int64N(2*(gap+grace)), e)
	case r < g.cfg.Late+g.cfg.OutOfOrder && grace > 1:
		g.hold(now+1+g.rng.Int64N(grace-1), e)
	default:
		out = append(out, e)
	}
	return out
}

func (g *Generator) hold(due int64, e Event) {
	heap.Push(&g.held, held{due: due, seq: g.events, e: e})
}

// Simulate returns the first n events that arrive when a generator's
// clock starts at start and moves by step per new event.
func Simulate(cfg Traffic, n int, start time.Time, step time.Duration) []Event {
	g := NewGenerator(cfg)
	out := make([]Event, 0, n+8)
	now := start.UnixMilli()
	var acc time.Duration
	for len(out) < n {
		out = g.Next(now+acc.Milliseconds(), out)
		acc += step
	}
	return out[:n]
}
