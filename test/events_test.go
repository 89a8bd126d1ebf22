package test

import (
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// eventStatus is information_schema.EVENTS.STATUS of db.name on m ("" when
// there is no such event).
func eventStatus(t testing.TB, m *harness.MariaDB, db, name string) string {
	t.Helper()
	var s string
	m.DB(t).QueryRow("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? AND EVENT_NAME = ?", db, name).Scan(&s)
	return s
}

// ticks lists app.ticks on m, one line per row.
func ticks(t testing.TB, m *harness.MariaDB) []string {
	t.Helper()
	return harness.Strings(t, m.DB(t), "SELECT CONCAT(id, ' ', src, ' ', at) FROM app.ticks ORDER BY id")
}

// Events replicated from the primary must not run on the replica: the
// primary's event writes, and its writes replicate. Native replication
// creates them SLAVESIDE_DISABLED; so must binvault, also for an event
// that reached the replica otherwise (loaded from a backup).
func TestReplicaKeepsEventsFromThePrimaryDisabled(t *testing.T) {
	e := newReplicaEnv(t, replicaOpts{})
	p, r := e.primary, e.replica
	// An enabled event on both, as a backup loaded into the replica leaves
	// it; the schedulers are off until binvault has had its chance.
	seed := []string{"CREATE DATABASE ops", "CREATE TABLE ops.ticks (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6))",
		"CREATE EVENT ops.seeded ON SCHEDULE EVERY 1 SECOND DO INSERT INTO ops.ticks VALUES (NULL, NOW(6))"}
	execOn(t, p, seed...)
	execOn(t, r, append([]string{"SET sql_log_bin=0"}, seed...)...)
	d := e.startStreaming(t)
	eventually(t, 20*time.Second, "the applier to disable the loaded event", func() bool {
		return eventStatus(t, r, "ops", "seeded") == "SLAVESIDE_DISABLED"
	})
	p.Exec(t, "SET GLOBAL event_scheduler=ON")
	r.Exec(t, "SET GLOBAL event_scheduler=ON")

	execOn(t, p, "CREATE DATABASE app",
		"CREATE TABLE app.ticks (id INT AUTO_INCREMENT PRIMARY KEY, src VARCHAR(20), at DATETIME(6))",
		"CREATE DEFINER=CURRENT_USER EVENT app.tick ON SCHEDULE EVERY 1 SECOND DO INSERT INTO app.ticks VALUES (NULL, 'tick', NOW(6))",
		// Fires at once on the primary and drops itself (logged as DROP EVENT).
		"CREATE EVENT app.once ON SCHEDULE AT CURRENT_TIMESTAMP DO INSERT INTO app.ticks VALUES (NULL, 'once', NOW(6))",
		"CREATE EVENT app.later ON SCHEDULE EVERY 1 HOUR STARTS CURRENT_TIMESTAMP + INTERVAL 1 HOUR DISABLE COMMENT 'enable later' DO INSERT INTO app.ticks VALUES (NULL, 'later', NOW(6))")
	time.Sleep(2500 * time.Millisecond)
	execOn(t, p, "ALTER EVENT app.later ON SCHEDULE EVERY 1 SECOND ENABLE")
	time.Sleep(2500 * time.Millisecond)
	// Every event still, so that the primary's position stays put while the
	// replica catches up (a run already started finishes meanwhile).
	execOn(t, p, "ALTER EVENT app.tick DISABLE", "ALTER EVENT app.later DISABLE", "ALTER EVENT ops.seeded DISABLE")
	time.Sleep(500 * time.Millisecond)
	p.Exec(t, "INSERT INTO app.ticks VALUES (NULL, 'end', NOW(6))")

	waitReplicaCaughtUp(t, p, r, 30*time.Second, d)
	sameChecksums(t, p, r)
	got := ticks(t, p)
	for _, src := range []string{" tick ", " once ", " later "} {
		if !strings.Contains(strings.Join(got, "\n"), src) {
			t.Errorf("the primary's event%s never ran: %v", src, got)
		}
	}
	for _, ev := range []string{"tick", "later"} {
		if s := eventStatus(t, r, "app", ev); s != "SLAVESIDE_DISABLED" {
			t.Errorf("event app.%s on the replica: status %q, want SLAVESIDE_DISABLED", ev, s)
		}
	}
	if s := eventStatus(t, r, "app", "once"); s != "" {
		t.Errorf("app.once dropped itself on the primary, yet the replica has it (%s)", s)
	}
	if n := p.QueryString(t, "SELECT COUNT(*) FROM ops.ticks"); n == "0" {
		t.Errorf("the primary's event ops.seeded never ran")
	}
	own := "-" + r.QueryString(t, "SELECT @@server_id") + "-"
	for _, g := range r.BinlogGTIDs(t) {
		if strings.Contains(g, own) {
			t.Errorf("the replica logged a transaction of its own: %s (an event ran there?)", g)
			break
		}
	}
}

// A restore must not let the target's events fire while it is rebuilt: a
// row an event writes between the load and the replay takes an id the
// replay then needs.
func TestRestorePausesTheTargetsEvents(t *testing.T) {
	rs := newRestoreSetup(t)
	p := rs.primary
	execOn(t, p, "SET GLOBAL event_scheduler=ON", "CREATE DATABASE app",
		"CREATE TABLE app.ticks (id INT AUTO_INCREMENT PRIMARY KEY, src VARCHAR(20), at DATETIME(6))",
		"CREATE EVENT app.tick ON SCHEDULE EVERY 1 SECOND DO INSERT INTO app.ticks VALUES (NULL, 'tick', NOW(6))")
	time.Sleep(1500 * time.Millisecond)
	if r := binvault(t, rs.env, "backup", "--config", rs.cfg); r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	// Enough transactions for the replay to take seconds, while the event
	// (enabled in the backup) would fire on the target every second.
	execOn(t, p, "SET GLOBAL innodb_flush_log_at_trx_commit=2", "CREATE TABLE app.filler (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(100))",
		"BEGIN NOT ATOMIC DECLARE i INT DEFAULT 0; WHILE i < 30000 DO INSERT INTO app.filler VALUES (NULL, REPEAT('x', 100)); SET i = i + 1; END WHILE; END")
	time.Sleep(1500 * time.Millisecond)
	// Still now, so that the archive can catch up with a fixed position;
	// the backup holds the event enabled, and so will the target's load.
	p.Exec(t, "ALTER EVENT app.tick DISABLE")
	time.Sleep(500 * time.Millisecond) // a run already started finishes
	p.Exec(t, "INSERT INTO app.ticks VALUES (NULL, 'mark', NOW(6))")
	pos := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	want := ticks(t, p)
	// 30,000 transactions, each fsync'd in the spool: on a busy machine
	// that takes more than half a minute.
	rs.waitArchived(t, 90*time.Second)

	target := harness.StartMariaDB(t, "target", harness.MariaDBOptions{})
	target.Exec(t, "SET GLOBAL event_scheduler=ON")
	r := binvault(t, rs.env, "restore", "--config", rs.cfg, "--target", target.DSN("", ""), "--to-gtid", pos)
	if r.code != 0 {
		t.Fatalf("restore: %s", r)
	}
	if !strings.Contains(r.stdout, "events    scheduler paused during the restore") {
		t.Errorf("the summary does not say the scheduler was paused:\n%s", r.stdout)
	}
	if got := ticks(t, target); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("restored rows differ:\n got %v\nwant %v", got, want)
	}
	if s := target.QueryString(t, "SELECT @@event_scheduler"); s != "ON" {
		t.Errorf("the target's event scheduler is %s after the restore, want ON again", s)
	}
	if s := eventStatus(t, target, "app", "tick"); s != "DISABLED" {
		t.Errorf("restored event app.tick is %q, want DISABLED as on the primary", s)
	}
}

