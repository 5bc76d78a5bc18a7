// Package ddtest runs data-driven tests in the manner of Pebble's testdata
// files: a file is a list of commands, each with optional input lines, a
// "----" line, and the expected output up to the next blank line:
//
//	# comment
//	put a 1 ttl=10s
//	----
//	ok
//
// A command line is a name, positional arguments and key=value options.
// Comments and blank lines are kept as they are when a file is rewritten.
package ddtest

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// Case is one command of a data file.
type Case struct {
	Line     int // of the command, 1-based
	Cmd      string
	Args     []string          // positional arguments
	Opts     map[string]string // key=value arguments
	Input    []string
	Expected string
	fields   []string // the command line's words, to rewrite it as it was
}

// HasArg reports whether a is one of the positional arguments.
func (c *Case) HasArg(a string) bool { return slices.Contains(c.Args, a) }

// chunk is a case, or raw text (comments, blank lines) kept as it is.
type chunk struct {
	raw string
	c   *Case
}

func parse(t testing.TB, path string) []chunk {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []chunk
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	for i := 0; i < len(lines); {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			chunks = append(chunks, chunk{raw: l})
			i++
			continue
		}
		c := &Case{Line: i + 1, Opts: map[string]string{}}
		c.fields = strings.Fields(l)
		c.Cmd = c.fields[0]
		for _, f := range c.fields[1:] {
			if k, v, ok := strings.Cut(f, "="); ok {
				c.Opts[k] = v
			} else {
				c.Args = append(c.Args, f)
			}
		}
		i++
		for ; i < len(lines) && lines[i] != "----"; i++ {
			c.Input = append(c.Input, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: command %q has no ---- line", path, c.Line, c.Cmd)
		}
		i++
		var exp []string
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			exp = append(exp, lines[i])
		}
		c.Expected = strings.Join(exp, "\n")
		chunks = append(chunks, chunk{c: c})
	}
	return chunks
}

// Run runs every case of the file at path through run and compares what it
// returns with the expected output; with rewrite, it writes the outputs into
// the file instead (review the diff before committing it).
func Run(t testing.TB, path string, rewrite bool, run func(*Case) string) {
	t.Helper()
	var out strings.Builder
	for _, ch := range parse(t, path) {
		if ch.c == nil {
			out.WriteString(ch.raw + "\n")
			continue
		}
		c := ch.c
		got := strings.TrimRight(run(c), "\n")
		if strings.Contains(got, "\n\n") {
			t.Fatalf("%s:%d: %s: output has a blank line, which the file format cannot hold:\n%s", path, c.Line, c.Cmd, got)
		}
		if !rewrite && got != c.Expected {
			t.Errorf("%s:%d: %s\nexpected:\n%s\ngot:\n%s", path, c.Line, c.Cmd, c.Expected, got)
		}
		out.WriteString(strings.Join(c.fields, " ") + "\n")
		for _, in := range c.Input {
			out.WriteString(in + "\n")
		}
		out.WriteString("----\n")
		if got != "" {
			out.WriteString(got + "\n")
		}
	}
	if rewrite {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
