package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/grete-go/grete/internal/testkit"
	"github.com/grete-go/grete/task"
)

// TestSessionizeFlags checks the sessionize command's defaults, which are
// the example job's but for the window (1s, so that the periodic emits are
// in the measurement), and what it refuses before starting anything.
func TestSessionizeFlags(t *testing.T) {
	c, err := parseSessionize(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := sessionizeConfig{events: 1_000_000, rounds: 3, members: 1, partitions: 8, timeout: 30 * time.Minute,
		gap: 30 * time.Minute, grace: time.Minute, window: time.Second, commit: task.DefaultCommitInterval}
	if c != want {
		t.Errorf("defaults %+v, want %+v", c, want)
	}
	if c, err := parseSessionize([]string{"-rss", "1000", "-gap", "1h"}, io.Discard); err != nil || c.rss != 1000 || c.gap != time.Hour {
		t.Errorf("-rss 1000 -gap 1h: %+v, %v", c, err)
	}
	for _, args := range [][]string{
		{"-rss", "10", "-events", "5"}, {"-rss", "10", "-rounds", "2"}, {"-rss", "10", "-members", "2"}, {"-rss", "-1"},
		{"-events", "0"}, {"-rounds", "0"}, {"-members", "0"}, {"-partitions", "0"}, {"-window", "0s"}, {"-commit", "0s"},
		{"-gap", "0s"}, {"-grace", "-1s"}, {"-timeout", "0s"}, {"1000"}, {"-bench", "1000"},
	} {
		if _, err := parseSessionize(args, io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	// The child needs to know where the input is and how much to wait for.
	for _, args := range [][]string{{"child-sessionize"}, {"child-sessionize", "-brokers", "127.0.0.1:9092"}, {"child-sessionize", "-expect", "10"}} {
		if err := run(context.Background(), args, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "needs -brokers and -expect") {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// TestSessionizeCommand runs the sessionize command on small inputs, as a
// user would run it: the built program (-rss re-executes it for the job
// process, which a test binary cannot be). Two rounds make -events run
// its measurements in both orders. The numbers are not checked, only that
// every measurement ran over the whole input, printed its results, and
// wrote the CPU profiles asked for.
func TestSessionizeCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the benchmark program and runs it, with a child process for -rss")
	}
	bin := testkit.Build(t, ".")
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		args     []string
		want     []*regexp.Regexp
		profiles []string
	}{
		{"events", []string{"sessionize", "-events", "20000", "-rounds", "2", "-partitions", "4", "-cpuprofile", filepath.Join(dir, "events"), "-timeout", "2m"},
			[]*regexp.Regexp{
				regexp.MustCompile(`(?m)^bench: 20000 events \(\d+ bytes on average, 3h0m0s of event time, gap 30m0s, grace 1m0s\) produced in `),
				regexp.MustCompile(`(?m)^round 0: \(a\) raw copy +\d+ ev/s +[\d.]+ µs CPU/event  \(20000 copies\)$`),
				regexp.MustCompile(`(?m)^round 1: \(b\) sessionize +\d+ ev/s +[\d.]+ µs CPU/event  \(\d+ snapshots, window 1s\)$`),
				regexp.MustCompile(`(?m)^round 1:     sessionize tasks, summed: Process \S+, Window \S+, \d+ commits \S+$`),
				regexp.MustCompile(`(?m)^round 1: b/a = [\d.]+$`),
				regexp.MustCompile(`(?m)^result: sessionize / raw copy = [\d.]+ \(median of 2 rounds; target >= 0.6: (NOT )?met\)$`),
			},
			[]string{"events.job.0.pprof", "events.job.1.pprof"}},
		{"rss", []string{"sessionize", "-rss", "5000", "-partitions", "4", "-cpuprofile", filepath.Join(dir, "rss.pprof"), "-timeout", "2m"},
			[]*regexp.Regexp{
				regexp.MustCompile(`(?m)^rss: 5000 events, each a session of its own \(\d+ bytes on average\), produced in `),
				regexp.MustCompile(`(?m)^rss: job process: 5000 events processed in \S+; peak Go heap \d+ MiB, runtime total \d+ MiB$`),
				regexp.MustCompile(`(?m)^rss: job process: 5000 open sessions, 5000 snapshots emitted; while emitting, peak Go heap \d+ MiB, runtime total \d+ MiB$`),
				regexp.MustCompile(`(?m)^result: job process peak RSS \d+ MiB holding 5000 open sessions \(\d+ bytes per session\)$`),
				regexp.MustCompile(`(?m)^rss: the job process ran for `),
			},
			[]string{"rss.pprof"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
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
			for _, name := range tc.profiles {
				if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Size() == 0 {
					t.Errorf("CPU profile %s: %v", name, err)
				}
			}
			t.Logf("%v:\n%s", tc.args, stdout.String())
		})
	}
}

// The benchmarks below are the two measurements of the sessionize
// command's -events run in the go test process, broker included, over b.N
// events of its generated traffic: they report events per second.
// Producing the input is not timed.
//
//	go test -run '^$' -bench Sessionize ./examples/bench

// sessionizeTestInput starts a broker and produces b.N events of the
// command's input into it, with the command's default parameters.
func sessionizeTestInput(b *testing.B) ([]string, sessionizeConfig) {
	b.Helper()
	brokers := startBroker(b)
	c, err := parseSessionize(nil, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	c.events = b.N
	ctx := context.Background()
	admin, err := newKgo(brokers)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	if err := createTopics(ctx, admin, int32(c.partitions), sessionizeInput, "bench-copy"); err != nil {
		b.Fatal(err)
	}
	if _, err := sessionizeProduce(ctx, brokers, sessionizeInput, b.N, sessionizeTraffic(c)); err != nil {
		b.Fatal(err)
	}
	return brokers, c
}

// BenchmarkSessionizeJob is measurement (b): the sessionize job.
func BenchmarkSessionizeJob(b *testing.B) {
	brokers, c := sessionizeTestInput(b)
	b.ResetTimer()
	res, err := sessionizeRunJob(context.Background(), c, brokers, "bench-sessionize", "bench-sessions", int64(b.N), quietLogger(io.Discard))
	b.StopTimer()
	reportRate(b, res.rate(), "ev/s", err)
}

// BenchmarkSessionizeRawCopy is measurement (a), the raw sarama copy, of
// the sessionize job's input.
func BenchmarkSessionizeRawCopy(b *testing.B) {
	brokers, _ := sessionizeTestInput(b)
	b.ResetTimer()
	res, err := sessionizeRawCopy(context.Background(), brokers, sessionizeInput, "bench-copy", int64(b.N))
	b.StopTimer()
	reportRate(b, res.rate(), "ev/s", err)
}
