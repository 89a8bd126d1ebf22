package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/test/harness"
)

// daemonProc is one `binvault run`, its output appended to binvault-run.log.
type daemonProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (d *daemonProc) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// kill is kill -9.
func (d *daemonProc) kill() {
	if d.exited() {
		return
	}
	d.cmd.Process.Kill()
	<-d.done
}

// stop is SIGTERM, then SIGKILL after the given time.
func (d *daemonProc) stop(within time.Duration) {
	if d.exited() {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(within):
		d.kill()
	}
}

func (c *chaos) daemonLog() string { return filepath.Join(c.dir, "binvault-run.log") }

// startDaemon starts `binvault run` and waits until it streams.
func (c *chaos) startDaemon(ctx context.Context) error {
	if c.daemon == nil {
		c.cleanup(func() {
			if c.daemon != nil {
				c.daemon.stop(15 * time.Second)
			}
		})
	}
	logf, err := os.OpenFile(c.daemonLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== chaos: binvault run started at %s\n", time.Now().Format(time.RFC3339Nano))
	args := []string{"run", "--config", c.cfg, "--log-format", "json"}
	if lvl := os.Getenv("CHAOS_DAEMON_LOG_LEVEL"); lvl != "" {
		args = append(args, "--log-level", lvl) // e.g. debug, to follow a failure
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	d := &daemonProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		fmt.Fprintf(logf, "=== chaos: binvault run (pid %d) ended: %v at %s\n", cmd.Process.Pid, cmd.ProcessState, time.Now().Format(time.RFC3339Nano))
		logf.Close()
		close(d.done)
	}()
	c.daemon = d
	return c.waitStreaming(ctx, time.Minute)
}

// waitStreaming waits until the daemon says its stream is connected.
func (c *chaos) waitStreaming(ctx context.Context, timeout time.Duration) error {
	return waitFor(ctx, timeout, "binvault to stream from the primary", func() (bool, error) {
		if err := c.daemonAlive(); err != nil {
			return false, err
		}
		m, err := scrape(ctx, c.web)
		return err == nil && m["binvault_source_connected"] == 1, err
	})
}

// daemonAlive fails once the daemon exited by itself.
func (c *chaos) daemonAlive() error {
	if c.daemon == nil || !c.daemon.exited() {
		return nil
	}
	return fmt.Errorf("binvault run exited (%v); its log ends:\n%s", c.daemon.cmd.ProcessState, tailFile(c.daemonLog(), 15))
}

// writeConfig writes the daemon's configuration: the source through the
// proxies (both primaries when this binvault can fail over), the DR
// replica, the store through its proxy, and the HTTP listener.
func (c *chaos) writeConfig() error {
	port, err := harness.FreePort()
	if err != nil {
		return err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	c.web = "http://" + listen
	dsn := fmt.Sprintf("mysql://%s:%s@%s", bvUser, bvPass, c.db1.proxy.Listen)
	extra := ""
	if c.failover {
		dsn += "," + c.db2.proxy.Listen
		extra = fmt.Sprintf("  failover_wait: %v\n", failoverWait)
	}
	body := fmt.Sprintf(`source:
  dsn: %s
  server_id: 9001
%sreplica:
  dsn: mysql://root:%s@%s
storage:
  url: %s
  endpoint: http://%s
  path_style: true
  region: us-east-1
spool:
  dir: %s
http:
  listen: %q
`, dsn, extra, c.replica.RootPassword, c.replica.Addr(), c.s3.URL("chaos"), c.s3proxy.Listen, filepath.Join(c.dir, "spool"), listen)
	c.cfg = filepath.Join(c.dir, "binvault.yaml")
	return os.WriteFile(c.cfg, []byte(body), 0o644)
}

// probeFailover tells whether this binvault follows a promoted primary:
// a `binvault run` given both primaries in source.dsn and
// source.failover_wait (its own server_id, spool and file store) must start
// streaming, where one without the feature exits 2 at once. It runs before
// any data exists and is stopped with SIGTERM.
func (c *chaos) probeFailover(ctx context.Context) (bool, error) {
	dir := filepath.Join(c.dir, "probe")
	if err := os.MkdirAll(filepath.Join(dir, "archive"), 0o755); err != nil {
		return false, err
	}
	cfg := filepath.Join(dir, "probe.yaml")
	body := fmt.Sprintf("source:\n  dsn: mysql://%s:%s@%s,%s\n  server_id: 9002\n  failover_wait: %v\nstorage:\n  url: file://%s\nspool:\n  dir: %s\nhttp:\n  listen: \"\"\n",
		bvUser, bvPass, c.db1.Addr(), c.db2.Addr(), failoverWait, filepath.Join(dir, "archive"), filepath.Join(dir, "spool"))
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return false, err
	}
	logPath := filepath.Join(c.dir, "logs", "probe-failover.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return false, err
	}
	defer logf.Close()
	cmd := exec.Command(c.bin, "run", "--config", cfg, "--log-format", "text")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return false, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	connected := false
	err = waitFor(ctx, 30*time.Second, "the failover probe to stream", func() (bool, error) {
		select {
		case <-done:
			return true, nil
		default:
		}
		b, _ := os.ReadFile(filepath.Join(dir, "spool", "state.json"))
		var st struct {
			Source struct {
				Connected bool `json:"connected"`
			} `json:"source"`
		}
		connected = json.Unmarshal(b, &st) == nil && st.Source.Connected
		return connected, nil
	})
	if err != nil {
		return false, fmt.Errorf("%w (output in %s)", err, logPath)
	}
	if connected {
		return true, nil
	}
	out, _ := os.ReadFile(logPath)
	if cmd.ProcessState.ExitCode() == 2 && (strings.Contains(string(out), "several hosts") || strings.Contains(string(out), "failover_wait")) {
		return false, nil
	}
	return false, fmt.Errorf("the failover probe (binvault run with both primaries) ended %v: %s", cmd.ProcessState, oneLine(string(out), 500))
}

// cliResult is one finished binvault command.
type cliResult struct {
	stdout, stderr string
	code           int
	log            string
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d: %s (output in %s)", r.code, oneLine(r.stderr+" "+r.stdout, 400), r.log)
}

var cliSeq struct {
	sync.Mutex
	n int
}

// cli runs a binvault command to completion within timeout, keeping its
// output in logs/. A command that could not run or was killed at the
// timeout is an error; an exit code is the caller's to judge.
func (c *chaos) cli(ctx context.Context, timeout time.Duration, name string, args ...string) (cliResult, error) {
	cliSeq.Lock()
	cliSeq.n++
	n := cliSeq.n
	cliSeq.Unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, append(args, "--log-format", "text")...)
	cmd.Env = append(os.Environ(), c.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := time.Now()
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errb.String(), log: filepath.Join(c.dir, "logs", fmt.Sprintf("%03d-%s.log", n, name))}
	os.WriteFile(r.log, []byte(fmt.Sprintf("$ binvault %s\n# %v, %.1fs\n--- stdout\n%s\n--- stderr\n%s", strings.Join(args, " "), err, time.Since(started).Seconds(), r.stdout, r.stderr)), 0o644)
	if ctx.Err() != nil {
		return r, fmt.Errorf("binvault %s did not finish within %v (output in %s)", args[0], timeout, r.log)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		return r, fmt.Errorf("binvault %s: %w", args[0], err)
	}
	return r, nil
}

