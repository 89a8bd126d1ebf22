// Command bench measures binvault against the native tools on servers it
// starts itself. `make bench` runs every scenario; `go run ./test/bench
// NAME...` runs some. Each scenario prints its own figures; runs on these
// 2-core machines differ by 15-20 %, so compare within one run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// scenario is one benchmark. It registers what it starts with env.cleanup.
type scenario func(ctx context.Context, e *env) error

// scenarios is every benchmark by name; add new ones here.
var scenarios = map[string]scenario{
	"backup":   benchBackup,
	"distance": benchDistance,
	"replica":  benchReplica,
	"restore":  benchRestore,
	"rpo":      benchRPO,
	"semisync": benchSemiSync,
}

// env is what scenarios share: a work directory, the binvault binary, and
// cleanups run at exit whatever happens.
type env struct {
	dir      string
	binvault string
	cleanups []func()
}

func (e *env) cleanup(f func()) { e.cleanups = append(e.cleanups, f) }

func main() {
	bin := flag.String("binvault", "bin/binvault", "binvault binary to measure (built with go build when missing)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./test/bench [flags] [scenario...]\nscenarios: %s\n", strings.Join(names(), ", "))
		flag.PrintDefaults()
	}
	flag.Parse()
	run := flag.Args()
	if len(run) == 0 {
		run = names()
	}
	for _, n := range run {
		if scenarios[n] == nil {
			fmt.Fprintf(os.Stderr, "bench: no scenario %q (have %s)\n", n, strings.Join(names(), ", "))
			os.Exit(2)
		}
	}
	dir, err := os.MkdirTemp("", "binvault-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	e := &env{dir: dir}
	e.cleanup(func() { os.RemoveAll(dir) })
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := 0
	if e.binvault, err = binary(*bin, dir); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		code = 1
	}
	for _, n := range run {
		if code != 0 || ctx.Err() != nil {
			break
		}
		fmt.Printf("\n=== %s\n", n)
		if err := scenarios[n](ctx, e); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", n, err)
			code = 1
		}
	}
	stop()
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	os.Exit(code)
}

func names() []string {
	var out []string
	for n := range scenarios {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// binary returns the binvault binary, building one when the path is missing.
func binary(path, dir string) (string, error) {
	if abs, err := filepath.Abs(path); err == nil {
		if st, err := os.Stat(abs); err == nil && !st.IsDir() {
			return abs, nil
		}
	}
	out := filepath.Join(dir, "binvault")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/binvault")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build binvault: %w", err)
	}
	return out, nil
}
