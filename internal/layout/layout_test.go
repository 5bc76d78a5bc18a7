package layout

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath string
	Imports    []string
}

// packages lists the module's packages (tests not included) with go list.
func packages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", "github.com/grete-go/grete/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("go list: %v", err)
	}
	var ps []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	return ps
}

const mod = "github.com/grete-go/grete/"

// Only internal/kafka talks to sarama: the rest of Grete sees Kafka
// through it.
func TestSaramaStaysInInternalKafka(t *testing.T) {
	for _, p := range packages(t) {
		if slices.Contains(p.Imports, "github.com/IBM/sarama") && p.ImportPath != mod+"internal/kafka" {
			t.Errorf("%s imports sarama", p.ImportPath)
		}
	}
}

// The examples are what a user writes: they import Grete's public
// packages and the embedded broker, never its internals. The benchmark
// program is not an example.
func TestExamplesUseThePublicAPI(t *testing.T) {
	for _, p := range packages(t) {
		if !strings.HasPrefix(p.ImportPath, mod+"examples/") || strings.HasPrefix(p.ImportPath, mod+"examples/bench") {
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, mod+"internal/") && imp != mod+"internal/embedded" {
				t.Errorf("%s imports %s", p.ImportPath, imp)
			}
		}
	}
}

// Package task is the API; the runtime behind it never imports it, so
// the two cannot grow back together.
func TestRuntimeDoesNotImportTheAPI(t *testing.T) {
	runtime := []string{mod + "internal/runtime", mod + "internal/state", mod + "internal/group", mod + "internal/kafka"}
	for _, p := range packages(t) {
		if slices.Contains(runtime, p.ImportPath) && slices.Contains(p.Imports, mod+"task") {
			t.Errorf("%s imports package task", p.ImportPath)
		}
	}
}
