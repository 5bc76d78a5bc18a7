package checkpoint_test

import (
	"context"
	"fmt"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/internal/embedded"
	"github.com/grete-go/grete/stream"
)

// Checkpoints kept in Kafka: what one manager writes, another (a process
// started later, say) loads. A job does this itself; reading checkpoints
// is how a tool learns where a job's tasks stand.
func ExampleNewKafka() {
	broker, err := embedded.Start(embedded.Options{})
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	ctx := context.Background()
	kc := stream.KafkaConfig{Brokers: broker.Addrs()}

	w, err := checkpoint.NewKafka(ctx, kc, "clicks", checkpoint.KafkaOptions{})
	if err != nil {
		panic(err)
	}
	defer w.Close()
	cp := checkpoint.Checkpoint{
		ID:         7,
		Task:       "task-0",
		Inputs:     map[stream.Partition]int64{{Topic: "clicks", Partition: 0}: 1200},
		Changelogs: map[string]int64{"sessions": 311},
		WrittenAt:  time.Now(),
	}
	if err := w.Write(ctx, cp); err != nil {
		panic(err)
	}

	r, err := checkpoint.NewKafka(ctx, kc, "clicks", checkpoint.KafkaOptions{})
	if err != nil {
		panic(err)
	}
	defer r.Close()
	got, ok, err := r.Load(ctx, "task-0")
	if err != nil || !ok {
		panic(fmt.Sprint(ok, err))
	}
	fmt.Println("topic:", r.Topic())
	fmt.Println("checkpoint", got.ID, "of", got.Task)
	fmt.Println("next offset of clicks/0:", got.Inputs[stream.Partition{Topic: "clicks"}])
	fmt.Println("store sessions covers its changelog to offset", got.Changelogs["sessions"])
	// Output:
	// topic: clicks-checkpoints
	// checkpoint 7 of task-0
	// next offset of clicks/0: 1200
	// store sessions covers its changelog to offset 311
}

// A checkpoint is one record: Encode and Decode are its format.
func ExampleEncode() {
	b, err := checkpoint.Encode(checkpoint.Checkpoint{ID: 1, Task: "task-3", Inputs: map[stream.Partition]int64{{Topic: "in", Partition: 3}: 42}})
	if err != nil {
		panic(err)
	}
	cp, err := checkpoint.Decode(b)
	if err != nil {
		panic(err)
	}
	fmt.Println(cp.Task, cp.Inputs[stream.Partition{Topic: "in", Partition: 3}])
	// Output: task-3 42
}
