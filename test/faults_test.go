package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/open"
	"github.com/binvault/binvault/test/harness"
)

// s3Config is a daemon configuration on the test's S3 server.
type s3Config struct {
	dsn      string
	serverID uint32 // 9001 when 0
	prefix   string
	listen   string   // http.listen; "" turns the HTTP listener off
	source   []string // more keys under source:, e.g. "failover_wait: 3s"
	extra    []string
}

func writeS3ConfigWith(t testing.TB, s3 *harness.S3, c s3Config) string {
	t.Helper()
	if c.serverID == 0 {
		c.serverID = 9001
	}
	dir := t.TempDir()
	var src strings.Builder
	for _, k := range c.source {
		src.WriteString("  " + k + "\n")
	}
	body := fmt.Sprintf("source:\n  dsn: %s\n  server_id: %d\n%sstorage:\n  url: %s\n  endpoint: %s\n  path_style: true\n  region: us-east-1\nspool:\n  dir: %s\nhttp:\n  listen: %q\n%s",
		c.dsn, c.serverID, src.String(), s3.URL(c.prefix), s3.Endpoint(), filepath.Join(dir, "spool"), c.listen, strings.Join(c.extra, "\n"))
	return writeFile(t, filepath.Join(dir, "binvault.yaml"), body)
}

// newServedSetup is newArchiveSetup with the daemon's HTTP listener on a
// free port; it returns the listener's base URL.
func newServedSetup(t *testing.T, flush string) (*archiveSetup, string) {
	t.Helper()
	a := newArchiveSetup(t, flush)
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	a.cfg = writeS3ConfigWith(t, a.s3, s3Config{dsn: "mysql://repl:repl-pw@" + a.primary.Addr(), prefix: "archive", listen: listen,
		extra: []string{"archive:\n  segment_max_bytes: 1MiB\n  flush_interval: " + flush}})
	a.spool = filepath.Join(filepath.Dir(a.cfg), "spool")
	return a, "http://" + listen
}

// waitConnected waits until the daemon's state file says it streams (the
// file of this daemon process, not one a killed predecessor left).
func (a *archiveSetup) waitConnected(t testing.TB, d *daemon) {
	t.Helper()
	eventually(t, 20*time.Second, "the daemon to connect", func() bool {
		if d.exited() {
			t.Fatalf("daemon exited: %s", d.log)
		}
		st := a.state(t)
		pid, _ := st["pid"].(float64)
		return int(pid) == d.cmd.Process.Pid && sourceConnected(st)
	})
}