// Without BINLOG ADMIN binvault cannot disable a loaded event unlogged:
// with the replica's scheduler on it must refuse to apply, naming the
// event and the fix, rather than let the event write twice.
func TestReplicaRefusesAnEnabledEventItCannotDisable(t *testing.T) {
	e := newReplicaEnv(t, replicaOpts{})
	p, r := e.primary, e.replica
	seed := []string{"CREATE DATABASE ops", "CREATE TABLE ops.ticks (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6))",
		"CREATE EVENT ops.seeded ON SCHEDULE EVERY 1 HOUR STARTS CURRENT_TIMESTAMP + INTERVAL 1 HOUR DO INSERT INTO ops.ticks VALUES (NULL, NOW(6))"}
	execOn(t, p, seed...)
	execOn(t, r, append([]string{"SET sql_log_bin=0"}, seed...)...)
	execOn(t, r, "SET sql_log_bin=0",
		"REVOKE ALL PRIVILEGES, GRANT OPTION FROM applier@'127.0.0.1'",
		"GRANT BINLOG REPLAY, READ ONLY ADMIN, SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, EVENT, PROCESS ON *.* TO applier@'127.0.0.1'",
		"SET GLOBAL event_scheduler=ON")
	d := e.startStreaming(t)
	eventually(t, 20*time.Second, "the applier to stop", func() bool {
		return strings.Contains(d.log.String(), "replica applier stopped")
	})
	log := d.log.String()
	for _, want := range []string{"event `ops`.`seeded` is enabled and would run on the replica", "GRANT BINLOG ADMIN"} {
		if !strings.Contains(log, want) {
			t.Errorf("the applier's stop does not say %q:\n%s", want, tailLog(d))
		}
	}
	if s := eventStatus(t, r, "ops", "seeded"); s != "ENABLED" {
		t.Errorf("event status %q: binvault may not change it without BINLOG ADMIN", s)
	}
	// Archiving goes on.
	p.Exec(t, "INSERT INTO ops.ticks VALUES (NULL, NOW(6))")
	e.waitArchived(t, 30*time.Second)
}
