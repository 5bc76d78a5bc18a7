package main

import (
	"context"
	"io"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/stream"
	"github.com/grete-go/grete/task"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTopexperimentsCommands runs the restore and counting commands on
// small inputs, as a user would run them: the built program, re-executing
// itself for every measurement (a test binary cannot be re-executed as the
// program). Two rounds make each command run its measurements in both
// orders. The numbers are not checked, only that every measurement ran,
// handled every record, and that the results were printed.
func TestTopexperimentsCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the benchmark program and runs 8 child processes")
	}
	bin := testkit.Build(t, ".")
	for _, tc := range []struct {
		args []string
		want []*regexp.Regexp
	}{
		{[]string{"restore", "-keys", "5000", "-value", "10", "-rounds", "2", "-partitions", "4", "-timeout", "2m"}, []*regexp.Regexp{
			regexp.MustCompile(`(?m)^bench: \(b\) round 1: restore +5000 records in `),
			regexp.MustCompile(`(?m)^bench: \(b\) round 2: raw consume +5000 records in `),
			regexp.MustCompile(`(?m)^result: \(b\) restore \d+ rec/s vs raw sarama consume \d+ rec/s: ratio [\d.]+ \(target >= 0.8: (NOT )?met\); restore peak RSS [\d.]+ MiB`),
		}},
		{[]string{"counting", "-events", "5000", "-rounds", "2", "-partitions", "4", "-window", "100ms", "-commit", "100ms", "-timeout", "2m"}, []*regexp.Regexp{
			regexp.MustCompile(`(?m)^bench: \(c\) round 1: counting job +5000 events in `),
			regexp.MustCompile(`(?m)^bench: \(c\) round 2: raw copy +5000 events in `),
			regexp.MustCompile(`(?m)^result: \(c\) counting job \d+ ev/s vs raw sarama copy \d+ ev/s: ratio [\d.]+ \(target >= 0.7: (NOT )?met\)$`),
		}},
	} {
		t.Run(tc.args[0], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tc.args...)
			var stdout, stderr testkit.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v: %v\nstdout:\n%s\nstderr:\n%s", tc.args, err, stdout.String(), stderr.Tail(8<<10))
			}
			for _, re := range tc.want {
				if !re.MatchString(stdout.String()) {
					t.Errorf("no line matches %s in:\n%s", re, stdout.String())
				}
			}
			t.Logf("%v:\n%s", tc.args, stdout.String())
		})
	}
}

// The benchmarks below are the measurements of the restore and counting
// commands run in the go test process, broker included, over b.N records:
// they report records per second, while CPU time and memory, which the
// commands measure in child processes of their own, are those of the whole
// test process. Producing the input is not timed.
//
//	go test -run '^$' -bench 'Restore|Counting' ./examples/bench

// topexpTestEnv starts a broker for a benchmark, with the client the
// commands produce their input with.
func topexpTestEnv(b *testing.B) ([]string, *kgo.Client) {
	b.Helper()
	brokers := startBroker(b)
	cl, err := newKgo(brokers, kgo.MaxBufferedRecords(50_000), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	return brokers, cl
}

// BenchmarkRestore is the restore command's job: restoring b.N keys with
// 100-byte values, over 8 tasks, into an empty data directory.
func BenchmarkRestore(b *testing.B) {
	ctx := context.Background()
	brokers, cl := topexpTestEnv(b)
	if err := restoreFillChangelog(ctx, cl, brokers, 8, b.N, 100); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	res, err := restoreRunJob(ctx, stream.KafkaConfig{Brokers: brokers}, b.TempDir(), 8, int64(b.N), quietLogger(io.Discard))
	b.StopTimer()
	reportRate(b, res.rate(), "records/s", err)
}

// BenchmarkRestoreRawConsume is the restore command's baseline: a raw
// sarama consume of the same changelog.
func BenchmarkRestoreRawConsume(b *testing.B) {
	ctx := context.Background()
	brokers, cl := topexpTestEnv(b)
	if err := restoreFillChangelog(ctx, cl, brokers, 8, b.N, 100); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	res, err := restoreRawConsume(ctx, stream.KafkaConfig{Brokers: brokers}, int64(b.N))
	b.StopTimer()
	reportRate(b, res.rate(), "records/s", err)
}

// BenchmarkCountingJob is the counting command's job: the example's
// counting job over b.N events of 500 experiments on 8 partitions, until
// its checkpoints cover every event.
func BenchmarkCountingJob(b *testing.B) {
	ctx := context.Background()
	brokers, cl := topexpTestEnv(b)
	if err := countingProduce(ctx, cl, 8, b.N, 500); err != nil {
		b.Fatal(err)
	}
	p := countingParams{top: 10, window: 10 * time.Second, commit: task.DefaultCommitInterval}
	job := p.countJob("bench", stream.KafkaConfig{Brokers: brokers}, countingInput, "bench-top")
	job.DataDir, job.Logger = b.TempDir(), quietLogger(io.Discard)
	b.ResetTimer()
	res, err := countingRunJob(ctx, job, int64(b.N))
	b.StopTimer()
	reportRate(b, res.rate(), "records/s", err)
}

// BenchmarkCountingRawCopy is the counting command's baseline: a raw
// sarama copy of the same events.
func BenchmarkCountingRawCopy(b *testing.B) {
	ctx := context.Background()
	brokers, cl := topexpTestEnv(b)
	if err := countingProduce(ctx, cl, 8, b.N, 500); err != nil {
		b.Fatal(err)
	}
	if err := createTopics(ctx, cl, 8, "bench-copy"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	res, err := countingRawCopy(ctx, stream.KafkaConfig{Brokers: brokers}, countingInput, "bench-copy", int64(b.N))
	b.StopTimer()
	reportRate(b, res.rate(), "records/s", err)
}
