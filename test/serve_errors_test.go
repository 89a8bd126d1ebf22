package test

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// Every start position binvault cannot serve is refused the way a primary
// refuses it: the replica's IO thread stops with error 1236 and a message
// that names the replica's GTIDs and what binvault holds, and it does not
// retry. One primary and binvault (started on a primary that already had
// transactions), and five replicas:
//   - an empty replica: its position is before binvault started;
//   - the same replica moved into history a prune removed;
//   - the same replica moved ahead of the primary;
//   - a replica with an errant transaction of its own in the primary's
//     domain, at a sequence number the primary used for another one;
//   - two replicas with one server_id: binvault disconnects the older
//     with ER_SLAVE_SAME_ID (4052), as a MariaDB primary does;
//   - a replica with the primary's server_id: the replica refuses itself.
func TestServeRefusesPositionsItCannotServe(t *testing.T) {
	const twinID = 7101 // outside the harness's ids (101 on)
	s := newServedSetupWith(t,
		"retention:\n  keep_last: 1\n  keep_within: 0s\n")
	p := s.primary
	s.sourceAsRoot(t) // for binvault backup
	rs := startServers(t,
		serverSpec{"empty", nativeOpts("optimistic")},
		serverSpec{"same-as-primary", harness.MariaDBOptions{ServerID: p.ServerID, Extra: nativeOpts("conservative").Extra}},
		serverSpec{"errant", harness.MariaDBOptions{ServerID: twinID, Extra: nativeOpts("conservative").Extra}},
		serverSpec{"twin", harness.MariaDBOptions{ServerID: twinID, Extra: nativeOpts("optimistic").Extra}},
	)
	empty, same, errant, twin := rs[0], rs[1], rs[2], rs[3]

	// The primary has history before binvault starts.
	prepareLoadSchema(t, p)
	startPos := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	d := startDaemon(t, s.env, "--config", s.cfg)
	s.waitConnected(t, d)
	// Seeded replicas: the same schema, at the position binvault starts.
	for _, r := range []*harness.MariaDB{errant, twin} {
		prepareLoadSchema(t, r)
		r.Exec(t, fmt.Sprintf("RESET MASTER; SET GLOBAL gtid_slave_pos = '%s'", startPos))
	}

	// An empty replica: what it lacks was never archived.
	s.replicate(t, empty, "slave_pos")
	code, msg := waitIOStopped(t, empty, 20*time.Second)
	wantIOError(t, "a position before binvault started", code, msg, "1236",
		`the replica's position "" is not in the history binvault holds`,
		fmt.Sprintf(`binvault holds the history from %q`, startPos), "rebuild the replica")

	// A replica with the primary's server_id refuses to replicate itself
	// (it reads binvault's server_id, which is the primary's).
	s.replicate(t, same, "slave_pos")
	code, msg = waitIOStopped(t, same, 20*time.Second)
	wantIOError(t, "the primary's server_id", code, msg, "1593", "master and slave have equal", "server ids")

	// History under load, with two backups; keep_last 1 prunes the older
	// and the segments before the newer one's position.
	l := startLoad(t, p, 2, true)
	defer func() { l.Stop() }()
	s.replicate(t, errant, "slave_pos")
	time.Sleep(700 * time.Millisecond)
	early := p.QueryString(t, "SELECT @@gtid_binlog_pos") // pruned below
	time.Sleep(700 * time.Millisecond)
	backupNow(t, s)

	// Two replicas with one server_id: the newer registration wins and
	// the older is disconnected with ER_SLAVE_SAME_ID.
	s.replicate(t, twin, "slave_pos")
	// What a MariaDB 10.11 replica does with ER_SLAVE_SAME_ID: it logs
	// it, keeps no Last_IO_Error and reconnects (MASTER_CONNECT_RETRY),
	// disconnecting the other in turn, as with a MariaDB primary, whose
	// kill_zombie_dump_threads does the same.
	eventually(t, 20*time.Second, "the older replica of a server_id to be disconnected with 4052", func() bool {
		b, err := os.ReadFile(errant.LogFile)
		return err == nil && strings.Contains(string(b), "A slave with the same server_uuid/server_id as this slave has connected to the master (server_errno=4052)")
	})
	if !strings.Contains(d.log.String(), "a replica registered with the server_id of a connected one") {
		t.Errorf("binvault's log does not report the duplicate server_id:\n%s", tailLog(d))
	}
	twin.Exec(t, "STOP SLAVE")

	time.Sleep(time.Second)
	backupNow(t, s)
	time.Sleep(500 * time.Millisecond)
	l.Stop()
	s.waitArchived(t, 30*time.Second)
	waitReplicaAt(t, p, errant, 60*time.Second)
	sameAsPrimary(t, p, errant)

	rep, r := runPrune(t, s.env, s.cfg)
	if len(rep.DeletedSegments) == 0 || rep.SegmentsKept == nil {
		t.Fatalf("the prune deleted no segment: the test shows nothing: %s", r)
	}
	coverage := archiveSegments(t, s.archiveSetup).Coverage
	if !strings.Contains(coverage.Start.GTIDSet, "-") || gtidSeq(coverage.Start.GTIDSet) <= gtidSeq(early) {
		t.Fatalf("after the prune the archive starts at %q, not after %q", coverage.Start.GTIDSet, early)
	}

	// A position the prune removed.
	empty.Exec(t, fmt.Sprintf("STOP SLAVE; SET GLOBAL gtid_slave_pos = '%s'; START SLAVE", early))
	code, msg = waitIOStopped(t, empty, 20*time.Second)
	wantIOError(t, "a pruned position", code, msg, "1236",
		fmt.Sprintf(`the replica's position %q is not in the history binvault holds`, early),
		fmt.Sprintf(`binvault holds the history from %q (segment %d)`, coverage.Start.GTIDSet, rep.SegmentsKept.First))

	// A position ahead of everything the primary wrote.
	end := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	ahead := fmt.Sprintf("0-%d-%d", p.ServerID, gtidSeq(end)+100)
	empty.Exec(t, fmt.Sprintf("STOP SLAVE; SET GLOBAL gtid_slave_pos = '%s'; START SLAVE", ahead))
	code, msg = waitIOStopped(t, empty, 20*time.Second)
	wantIOError(t, "a position ahead of the primary", code, msg, "1236",
		fmt.Sprintf("holds GTID %s, which binvault does not have", ahead), fmt.Sprintf("its history ends at %q", end))

	// An errant transaction: the replica writes in the primary's domain
	// while stopped, the primary writes on, and the replica reconnects
	// with its own GTIDs (MASTER_USE_GTID=current_pos). Its GTID takes a
	// sequence number the primary gave to another transaction.
	errant.Exec(t, "STOP SLAVE")
	errant.Exec(t, "INSERT INTO app.counters VALUES ('errant', 1)")
	own := errant.QueryString(t, "SELECT @@gtid_binlog_pos")
	for i := 0; i < 3; i++ {
		p.Exec(t, "INSERT INTO app.counters VALUES ('after-errant', 1) ON DUPLICATE KEY UPDATE n = n + 1")
	}
	s.waitArchived(t, 30*time.Second)
	errant.Exec(t, "CHANGE MASTER TO MASTER_USE_GTID=current_pos")
	errant.Exec(t, "START SLAVE")
	code, msg = waitIOStopped(t, errant, 20*time.Second)
	wantIOError(t, "an errant transaction", code, msg, "1236", own, "errant")
	if got := errant.QueryString(t, "SELECT COUNT(*) FROM app.counters WHERE name = 'after-errant'"); got != "0" {
		t.Errorf("the errant replica was sent the primary's transactions after its own: it diverged silently")
	}

	// Each refusal is final: the replica does not retry (a second later
	// its IO thread is still stopped with the same error).
	time.Sleep(1500 * time.Millisecond)
	for _, r := range []*harness.MariaDB{empty, same, errant} {
		if st := showSlave(t, r); st["Slave_IO_Running"] != "No" {
			t.Errorf("%s: IO thread %s after a refusal", r.Name, st["Slave_IO_Running"])
		}
	}
	if code := d.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, d.log)
	}
}

