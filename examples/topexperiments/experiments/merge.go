package experiments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
)

// mergeTask keeps the latest partial of every counting task in a
// changelog-backed store, and emits the global top-N each time a partial
// changes it (not before anything is counted). Because it keeps one partial per task (not a sum over time),
// re-delivered or repeated partials change nothing, and the global top-N
// is exactly the top-N of the latest per-task tops (see Merge).
type mergeTask struct {
	n      int
	output string // topic
	onTop  func(Global)

	partials *store.Typed[string, Partial]
	latest   map[string]Partial
	last     []Entry // last emitted top
}

func newMergeTask(n int, output string, onTop func(Global)) *mergeTask {
	return &mergeTask{n: n, output: output, onTop: onTop}
}

// Init implements task.InitableTask: it loads the partials kept so far (a
// handful of records, one per counting task).
func (t *mergeTask) Init(_ context.Context, tc task.Context) error {
	s, err := tc.Store(PartialsStore)
	if err != nil {
		return err
	}
	t.partials = store.NewTyped(s, stream.String(), stream.JSON[Partial]())
	t.latest = map[string]Partial{}
	it := t.partials.All()
	defer it.Close()
	for it.Next() {
		t.latest[it.Key()] = it.Value()
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("load partials: %w", err)
	}
	tc.Logger().Info("loaded partial tops", "tasks", len(t.latest))
	return nil
}

// Process implements task.StreamTask: one partial in, the global top-N out
// when it changed.
func (t *mergeTask) Process(_ context.Context, m stream.Message, out task.Collector, _ task.Coordinator) error {
	var p Partial
	if err := json.Unmarshal(m.Value, &p); err != nil {
		return &stream.DecodeError{Format: "partial top", Err: err}
	}
	if p.Task == "" {
		return &stream.DecodeError{Format: "partial top", Err: errors.New("no task")}
	}
	if err := t.partials.Put(p.Task, p); err != nil {
		return err
	}
	t.latest[p.Task] = p
	g := t.global()
	if len(g.Top) == 0 || slices.Equal(g.Top, t.last) {
		return nil // nothing counted yet, or no change
	}
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	if err := out.Send(stream.Outgoing{Topic: t.output, Value: b}); err != nil {
		return err
	}
	t.last = g.Top
	if t.onTop != nil {
		t.onTop(g)
	}
	return nil
}

// global merges the latest partials.
func (t *mergeTask) global() Global {
	var g Global
	tops := make([][]Entry, 0, len(t.latest))
	for _, p := range t.latest {
		tops = append(tops, p.Top)
		g.At = max(g.At, p.At)
	}
	g.Top = Merge(t.n, tops...)
	return g
}
