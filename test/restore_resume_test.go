package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// A DDL commits on its own, so its checkpoint can only follow it: a restore
// that stops between the two must still resume, neither running the DDL
// twice (CREATE TABLE: "already exists") nor losing what follows. The stop
// is made exact by a trigger that refuses the checkpoint recording the
// DDL, as a crash at that instant would leave the target.
func TestRestoreResumesAfterAStopBetweenADDLAndItsCheckpoint(t *testing.T) {
	rs := newRestoreSetup(t)
	p := rs.primary
	p.Exec(t, "CREATE DATABASE app; CREATE TABLE app.a (id INT PRIMARY KEY, v INT)")
	if r := binvault(t, rs.env, "backup", "--config", rs.cfg); r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	for i := 0; i < 20; i++ {
		p.Exec(t, fmt.Sprintf("INSERT INTO app.a VALUES (%d, %d)", i, i))
	}
	p.Exec(t, "CREATE TABLE app.b (id INT PRIMARY KEY, v INT)")
	ddlPos := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	for i := 0; i < 20; i++ {
		p.Exec(t, fmt.Sprintf("INSERT INTO app.b VALUES (%d, %d); UPDATE app.a SET v = v + 1 WHERE id = %d", i, i, i))
	}
	p.Exec(t, "ALTER TABLE app.b ADD COLUMN c INT DEFAULT 7")
	p.Exec(t, "INSERT INTO app.b VALUES (100, 100, 100)")
	want, wantPos := digestOf(t, p), p.QueryString(t, "SELECT @@gtid_binlog_pos")
	rs.waitArchived(t, 30*time.Second)

	target := harness.StartMariaDB(t, "target", harness.MariaDBOptions{})
	execOn(t, target, "SET sql_log_bin=0", "CREATE DATABASE binvault_restore",
		"CREATE TABLE binvault_restore.state (id INT PRIMARY KEY, backup_id VARCHAR(100), target VARCHAR(200), position TEXT, updated DATETIME(6), ddl_in_binlog BOOL NOT NULL DEFAULT 0, phase VARCHAR(16) NOT NULL) ENGINE=InnoDB",
		"CREATE TABLE binvault_restore.loaded (object VARCHAR(512) PRIMARY KEY) ENGINE=InnoDB",
		fmt.Sprintf("CREATE TRIGGER binvault_restore.crash BEFORE INSERT ON binvault_restore.state FOR EACH ROW IF NEW.position = '%s' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'simulated crash after the DDL'; END IF", ddlPos))
	args := []string{"restore", "--config", rs.cfg, "--target", target.DSN("", ""), "--to-gtid", wantPos}
	r := binvault(t, rs.env, append(args, "--force")...)
	if r.code == 0 || !strings.Contains(r.stderr, "simulated crash") {
		t.Fatalf("the first run should stop at the DDL's checkpoint: %s", r)
	}
	if got := target.QueryString(t, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 'b'"); got != "1" {
		t.Fatalf("the DDL did not run before the stop (app.b count %s): the test does not make the case it means to", got)
	}
	if got := target.QueryString(t, "SELECT position FROM binvault_restore.state"); got == ddlPos {
		t.Fatalf("the checkpoint records the DDL (%s): the stop came too late", got)
	}
	target.Exec(t, "DROP TRIGGER binvault_restore.crash")

	r = binvault(t, rs.env, append(args, "--resume")...)
	if r.code != 0 {
		t.Fatalf("resume: %s", r)
	}
	t.Logf("resume: %s", r)
	sameDigests(t, "after --resume", want, digestOf(t, target))
	if got := target.QueryString(t, "SELECT @@gtid_binlog_pos"); got != wantPos {
		t.Fatalf("target at GTID %q after the resume, the primary at %q", got, wantPos)
	}
	if got := target.QueryString(t, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'binvault_restore'"); got != "0" {
		t.Errorf("the state database is left after a finished restore")
	}
}