// takeBackup runs `binvault backup` and returns the backup's id. A backup
// that a concurrent DDL of the load made refuse itself ("changed by DDL
// during the backup: run the backup again") is run again, as its message
// says, up to three times.
func (c *chaos) takeBackup(ctx context.Context) (string, time.Duration, error) {
	t0 := time.Now()
	for try := 1; ; try++ {
		c.backups++
		r, err := c.cli(ctx, 2*time.Minute, fmt.Sprintf("backup-%d", c.backups), "backup", "--config", c.cfg)
		if err != nil {
			return "", 0, err
		}
		if r.code == 0 {
			return strings.TrimSpace(r.stdout), time.Since(t0), nil
		}
		if try == 3 || !strings.Contains(r.stderr, "changed by DDL during the backup") {
			return "", 0, fmt.Errorf("binvault backup: %s", r)
		}
	}
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// scrape reads the daemon's /metrics: every sample by its name with labels.
func scrape(ctx context.Context, web string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, web+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// readyz returns /readyz's status code and body.
func readyz(ctx context.Context, web string) (int, string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, web+"/readyz", nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// rpoWatch scrapes the RPO gauges every 250 ms and keeps their maxima.
type rpoWatch struct {
	mu       sync.Mutex
	rpo, age float64
	scrapes  int
	stop     chan struct{}
	done     chan struct{}
}

func watchRPO(web string) *rpoWatch {
	w := &rpoWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			m, err := scrape(ctx, web)
			cancel()
			if err != nil {
				continue // the daemon is down (killed): nothing to read
			}
			w.mu.Lock()
			w.scrapes++
			w.rpo = max(w.rpo, m["binvault_archive_rpo_seconds"])
			w.age = max(w.age, m["binvault_archive_unarchived_commit_age_seconds"])
			w.mu.Unlock()
		}
	}()
	return w
}

// end stops the scraping and returns the maxima and the number of scrapes.
func (w *rpoWatch) end() (rpo, age float64, scrapes int) {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rpo, w.age, w.scrapes
}

// archiveEnd is the position the archive ends at (its newest segment's end).
func (c *chaos) archiveEnd(ctx context.Context) (string, string, error) {
	ix, err := archive.Load(ctx, c.store, true)
	if err != nil {
		return "", "", err
	}
	last := ix.Last()
	if last == nil {
		return "", "", nil
	}
	return last.End.GTIDSet, last.Source.Flavor, nil
}

// settle waits until the daemon has archived everything the primary
// committed, the DR replica applied it, and /readyz answers 200.
func (c *chaos) settle(ctx context.Context, timeout time.Duration) error {
	want, err := queryString(ctx, c.primary.MariaDB, "SELECT @@gtid_binlog_pos")
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	left := func() time.Duration { return max(time.Until(deadline), time.Second) }
	var end string
	if err := waitFor(ctx, left(), "the archive to reach the primary's "+want, func() (bool, error) {
		if err := c.daemonAlive(); err != nil {
			return false, err
		}
		var flavor string
		var err error
		end, flavor, err = c.archiveEnd(ctx)
		return err == nil && binlog.SamePosition(flavor, end, want), err
	}); err != nil {
		return fmt.Errorf("%w; the archive ends at %q", err, end)
	}
	var at string
	if err := waitFor(ctx, left(), "the DR replica to apply up to "+want, func() (bool, error) {
		if err := c.daemonAlive(); err != nil {
			return false, err
		}
		var err error
		at, err = queryString(ctx, c.replica.MariaDB, "SELECT @@gtid_binlog_pos")
		return err == nil && at == want, err
	}); err != nil {
		code, body := readyz(ctx, c.web)
		return fmt.Errorf("%w; the replica is at %q; /readyz %d %s", err, at, code, oneLine(body, 300))
	}
	var code int
	var body string
	if err := waitFor(ctx, left(), "/readyz to answer 200", func() (bool, error) {
		code, body = readyz(ctx, c.web)
		return code == http.StatusOK, nil
	}); err != nil {
		return fmt.Errorf("%w; last answer %d %s", err, code, oneLine(body, 300))
	}
	return nil
}

// tailFile returns the last n lines of a file.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
