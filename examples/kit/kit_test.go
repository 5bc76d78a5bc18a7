package kit

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/testkit"
	"github.com/twmb/franz-go/pkg/kadm"
)

func TestConnectEmbeddedAndEnsureTopics(t *testing.T) {
	var out bytes.Buffer
	c, err := Connect("", "", 3, &out)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !strings.Contains(out.String(), "embedded broker at 127.0.0.1:") {
		t.Fatalf("did not say where the broker is: %q", out.String())
	}
	kc := c.Kafka("test")
	if err := EnsureTopics(kc, Topic{Name: "a", Partitions: 2}, Topic{Name: "b", Partitions: 5}); err != nil {
		t.Fatal(err)
	}
	// Ensuring again leaves existing topics alone.
	if err := EnsureTopics(kc, Topic{Name: "a", Partitions: 7}); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(testkit.Client(t, c.Brokers))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	td, err := adm.ListTopics(ctx, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td["a"].Partitions); n != 2 {
		t.Errorf("a has %d partitions, want 2", n)
	}
	if n := len(td["b"].Partitions); n != 5 {
		t.Errorf("b has %d partitions, want 5", n)
	}
}

func TestConnectGivenBrokers(t *testing.T) {
	c, err := Connect("h1:9092,h2:9092", "", 1, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Brokers) != 2 || c.Brokers[1] != "h2:9092" {
		t.Fatalf("brokers %v", c.Brokers)
	}
	dir, cleanup, err := c.StateDir("", "x")
	if err != nil || dir != "" {
		t.Fatalf("state dir for a real cluster without -data-dir = %q, %v; want the job's default", dir, err)
	}
	cleanup()
}

func TestStateDir(t *testing.T) {
	c := &Cluster{}
	dir, cleanup, err := c.StateDir("/data", "x")
	if err != nil || dir != "/data/state" {
		t.Fatalf("StateDir = %q, %v", dir, err)
	}
	cleanup()
	emb, err := Connect("", "", 1, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	dir, cleanup, err = emb.StateDir("", "x")
	if err != nil || dir == "" {
		t.Fatalf("StateDir = %q, %v", dir, err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	cleanup()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temporary state dir %s not removed: %v", dir, err)
	}
}

func TestLoggerLevels(t *testing.T) {
	var b bytes.Buffer
	log, err := Logger("warn", &b)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown")
	if strings.Contains(b.String(), "hidden") || !strings.Contains(b.String(), "shown") {
		t.Fatalf("log output %q", b.String())
	}
	if _, err := Logger("loud", &b); err == nil {
		t.Fatal("an unknown level was accepted")
	}
}

func TestGenerateProducesAtTheRate(t *testing.T) {
	c, err := Connect("", "", 1, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kc := c.Kafka("test")
	if err := EnsureTopics(kc, Topic{Name: "gen", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n := 0
	start := time.Now()
	err = Generate(ctx, kc, "gen", 2000, func(_ time.Time, emit func(key, value []byte) error) error {
		n++
		return emit([]byte("k"), []byte(strconv.Itoa(n)))
	})
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	recs := testkit.ReadAll(t, c.Brokers, 30*time.Second, "gen")
	if len(recs) != n {
		t.Fatalf("%d records in the topic, %d generated", len(recs), n)
	}
	// Credited by elapsed time: about 2000/s, never more than the time allows.
	if limit := int(2000*elapsed.Seconds()) + 1; n > limit || n < limit/4 {
		t.Fatalf("generated %d events in %v at 2000/s", n, elapsed)
	}
	if string(recs[0].Key) != "k" || string(recs[len(recs)-1].Value) != strconv.Itoa(n) {
		t.Fatalf("records do not carry what was emitted: %q=%q", recs[0].Key, recs[len(recs)-1].Value)
	}
}
