package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/grete-go/grete/internal/benchkit"
	"github.com/grete-go/grete/internal/embedded"
)

// serveBroker is the -serve-broker child: it starts the embedded broker
// (in memory), prints "addr <host:port,...>" on stdout, and runs until its
// stdin closes, which happens when the parent asks it to stop or dies.
func serveBroker(stdin io.Reader, stdout io.Writer, partitions int) error {
	b, err := embedded.Start(embedded.Options{Partitions: partitions})
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := fmt.Fprintf(stdout, "addr %s\n", strings.Join(b.Addrs(), ",")); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, stdin)
	return nil
}

// child is a running child process of the benchmark.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addrs []string
}

// startBrokerChild re-executes this program's child-broker command and waits,
// bounded, for the broker's address.
func startBrokerChild(ctx context.Context, partitions int, stderr io.Writer) (*child, error) {
	c, line, err := startSelf(ctx, stderr, 30*time.Second, "child-broker", "-partitions", strconv.Itoa(partitions))
	if err != nil {
		return nil, fmt.Errorf("broker process: %w", err)
	}
	addrs, ok := strings.CutPrefix(line, "addr ")
	if !ok {
		c.stop()
		return nil, fmt.Errorf("broker process: unexpected first line %q", line)
	}
	c.addrs = strings.Split(addrs, ",")
	return c, nil
}

// startSelf re-executes this program with args and waits up to timeout for
// the first line it prints, which it returns trimmed.
func startSelf(ctx context.Context, stderr io.Writer, timeout time.Duration, args ...string) (*child, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start: %w", err)
	}
	c := &child{cmd: cmd, stdin: stdin}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case s := <-line:
		return c, strings.TrimSpace(s), nil
	case <-time.After(timeout):
		c.stop()
		return nil, "", fmt.Errorf("nothing printed after %v", timeout)
	}
}

// stop closes the child's stdin, which makes it exit, and waits for it.
// Past 30 s it kills the child.
func (c *child) stop() {
	_ = c.stdin.Close()
	t := time.AfterFunc(30*time.Second, func() { _ = c.cmd.Process.Kill() })
	defer t.Stop()
	_ = c.cmd.Wait()
}

// peakRSS is the peak resident set size of an exited child, in bytes
// (Linux reports ru_maxrss in KiB). For a child started by this process it
// includes this process's own peak (see benchkit.PeakRSS); the broker child
// is measured this way only for information.
func peakRSS(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return int64(ru.Maxrss) * 1024
	}
	return -1
}

// measureRSS is (c): the router job's peak RSS while it works through a
// backlog, measured in a process of its own, apart from the broker.
func measureRSS(ctx context.Context, c config, stdout, stderr io.Writer) error {
	b, err := startBrokerChild(ctx, c.partitions, stderr)
	if err != nil {
		return err
	}
	brokerStopped := false
	defer func() {
		if !brokerStopped {
			b.stop()
		}
	}()
	fmt.Fprintf(stdout, "rss: broker in child process %d at %s\n", b.cmd.Process.Pid, strings.Join(b.addrs, ","))

	admin, err := newKgo(b.addrs)
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := createTopics(ctx, admin, int32(c.partitions), inputTopic); err != nil {
		return err
	}
	if err := createTopics(ctx, admin, int32(c.partitions), routerOutputs(inputTopic)...); err != nil {
		return err
	}
	start := time.Now()
	size, err := produce(ctx, b.addrs, inputTopic, c.backlog, c.size)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rss: backlog of %d events, %.1f bytes on average, produced in %s\n",
		c.backlog, float64(size)/float64(c.backlog), time.Since(start).Round(time.Millisecond))

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"child-router", "-brokers", strings.Join(b.addrs, ","), "-input", inputTopic,
		"-expect", strconv.FormatInt(c.backlog, 10), "-timeout", c.timeout.String()}
	if c.cpuprofile != "" {
		args = append(args, "-cpuprofile", c.cpuprofile)
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.MultiWriter(stdout, &out), stderr
	// The child stops when its stdin closes: at the latest when this
	// process exits, however it exits.
	jobStdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	defer jobStdin.Close()
	start = time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("job process: %w", err)
	}
	// The child reports its own peak: its rusage, seen from here, would
	// start from this process's peak.
	m := regexp.MustCompile(`peak RSS \(VmHWM\) (\d+) bytes`).FindStringSubmatch(out.String())
	if m == nil {
		return errors.New("job process did not report its peak RSS")
	}
	jobRSS, _ := strconv.ParseInt(m[1], 10, 64)
	fmt.Fprintf(stdout, "rss: job process caught up with the backlog in %s\n", time.Since(start).Round(time.Millisecond))

	b.stop()
	brokerStopped = true
	verdict := "met"
	if jobRSS >= 300<<20 {
		verdict = "NOT met"
	}
	fmt.Fprintf(stdout, "result: router job peak RSS %.1f MiB on a %d-event backlog (target < 300 MB: %s)\n",
		float64(jobRSS)/(1<<20), c.backlog, verdict)
	fmt.Fprintf(stdout, "result: (broker process peak RSS %.1f MiB, not included)\n", float64(peakRSS(b.cmd.ProcessState))/(1<<20))
	return nil
}

// runJobChild is the -run-job child: it runs the router job until it has
// finished with -expect events, prints its rate, and exits. It gives up
// when stdin closes (the parent is gone).
func runJobChild(ctx context.Context, c config, stdin io.Reader, stdout io.Writer) error {
	if c.brokers == "" || c.input == "" || c.expect < 1 {
		return errors.New("-run-job needs -brokers, -input and -expect")
	}
	ctx, cancel := benchkit.UntilClosed(ctx, stdin)
	defer cancel()
	stop, err := benchkit.StartProfile(c.cpuprofile)
	if err != nil {
		return err
	}
	defer stop()
	job := routerJob("bench-router-rss", strings.Split(c.brokers, ","), c.input, quietLogger(os.Stderr))
	last := time.Now()
	progress := func(in uint64) {
		if time.Since(last) >= 10*time.Second {
			last = time.Now()
			fmt.Fprintf(stdout, "rss: job process: %d of %d events\n", in, c.expect)
		}
	}
	res, err := runJob(ctx, job, c.expect, 50*time.Millisecond, progress)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rss: job process: %d events in %s = %.0f msgs/s (%d records written)\n",
		res.messages, res.elapsed.Round(time.Millisecond), res.rate(), res.outputs)
	fmt.Fprintf(stdout, "rss: job process peak RSS (VmHWM) %d bytes\n", benchkit.PeakRSS())
	return nil
}