// A restore interrupted while loading the backup resumes the load: the
// data objects it committed (recorded in the same transaction) are not
// loaded again, the tables it created are kept, and the replay follows.
func TestRestoreResumesAnInterruptedLoad(t *testing.T) {
	rs := newRestoreSetup(t)
	p := rs.primary
	p.Exec(t, "CREATE DATABASE app")
	for i := 0; i < 4; i++ {
		p.Exec(t, fmt.Sprintf("CREATE TABLE app.t%d (id INT PRIMARY KEY, v VARCHAR(100)); INSERT INTO app.t%d SELECT seq, REPEAT('v', seq %% 100) FROM app.seq_1_to_%d", i, i, 500*(i+1)))
	}
	p.Exec(t, "CREATE VIEW app.v AS SELECT COUNT(*) AS n FROM app.t0")
	p.Exec(t, "CREATE TRIGGER app.bump BEFORE INSERT ON app.t1 FOR EACH ROW SET NEW.v = CONCAT('trg-', NEW.v)")
	if r := binvault(t, rs.env, "backup", "--config", rs.cfg); r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	p.Exec(t, "INSERT INTO app.t1 VALUES (100000, 'after')")
	p.Exec(t, "ALTER TABLE app.t2 ADD COLUMN c INT DEFAULT 3")
	p.Exec(t, "UPDATE app.t3 SET v = 'changed' WHERE id < 50")
	want, wantPos := digestOf(t, p), p.QueryString(t, "SELECT @@gtid_binlog_pos")
	rs.waitArchived(t, 30*time.Second)

	target := harness.StartMariaDB(t, "target", harness.MariaDBOptions{})
	// The third data object loaded fails, as if the restore died there.
	execOn(t, target, "SET sql_log_bin=0", "CREATE DATABASE binvault_restore",
		"CREATE TABLE binvault_restore.loaded (object VARCHAR(512) PRIMARY KEY) ENGINE=InnoDB",
		"CREATE TRIGGER binvault_restore.crash BEFORE INSERT ON binvault_restore.loaded FOR EACH ROW BEGIN SET @loaded = IFNULL(@loaded, 0) + 1; IF @loaded > 2 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'simulated crash during the load'; END IF; END")
	args := []string{"restore", "--config", rs.cfg, "--target", target.DSN("", ""), "--to-gtid", wantPos, "--parallel", "1"}
	r := binvault(t, rs.env, args...)
	if r.code == 0 || !strings.Contains(r.stderr, "simulated crash") {
		t.Fatalf("the first run should stop during the load: %s", r)
	}
	if n := target.QueryString(t, "SELECT COUNT(*) FROM binvault_restore.loaded"); n != "2" {
		t.Fatalf("%s objects recorded as loaded, want the 2 committed before the stop", n)
	}
	r = binvault(t, rs.env, args...)
	if r.code != 2 || !strings.Contains(r.stderr, "stopped while loading the backup") || !strings.Contains(r.stderr, "--resume") {
		t.Fatalf("a rerun should say the load stopped and how to resume: %s", r)
	}
	target.Exec(t, "DROP TRIGGER binvault_restore.crash")

	r = binvault(t, rs.env, append(args, "--resume")...)
	if r.code != 0 {
		t.Fatalf("resume: %s", r)
	}
	if !strings.Contains(r.stderr, `"objects_loaded_before":2`) {
		t.Errorf("the resumed load does not say it skipped the 2 loaded objects:\n%s", r.stderr)
	}
	sameDigests(t, "after resuming the load", want, digestOf(t, target))
	if got := target.QueryString(t, "SELECT @@gtid_binlog_pos"); got != wantPos {
		t.Fatalf("target at GTID %q after the resume, the primary at %q", got, wantPos)
	}
	if got := target.QueryString(t, "SELECT n FROM app.v"); got != "500" {
		t.Errorf("view app.v says %s on the target, want 500", got)
	}
	if got := target.QueryString(t, "SELECT v FROM app.t1 WHERE id = 100000"); got != "trg-after" {
		t.Errorf("row inserted after the backup: %q, want the primary's trigger result trg-after", got)
	}
}
