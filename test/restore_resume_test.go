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
		"CREATE TABLE binvault_restore.state (id INT PRIMARY KEY, backup_id VARCHAR(100), target VARCHAR(200), position TEXT, updated DATETIME(6), ddl_in_binlog BOOL NOT NULL DEFAULT 0) ENGINE=InnoDB",
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
