package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/binvault/binvault/storage/open"
	"github.com/binvault/binvault/test/harness"
)

// semiSyncPrimary starts a primary that waits for a semi-sync
// acknowledgement after syncing its binlog (AFTER_SYNC) for up to
// timeout, with a user binvault streams and backs up as.
func semiSyncPrimary(t *testing.T, name string, enabled bool, waitPoint string, timeout time.Duration) *harness.MariaDB {
	t.Helper()
	on := "OFF"
	if enabled {
		on = "ON"
	}
	p := harness.StartMariaDB(t, name, harness.MariaDBOptions{Extra: []string{
		"--rpl-semi-sync-master-enabled=" + on,
		"--rpl-semi-sync-master-wait-point=" + waitPoint,
		fmt.Sprintf("--rpl-semi-sync-master-timeout=%d", timeout.Milliseconds()),
	}})
	p.Exec(t, "SET sql_log_bin=0; CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'repl-pw'; GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT, SHOW VIEW, TRIGGER, EVENT, RELOAD ON *.* TO repl@'127.0.0.1'")
	return p
}

// semiSyncStatus reads the primary's Rpl_semi_sync_master_* counters.
func semiSyncStatus(t testing.TB, p *harness.MariaDB) map[string]string {
	t.Helper()
	db, err := p.Open("") // closed here: tests poll this many times a second
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(k, "Rpl_semi_sync_master_")] = v
	}
	return out
}

func statusInt(st map[string]string, k string) int64 {
	n, _ := strconv.ParseInt(st[k], 10, 64)
	return n
}

// ackedLoad inserts rows on the primary from several connections, one
// row per transaction, and records each row whose COMMIT returned OK:
// what the primary promised its clients.
type ackedLoad struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	acked  []int64
	failed atomic.Int64
	slow   atomic.Int64 // commits that took over a second
}

func startAckedLoad(t testing.TB, p *harness.MariaDB, workers int) *ackedLoad {
	t.Helper()
	l := &ackedLoad{stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		db, err := p.Open("")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { db.Close() })
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := int64(1); ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				id := int64(w+1)*1_000_000_000 + n
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				t0 := time.Now()
				_, err := db.ExecContext(ctx, "INSERT INTO zl.t (id, w, pad) VALUES (?, ?, REPEAT('x', 80))", id, w)
				cancel()
				if err != nil {
					l.failed.Add(1)
					return // the primary is gone: this row was never acknowledged
				}
				if time.Since(t0) > time.Second {
					l.slow.Add(1)
				}
				l.mu.Lock()
				l.acked = append(l.acked, id)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// Stop waits for the workers; it returns the acknowledged rows.
func (l *ackedLoad) Stop() []int64 {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.acked...)
}