func sourceConnected(st map[string]any) bool {
	src, _ := st["source"].(map[string]any)
	return src != nil && src["connected"] == true
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// httpGet returns the status code and body of base+path (code 0: no answer).
func httpGet(base, path string) (int, string) {
	resp, err := httpClient.Get(base + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric scrapes one unlabelled sample from the daemon's /metrics.
func metric(t testing.TB, base, name string) float64 {
	t.Helper()
	code, body := httpGet(base, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sc.Text(), err)
			}
			return v
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

func TestArchiveSurvivesStoreOutage(t *testing.T) {
	const outage = 30 * time.Second // as the issue gives it
	a, web := newServedSetup(t, "500ms")
	d := startDaemon(t, a.env, "--config", a.cfg)
	a.waitConnected(t, d)
	prepareLoadSchema(t, a.primary)
	l := startLoad(t, a.primary, 2, false)
	defer l.Stop()
	eventually(t, 15*time.Second, "segments archived before the outage", func() bool {
		return metric(t, web, "binvault_archive_segments_total") >= 2
	})
	if code, body := httpGet(web, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before the outage: %d %s", code, body)
	}

	a.s3.Kill()
	down := time.Now()
	at := func(d time.Duration) { time.Sleep(time.Until(down.Add(d))) }
	streamedAtCut := metric(t, web, "binvault_source_transactions_total")
	at(5 * time.Second)
	rpoEarly := metric(t, web, "binvault_archive_rpo_seconds")
	// The RPO passes /readyz's limit (10 s here) before the S3 client gives
	// up on a request.
	eventually(t, time.Until(down.Add(15*time.Second)), "/readyz to answer 503 on the RPO", func() bool {
		code, body := httpGet(web, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "RPO")
	})
	// The S3 client retries each request for several seconds before the
	// archiver sees an error, so the first upload error comes a while in.
	eventually(t, time.Until(down.Add(outage-3*time.Second)), "an upload error while the store is down", func() bool {
		return metric(t, web, "binvault_archive_upload_errors_total") > 0
	})
	eventually(t, 2*time.Second, "/readyz to answer 503 while the store is down", func() bool {
		code, _ := httpGet(web, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	if code, body := httpGet(web, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz during the outage: %d %s", code, body)
	}
	at(outage - time.Second)
	rpoLate := metric(t, web, "binvault_archive_rpo_seconds")
	// The oldest unarchived transaction was committed about when the store
	// went away, so the RPO follows the outage's age (binlog timestamps
	// have 1 s resolution, segments close every 500ms).
	if rpoLate-rpoEarly < 20 || rpoLate < outage.Seconds()-5 {
		t.Fatalf("RPO does not grow with the outage: %.1fs 5s into it, %.1fs 29s into it", rpoEarly, rpoLate)
	}
	if n := metric(t, web, "binvault_source_transactions_total"); n <= streamedAtCut {
		t.Fatalf("the stream stalled with the store: %v transactions spooled at the cut, %v now", streamedAtCut, n)
	}
	if code, body := httpGet(web, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz late in the outage: %d %s", code, body)
	}
	at(outage)

	if err := a.s3.Start(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	eventually(t, 30*time.Second, "the RPO to fall back under 3s and /readyz to answer 200", func() bool {
		code, _ := httpGet(web, "/readyz")
		return code == http.StatusOK && metric(t, web, "binvault_archive_rpo_seconds") < 3
	})
	recovered := time.Since(up)
	// And it stays there while the load goes on.
	for range 4 {
		time.Sleep(500 * time.Millisecond)
		if rpo := metric(t, web, "binvault_archive_rpo_seconds"); rpo >= 3 {
			t.Fatalf("RPO %.1fs after recovering", rpo)
		}
	}
	l.Stop()
	a.waitArchived(t, 30*time.Second)
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d; log:\n%s", code, d.log)
	}
	sameHistory(t, a.primary.BinlogGTIDs(t), archiveGTIDs(t, a.store), 0)
	r := binvault(t, a.env, "verify", "--config", a.cfg)
	if r.code != 0 {
		t.Fatalf("verify: %s", r)
	}
	t.Logf("store down %v: RPO reached %.0fs, back under 3s %v after the store came back; %d transactions; %s",
		outage, rpoLate, recovered.Round(100*time.Millisecond), l.commits.Load(), strings.TrimSpace(r.stdout))
}

func TestArchiveContinuesAcrossPrimaryRestart(t *testing.T) {
	a, web := newServedSetup(t, "500ms")
	d := startDaemon(t, a.env, "--config", a.cfg)
	a.waitConnected(t, d)
	prepareLoadSchema(t, a.primary)
	l := startLoad(t, a.primary, 2, true)
	defer l.Stop()
	for i := 1; i <= 2; i++ {
		before := l.commits.Load()
		eventually(t, 10*time.Second, "the load to commit", func() bool { return l.commits.Load() >= before+50 })
		if err := a.primary.Restart(); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		eventually(t, 30*time.Second, fmt.Sprintf("the daemon to reconnect after restart %d", i), func() bool {
			if d.exited() {
				t.Fatalf("daemon exited: %s", d.log)
			}
			return metric(t, web, "binvault_source_reconnects_total") >= float64(i) &&
				metric(t, web, "binvault_source_connected") == 1
		})
		connected := time.Now()
		eventually(t, 5*time.Second, "state.json to say connected", func() bool {
			st := a.state(t)
			updated, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(st["updated_at"]))
			return updated.After(connected) && sourceConnected(st)
		})
		t.Logf("restart %d: reconnected %v after the primary was back", i, time.Since(restarted).Round(100*time.Millisecond))
	}
	// The stream carries what the primary commits after the last restart.
	before := l.commits.Load()
	eventually(t, 10*time.Second, "the load to commit after the restarts", func() bool { return l.commits.Load() >= before+50 })
	l.Stop()
	a.waitArchived(t, 30*time.Second)
	// Availability: two failures and two recoveries of the stream.
	if f := metric(t, web, `binvault_availability_failures_total{part="stream"}`); f != 2 {
		t.Errorf("stream failures %v, want 2 (one per primary restart)", f)
	}
	if up := metric(t, web, `binvault_availability_up{part="stream"}`); up != 1 {
		t.Errorf("stream up = %v after the reconnect", up)
	}
	if obs := metric(t, web, `binvault_availability_observed_ratio{part="stream"}`); obs <= 0 || obs >= 1 {
		t.Errorf("stream observed availability %v, want strictly between 0 and 1", obs)
	}
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d; log:\n%s", code, d.log)
	}
	// Kept across a restart of the daemon.
	d = startDaemon(t, a.env, "--config", a.cfg)
	a.waitConnected(t, d)
	res := binvault(t, a.env, "status", "--config", a.cfg)
	if !strings.Contains(res.stdout, "stream   up   observed") || !strings.Contains(res.stdout, "2 failure(s)") {
		t.Errorf("status does not show the stream's availability across the restart:\n%s", res.stdout)
	}
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d; log:\n%s", code, d.log)
	}
	if logs := binaryLogs(t, a.primary); len(logs) < 3 {
		t.Fatalf("the primary's binlog should span a file per start, has %v", logs)
	}
	want := a.primary.BinlogGTIDs(t)
	sameHistory(t, want, archiveGTIDs(t, a.store), 0)
	r := binvault(t, a.env, "verify", "--config", a.cfg)
	if r.code != 0 {
		t.Fatalf("verify: %s", r)
	}
	t.Logf("%d transactions across 2 primary restarts (%d load errors while it was down); %s", len(want), l.errs.Load(), strings.TrimSpace(r.stdout))
}

// messageLine returns the one line of stderr that is not a structured log
// record (the daemon logs JSON to stderr when it is not a terminal).
func messageLine(t testing.TB, r result, logsAllowed bool) string {
	t.Helper()
	var msg []string
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	for _, line := range lines {
		if strings.HasPrefix(line, "{") && json.Valid([]byte(line)) {
			continue
		}
		msg = append(msg, line)
	}
	if len(msg) != 1 {
		t.Errorf("want one message line on stderr, got %d: %s", len(msg), r)
		return strings.Join(msg, "\n")
	}
	if !logsAllowed && len(lines) != 1 {
		t.Errorf("want stderr to be the message alone: %s", r)
	}
	return msg[0]
}

// storeKeys lists the keys under a prefix of the S3 server.
func storeKeys(t testing.TB, s3 *harness.S3, prefix string) []string {
	t.Helper()
	st, err := open.Open(context.Background(), open.Options{URL: s3.URL(prefix), Endpoint: s3.Endpoint(), Region: "us-east-1", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := st.List(context.Background(), "", func(oi storage.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestRunRefusesBadSourcesWithExit2(t *testing.T) {
	s3 := harness.StartS3(t)
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	p.Exec(t, `SET sql_log_bin=0;
		CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'repl-pw';
		GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO repl@'127.0.0.1';
		CREATE USER clientonly@'127.0.0.1' IDENTIFIED BY 'pw';
		GRANT REPLICATION CLIENT ON *.* TO clientonly@'127.0.0.1';
		CREATE USER slaveonly@'127.0.0.1' IDENTIFIED BY 'pw';
		GRANT REPLICATION SLAVE ON *.* TO slaveonly@'127.0.0.1';
		CREATE USER admin@'127.0.0.1' IDENTIFIED BY 'pw';
		GRANT REPLICATION SLAVE, REPLICATION CLIENT, REPLICATION MASTER ADMIN ON *.* TO admin@'127.0.0.1'`)
	repl := "mysql://repl:repl-pw@" + p.Addr()

	// Servers for the cases that need one of their own.
	statement := harness.StartMariaDB(t, "statement", harness.MariaDBOptions{Extra: []string{"--binlog-format=STATEMENT"}})
	minimal := harness.StartMariaDB(t, "minimal", harness.MariaDBOptions{Extra: []string{"--binlog-row-image=MINIMAL"}})
	closed, _ := harness.FreePort()
	// A real MariaDB replica of the primary, registered with the server_id
	// binvault is configured with; it runs until the purge case.
	replica := harness.StartMariaDB(t, "replica", harness.MariaDBOptions{ServerID: 9001})
	replica.Exec(t, fmt.Sprintf(`CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='repl', MASTER_PASSWORD='repl-pw', MASTER_USE_GTID=slave_pos; START SLAVE`, p.Port))
	replicaRegistered := func(t *testing.T) {
		eventually(t, 15*time.Second, "the replica to register with the primary", func() bool {
			return p.QueryString(t, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'") == "1"
		})
	}
	// The server_id check reads SHOW SLAVE HOSTS, which on MariaDB 10.11
	// needs REPLICATION MASTER ADMIN, hence the admin user in the first
	// replica case. Without that privilege (the second replica case)
	// binvault cannot see the replica, skips the check and starts
	// streaming: the primary drops the older dump connection of that
	// server_id (the replica's), the replica reconnects at once and the
	// primary drops binvault's with error 4052 ("A slave with the same
	// server_uuid/server_id ..."). binvault then exits 2, having cut the
	// replica's stream once; before the fix in replicator/source.go it took
	// 4052 for a network error and retried with backoff, so the two kept
	// dropping each other and binvault archived nothing.

	// The purge case: stream, stop cleanly, then let the primary move on and
	// purge what the spool would resume from.
	purgedCfg := writeS3ConfigWith(t, s3, s3Config{dsn: repl, serverID: 9002, prefix: "purged", extra: []string{"archive:\n  flush_interval: 200ms"}})
	var purgedKeys []string
	purge := func(t *testing.T) {
		replica.Stop()
		d := startDaemon(t, nil, "--config", purgedCfg)
		spool := filepath.Join(filepath.Dir(purgedCfg), "spool")
		eventually(t, 20*time.Second, "the daemon to connect", func() bool {
			if d.exited() {
				t.Fatalf("daemon exited: %s", d.log)
			}
			b, _ := os.ReadFile(filepath.Join(spool, "state.json"))
			var st map[string]any
			json.Unmarshal(b, &st)
			return sourceConnected(st)
		})
		p.Exec(t, "CREATE DATABASE IF NOT EXISTS pg; CREATE TABLE IF NOT EXISTS pg.t (id INT PRIMARY KEY); INSERT INTO pg.t VALUES (1)")
		want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
		eventually(t, 20*time.Second, "the first run to archive "+want, func() bool {
			b, _ := os.ReadFile(filepath.Join(spool, "state.json"))
			return strings.Contains(string(b), `"gtid_set": "`+want+`"`) && len(storeKeys(t, s3, "purged")) > 0
		})
		if code := d.stop(t, 10*time.Second); code != 0 {
			t.Fatalf("SIGTERM: exit %d; log:\n%s", code, d.log)
		}
		p.Exec(t, "INSERT INTO pg.t VALUES (2); INSERT INTO pg.t VALUES (3); FLUSH BINARY LOGS")
		logs := binaryLogs(t, p)
		file := logs[len(logs)-1]
		// MariaDB keeps a binlog until InnoDB's checkpoint no longer needs
		// it for crash recovery: the PURGE may need a moment to take.
		eventually(t, 20*time.Second, "the primary to purge its binlogs before "+file, func() bool {
			p.Exec(t, "PURGE BINARY LOGS TO '"+file+"'")
			return len(binaryLogs(t, p)) == 1
		})
		purgedKeys = storeKeys(t, s3, "purged")
	}

	cases := []struct {
		name     string
		dsn      string
		serverID uint32
		args     []string
		want     []string // substrings of the message: the problem and the fix
		// logs: the refusal comes from the primary once streaming has
		// begun, so the daemon's log records precede the message.
		logs  bool
		setup func(t *testing.T)
		// cfg replaces the case's own configuration (and store prefix).
		cfg, prefix string
	}{
		{name: "statement format", dsn: statement.DSN("", ""), want: []string{"binlog_format is STATEMENT", "set binlog_format=ROW"}},
		{name: "minimal row image", dsn: minimal.DSN("", ""), want: []string{"binlog_row_image is MINIMAL", "set binlog_row_image=FULL"}},
		{name: "no replication slave", dsn: "mysql://clientonly:pw@" + p.Addr(), want: []string{`"clientonly" lacks REPLICATION SLAVE`, "GRANT REPLICATION SLAVE"}},
		{name: "no replication client", dsn: "mysql://slaveonly:pw@" + p.Addr(), want: []string{`"slaveonly" lacks REPLICATION CLIENT`, "GRANT REPLICATION CLIENT"}},
		{name: "wrong password", dsn: "mysql://repl:not-the-pw@" + p.Addr(), want: []string{`access denied for user "repl"`, "check the user and password in source.dsn"}},
		{name: "unreachable", dsn: fmt.Sprintf("mysql://repl:x@127.0.0.1:%d", closed), want: []string{"connection refused", "is the server running and listening on port"}},
		{name: "primary's server_id", dsn: repl, serverID: uint32(p.ServerID), want: []string{fmt.Sprintf("source.server_id %d is the primary's own server_id", p.ServerID), "choose an id no server or replica uses"}},
		{name: "server_id of a replica", dsn: "mysql://admin:pw@" + p.Addr(), setup: replicaRegistered,
			want: []string{"source.server_id 9001 is already used by a replica of the primary", "choose another source.server_id"}},
		{name: "server_id of a replica, no SHOW SLAVE HOSTS", dsn: repl, setup: replicaRegistered, logs: true,
			want: []string{"source.server_id 9001 is used by another replica", "choose another source.server_id"}},
		{name: "binlog purged", setup: purge, cfg: purgedCfg, prefix: "purged", logs: true, want: []string{"binlog purged past", "take a new backup"}},
		{name: "garbage start position", dsn: repl, args: []string{"--start-from", "gtid:garbage"}, want: []string{"--start-from", "gtid:garbage", "gtid:0-1-1000"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != nil {
				c.setup(t)
			}
			cfg, prefix := c.cfg, c.prefix
			if cfg == "" {
				prefix = "bad/" + regexp.MustCompile(`[^a-z0-9_]+`).ReplaceAllString(c.name, "-")
				cfg = writeS3ConfigWith(t, s3, s3Config{dsn: c.dsn, serverID: c.serverID, prefix: prefix})
			}
			start := time.Now()
			r := binvaultWithin(t, 15*time.Second, nil, append([]string{"run", "--config", cfg}, c.args...)...)
			took := time.Since(start)
			if r.code != 2 {
				t.Fatalf("want exit 2 within 15s: %s", r)
			}
			msg := messageLine(t, r, c.logs)
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q: %s", w, msg)
				}
			}
			for _, secret := range []string{"repl-pw", "not-the-pw", ":pw@"} {
				if strings.Contains(r.stderr+r.stdout, secret) {
					t.Errorf("output shows a password: %s", r)
				}
			}
			keys := storeKeys(t, s3, prefix)
			if c.cfg != "" {
				if !slices.Equal(keys, purgedKeys) {
					t.Errorf("the refused run changed the store: before %v, after %v", purgedKeys, keys)
				}
			} else if len(keys) > 0 {
				t.Errorf("the refused run left objects in the store: %v", keys)
			}
			t.Logf("exit 2 after %v: %s", took.Round(10*time.Millisecond), msg)
		})
	}
}

// binaryLogs lists the primary's binlog files (SHOW BINARY LOGS).
func binaryLogs(t testing.TB, p *harness.MariaDB) []string {
	t.Helper()
	rows, err := p.DB(t).Query("SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var names []string
	for rows.Next() {
		var name string
		vals := []any{&name}
		for range cols[1:] {
			vals = append(vals, new(any))
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

var gtidLine = regexp.MustCompile(`\tGTID (\d+-\d+-\d+)`)

func TestSegmentsAreReadableByMariadbBinlog(t *testing.T) {
	mbinlog, err := exec.LookPath("mariadb-binlog")
	if err != nil {
		t.Skip("mariadb-binlog not found: install mariadb-client (scripts/setup.sh does)")
	}
	a := newArchiveSetup(t, "300ms")
	d := startDaemon(t, a.env, "--config", a.cfg)
	a.waitConnected(t, d)
	prepareLoadSchema(t, a.primary)
	l := startLoad(t, a.primary, 2, true)
	time.Sleep(2 * time.Second)
	// At least one row larger than the segment size.
	a.primary.Exec(t, "INSERT INTO app.events (account, kind, payload) VALUES (1, 'blob', REPEAT('x', 1536*1024))")
	l.Stop()
	a.waitArchived(t, 30*time.Second)
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d; log:\n%s", code, d.log)
	}
	primary := a.primary.BinlogGTIDs(t)
	index := map[string]int{}
	for i, g := range primary {
		index[g] = i
	}

	zstdCLI, err := exec.LookPath("zstd")
	if err != nil {
		t.Log("zstd CLI not found: decompressing with klauspost/compress only, skipping the `zstd -d` check")
	}
	// The objects as versitygw keeps them on disk: exactly the bytes a
	// client downloads.
	dir := filepath.Join(a.s3.Dir, a.s3.Bucket, "archive", "segments")
	objects, _ := filepath.Glob(filepath.Join(dir, "*.binlog.zst"))
	if len(objects) < 2 {
		t.Fatalf("want several segment objects in %s, found %v", dir, objects)
	}
	tmp := t.TempDir()
	covered, big := 0, false
	for _, obj := range objects {
		name := filepath.Base(obj)
		raw, err := os.ReadFile(obj)
		if err != nil {
			t.Fatal(err)
		}
		// The trailer: a zstd skippable frame holding the content's SHA-256.
		n := len(raw) - storage.TrailerSize
		tr := raw[n:]
		if binary.LittleEndian.Uint32(tr[0:4]) != 0x184D2A5B || binary.LittleEndian.Uint32(tr[4:8]) != 40 || string(tr[8:16]) != "BVSHA256" {
			t.Fatalf("%s: trailer is not a binvault skippable frame: %x", name, tr[:16])
		}
		sum := sha256.Sum256(raw[:n])
		if hex.EncodeToString(tr[16:]) != hex.EncodeToString(sum[:]) {
			t.Fatalf("%s: trailer digest %x, content digest %x", name, tr[16:], sum)
		}
		// The manifest at the head, read as docs/archive-format.md §3.2
		// says: a skippable frame 0x184D2A5A, "BVSEGMAN", the JSON's
		// SHA-256, the JSON.
		if binary.LittleEndian.Uint32(raw[0:4]) != 0x184D2A5A || string(raw[8:16]) != "BVSEGMAN" {
			t.Fatalf("%s: does not start with a segment header: %x", name, raw[:16])
		}
		frame := 8 + int(binary.LittleEndian.Uint32(raw[4:8]))
		js := raw[48:frame]
		if h := sha256.Sum256(js); !bytes.Equal(h[:], raw[16:48]) {
			t.Fatalf("%s: header JSON does not match its SHA-256", name)
		}
		var m archive.Segment
		if err := json.Unmarshal(js, &m); err != nil {
			t.Fatalf("manifest of %s: %v", name, err)
		}
		if m.Format != 2 || fmt.Sprintf("%016d.binlog.zst", m.Seq) != name {
			t.Fatalf("%s: header names format %d, segment %d", name, m.Format, m.Seq)
		}
		if _, err := os.Stat(strings.TrimSuffix(obj, ".binlog.zst") + ".json"); !os.IsNotExist(err) {
			t.Fatalf("%s: a separate manifest object exists (%v): one object per segment", name, err)
		}

		// A stock zstd decoder reads the object as stored, trailer included.
		dec, _ := zstd.NewReader(nil, zstd.WithDecoderMaxWindow(64<<20))
		plain, err := dec.DecodeAll(raw, nil)
		dec.Close()
		if err != nil {
			t.Fatalf("%s: klauspost zstd: %v", name, err)
		}
		if zstdCLI != "" {
			var out, errb bytes.Buffer
			cmd := exec.Command(zstdCLI, "-d", "-c", "-q", obj)
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Run(); err != nil {
				t.Fatalf("zstd -d %s: %v: %s", name, err, errb.String())
			}
			if !bytes.Equal(out.Bytes(), plain) {
				t.Fatalf("zstd -d %s gives %d bytes, klauspost %d", name, out.Len(), len(plain))
			}
		}
		psum := sha256.Sum256(plain)
		if int64(len(plain)) != m.Bytes || hex.EncodeToString(psum[:]) != m.SHA256 {
			t.Fatalf("%s: decompressed %d bytes %x; manifest %d bytes %s", name, len(plain), psum, m.Bytes, m.SHA256)
		}
		big = big || m.Bytes > 1<<20

		// mariadb-binlog reads the file and finds the manifest's transactions,
		// which are exactly the primary's between first and last.
		file := filepath.Join(tmp, strings.TrimSuffix(name, ".zst"))
		if err := os.WriteFile(file, plain, 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		cmd := exec.Command(mbinlog, file)
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("mariadb-binlog %s: %v\n%s", name, err, errb.String())
		}
		if s := errb.String(); strings.Contains(strings.ToLower(s), "error") || strings.Contains(strings.ToLower(s), "warning") {
			t.Fatalf("mariadb-binlog %s complains: %s", name, s)
		}
		var got []string
		for _, mm := range gtidLine.FindAllStringSubmatch(out.String(), -1) {
			got = append(got, mm[1])
		}
		first, ok1 := index[m.FirstGTID]
		last, ok2 := index[m.LastGTID]
		if !ok1 || !ok2 {
			t.Fatalf("%s: manifest's GTIDs %s..%s are not the primary's", name, m.FirstGTID, m.LastGTID)
		}
		if want := primary[first : last+1]; !slices.Equal(got, want) || len(got) != m.Txns {
			t.Fatalf("%s: mariadb-binlog shows %d GTIDs %v, want the primary's %d from %s to %s (manifest: %d)", name, len(got), head(got), len(want), m.FirstGTID, m.LastGTID, m.Txns)
		}
		covered += len(got)
	}
	if !big {
		t.Errorf("no segment holds the row larger than 1 MiB")
	}
	if covered != len(primary) {
		t.Errorf("segments hold %d transactions, the primary committed %d", covered, len(primary))
	}
	t.Logf("%d segments, %d transactions: each decompressed (zstd CLI: %v) and read by mariadb-binlog", len(objects), covered, zstdCLI != "")
}

// statusDoc is the part of `status --json` this test reads.
type statusDoc struct {
	OK     bool `json:"ok"`
	Source struct {
		GTIDPosition string `json:"gtid_position"`
	} `json:"source"`
	Daemon struct {
		Running    bool     `json:"running"`
		AgeSeconds float64  `json:"age_seconds"`
		Notes      []string `json:"notes"`
		State      *struct {
			PID    int `json:"pid"`
			Source struct {
				Connected bool `json:"connected"`
				Position  struct {
					GTIDSet string `json:"gtid_set"`
				} `json:"position"`
			} `json:"source"`
		} `json:"state"`
	} `json:"daemon"`
	Archive *struct {
		Empty         bool   `json:"empty"`
		NewestSegment uint64 `json:"newest_segment"`
		End           *struct {
			GTIDSet string `json:"gtid_set"`
		} `json:"end"`
		NewestTxnTime *time.Time `json:"newest_transaction_time"`
	} `json:"archive"`
}

func (a *archiveSetup) status(t testing.TB) (statusDoc, result) {
	t.Helper()
	r := binvault(t, a.env, "status", "--config", a.cfg, "--json")
	var doc statusDoc
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("status --json: %v: %s", err, r)
	}
	return doc, r
}

func TestStatusReportsTheDaemon(t *testing.T) {
	a := newArchiveSetup(t, "300ms")
	doc, r := a.status(t)
	if r.code != 0 || doc.Daemon.Running || doc.Daemon.State != nil || doc.Archive == nil || !doc.Archive.Empty {
		t.Fatalf("before the first run: want no daemon and an empty archive: %s", r)
	}
	d := startDaemon(t, a.env, "--config", a.cfg)
	a.waitConnected(t, d)
	prepareLoadSchema(t, a.primary)
	a.primary.Exec(t, "INSERT INTO app.accounts VALUES (1, 10, 'a'), (2, 20, 'b'); UPDATE app.accounts SET balance = 0")
	want := a.primary.QueryString(t, "SELECT @@gtid_binlog_pos")
	eventually(t, 20*time.Second, "status to report the daemon and the archive at "+want, func() bool {
		doc, r = a.status(t)
		return r.code == 0 && doc.Daemon.State != nil && doc.Daemon.State.Source.Position.GTIDSet == want &&
			doc.Archive != nil && doc.Archive.End != nil && doc.Archive.End.GTIDSet == want
	})
	if !doc.OK || !doc.Daemon.Running || doc.Daemon.AgeSeconds > 3 || doc.Daemon.State.PID != d.cmd.Process.Pid || !doc.Daemon.State.Source.Connected ||
		doc.Source.GTIDPosition != want || doc.Archive.NewestSegment == 0 || doc.Archive.NewestTxnTime == nil || time.Since(*doc.Archive.NewestTxnTime) > time.Minute {
		t.Fatalf("status --json: %s", r)
	}
	r = binvault(t, a.env, "status", "--config", a.cfg)
	if r.code != 0 || !regexp.MustCompile(`(?m)^daemon +running \(pid \d+`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^archive +newest segment \d+ +ends at gtid "`+regexp.QuoteMeta(want)+`"`).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, `spooled to gtid "`+want+`"`) {
		t.Fatalf("status: %s", r)
	}
	t.Logf("status while running:\n%s", r.stdout)

	// kill -9 leaves a state file that says "running": status must see
	// through it once the daemon stops updating it.
	d.kill()
	eventually(t, 10*time.Second, "status to notice the daemon is gone", func() bool {
		doc, r = a.status(t)
		return !doc.Daemon.Running
	})
	if r.code != 0 || doc.Daemon.State == nil || len(doc.Daemon.Notes) == 0 || !strings.Contains(doc.Daemon.Notes[0], "not running") {
		t.Fatalf("after kill -9: %s", r)
	}
	// A clean stop says so at once.
	d = startDaemon(t, a.env, "--config", a.cfg)
	a.waitConnected(t, d)
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d; log:\n%s", code, d.log)
	}
	doc, r = a.status(t)
	if r.code != 0 || doc.Daemon.Running || doc.Daemon.State == nil || len(doc.Daemon.Notes) != 0 || doc.Archive.End.GTIDSet != want {
		t.Fatalf("after SIGTERM: %s", r)
	}
	r = binvault(t, a.env, "status", "--config", a.cfg)
	if !regexp.MustCompile(`(?m)^daemon +stopped \(pid`).MatchString(r.stdout) {
		t.Fatalf("status after SIGTERM: %s", r)
	}
}
