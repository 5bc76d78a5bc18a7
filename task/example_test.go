package task_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/grete-go/grete/internal/embedded"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kgo"
)

// wordCount counts words in its store and sends every new count; the word
// "." ends the job.
type wordCount struct{ counts store.Store }

func (w *wordCount) Init(_ context.Context, tc task.Context) (err error) {
	w.counts, err = tc.Store("counts")
	return err
}

func (w *wordCount) Process(_ context.Context, m stream.Message, out task.Collector, co task.Coordinator) error {
	if string(m.Value) == "." {
		co.Shutdown() // the job commits, closes and Run returns nil
		return nil
	}
	n := 0
	if v, ok, err := w.counts.Get(m.Value); err != nil {
		return err
	} else if ok {
		n, _ = strconv.Atoi(string(v))
	}
	n++
	if err := w.counts.Put(m.Value, []byte(strconv.Itoa(n))); err != nil {
		return err
	}
	return out.Send(stream.Outgoing{Topic: "counts", Key: m.Value, Value: []byte(strconv.Itoa(n))})
}

// A whole job: a task with a store backed by a changelog, run on a broker
// until the task asks it to stop, and its output read back from Kafka.
func Example() {
	// An in-process broker stands in for a cluster here.
	broker, err := embedded.Start(embedded.Options{Partitions: 1, Topics: []string{"words"}})
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	produce(broker.Addrs(), "words", "to", "be", "or", "not", "to", "be", ".")

	dir, err := os.MkdirTemp("", "wordcount-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	job := &task.Job{
		Name:    "wordcount",
		Kafka:   stream.KafkaConfig{Brokers: broker.Addrs()},
		Inputs:  []string{"words"},
		NewTask: func() task.StreamTask { return &wordCount{} },
		Stores:  []store.Spec{{Name: "counts"}},
		Outputs: []task.OutputTopic{{Name: "counts"}},
		DataDir: dir,
		Logger:  slog.New(slog.DiscardHandler),
	}
	if err := job.Run(context.Background()); err != nil {
		panic(err)
	}
	for _, r := range consume(broker.Addrs(), "counts", 6) {
		fmt.Printf("%s=%s\n", r.Key, r.Value)
	}
	// Output:
	// to=1
	// be=1
	// or=1
	// not=1
	// to=2
	// be=2
}

// produce writes values to topic with franz-go.
func produce(brokers []string, topic string, values ...string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		panic(err)
	}
	defer cl.Close()
	for _, v := range values {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			panic(err)
		}
	}
}

// consume reads the first n records of topic with franz-go.
func consume(brokers []string, topic string, n int) []*kgo.Record {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		panic(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			panic(err)
		}
		out = append(out, fs.Records()...)
	}
	return out
}
