package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// An empty server seeded from a binvault backup (binvault restore
// --latest, under load) records the restored position in gtid_slave_pos;
// CHANGE MASTER TO binvault with MASTER_USE_GTID=slave_pos then catches
// it up to the primary, identical.
func TestServeCatchesUpAReplicaRestoredFromABackup(t *testing.T) {
	s := newServedSetupWith(t)
	s.sourceAsRoot(t) // for binvault backup
	p := s.primary
	seeded := startServers(t, serverSpec{"seeded", nativeOpts("conservative")})[0]
	d := startDaemon(t, s.env, "--config", s.cfg)
	s.waitConnected(t, d)
	prepareLoadSchema(t, p)
	l := startLoad(t, p, 2, true)
	defer func() { l.Stop() }()
	time.Sleep(1500 * time.Millisecond)
	id := backupNow(t, s)
	time.Sleep(time.Second)
	r := binvaultWithin(t, 2*time.Minute, s.env, "restore", "--config", s.cfg, "--target", seeded.DSN("", ""), "--latest")
	if r.code != 0 {
		t.Fatalf("restore --latest: %s", r)
	}
	restored := seeded.QueryString(t, "SELECT @@gtid_binlog_pos")
	if sp := seeded.QueryString(t, "SELECT @@gtid_slave_pos"); sp != restored || gtidSeq(sp) == 0 {
		t.Fatalf("after restore: gtid_slave_pos %q, gtid_binlog_pos %q: restore must record the restored position for replication", sp, restored)
	}
	s.replicate(t, seeded, "slave_pos")
	from := replicaStarts(t, seeded, 0)
	if from != restored {
		t.Errorf("the restored replica asked binvault for %q, it was restored to %q", from, restored)
	}
	time.Sleep(time.Second)
	l.Stop()
	waitReplicaAt(t, p, seeded, 60*time.Second)
	sameAsPrimary(t, p, seeded)
	if gtidSeq(p.QueryString(t, "SELECT @@gtid_binlog_pos")) <= gtidSeq(restored) {
		t.Fatalf("the primary wrote nothing after the restored position %s: the test shows nothing", restored)
	}
	if code := d.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, d.log)
	}
	t.Logf("backup %s, restored to %s, caught up from binvault to %s", id, restored, p.QueryString(t, "SELECT @@gtid_binlog_pos"))
}

// A chain: a native replica of binvault (log_slave_updates on) serves a
// replica of its own, which ends identical to the primary. Then
// mariadb-binlog --read-from-remote-server reads the primary's binlog
// from binvault: without --stop-never it prints every transaction of the
// file and exits; with it, it keeps running and prints new ones.
func TestServeChainAndMariadbBinlog(t *testing.T) {
	s := newServedSetupWith(t)
	p := s.primary
	rs := startServers(t, serverSpec{"middle", nativeOpts("optimistic")}, serverSpec{"leaf", nativeOpts("conservative")})
	middle, leaf := rs[0], rs[1]
	d := startDaemon(t, s.env, "--config", s.cfg)
	s.waitConnected(t, d)
	prepareLoadSchema(t, p)
	l := startLoad(t, p, 2, true)
	defer func() { l.Stop() }()
	s.replicate(t, middle, "slave_pos")
	changeMaster(t, leaf, middle.Addr(), "root", middle.RootPassword, "slave_pos")

	t.Run("chain", func(t *testing.T) {
		time.Sleep(2 * time.Second)
		l.Stop()
		for _, r := range []*harness.MariaDB{middle, leaf} {
			waitReplicaAt(t, p, r, 60*time.Second)
			sameAsPrimary(t, p, r)
		}
		if got := leaf.QueryString(t, "SELECT @@gtid_binlog_pos"); !strings.HasPrefix(got, fmt.Sprintf("0-%d-", p.ServerID)) {
			t.Errorf("the leaf binlogged %q: the primary's GTIDs should pass down the chain unchanged", got)
		}
	})

	mb, err := exec.LookPath("mariadb-binlog")
	if err != nil {
		t.Skip("mariadb-binlog not found (Debian package mariadb-client): the remote-read checks need it")
	}
	host, port, _ := strings.Cut(s.serveAddr, ":")
	args := []string{"--read-from-remote-server", "--verify-binlog-checksum", "--host=" + host, "--port=" + port, "--user=" + s.user, "--password=" + s.pw}
	primaryGTIDs := p.BinlogGTIDs(t)
	files := binaryLogs(t, p)
	if len(files) != 1 {
		t.Fatalf("the primary has binlog files %v; the test reads one", files)
	}

	t.Run("mariadb-binlog", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, mb, append(args, files[0])...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("mariadb-binlog: %v\n%s", err, errb.String())
		}
		got := printedGTIDs(out.String())
		if strings.Join(got, " ") != strings.Join(primaryGTIDs, " ") {
			t.Fatalf("mariadb-binlog printed %d GTIDs, the primary's SHOW BINLOG EVENTS has %d: %s", len(got), len(primaryGTIDs), gtidDiff(primaryGTIDs, got))
		}
		t.Logf("mariadb-binlog printed the primary's %d transactions (%d bytes of output)", len(got), out.Len())
	})

	t.Run("mariadb-binlog --stop-never", func(t *testing.T) {
		cmd := exec.Command(mb, append(args, "--stop-never", "--verbose", files[0])...)
		out := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		var waitErr error
		go func() { waitErr = cmd.Wait(); close(exited) }()
		defer func() {
			cmd.Process.Kill()
			<-exited
		}()
		printed := func(gtid string) func() bool {
			return func() bool {
				select {
				case <-exited:
					t.Fatalf("mariadb-binlog --stop-never exited: %v\n%s", waitErr, out.String())
				default:
				}
				for _, g := range printedGTIDs(out.String()) {
					if g == gtid {
						return true
					}
				}
				return false
			}
		}
		last := primaryGTIDs[len(primaryGTIDs)-1]
		eventually(t, 30*time.Second, "mariadb-binlog to print "+last, printed(last))
		time.Sleep(1500 * time.Millisecond) // idle: heartbeats only
		p.Exec(t, "INSERT INTO app.counters VALUES ('stop-never', 1)")
		next := p.QueryString(t, "SELECT @@gtid_binlog_pos")
		eventually(t, 30*time.Second, "mariadb-binlog --stop-never to print the new transaction "+next, printed(next))
		if !strings.Contains(out.String(), "@1='stop-never'") {
			t.Errorf("mariadb-binlog --verbose printed the GTID of the new transaction but not its row")
		}
	})
	if code := d.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, d.log)
	}
}

