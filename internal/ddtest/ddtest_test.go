package ddtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	src := "# c\nput a 1 ttl=5s\n----\n\nget a b\nin1\n----\na: 1\nb: <not found>\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var cases []*Case
	for _, ch := range parse(t, path) {
		if ch.c != nil {
			cases = append(cases, ch.c)
		}
	}
	if len(cases) != 2 {
		t.Fatalf("parsed %d cases", len(cases))
	}
	put, get := cases[0], cases[1]
	if put.Cmd != "put" || !put.HasArg("a") || put.Opts["ttl"] != "5s" || put.Line != 2 || put.Expected != "" {
		t.Errorf("put parsed as %+v", put)
	}
	if get.Expected != "a: 1\nb: <not found>" || len(get.Input) != 1 || get.Input[0] != "in1" {
		t.Errorf("get parsed as %+v", get)
	}
}

// fakeT records failures instead of failing the test.
type fakeT struct {
	testing.TB
	errors []string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Errorf(format string, args ...any) {
	f.errors = append(f.errors, format)
}

func TestRunComparesAndRewrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	src := "# keep me\necho x\n----\nx\n\necho y\n----\nwrong\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	echo := func(c *Case) string { return strings.Join(c.Args, " ") }
	ft := &fakeT{TB: t}
	Run(ft, path, false, echo)
	if len(ft.errors) != 1 {
		t.Fatalf("%d mismatches reported, want 1", len(ft.errors))
	}
	Run(t, path, true, echo)
	got, _ := os.ReadFile(path)
	if want := "# keep me\necho x\n----\nx\n\necho y\n----\ny\n"; string(got) != want {
		t.Fatalf("rewritten file:\n%s\nwant:\n%s", got, want)
	}
	Run(t, path, false, echo) // now passes
}
