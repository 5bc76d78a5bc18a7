// Package testkit holds test helpers shared by Grete's tests: an embedded
// broker per test, and a second, independent Kafka client (franz-go's kgo)
// to produce inputs and read outputs, so tests never check sarama against
// itself.
package testkit

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/embedded"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Broker starts an embedded broker for the test and stops it at cleanup.
func Broker(t testing.TB, opts ...kfake.Opt) *embedded.Broker {
	t.Helper()
	b, err := embedded.Start(embedded.Options{Extra: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// clientOpts are the options of every test client: addrs, and metadata
// refreshed at once after a NOT_LEADER answer (franz-go waits 5 s by
// default), so that a fault soak does not hold the test's own clients up.
func clientOpts(addrs []string, more ...kgo.Opt) []kgo.Opt {
	return append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.MetadataMinAge(100 * time.Millisecond)}, more...)
}

// Client returns a kgo client of addrs, closed at cleanup.
func Client(t testing.TB, addrs []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(clientOpts(addrs), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// CreateTopic creates topic with n partitions and optional configs.
func CreateTopic(t testing.TB, addrs []string, topic string, n int32, configs map[string]*string) {
	t.Helper()
	CreateTopicWith(t, addrs, nil, topic, n, configs)
}

// CreateTopicWith is CreateTopic with extra client options (TLS, SASL).
func CreateTopicWith(t testing.TB, addrs []string, opts []kgo.Opt, topic string, n int32, configs map[string]*string) {
	t.Helper()
	adm := kadm.NewClient(Client(t, addrs, opts...))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, n, 1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// Partitions returns topic's partition count.
func Partitions(t testing.TB, addrs []string, topic string) int {
	t.Helper()
	adm := kadm.NewClient(Client(t, addrs))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	td, err := adm.ListTopics(ctx, topic)
	if err == nil {
		err = td[topic].Err
	}
	if err != nil {
		t.Fatalf("describe topic %s: %v", topic, err)
	}
	return len(td[topic].Partitions)
}

// Produce writes records synchronously, in order, and fails the test on any
// error. Records without a topic go to topic.
func Produce(t testing.TB, addrs []string, topic string, recs []*kgo.Record) {
	t.Helper()
	cl := Client(t, addrs, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(time.Millisecond), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const chunk = 10000
	for i := 0; i < len(recs); i += chunk {
		if err := cl.ProduceSync(ctx, recs[i:min(i+chunk, len(recs))]...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
}

// ReadAll reads every record of topics from the start up to the end offsets
// as of the call, bounded by timeout.
func ReadAll(t testing.TB, addrs []string, timeout time.Duration, topics ...string) []*kgo.Record {
	t.Helper()
	return ReadAllWith(t, addrs, nil, timeout, topics...)
}

// ReadAllWith is ReadAll with extra client options (TLS, SASL).
func ReadAllWith(t testing.TB, addrs []string, opts []kgo.Opt, timeout time.Duration, topics ...string) []*kgo.Record {
	t.Helper()
	recs, err := readAll(addrs, opts, timeout, topics...)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func readAll(addrs []string, opts []kgo.Opt, timeout time.Duration, topics ...string) ([]*kgo.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cl, err := kgo.NewClient(append(clientOpts(addrs), opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, err
	}
	want := map[string]map[int32]int64{}
	remaining := 0
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			err = fmt.Errorf("end offset of %s/%d: %w", o.Topic, o.Partition, o.Err)
			return
		}
		if o.Offset > 0 {
			if want[o.Topic] == nil {
				want[o.Topic] = map[int32]int64{}
			}
			want[o.Topic][o.Partition] = o.Offset
			remaining++
		}
	})
	if err != nil {
		return nil, err
	}
	if remaining == 0 {
		return nil, nil
	}
	starts := map[string]map[int32]kgo.Offset{}
	for tp, ps := range want {
		starts[tp] = map[int32]kgo.Offset{}
		for p := range ps {
			starts[tp][p] = kgo.NewOffset().AtStart()
		}
	}
	rd, err := kgo.NewClient(append(clientOpts(addrs, kgo.ConsumePartitions(starts)), opts...)...)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	var out []*kgo.Record
	for remaining > 0 {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			return out, fmt.Errorf("read %v: %d partitions not read to the end: %w", topics, remaining, ctx.Err())
		}
		for _, e := range fs.Errors() {
			return out, fmt.Errorf("read %s/%d: %w", e.Topic, e.Partition, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Topic][r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			out = append(out, r)
			if r.Offset == end-1 {
				delete(want[r.Topic], r.Partition)
				remaining--
			}
		})
	}
	return out, nil
}

// Eventually polls cond every 20ms until it returns true or timeout passes,
// then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: "+msg, append([]any{timeout}, args...)...)
		}
		<-tick.C
	}
}

// Restartable is an embedded broker that a test can stop and start again
// on the same port and data directory, as an operator restarts a broker:
// clients see their connections refused meanwhile, and the data, topics
// and groups come back.
type Restartable struct {
	t    testing.TB
	port int
	dir  string
	opts []kfake.Opt
	mu   sync.Mutex
	b    *embedded.Broker
}

// RestartableBroker starts a Restartable broker, stopped at cleanup.
func RestartableBroker(t testing.TB, opts ...kfake.Opt) *Restartable {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	r := &Restartable{t: t, port: port, dir: t.TempDir(), opts: opts}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Addrs are the broker's "host:port" addresses, the same across restarts.
func (r *Restartable) Addrs() []string {
	return []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))}
}

// Stop stops the broker, persisting its data; it does nothing when stopped.
func (r *Restartable) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b != nil {
		r.b.Close()
		r.b = nil
	}
}

// Start starts the stopped broker again. The port may take a moment to be
// free again: Start retries for a few seconds.
func (r *Restartable) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b != nil {
		return
	}
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		r.b, err = embedded.Start(embedded.Options{Port: r.port, DataDir: r.dir, Extra: r.opts})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // the port is not free yet: nothing to wait on
	}
	if err != nil {
		r.t.Fatalf("start the broker on port %d again: %v", r.port, err)
	}
}

// Cluster is the running broker's cluster (nil while stopped).
func (r *Restartable) Cluster() *kfake.Cluster {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b == nil {
		return nil
	}
	return r.b.Cluster
}