func (l *ackedLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// Zero data loss: with binvault as the primary's semi-sync replica, every
// transaction whose COMMIT returned OK is in the archive after the
// primary dies, and comes back in a restore. In store mode the primary's
// data directory, binvault's process and its spool are all thrown away:
// the store alone holds every acknowledged transaction.
func TestSemiSyncEveryAcknowledgedCommitSurvivesThePrimary(t *testing.T) {
	for _, mode := range []string{"spool", "store"} {
		t.Run(mode, func(t *testing.T) { semiSyncZeroLoss(t, mode) })
	}
}

func semiSyncZeroLoss(t *testing.T, mode string) {
	// A long timeout: a commit that binvault does not acknowledge hangs
	// (and the load notices) instead of going asynchronous.
	p := semiSyncPrimary(t, "zl-"+mode, true, "AFTER_SYNC", 60*time.Second)
	s3 := harness.StartS3(t)
	listen := freeAddrs(t, 1)[0]
	// Segments would close only every 30 s: store mode closes them for
	// the acknowledgements, not for the flush interval.
	cfg := writeS3ConfigWith(t, s3, s3Config{dsn: "mysql://repl:repl-pw@" + p.Addr(), prefix: "zl", listen: listen,
		source: []string{"semi_sync: " + mode},
		extra:  []string{"archive:\n  flush_interval: 30s\n  rpo_target: 30s"}})
	spool := filepath.Join(filepath.Dir(cfg), "spool")
	as := &archiveSetup{primary: p, s3: s3, cfg: cfg, env: s3.Env(), spool: spool}
	d := startDaemon(t, as.env, "--config", cfg)
	as.waitConnected(t, d)
	eventually(t, 20*time.Second, "the primary to count binvault as a semi-sync replica", func() bool {
		return semiSyncStatus(t, p)["clients"] == "1"
	})

	t0 := time.Now()
	p.Exec(t, "CREATE DATABASE zl; CREATE TABLE zl.t (id BIGINT PRIMARY KEY, w INT, pad VARCHAR(100))")
	if took := time.Since(t0); took > 10*time.Second {
		t.Fatalf("two DDL statements took %s: binvault's acknowledgements did not come", took)
	}
	if r := binvault(t, as.env, "backup", "--config", cfg); r.code != 0 {
		t.Fatalf("backup: %s", r)
	}

	l := startAckedLoad(t, p, 4)
	time.Sleep(4 * time.Second)
	st := semiSyncStatus(t, p)
	if st["status"] != "ON" || statusInt(st, "no_tx") != 0 || statusInt(st, "yes_tx") == 0 {
		t.Fatalf("the primary did not commit semi-synchronously with binvault: %v\n%s", st, tailLog(d))
	}
	base := "http://" + listen
	if acks := metric(t, base, "binvault_semisync_acks_total"); acks < 1 {
		t.Fatalf("binvault_semisync_acks_total = %v", acks)
	}
	if mode == "store" {
		// The site is lost at once: binvault first (what it has not
		// stored is gone with its spool), then the primary.
		d.kill()
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	acked := l.Stop()
	t.Logf("%s mode: %d commits acknowledged to clients in ~4 s (4 connections), %d over 1 s; primary: %d semi-sync commits, average wait %s µs",
		mode, len(acked), l.slow.Load(), statusInt(st, "yes_tx"), st["tx_avg_wait_time"])
	if len(acked) < 40 {
		t.Fatalf("only %d commits in 4 s: semi-sync commits wait too long\n%s", len(acked), tailLog(d))
	}

	if mode == "store" {
		// The primary's data and binvault's spool are gone with the site.
		if err := os.RemoveAll(p.Dir); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(spool); err != nil {
			t.Fatal(err)
		}
	} else {
		// binvault closes what it spooled when the stream breaks and
		// uploads it; then it is stopped.
		eventually(t, 30*time.Second, "the spooled transactions to reach the store", func() bool {
			st := as.state(t)
			src, _ := st["source"].(map[string]any)
			arch, _ := st["archive"].(map[string]any)
			if src == nil || arch == nil {
				return false
			}
			sp, _ := src["position"].(map[string]any)
			ap, _ := arch["position"].(map[string]any)
			return sp != nil && ap != nil && sp["gtid_set"] != "" && sp["gtid_set"] == ap["gtid_set"]
		})
		if code := d.stop(t, 30*time.Second); code != 0 {
			t.Fatalf("daemon exit %d: %s", code, d.log)
		}
	}

	if r := binvault(t, as.env, "verify", "--config", cfg); r.code != 0 {
		t.Fatalf("verify: %s", r)
	}
	if r := binvault(t, as.env, "segments", "--config", cfg); r.code != 0 {
		t.Fatalf("segments: %s", r)
	}
	target := harness.StartMariaDB(t, "zl-target-"+mode, harness.MariaDBOptions{})
	if r := binvault(t, as.env, "restore", "--config", cfg, "--target", target.DSN("", ""), "--latest"); r.code != 0 {
		t.Fatalf("restore --latest: %s", r)
	}
	have := map[int64]bool{}
	for _, s := range harness.Strings(t, target.DB(t), "SELECT id FROM zl.t") {
		n, _ := strconv.ParseInt(s, 10, 64)
		have[n] = true
	}
	var lost []int64
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	sort.Slice(lost, func(i, j int) bool { return lost[i] < lost[j] })
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged commits are not in the restore (first: %v)", len(lost), len(acked), lost[:min(5, len(lost))])
	}
	t.Logf("restore --latest holds all %d acknowledged rows (%d rows: the rest were committed but not yet acknowledged when the primary died)", len(acked), len(have))
	if mode == "store" {
		for _, kv := range s3.Env() {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		st, err := open.Open(context.Background(), open.Options{URL: s3.URL("zl"), Endpoint: s3.Endpoint(), Region: "us-east-1", PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(archiveGTIDs(t, st)); n < len(acked) {
			t.Fatalf("the archive holds %d transactions, fewer than the %d acknowledged", n, len(acked))
		}
	}
}

// The primary's side, honestly: a primary without semi-sync is refused at
// start with the SET GLOBAL that fixes it; a binvault that cannot answer
// in time (SIGSTOP) makes the primary fall back to asynchronous commits,
// which binvault reports once it runs again, and semi-sync resumes; a
// primary that stops waiting makes /readyz say so.
func TestSemiSyncPreflightFallbackAndReadiness(t *testing.T) {
	p := semiSyncPrimary(t, "ssfb", false, "AFTER_COMMIT", 500*time.Millisecond)
	s3 := harness.StartS3(t)
	listen := freeAddrs(t, 1)[0]
	cfg := writeS3ConfigWith(t, s3, s3Config{dsn: "mysql://repl:repl-pw@" + p.Addr(), prefix: "fb", listen: listen,
		source: []string{"semi_sync: spool"}})
	env := s3.Env()

	r := binvault(t, env, "status", "--config", cfg)
	if r.code != 2 || !strings.Contains(r.stdout, "SET GLOBAL rpl_semi_sync_master_enabled=ON") ||
		!strings.Contains(r.stdout, "warning: source: rpl_semi_sync_master_wait_point is AFTER_COMMIT") ||
		!strings.Contains(r.stdout, "SET GLOBAL rpl_semi_sync_master_timeout=10000") {
		t.Fatalf("status with semi-sync off on the primary: want exit 2 naming the SET GLOBAL fixes: %s", r)
	}
	r = binvaultWithin(t, 30*time.Second, env, "run", "--config", cfg)
	if r.code != 2 || !strings.Contains(r.stderr, "rpl_semi_sync_master_enabled is OFF") || !strings.Contains(r.stderr, "SET GLOBAL rpl_semi_sync_master_enabled=ON") {
		t.Fatalf("run against a primary without semi-sync: want exit 2 naming the fix: %s", r)
	}
	if line := messageLine(t, r, true); strings.Count(line, "\n") > 0 {
		t.Fatalf("not one line: %q", line)
	}

	p.Exec(t, "SET GLOBAL rpl_semi_sync_master_enabled=ON, rpl_semi_sync_master_wait_point=AFTER_SYNC, rpl_semi_sync_master_timeout=1000")
	if r := binvault(t, env, "status", "--config", cfg); r.code != 0 || strings.Contains(r.stdout, "warning:") {
		t.Fatalf("status once the primary is set up: %s", r)
	}
	as := &archiveSetup{primary: p, s3: s3, cfg: cfg, env: env, spool: filepath.Join(filepath.Dir(cfg), "spool")}
	d := startDaemon(t, env, "--config", cfg)
	as.waitConnected(t, d)
	eventually(t, 20*time.Second, "the primary to count binvault as a semi-sync replica", func() bool {
		return semiSyncStatus(t, p)["clients"] == "1"
	})
	p.Exec(t, "CREATE DATABASE zl; CREATE TABLE zl.t (id BIGINT PRIMARY KEY, w INT, pad VARCHAR(100))")
	base := "http://" + listen
	l := startAckedLoad(t, p, 2)
	defer l.Stop()
	eventually(t, 20*time.Second, "/readyz 200 with the primary waiting for binvault", func() bool {
		code, _ := httpGet(base, "/readyz")
		return code == 200 && metric(t, base, "binvault_semisync_primary_active") == 1
	})
	acks0 := metric(t, base, "binvault_semisync_acks_total")
	if acks0 < 1 || metric(t, base, "binvault_semisync_primary_fallbacks_total") != 0 {
		t.Fatalf("before the stop: %v acknowledgements, %v fallbacks", acks0, metric(t, base, "binvault_semisync_primary_fallbacks_total"))
	}

	// binvault cannot answer for 3 s: the primary waits 1 s, then commits
	// asynchronously.
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	fellBack := false
	for time.Since(stopped) < 3*time.Second {
		if semiSyncStatus(t, p)["status"] == "OFF" {
			fellBack = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !fellBack {
		t.Fatalf("the primary did not fall back while binvault was stopped: %v", semiSyncStatus(t, p))
	}
	eventually(t, 20*time.Second, "binvault to report the fallback", func() bool {
		return metric(t, base, "binvault_semisync_primary_fallbacks_total") >= 1 && metric(t, base, "binvault_semisync_primary_unacknowledged_commits_total") >= 1
	})
	eventually(t, 20*time.Second, "semi-sync to resume", func() bool {
		st := semiSyncStatus(t, p)
		return st["status"] == "ON" && metric(t, base, "binvault_semisync_acks_total") > acks0+10 && metric(t, base, "binvault_semisync_primary_active") == 1
	})
	if r := binvault(t, env, "status", "--config", cfg); r.code != 0 || !strings.Contains(r.stdout, "semi-sync spool:") || !strings.Contains(r.stdout, "last fallback") {
		t.Fatalf("status after the fallback: %s", r)
	}

	// A primary that stops waiting makes binvault unready, with the fix.
	p.Exec(t, "SET GLOBAL rpl_semi_sync_master_enabled=OFF")
	eventually(t, 20*time.Second, "/readyz to report the primary's semi-sync off", func() bool {
		code, body := httpGet(base, "/readyz")
		return code == 503 && strings.Contains(body, "rpl_semi_sync_master_enabled=OFF")
	})
	if v := metric(t, base, "binvault_semisync_primary_active"); v != 0 {
		t.Fatalf("binvault_semisync_primary_active = %v with semi-sync off on the primary", v)
	}
	// Back on: binvault is (again) the primary's semi-sync replica by
	// itself, connecting again if the primary forgot it.
	p.Exec(t, "SET GLOBAL rpl_semi_sync_master_enabled=ON")
	acks1 := metric(t, base, "binvault_semisync_acks_total")
	eventually(t, 30*time.Second, "the primary to wait for binvault again", func() bool {
		code, _ := httpGet(base, "/readyz")
		st := semiSyncStatus(t, p)
		return code == 200 && st["clients"] == "1" && st["status"] == "ON" && metric(t, base, "binvault_semisync_acks_total") > acks1+10
	})
	acked := l.Stop()
	if len(acked) < 20 {
		t.Fatalf("only %d commits under the load", len(acked))
	}
	if code := d.stop(t, 30*time.Second); code != 0 {
		t.Fatalf("daemon exit %d: %s", code, d.log)
	}
}
