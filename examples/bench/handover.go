package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/grete-go/grete/internal/embedded"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kvTask writes every message to its store: key to value.
type kvTask struct{ kv store.Store }

func (t *kvTask) Init(_ context.Context, tc task.Context) (err error) {
	t.kv, err = tc.Store("kv")
	return err
}

func (t *kvTask) Process(_ context.Context, m stream.Message, _ task.Collector, _ task.Coordinator) error {
	return t.kv.Put(m.Key, m.Value)
}

// handoverResult is what moving the task from one process to another cost.
type handoverResult struct {
	wall    time.Duration // from the old owner's stop to the new owner running the task
	paused  time.Duration // new owner: from assignment to ready (Member().Paused)
	restore time.Duration // new owner: restoring the store
	records uint64        // changelog records the new owner replayed
}

// measureHandover measures (d): the pause when a task with a store of
// -handover keys moves between two processes of a job, with and without a
// standby on the process it moves to. Both processes run in this program,
// as two members of the job's group with their own data directories, on
// the embedded broker.
func measureHandover(ctx context.Context, c config, stdout, stderr io.Writer) error {
	b, err := embedded.Start(embedded.Options{Partitions: 1})
	if err != nil {
		return err
	}
	defer b.Close()
	brokers := b.Addrs()
	cl, err := newKgo(brokers)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := createTopics(ctx, cl, 1, "kv-in"); err != nil {
		return err
	}
	start := time.Now()
	value := make([]byte, 100)
	for i := range c.handover {
		for j := range value {
			value[j] = 'a' + byte((i+int64(j))%26)
		}
		cl.Produce(ctx, &kgo.Record{Topic: "kv-in", Key: []byte("key-" + strconv.FormatInt(i, 10)), Value: append([]byte(nil), value...)}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "produced %d keys × 100 B in %v\n", c.handover, time.Since(start).Round(time.Millisecond))

	dirs, err := os.MkdirTemp("", "grete-handover-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dirs)
	for _, standbys := range []int{0, 1} {
		r, err := handover(ctx, c, brokers, dirs, standbys, stderr)
		if err != nil {
			return fmt.Errorf("handover with %d standbys: %w", standbys, err)
		}
		fmt.Fprintf(stdout, "standbys %d: task moved in %v (new owner: assigned to ready %v, restore %v, %d changelog records replayed)\n",
			standbys, r.wall.Round(time.Millisecond), r.paused.Round(time.Millisecond), r.restore.Round(time.Millisecond), r.records)
	}
	return nil
}

// handover runs the job (named after standbys, so each case has its own
// changelog) in process a until its store holds every key, starts process
// b, waits until b's standby (if any) has applied a's last checkpoint, then
// stops a and times the task's move to b.
func handover(ctx context.Context, c config, brokers []string, dirs string, standbys int, stderr io.Writer) (handoverResult, error) {
	name := fmt.Sprintf("handover-%d", standbys)
	mk := func(id string) *task.Job {
		return &task.Job{
			Name: name, Kafka: stream.KafkaConfig{Brokers: brokers}, Inputs: []string{"kv-in"},
			Stores:   []store.Spec{{Name: "kv"}},
			DataDir:  dirs + "/" + name + "-" + id,
			Standbys: standbys, InstanceID: id, CommitInterval: time.Second,
			NewTask: func() task.StreamTask { return &kvTask{} },
			Logger:  quietLogger(stderr),
		}
	}
	a, b := mk("a"), mk("b")
	actx, stopA := context.WithCancel(ctx)
	defer stopA()
	aDone := make(chan error, 1)
	go func() { aDone <- a.Run(actx) }()
	var last uint64
	if err := poll(ctx, func() bool {
		st := a.Stats()
		if len(st) == 1 && st[0].LastCheckpoint.Inputs[stream.Partition{Topic: "kv-in"}] == c.handover {
			last = st[0].LastCheckpoint.ID
			return true
		}
		return false
	}); err != nil {
		return handoverResult{}, fmt.Errorf("process a did not load the store: %w", err)
	}
	bctx, stopB := context.WithCancel(ctx)
	defer stopB()
	bDone := make(chan error, 1)
	go func() { bDone <- b.Run(bctx) }()
	if err := poll(ctx, func() bool {
		m, ok := b.Member()
		return ok && m.Rebalances > 0 && (standbys == 0 || m.StandbyCheckpoints[0] == last)
	}); err != nil {
		return handoverResult{}, fmt.Errorf("process b did not join (or its standby did not catch up): %w", err)
	}
	moved := time.Now()
	stopA()
	if err := <-aDone; err != nil {
		return handoverResult{}, fmt.Errorf("process a: %w", err)
	}
	if err := poll(ctx, func() bool { return len(b.Stats()) == 1 }); err != nil {
		return handoverResult{}, fmt.Errorf("process b did not take the task: %w", err)
	}
	r := handoverResult{wall: time.Since(moved)}
	m, _ := b.Member()
	st := b.Stats()[0]
	r.paused, r.restore, r.records = m.Paused, st.RestoreTime, st.Stores["kv"].RestoreRecords
	stopB()
	if err := <-bDone; err != nil {
		return r, fmt.Errorf("process b: %w", err)
	}
	return r, nil
}

// poll waits until cond holds, checking every 5 ms.
func poll(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