// wantIOError fails unless the replica stopped with code and a message
// holding every part.
func wantIOError(t *testing.T, what, code, msg, wantCode string, parts ...string) {
	t.Helper()
	ok := code == wantCode
	for _, p := range parts {
		ok = ok && strings.Contains(msg, p)
	}
	if !ok {
		t.Errorf("%s: want error %s with %q; the replica shows %s: %s", what, wantCode, parts, code, msg)
		return
	}
	t.Logf("%s: %s: %s", what, code, msg)
}

// backupNow takes a backup with `binvault backup`. A backup that takes
// over 30 s leaves the primary's process list in the failure.
func backupNow(t *testing.T, s *servedSetup) string {
	t.Helper()
	var plist atomic.Value
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			if db, err := s.primary.Open(""); err == nil {
				var lines []string
				if rows, err := db.Query("SELECT CONCAT_WS(' | ', ID, USER, COMMAND, TIME, STATE, LEFT(INFO, 120)) FROM information_schema.PROCESSLIST"); err == nil {
					for rows.Next() {
						var l string
						rows.Scan(&l)
						lines = append(lines, l)
					}
					rows.Close()
				}
				db.Close()
				plist.Store(strings.Join(lines, "\n"))
			}
		}
	}()
	r := binvaultWithin(t, 90*time.Second, s.env, "backup", "--config", s.cfg)
	close(done)
	if r.code != 0 {
		t.Fatalf("backup: %s\nthe primary's processes after 30 s:\n%v", r, plist.Load())
	}
	return strings.TrimSpace(r.stdout)
}
