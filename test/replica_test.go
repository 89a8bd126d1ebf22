package test

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// replicaSetup adds a replica (read_only, binlog on) to an archive setup.
type replicaSetup struct {
	*archiveSetup
	replica *harness.MariaDB
}

func startReplica(t *testing.T) *harness.MariaDB {
	t.Helper()
	r := harness.StartMariaDB(t, "replica", harness.MariaDBOptions{Extra: []string{"--read-only=ON"}})
	r.Exec(t, "SET sql_log_bin=0; CREATE USER applier@'127.0.0.1' IDENTIFIED BY 'applier-pw'; GRANT ALL ON *.* TO applier@'127.0.0.1'")
	return r
}

func newReplicaSetup(t *testing.T, flush string, replicaExtra ...string) *replicaSetup {
	t.Helper()
	r := startReplica(t)
	extra := append([]string{"archive:\n  segment_max_bytes: 1MiB\n  flush_interval: " + flush,
		"replica:\n  dsn: mysql://applier:applier-pw@" + r.Addr()}, replicaExtra...)
	a := newArchiveSetupWith(t, extra...)
	return &replicaSetup{archiveSetup: a, replica: r}
}

// checksums returns CHECKSUM TABLE for every user table.
func checksums(t testing.TB, m *harness.MariaDB) map[string]string {
	t.Helper()
	db := m.DB(t)
	tables := harness.Strings(t, db, `SELECT CONCAT('`+"`"+`', TABLE_SCHEMA, '`+"`.`"+`', TABLE_NAME, '`+"`"+`') FROM information_schema.TABLES
		WHERE TABLE_SCHEMA NOT IN ('mysql','sys','information_schema','performance_schema') AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1`)
	out := map[string]string{}
	for _, tb := range tables {
		var name, sum string
		if err := db.QueryRow("CHECKSUM TABLE "+tb).Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		out[tb] = sum
	}
	return out
}

func sameChecksums(t testing.TB, primary, replica *harness.MariaDB) {
	t.Helper()
	p, r := checksums(t, primary), checksums(t, replica)
	if len(p) == 0 {
		t.Fatal("no tables on the primary")
	}
	var diff []string
	for tb, sum := range p {
		if r[tb] != sum {
			diff = append(diff, fmt.Sprintf("%s: primary %s replica %q", tb, sum, r[tb]))
		}
	}
	for tb := range r {
		if _, ok := p[tb]; !ok {
			diff = append(diff, tb+": only on the replica")
		}
	}
	sort.Strings(diff)
	if len(diff) > 0 {
		t.Fatalf("%d tables differ:\n%s", len(diff), strings.Join(diff, "\n"))
	}
}

func waitReplicaCaughtUp(t testing.TB, p, r *harness.MariaDB, timeout time.Duration, d *daemon) {
	t.Helper()
	want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	deadline := time.Now().Add(timeout)
	for {
		got := r.QueryString(t, "SELECT @@gtid_binlog_pos")
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("the replica is at %q after %v, the primary at %q; daemon log:\n%s", got, timeout, want, tailLog(d))
			t.Fatalf("GTIDs in the replica's binlog vs the primary's: %s", gtidDiff(p.BinlogGTIDs(t), r.BinlogGTIDs(t)))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tailLog(d *daemon) string {
	if d == nil {
		return ""
	}
	lines := strings.Split(d.log.String(), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

func TestReplicaFollowsThePrimary(t *testing.T) {
	rs := newReplicaSetup(t, "300ms")
	d := startDaemon(t, rs.env, "--config", rs.cfg)
	eventually(t, 20*time.Second, "the daemon to connect", func() bool {
		if d.exited() {
			t.Fatalf("daemon exited: %s", d.log)
		}
		st := rs.state(t)
		return st != nil && st["source"].(map[string]any)["connected"] == true
	})
	prepareLoadSchema(t, rs.primary)
	l := startLoad(t, rs.primary, 3, true)
	time.Sleep(5 * time.Second)
	l.Stop()
	waitReplicaCaughtUp(t, rs.primary, rs.replica, 30*time.Second, d)
	sameChecksums(t, rs.primary, rs.replica)
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, d.log)
	}
	t.Logf("%d load transactions replicated", l.commits.Load())
}

func TestReplicaExactlyOnceAcrossKill9OfDaemonAndReplica(t *testing.T) {
	rs := newReplicaSetup(t, "300ms")
	d := startDaemon(t, rs.env, "--config", rs.cfg)
	eventually(t, 20*time.Second, "the daemon to connect", func() bool {
		st := rs.state(t)
		return st != nil && st["source"].(map[string]any)["connected"] == true
	})
	prepareLoadSchema(t, rs.primary)
	l := startLoad(t, rs.primary, 3, true)
	defer l.Stop()
	replicaKills := 0
	for i := 0; i < 10; i++ {
		time.Sleep(time.Duration(400+rand.IntN(1200)) * time.Millisecond)
		d.kill()
		if i == 3 || i == 7 {
			// The replica crashes too, while the daemon is down or, next
			// time, while it is applying.
			if err := rs.replica.Kill(); err != nil {
				t.Fatal(err)
			}
			replicaKills++
			if err := rs.replica.Start(); err != nil {
				t.Fatal(err)
			}
		}
		d = startDaemon(t, rs.env, "--config", rs.cfg)
		if i == 5 {
			time.Sleep(700 * time.Millisecond)
			if err := rs.replica.Kill(); err != nil {
				t.Fatal(err)
			}
			replicaKills++
			time.Sleep(300 * time.Millisecond)
			if err := rs.replica.Start(); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(time.Second)
	l.Stop()
	waitReplicaCaughtUp(t, rs.primary, rs.replica, 90*time.Second, d)
	sameChecksums(t, rs.primary, rs.replica)
	rs.waitArchived(t, 30*time.Second)
	if code := d.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d: %s", code, tailLog(d))
	}
	sameHistory(t, rs.primary.BinlogGTIDs(t), archiveGTIDs(t, rs.store), 0)
	t.Logf("%d load transactions, 10 daemon kills, %d replica kills: replica and archive exact", l.commits.Load(), replicaKills)
}

// gtidDiff describes how got's GTID sequence departs from want's.
func gtidDiff(want, got []string) string {
	missing, doubled := compareGTIDs(want, got)
	// Missing ones before the replica's newest GTID are holes, not lag.
	last := ""
	if len(got) > 0 {
		last = got[len(got)-1]
	}
	var holes []string
	for _, m := range missing {
		if last != "" && seqOf(m) < seqOf(last) {
			holes = append(holes, m)
		}
	}
	return fmt.Sprintf("primary %d, replica %d; missing on the replica %d, of which holes %d %v; doubled %v", len(want), len(got), len(missing), len(holes), holes, doubled)
}

func seqOf(gtid string) int64 {
	var d, s, n int64
	fmt.Sscanf(gtid, "%d-%d-%d", &d, &s, &n)
	return n
}
