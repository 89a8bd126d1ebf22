package test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/binvault/binvault/storage/open"
	"github.com/binvault/binvault/test/harness"
)

// failoverSetup is a primary A with a native GTID replica B, binvault
// streaming from "A,B" (A through a 30 ms proxy, so B always receives a
// transaction before binvault does), applying to C and serving native
// replica D. With semiSync, A and B wait for semi-sync acknowledgements
// (up to 2 s) and binvault gives them in spool mode.
type failoverSetup struct {
	a, b, c, d *harness.MariaDB
	cfg        string
	env        []string
	spool      string
	base       string
	setup      *archiveSetup
	serveAddr  string
}

func newFailoverSetup(t *testing.T, semiSync bool) *failoverSetup {
	t.Helper()
	var semi []string
	source := []string{"failover_wait: 3s"}
	if semiSync {
		semi = []string{"--rpl-semi-sync-master-enabled=ON", "--rpl-semi-sync-master-wait-point=AFTER_SYNC", "--rpl-semi-sync-master-timeout=2000"}
		source = append(source, "semi_sync: spool")
	}
	ms := startServers(t,
		serverSpec{"a", harness.MariaDBOptions{Extra: semi}},
		serverSpec{"b", harness.MariaDBOptions{Extra: append([]string{"--read-only=ON"}, semi...)}},
		serverSpec{"c", harness.MariaDBOptions{Extra: []string{"--read-only=ON"}}},
		serverSpec{"d", nativeOpts("optimistic")})
	a, b, c, d := ms[0], ms[1], ms[2], ms[3]
	// The users outside the binlog on both A and B: binvault starts at an
	// empty history, and so can C and D.
	for _, m := range []*harness.MariaDB{a, b} {
		m.Exec(t, "SET sql_log_bin=0; CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'repl-pw'; GRANT REPLICATION SLAVE, REPLICATION CLIENT, SLAVE MONITOR, SELECT, SHOW VIEW, TRIGGER, EVENT, RELOAD ON *.* TO repl@'127.0.0.1'")
	}
	c.Exec(t, "SET sql_log_bin=0; CREATE USER applier@'127.0.0.1' IDENTIFIED BY 'applier-pw'; GRANT ALL ON *.* TO applier@'127.0.0.1'")
	changeMaster(t, b, a.Addr(), "repl", "repl-pw", "slave_pos")
	waitSameGTID(t, a, b, 20*time.Second)

	px := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	proxy := toxiproxy.NewProxy(px, "a", "127.0.0.1:0", a.Addr())
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Stop)
	if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(`{"name":"lat","type":"latency","stream":"downstream","attributes":{"latency":30}}`)); err != nil {
		t.Fatal(err)
	}

	s3 := harness.StartS3(t)
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	ports := freeAddrs(t, 2)
	pw := "serve-pw"
	t.Setenv("BINVAULT_TEST_SERVE_PW", pw)
	cfg := writeS3ConfigWith(t, s3, s3Config{dsn: "mysql://repl:repl-pw@" + proxy.Listen + "," + b.Addr(), prefix: "archive", listen: ports[0],
		source: source,
		extra: []string{"archive:\n  segment_max_bytes: 1MiB",
			"replica:\n  dsn: mysql://applier:applier-pw@" + c.Addr(),
			"serve:\n  listen: " + ports[1] + "\n  users:\n    - name: repl\n      password_env: BINVAULT_TEST_SERVE_PW"}})
	st, err := open.Open(context.Background(), open.Options{URL: s3.URL("archive"), Endpoint: s3.Endpoint(), Region: "us-east-1", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return &failoverSetup{a: a, b: b, c: c, d: d, cfg: cfg, env: append(s3.Env(), "BINVAULT_TEST_SERVE_PW="+pw), spool: filepath.Join(filepath.Dir(cfg), "spool"),
		base: "http://" + ports[0], serveAddr: ports[1], setup: &archiveSetup{primary: a, s3: s3, cfg: cfg, env: s3.Env(), store: st, spool: filepath.Join(filepath.Dir(cfg), "spool")}}
}

// waitSameGTID waits until r's binlog position equals p's.
func waitSameGTID(t testing.TB, p, r *harness.MariaDB, timeout time.Duration) {
	t.Helper()
	want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	eventually(t, timeout, r.Name+" to reach "+want, func() bool { return r.QueryString(t, "SELECT @@gtid_binlog_pos") == want })
}

// promoteNatively makes B the primary as a DBA would once A is dead: let
// the SQL thread apply what the IO thread received, stop replication,
// forget the old primary, open for writes.
func promoteNatively(t testing.TB, b *harness.MariaDB) {
	t.Helper()
	io := slaveStatus(t, b)["Gtid_IO_Pos"]
	if io == "" {
		t.Fatalf("%s received nothing from the primary", b.Name)
	}
	if got := b.QueryString(t, "SELECT MASTER_GTID_WAIT(?, 60)", io); got != "0" {
		t.Fatalf("%s did not apply its relay log up to %s: MASTER_GTID_WAIT says %s", b.Name, io, got)
	}
	b.Exec(t, "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF")
}

func (f *failoverSetup) state(t testing.TB) map[string]any { return f.setup.state(t) }

// segmentSources lists each archived segment's source server_id, in order.
func segmentSources(t testing.TB, env []string, cfg string) []int {
	t.Helper()
	r := binvault(t, env, "segments", "--config", cfg, "--json")
	if r.code != 0 {
		t.Fatalf("segments: %s", r)
	}
	var rep struct {
		Segments []struct {
			Source struct {
				ServerID int `json:"server_id"`
			} `json:"source"`
		} `json:"segments"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	var ids []int
	for _, s := range rep.Segments {
		ids = append(ids, s.Source.ServerID)
	}
	return ids
}

// The primary dies under a write load with DDL; a DBA promotes its native
// replica. binvault follows the new primary within failover_wait and a few
// seconds, with no gap and no duplicate: the archive's chain is whole, the
// applied replica and a replica of binvault's binlog server equal the new
// primary without any CHANGE MASTER, and a restore of the archive's latest
// point equals it too.
func TestFailoverFollowsThePromotedReplica(t *testing.T) {
	f := newFailoverSetup(t, true)
	a, b := f.a, f.b
	if r := binvault(t, f.env, "backup", "--config", f.cfg); r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	d := startDaemon(t, f.env, "--config", f.cfg)
	eventually(t, 20*time.Second, "the daemon to stream", func() bool {
		st := f.state(t)
		src, _ := st["source"].(map[string]any)
		return src != nil && src["connected"] == true
	})
	changeMaster(t, f.d, f.serveAddr, "repl", "serve-pw", "slave_pos")
	prepareLoadSchema(t, a)

	l := startLoad(t, a, 3, true)
	time.Sleep(4 * time.Second)
	if st := semiSyncStatus(t, a); st["clients"] != "1" || statusInt(st, "yes_tx") == 0 {
		t.Fatalf("A did not commit semi-synchronously with binvault: %v", st)
	}
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	l.Stop()
	before := l.commits.Load()
	promoteNatively(t, b)
	promoted := time.Now()

	l2 := startLoad(t, b, 3, true)
	var followedAfter time.Duration
	for {
		st := f.state(t)
		src, _ := st["source"].(map[string]any)
		if src != nil && src["connected"] == true && strings.Contains(fmt.Sprint(src["primary"]), b.Addr()) {
			followedAfter = time.Since(promoted)
			break
		}
		if time.Since(promoted) > 30*time.Second {
			t.Fatalf("binvault did not follow the new primary within 30 s:\n%s\n%s", errorLines(d), tailLog(d))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(4 * time.Second)
	// binvault is the new primary's semi-sync replica as it was A's.
	eventually(t, 20*time.Second, "B to wait for binvault's acknowledgements", func() bool {
		st := semiSyncStatus(t, b)
		return st["clients"] == "1" && st["status"] == "ON" && statusInt(st, "yes_tx") > 0
	})
	l2.Stop()
	t.Logf("load: %d transactions on A, %d on B; binvault followed B %.1fs after its promotion", before, l2.commits.Load(), followedAfter.Seconds())
	// failover_wait (3 s) from the loss, then a probe at most every second.
	if followedAfter > 3*time.Second+8*time.Second {
		t.Errorf("binvault followed the new primary %s after its promotion: want within failover_wait + a few seconds", followedAfter)
	}
	if l.commits.Load() < 30 || l2.commits.Load() < 30 {
		t.Fatalf("too little load: %d on A, %d on B", l.commits.Load(), l2.commits.Load())
	}

	waitReplicaCaughtUp(t, b, f.c, 60*time.Second, d)
	sameChecksums(t, b, f.c)
	waitSameGTID(t, b, f.d, 60*time.Second)
	sameChecksums(t, b, f.d)

	want := b.QueryString(t, "SELECT @@gtid_binlog_pos")
	eventually(t, 30*time.Second, "the archive to reach "+want, func() bool { return f.setup.archivedPosition(t) == want })
	if code := d.stop(t, 20*time.Second); code != 0 {
		t.Fatalf("daemon exit %d: %s", code, d.log)
	}
	if r := binvault(t, f.env, "verify", "--config", f.cfg); r.code != 0 {
		t.Fatalf("verify after the failover: %s", r)
	}
	// The archive holds B's binlog (A's transactions it replicated, then
	// its own) from where binvault started: no gap, no duplicate.
	archived := archiveGTIDs(t, f.setup.store)
	onB := b.BinlogGTIDs(t)
	from := -1
	for i, g := range onB {
		if g == archived[0] {
			from = i
		}
	}
	if from < 0 {
		t.Fatalf("the archive's first transaction %s is not in B's binlog", archived[0])
	}
	sameHistory(t, onB, archived, from)
	// Segments name their source and never span two: A's, then B's.
	ids := segmentSources(t, f.env, f.cfg)
	switched := 0
	for i := 1; i < len(ids); i++ {
		if ids[i] != ids[i-1] {
			switched++
			if ids[i-1] != a.ServerID || ids[i] != b.ServerID {
				t.Fatalf("segment sources switch from %d to %d: want A (%d) then B (%d): %v", ids[i-1], ids[i], a.ServerID, b.ServerID, ids)
			}
		}
	}
	if switched != 1 || ids[0] != a.ServerID {
		t.Fatalf("segment sources %v: want A's (%d) then B's (%d)", ids, a.ServerID, b.ServerID)
	}
	if n := metricFromLog(d, "failover: following the new primary"); n != 1 {
		t.Fatalf("the daemon logged %d failovers, want 1:\n%s", n, tailLog(d))
	}

	target := harness.StartMariaDB(t, "target", harness.MariaDBOptions{})
	if r := binvault(t, f.env, "restore", "--config", f.cfg, "--target", target.DSN("", ""), "--latest"); r.code != 0 {
		t.Fatalf("restore --latest: %s", r)
	}
	sameChecksums(t, b, target)
}

// errorLines are the daemon's ERROR log lines.
func errorLines(d *daemon) string {
	var out []string
	for _, l := range strings.Split(d.log.String(), "\n") {
		if strings.Contains(l, `"level":"ERROR"`) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// metricFromLog counts the daemon's log lines holding msg.
func metricFromLog(d *daemon, msg string) int { return strings.Count(d.log.String(), msg) }

// A promoted replica that missed transactions binvault archived (its
// replication was stopped) is refused, naming them; binvault keeps
// running and waiting, and archives nothing of it.
func TestFailoverRefusesACandidateMissingArchivedTransactions(t *testing.T) {
	f := newFailoverSetup(t, false)
	a, b := f.a, f.b
	d := startDaemon(t, f.env, "--config", f.cfg)
	eventually(t, 20*time.Second, "the daemon to stream", func() bool {
		st := f.state(t)
		src, _ := st["source"].(map[string]any)
		return src != nil && src["connected"] == true
	})
	execOn(t, a, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)")
	waitSameGTID(t, a, b, 20*time.Second)
	if bk := binvault(t, f.env, "backup", "--config", f.cfg); bk.code != 0 {
		t.Fatalf("backup before the failover: %s", bk)
	}
	b.Exec(t, "STOP SLAVE")
	bPos := b.QueryString(t, "SELECT @@gtid_binlog_pos")
	for i := range 3 {
		execOn(t, a, fmt.Sprintf("INSERT INTO app.t VALUES (%d)", i))
	}
	aPos := a.QueryString(t, "SELECT @@gtid_binlog_pos")
	eventually(t, 20*time.Second, "A's writes to be archived", func() bool { return f.setup.archivedPosition(t) == aPos })
	waitSameGTID(t, a, f.c, 20*time.Second) // the applied replica has them too
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	b.Exec(t, "RESET SLAVE ALL; SET GLOBAL read_only = OFF")
	execOn(t, b, "INSERT INTO app.t VALUES (100)")

	// A's last three transactions, although B's own write took the first
	// one's sequence number: bPos's + 1 .. aPos, by A's server_id.
	domSeq := strings.Split(bPos, "-")
	var first int
	fmt.Sscan(domSeq[2], &first)
	wantNamed := []string{fmt.Sprintf("0-%d-%d…%s (3 transactions)", a.ServerID, first+1, aPos), "lacks archived transactions", "binvault waits for a server that holds them"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		lacking := ""
		for _, w := range wantNamed {
			if !strings.Contains(d.log.String(), w) {
				lacking = w
			}
		}
		if lacking == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refusal of B naming %q in the daemon's log:\n%s", lacking, tailLog(d))
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	if d.exited() {
		t.Fatalf("the daemon exited: %s", d.log)
	}
	st := f.state(t)
	src, _ := st["source"].(map[string]any)
	if src["connected"] == true || !strings.Contains(fmt.Sprint(src["last_error"]), "lacks archived transactions") {
		t.Fatalf("state.json source section while refusing B: %v", src)
	}
	if got := f.setup.archivedPosition(t); got != aPos {
		t.Fatalf("the archive moved to %q while refusing B (it ended at %q)", got, aPos)
	}
	if code := d.stop(t, 20*time.Second); code != 0 {
		t.Fatalf("daemon exit %d: %s", code, d.log)
	}
	// A restart finds no primary that holds the archive: exit 2, naming
	// the missing transactions.
	r := binvaultWithin(t, time.Minute, f.env, "run", "--config", f.cfg)
	if r.code != 2 || !strings.Contains(r.stderr, "lacks") || !strings.Contains(r.stderr, aPos) || !strings.Contains(r.stderr, "--accept-lost-transactions") {
		t.Fatalf("run with only a candidate missing archived transactions: %s", r)
	}

	// --accept-lost-transactions: binvault continues from B, the archive
	// records the fork, the applied replica (which holds A's lost
	// transactions) is stopped, and a backup taken after the fork restores
	// to B's latest.
	d2 := startDaemon(t, f.env, "--config", f.cfg, "--accept-lost-transactions")
	eventually(t, 20*time.Second, "the daemon to stream from B", func() bool {
		src, _ := f.state(t)["source"].(map[string]any)
		return src != nil && src["connected"] == true && strings.Contains(fmt.Sprint(src["primary"]), b.Addr())
	})
	if !strings.Contains(d2.log.String(), "STARTING FROM A PRIMARY THAT LACKS ARCHIVED TRANSACTIONS") {
		t.Fatalf("no loud log line for the accepted loss:\n%s", tailLog(d2))
	}
	execOn(t, b, "INSERT INTO app.t VALUES (101)")
	bNow := b.QueryString(t, "SELECT @@gtid_binlog_pos")
	deadline = time.Now().Add(20 * time.Second)
	for f.setup.archivedPosition(t) != bNow {
		if time.Now().After(deadline) {
			t.Fatalf("B's write (%s) is not archived: the archive ends at %q\n%s", bNow, f.setup.archivedPosition(t), tailLog(d2))
		}
		time.Sleep(200 * time.Millisecond)
	}
	seg := binvault(t, f.env, "segments", "--config", f.cfg, "--json")
	var rep struct {
		Forks []string `json:"forks"`
		Gaps  []string `json:"gaps"`
	}
	if err := json.Unmarshal([]byte(seg.stdout), &rep); err != nil || len(rep.Forks) != 1 || len(rep.Gaps) != 0 || !strings.Contains(rep.Forks[0], wantNamed[0]) {
		t.Fatalf("segments after the fork: forks %q, gaps %q (%v)", rep.Forks, rep.Gaps, err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		rs, _ := f.state(t)["replica"].(map[string]any)
		if rs != nil && rs["stopped"] == true && strings.Contains(fmt.Sprint(rs["last_error"]), "holds transactions a failover lost") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the applier did not stop on the lost transactions: %v\n%s", rs, tailLog(d2))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if v := binvault(t, f.env, "verify", "--config", f.cfg); v.code != 0 {
		t.Fatalf("verify with a recorded fork: %s", v)
	}
	if bk := binvault(t, f.env, "backup", "--config", f.cfg); bk.code != 0 {
		t.Fatalf("backup of the new primary: %s", bk)
	}
	if code := d2.stop(t, 20*time.Second); code != 0 {
		t.Fatalf("daemon exit %d: %s", code, d2.log)
	}
	target := harness.StartMariaDB(t, "target", harness.MariaDBOptions{})
	if rr := binvault(t, f.env, "restore", "--config", f.cfg, "--target", target.DSN("", ""), "--latest"); rr.code != 0 {
		t.Fatalf("restore --latest after the fork: %s", rr)
	}
	sameChecksums(t, b, target)
	// A point before the fork (A's last transaction, lost on B) restores
	// from the backup taken before it, to what the applied replica holds.
	before := harness.StartMariaDB(t, "before", harness.MariaDBOptions{})
	if rr := binvault(t, f.env, "restore", "--config", f.cfg, "--target", before.DSN("", ""), "--to-gtid", aPos); rr.code != 0 {
		t.Fatalf("restore --to-gtid %s, before the fork: %s", aPos, rr)
	}
	sameChecksums(t, f.c, before)
}
