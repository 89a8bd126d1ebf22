// Package test holds binvault's end-to-end tests: the real binary against
// real MariaDB servers and a real S3 server (versitygw), started by the
// harness in test/harness.
package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var binvaultBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "binvault-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binvaultBin = filepath.Join(dir, "binvault")
	if prebuilt := os.Getenv("BINVAULT_TEST_BINARY"); prebuilt != "" {
		binvaultBin = prebuilt // a binary built elsewhere, e.g. from another checkout
	} else {
		build := exec.Command("go", "build", "-o", binvaultBin, "../cmd/binvault")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build binvault:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one finished binvault command.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// binvault runs the binary to completion (at most 2 minutes).
func binvault(t testing.TB, env []string, args ...string) result {
	t.Helper()
	return binvaultWithin(t, 2*time.Minute, env, args...)
}

// binvaultWithin runs the binary, killing it after timeout (exit code -1).
func binvaultWithin(t testing.TB, timeout time.Duration, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binvaultBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("binvault %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// daemon is a `binvault run` in the background.
type daemon struct {
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
	err  error
}

func startDaemon(t testing.TB, env []string, args ...string) *daemon {
	t.Helper()
	return startCommand(t, env, "run", args...)
}

// startCommand starts a long-running binvault command (run, serve).
func startCommand(t testing.TB, env []string, command string, args ...string) *daemon {
	t.Helper()
	if lvl := os.Getenv("BINVAULT_TEST_DAEMON_LOG_LEVEL"); lvl != "" {
		args = append(args, "--log-level", lvl) // e.g. debug, with BINVAULT_TEST_DAEMON_LOG
	}
	cmd := exec.Command(binvaultBin, append([]string{command}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	d := &daemon{cmd: cmd, log: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.log, d.log
	if p := os.Getenv("BINVAULT_TEST_DAEMON_LOG"); p != "" {
		// Every daemon of the run, appended, for debugging a failure.
		if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintf(f, "=== daemon started %s\n", time.Now().Format(time.RFC3339Nano))
			w := io.MultiWriter(d.log, f)
			cmd.Stdout, cmd.Stderr = w, w
			t.Cleanup(func() { f.Close() })
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.kill() })
	return d
}

// kill stops the daemon with SIGKILL, as a crash would.
func (d *daemon) kill() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Kill()
	<-d.done
}

// stop sends SIGTERM and returns the exit code.
func (d *daemon) stop(t testing.TB, within time.Duration) int {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(within):
		d.kill()
		t.Fatalf("daemon did not stop within %v after SIGTERM; log:\n%s", within, d.log)
	}
	return d.cmd.ProcessState.ExitCode()
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func writeFile(t testing.TB, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