var printedGTID = regexp.MustCompile(`(?m)\tGTID (\d+-\d+-\d+)`)

// printedGTIDs lists the transactions' GTIDs mariadb-binlog printed, in order.
func printedGTIDs(out string) []string {
	var gtids []string
	for _, m := range printedGTID.FindAllStringSubmatch(out, -1) {
		gtids = append(gtids, m[1])
	}
	return gtids
}

// lockedBuffer is a bytes.Buffer a process writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// binvault serve loses the store for 15 s while a native replica follows
// it: the replica stays connected all along (heartbeats every second; its
// slave_net_timeout is 3 s, so a silent link would have made it
// reconnect), serve's /readyz answers 503 while the store is away, and
// once it is back the replica receives what the primary wrote meanwhile.
func TestServeKeepsReplicasThroughAStoreOutage(t *testing.T) {
	const outage = 15 * time.Second
	s := newServedSetupWith(t)
	p := s.primary
	r := startServers(t, serverSpec{"dr", nativeOpts("optimistic", "--slave-net-timeout=3")})[0]
	d := startDaemon(t, s.env, "--config", s.cfg)
	s.waitConnected(t, d)
	prepareLoadSchema(t, p)
	l := startLoad(t, p, 2, false)
	defer func() { l.Stop() }()

	addrs := freeAddrs(t, 2)
	serveAddr, web := addrs[0], "http://"+addrs[1]
	sv := startCommand(t, s.env, "serve", "--config", s.writeServeConfig(t, serveAddr, addrs[1]))
	eventually(t, 20*time.Second, "binvault serve to be ready", func() bool {
		if sv.exited() {
			t.Fatalf("serve exited: %s", sv.log)
		}
		code, _ := httpGet(web, "/readyz")
		return code == 200
	})
	changeMaster(t, r, serveAddr, s.user, s.pw, "slave_pos")
	eventually(t, 60*time.Second, "the replica to follow binvault serve", func() bool {
		return gtidSeq(r.QueryString(t, "SELECT @@gtid_slave_pos")) > 100
	})
	connects := len(replStarts.FindAllString(readLog(t, r), -1))

	s.s3.Stop()
	stopped := time.Now()
	atStop := gtidSeq(p.QueryString(t, "SELECT @@gtid_binlog_pos"))
	unready := false
	for time.Since(stopped) < outage {
		st := showSlave(t, r)
		if st["Slave_IO_Running"] != "Yes" || st["Slave_SQL_Running"] != "Yes" {
			t.Fatalf("%.1fs into the store outage the replica is IO %s, SQL %s: %s %s", time.Since(stopped).Seconds(),
				st["Slave_IO_Running"], st["Slave_SQL_Running"], st["Last_IO_Error"], st["Last_SQL_Error"])
		}
		code, body := httpGet(web, "/readyz")
		switch {
		case code == 503:
			if !unready {
				t.Logf("serve's /readyz answers 503 %.1fs into the store outage: %s", time.Since(stopped).Seconds(), strings.TrimSpace(body))
			}
			unready = true
		case unready:
			t.Fatalf("%.1fs into the store outage serve's /readyz answers %d %s after it answered 503", time.Since(stopped).Seconds(), code, body)
		case time.Since(stopped) > 13*time.Second:
			// serve says so once the store has not answered its listing
			// for 10 s (it lists every 300 ms here).
			t.Fatalf("13 s into the store outage serve's /readyz still answers %d %s", code, body)
		}
		time.Sleep(500 * time.Millisecond)
	}
	written := gtidSeq(p.QueryString(t, "SELECT @@gtid_binlog_pos"))
	if err := s.s3.Start(); err != nil {
		t.Fatal(err)
	}
	l.Stop()
	if written-atStop < 100 {
		t.Fatalf("the primary wrote only %d transactions during the outage: the test shows nothing", written-atStop)
	}
	waitReplicaAt(t, p, r, 90*time.Second)
	sameAsPrimary(t, p, r)
	if n := len(replStarts.FindAllString(readLog(t, r), -1)); n != connects {
		t.Errorf("the replica connected %d times during the outage and after; it should have stayed connected", n-connects)
	}
	eventually(t, 10*time.Second, "serve's /readyz to answer 200 again", func() bool {
		code, _ := httpGet(web, "/readyz")
		return code == 200
	})
	if code := sv.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("serve: exit %d\n%s", code, sv.log)
	}
	if code := d.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, d.log)
	}
	t.Logf("store away %s: %d transactions written meanwhile reached the replica after it came back", outage, written-atStop)
}

// readLog is a server's error log.
func readLog(t testing.TB, m *harness.MariaDB) string {
	t.Helper()
	b, err := os.ReadFile(m.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
