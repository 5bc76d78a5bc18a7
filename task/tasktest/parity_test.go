package tasktest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/grete-go/grete/task/tasktest"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The Driver must do what a job does. These cases run one task over the
// same input twice, in a real job on the embedded broker and in a Driver
// made from the same Job, and the two must agree on everything a test can
// see: the store's committed content (as its changelog says), the outputs,
// the dead-letter copies, where the task stopped. The task writes to its
// store before it fails, so the cases check that a failed message's
// writes are rolled back under every policy.

// parityTask handles "key=value" messages: it writes the pair, sends the
// message on, and then fails as the message's suffix says (" fail": an
// error; " panic": a panic), after one more write of "partial-<key>".
type parityTask struct {
	s   store.Store
	out string // output topic
}

func (p *parityTask) Init(_ context.Context, tc task.Context) (err error) {
	p.s, err = tc.Store("s")
	return err
}

func (p *parityTask) Process(_ context.Context, m stream.Message, out task.Collector, _ task.Coordinator) error {
	body, how, _ := strings.Cut(string(m.Value), " ")
	k, v, _ := strings.Cut(body, "=")
	if err := p.s.Put([]byte(k), []byte(v)); err != nil {
		return err
	}
	if err := out.Send(stream.Outgoing{Topic: p.out, Key: []byte(k), Value: m.Value}); err != nil {
		return err
	}
	if how == "" {
		return nil
	}
	if err := p.s.Put([]byte("partial-"+k), []byte("x")); err != nil {
		return err
	}
	if how == "panic" {
		panic("asked to panic")
	}
	return errors.New("asked to fail")
}

var parityInput = []string{"a=1", "b=2 fail", "c=3", "d=4 panic", "a=5", "e=6 fail", "f=7"}

// parityResult is what a run of the task left behind.
type parityResult struct {
	Store   map[string]string // committed content, from the changelog
	Outputs []string
	Dead    []string // values copied to the dead-letter topic
	Stopped string   // "" or where a Fail stopped: "offset N"
	Next    int64    // the checkpoint's next offset
}

func parityJob(addrs []string, name string, policy task.ErrorPolicy, dir string) *task.Job {
	return &task.Job{
		Name: name, Kafka: stream.KafkaConfig{Brokers: addrs}, Inputs: []string{"parity-in"},
		Stores: []store.Spec{{Name: "s"}}, DataDir: dir, OnError: policy,
		Outputs:        []task.OutputTopic{{Name: name + "-out", Partitions: 1}},
		CommitInterval: 50 * time.Millisecond,
		NewTask:        func() task.StreamTask { return &parityTask{out: name + "-out"} },
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func TestDriverAgreesWithAJob(t *testing.T) {
	b := testkit.Broker(t)
	addrs := b.Addrs()
	testkit.CreateTopic(t, addrs, "parity-in", 1, nil)
	var recs []*kgo.Record
	for _, v := range parityInput {
		recs = append(recs, &kgo.Record{Value: []byte(v)})
	}
	testkit.Produce(t, addrs, "parity-in", recs)
	for _, policy := range []task.ErrorPolicy{task.Fail, task.Skip, task.DeadLetter} {
		t.Run(policy.String(), func(t *testing.T) {
			name := "parity-" + policy.String()
			job := runParityJob(t, addrs, name, policy)
			drv := runParityDriver(t, parityJob(addrs, name, policy, t.TempDir()))
			require.Equal(t, job, drv, "the job (first) and the Driver (second) disagree")
			for k := range job.Store {
				require.NotContains(t, k, "partial-", "a failed message's write reached the store")
			}
		})
	}
}

// runParityJob runs the job until it has processed the whole input (or
// stopped at a failure) and reads what it left behind.
func runParityJob(t *testing.T, addrs []string, name string, policy task.ErrorPolicy) parityResult {
	t.Helper()
	job := parityJob(addrs, name, policy, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	adm := kadm.NewClient(testkit.Client(t, addrs))
	var runErr error
	testkit.Eventually(t, time.Minute, func() bool {
		select {
		case runErr = <-done:
			return true
		default:
		}
		ok, _ := testkit.CaughtUp(adm, name, "parity-in")
		return ok
	}, "the job did not process its input")
	cancel()
	if runErr == nil {
		runErr = <-done
	}
	var res parityResult
	var pe *task.ProcessError
	switch {
	case errors.As(runErr, &pe):
		res.Stopped = fmt.Sprintf("offset %d", pe.Offset)
	case runErr != nil:
		t.Fatalf("the job failed: %v", runErr)
	}
	committed, _, err := testkit.GroupOffsets(adm, name, "parity-in")
	require.NoError(t, err)
	res.Next = committed[0]
	res.Store = map[string]string{}
	for _, r := range testkit.ReadAll(t, addrs, 30*time.Second, name+"-s-changelog") {
		if r.Value == nil {
			delete(res.Store, string(r.Key))
		} else {
			res.Store[string(r.Key)] = string(r.Value)
		}
	}
	for _, r := range testkit.ReadAll(t, addrs, 30*time.Second, name+"-out") {
		res.Outputs = append(res.Outputs, string(r.Value))
	}
	if policy == task.DeadLetter {
		for _, r := range testkit.ReadAll(t, addrs, 30*time.Second, name+"-dlq") {
			res.Dead = append(res.Dead, string(r.Value))
		}
	}
	return res
}

// runParityDriver feeds the input to a Driver made from job.
func runParityDriver(t *testing.T, job *task.Job) parityResult {
	t.Helper()
	d := tasktest.FromJob(job, tasktest.Inputs("parity-in"))
	ctx := context.Background()
	var res parityResult
	for i, v := range parityInput {
		err := d.Feed(ctx, stream.Message{Topic: "parity-in", Offset: int64(i), Value: []byte(v)})
		var pe *task.ProcessError
		if errors.As(err, &pe) {
			res.Stopped = fmt.Sprintf("offset %d", pe.Offset)
			break
		}
		require.NoError(t, err)
	}
	require.NoError(t, d.Close(ctx))
	cp, _ := d.Checkpoint()
	res.Next = cp.Inputs[stream.Partition{Topic: "parity-in"}]
	res.Store = map[string]string{}
	for _, r := range d.Changelog("s") {
		if r.Value == nil {
			delete(res.Store, string(r.Key))
		} else {
			res.Store[string(r.Key)] = string(r.Value)
		}
	}
	for _, m := range d.OutputsTo(job.Name + "-out") {
		res.Outputs = append(res.Outputs, string(m.Value))
	}
	for _, m := range d.OutputsTo(d.DeadLetterTopic()) {
		res.Dead = append(res.Dead, string(m.Value))
	}
	res.Outputs, res.Dead = slices.Clip(res.Outputs), slices.Clip(res.Dead)
	return res
}
