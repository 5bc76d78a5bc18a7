package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
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
	for _, kill := range []bool{false, true} {
		for _, standbys := range []int{0, 1} {
			r, err := handover(ctx, c, brokers, dirs, standbys, kill, stderr)
			if err != nil {
				return fmt.Errorf("handover with %d standbys (kill %v): %w", standbys, kill, err)
			}
			how := "stopped gracefully"
			if kill {
				how = "SIGKILLed (moved after the session timeout)"
			}
			fmt.Fprintf(stdout, "owner %s, standbys %d: task moved in %v (new owner: assigned to ready %v, restore %v, %d changelog records replayed)\n",
				how, standbys, r.wall.Round(time.Millisecond), r.paused.Round(time.Millisecond), r.restore.Round(time.Millisecond), r.records)
		}
	}
	return nil
}

// kvJob is the job of the handover measurement: one task whose store
// holds every key of the input.
func kvJob(name string, brokers []string, dir, id string, standbys int, stderr io.Writer) *task.Job {
	return &task.Job{
		Name: name, Kafka: stream.KafkaConfig{Brokers: brokers}, Inputs: []string{"kv-in"},
		Stores:   []store.Spec{{Name: "kv"}},
		DataDir:  dir,
		Standbys: standbys, InstanceID: id, CommitInterval: time.Second,
		SessionTimeout: handoverSession,
		NewTask:        func() task.StreamTask { return &kvTask{} },
		Logger:         quietLogger(stderr),
	}
}

// handoverSession is the group session timeout of the handover jobs: the
// shortest the embedded broker accepts, since a killed owner's task moves
// only once its session has timed out.
const handoverSession = 6 * time.Second

// loaded returns the id of job's last checkpoint once it covers n input
// records.
func loaded(job *task.Job, n int64) (uint64, bool) {
	st := job.Stats()
	if len(st) == 1 && st[0].LastCheckpoint.Inputs[stream.Partition{Topic: "kv-in"}] == n {
		return st[0].LastCheckpoint.ID, true
	}
	return 0, false
}

// startOwnerChild runs the job's first owner in a child process (this
// program's child-owner command), so that it can be killed, and waits until
// its store holds every key; it returns the id of that checkpoint.
func startOwnerChild(ctx context.Context, c config, name string, brokers []string, dir string, standbys int, stderr io.Writer) (*child, uint64, error) {
	ch, line, err := startSelf(ctx, stderr, c.timeout, "child-owner", "-job", name, "-brokers", strings.Join(brokers, ","),
		"-keys", strconv.FormatInt(c.handover, 10), "-dir", dir, "-standbys", strconv.Itoa(standbys), "-timeout", c.timeout.String())
	if err != nil {
		return nil, 0, fmt.Errorf("owner process: %w", err)
	}
	id, err := strconv.ParseUint(strings.TrimPrefix(line, "loaded "), 10, 64)
	if err != nil {
		ch.stop()
		return nil, 0, fmt.Errorf("owner process: unexpected first line %q", line)
	}
	return ch, id, nil
}

// runOwnerChild is the child-owner command: it runs the job as member
// "a" until its store holds every key, prints "loaded <checkpoint id>",
// and goes on until its standard input closes (or it is killed).
func runOwnerChild(ctx context.Context, c config, stdin io.Reader, stdout, stderr io.Writer) error {
	job := kvJob(c.handoverOwner, strings.Split(c.brokers, ","), c.ownerDir, "a", c.ownerStandbys, stderr)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	var id uint64
	if err := poll(ctx, func() bool {
		var ok bool
		id, ok = loaded(job, c.handover)
		return ok
	}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "loaded %d\n", id)
	_, _ = io.Copy(io.Discard, stdin)
	cancel()
	return <-done
}

// handover runs the job (named after the case, so each has its own
// changelog) in process a until its store holds every key, starts process
// b, waits until b's standby (if any) has applied a's last checkpoint, then
// stops a (gracefully, or with SIGKILL: then a is a child process) and
// times the task's move to b.
func handover(ctx context.Context, c config, brokers []string, dirs string, standbys int, kill bool, stderr io.Writer) (handoverResult, error) {
	name := fmt.Sprintf("handover-%d-%v", standbys, kill)
	b := kvJob(name, brokers, dirs+"/"+name+"-b", "b", standbys, stderr)
	var (
		last  uint64
		stopA func() error
	)
	if kill {
		owner, id, err := startOwnerChild(ctx, c, name, brokers, dirs+"/"+name+"-a", standbys, stderr)
		if err != nil {
			return handoverResult{}, err
		}
		last = id
		stopA = func() error {
			_ = owner.cmd.Process.Signal(syscall.SIGKILL)
			_ = owner.cmd.Wait()
			return nil
		}
		defer owner.stop()
	} else {
		a := kvJob(name, brokers, dirs+"/"+name+"-a", "a", standbys, stderr)
		actx, cancelA := context.WithCancel(ctx)
		defer cancelA()
		aDone := make(chan error, 1)
		go func() { aDone <- a.Run(actx) }()
		if err := poll(ctx, func() bool {
			var ok bool
			last, ok = loaded(a, c.handover)
			return ok
		}); err != nil {
			return handoverResult{}, fmt.Errorf("process a did not load the store: %w", err)
		}
		stopA = func() error { cancelA(); return <-aDone }
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
	if err := stopA(); err != nil {
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
