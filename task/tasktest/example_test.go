package tasktest_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/grete-go/grete/task/tasktest"
)

// wordCount counts words and, on every Window, sends the new count of each
// word seen since the previous Window to "counts".
type wordCount struct {
	counts  map[string]int
	changed map[string]bool
}

func (w *wordCount) Init(_ context.Context, _ task.Context) error {
	w.counts, w.changed = map[string]int{}, map[string]bool{}
	return nil
}

func (w *wordCount) Process(_ context.Context, m stream.Message, _ task.Collector, _ task.Coordinator) error {
	for _, word := range strings.Fields(string(m.Value)) {
		w.counts[word]++
		w.changed[word] = true
	}
	return nil
}

func (w *wordCount) Window(_ context.Context, out task.Collector, _ task.Coordinator) error {
	for _, word := range slices.Sorted(maps.Keys(w.changed)) {
		err := out.Send(stream.Outgoing{Topic: "counts", Key: []byte(word), Value: []byte(strconv.Itoa(w.counts[word]))})
		if err != nil {
			return err
		}
	}
	clear(w.changed)
	return nil
}

// format prints outputs as key=value pairs.
func format(ms []stream.Outgoing) string {
	var b strings.Builder
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", m.Key, m.Value)
	}
	return b.String()
}

// A word counter that emits its counts every minute: Window runs once per
// elapsed minute of the driver's clock.
func Example() {
	ctx := context.Background()
	d := tasktest.New(&wordCount{}, tasktest.Inputs("lines"), tasktest.Window(time.Minute))
	defer d.Close(ctx)

	if err := d.Feed(ctx,
		stream.Message{Value: []byte("to be or not to be")},
		stream.Message{Value: []byte("that is the question")},
	); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("before the first minute:", len(d.Outputs()), "outputs")

	if err := d.Advance(ctx, time.Minute); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(format(d.TakeOutputs()))

	if err := d.Feed(ctx, stream.Message{Value: []byte("to be quick")}); err != nil {
		fmt.Println(err)
		return
	}
	// 2.5 minutes: Window at 2m and 3m; the second has nothing new to send.
	if err := d.Advance(ctx, 150*time.Second); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(format(d.OutputsTo("counts")))
	fmt.Println("window calls:", d.Stats().WindowCalls, "next offset:", d.Offsets()[stream.Partition{Topic: "lines"}])
	// Output:
	// before the first minute: 0 outputs
	// be=2 is=1 not=1 or=1 question=1 that=1 the=1 to=2
	// be=3 quick=1 to=3
	// window calls: 3 next offset: 3
}

// parseTask fails on values that are not integers.
type parseTask struct{}

func (parseTask) Process(_ context.Context, m stream.Message, out task.Collector, _ task.Coordinator) error {
	n, err := strconv.Atoi(string(m.Value))
	if err != nil {
		return err
	}
	return out.Send(stream.Outgoing{Topic: "doubled", Value: []byte(strconv.Itoa(2 * n))})
}

// Under the DeadLetter policy a failed message is copied to "<job>-dlq",
// with the error and the message's origin in headers, and the task goes on.
func ExampleOnError() {
	ctx := context.Background()
	d := tasktest.New(parseTask{}, tasktest.JobName("doubler"), tasktest.OnError(task.DeadLetter))
	defer d.Close(ctx)

	err := d.Feed(ctx,
		stream.Message{Value: []byte("21")},
		stream.Message{Value: []byte("twenty-one")},
		stream.Message{Value: []byte("4")},
	)
	fmt.Println("feed error:", err)
	for _, m := range d.Outputs() {
		fmt.Printf("%s: %s\n", m.Topic, m.Value)
	}
	dead := d.OutputsTo(d.DeadLetterTopic())[0]
	offset, _ := (&stream.Message{Headers: dead.Headers}).Header(task.HeaderOffset)
	fmt.Println("dead-lettered offset:", string(offset))
	fmt.Println("processed:", d.Stats().Processed, "dead-lettered:", d.Stats().DeadLettered)
	// Output:
	// feed error: <nil>
	// doubled: 42
	// doubler-dlq: twenty-one
	// doubled: 8
	// dead-lettered offset: 1
	// processed: 2 dead-lettered: 1
}

// Under the default Fail policy a failed message stops the task with an
// error naming it; it is not consumed, so a restart would begin with it.
func ExampleDriver_Feed() {
	ctx := context.Background()
	d := tasktest.New(parseTask{}, tasktest.Inputs("numbers"), tasktest.Partition(2))
	defer d.Close(ctx)

	err := d.Feed(ctx,
		stream.Message{Value: []byte("1")},
		stream.Message{Value: []byte("one")},
		stream.Message{Value: []byte("2")},
	)
	var perr *task.ProcessError
	if errors.As(err, &perr) {
		fmt.Printf("failed at %s/%d offset %d\n", perr.Topic, perr.Partition, perr.Offset)
	}
	fmt.Println("next offset:", d.Offsets()[stream.Partition{Topic: "numbers", Partition: 2}])
	fmt.Println("stopped:", d.Stopped())
	// Output:
	// failed at numbers/2 offset 1
	// next offset: 1
	// stopped: true
}

// FromJob tests a task under the settings of the job that runs it in
// production.
func ExampleFromJob() {
	job := &task.Job{
		Name:    "words",
		Inputs:  []string{"lines"},
		Window:  10 * time.Second,
		NewTask: func() task.StreamTask { return &wordCount{} },
	}
	ctx := context.Background()
	d := tasktest.FromJob(job)
	defer d.Close(ctx)

	if err := d.Feed(ctx, stream.Message{Value: []byte("hello hello world")}); err != nil {
		fmt.Println(err)
		return
	}
	if err := d.Advance(ctx, 10*time.Second); err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range d.Outputs() {
		fmt.Printf("%s=%s\n", m.Key, m.Value)
	}
	fmt.Println(d.Task().(*wordCount).counts["hello"])
	// Output:
	// hello=2
	// world=1
	// 2
}
