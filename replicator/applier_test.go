package replicator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/metrics"
	"github.com/binvault/binvault/storage/file"
	"github.com/binvault/binvault/test/harness"
)

// The regression tests here each reproduce one pitfall of replaying with
// BINLOG statements (table maps split from their rows, the k-th statement
// of a packet failing, GTIDs across domains, annotations, a restart while
// a packet runs, a crash during DDL); each caused silent data loss or
// forged GTIDs when ignored.

type pipeline struct {
	primary, replica *harness.MariaDB
	spool            *Spool
	opts             ApplierOptions
	cancelSource     context.CancelFunc
	sourceDone       chan error
}

// newPipeline streams the primary into a spool (no archiver: the spool
// keeps everything) for appliers to read.
func newPipeline(t *testing.T, replicaExtra ...string) *pipeline {
	t.Helper()
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	r := harness.StartMariaDB(t, "replica", harness.MariaDBOptions{Extra: replicaExtra})
	o := sourceOpts(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	info, src, err := Preflight(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sp, err := OpenSpool(dir, info.Flavor, SpoolLimits{SegmentMaxBytes: 256 << 10, FlushInterval: 200 * time.Millisecond}, o.Log)
	if err != nil {
		t.Fatal(err)
	}
	sp.SetSource(src)
	if err := sp.Start(binlog.Position{GTIDSet: info.GTIDPosition}, 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- NewSource(o, info, sp).Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; sp.Close() })
	rd, err := dbconn.Parse(r.DSN("", ""))
	if err != nil {
		t.Fatal(err)
	}
	return &pipeline{primary: p, replica: r, spool: sp, cancelSource: cancel, sourceDone: done,
		opts: ApplierOptions{DSN: rd, AllowWritable: true, StateDir: dir, Metrics: metrics.New(), Log: o.Log}}
}

// apply runs an applier until the replica reaches the primary's position
// or the applier stops; it returns the applier's error.
func (pl *pipeline) apply(t *testing.T, o ApplierOptions, timeout time.Duration) error {
	t.Helper()
	st, _ := file.New(t.TempDir())
	a := NewApplier(o, "mariadb", pl.spool, st)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	want := pl.primary.QueryString(t, "SELECT @@gtid_binlog_pos")
	for {
		select {
		case err := <-done:
			return err
		case <-time.After(50 * time.Millisecond):
		}
		if err := a.Stopped(); err != nil {
			// It would try again later; the tests look at the refusal.
			cancel()
			<-done
			return err
		}
		if pl.replica.QueryString(t, "SELECT @@gtid_binlog_pos") == want {
			cancel()
			<-done
			return nil
		}
		if ctx.Err() != nil {
			<-done
			return fmt.Errorf("replica at %s, primary at %s after %v", pl.replica.QueryString(t, "SELECT @@gtid_binlog_pos"), want, timeout)
		}
	}
}

func tableChecksums(t *testing.T, m *harness.MariaDB) string {
	t.Helper()
	db := m.DB(t)
	tables := harness.Strings(t, db, `SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES
		WHERE TABLE_SCHEMA NOT IN ('mysql','sys','information_schema','performance_schema') ORDER BY 1`)
	var out []string
	for _, tb := range tables {
		var name string
		var sum sql.NullString
		if err := db.QueryRow("CHECKSUM TABLE "+tb).Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		out = append(out, tb+"="+sum.String)
	}
	return strings.Join(out, " ")
}

// Pitfall 3: rows sent in a BINLOG statement without their table map are
// skipped silently. A tiny batch size splits statements mid-way.
func TestApplyRepeatsTableMapsWhenAStatementIsSplit(t *testing.T) {
	pl := newPipeline(t)
	pl.primary.Exec(t, "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v VARCHAR(200)); CREATE TABLE d.u (id INT PRIMARY KEY, w INT)")
	var vals []string
	for i := 0; i < 2000; i++ {
		vals = append(vals, fmt.Sprintf("(%d, REPEAT('x', 150))", i))
	}
	// One statement of many rows events (about 8 KiB each), then a second table in the same transaction.
	pl.primary.Exec(t, "BEGIN; INSERT INTO d.t VALUES "+strings.Join(vals, ",")+"; INSERT INTO d.u VALUES (1, 1); UPDATE d.t SET v = 'y' WHERE id < 1500; COMMIT")
	o := pl.opts
	o.BatchBytes = 16 << 10 // chunks of about 8 KiB: every few rows events
	if err := pl.apply(t, o, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if p, r := tableChecksums(t, pl.primary), tableChecksums(t, pl.replica); p != r {
		t.Fatalf("checksums differ:\nprimary %s\nreplica %s", p, r)
	}
	if n := pl.replica.QueryString(t, "SELECT COUNT(*) FROM d.t WHERE v = 'y'"); n != "1500" {
		t.Fatalf("replica has %s updated rows, want 1500", n)
	}
}

// Pitfalls 2 and 7: an error in the k-th transaction of a packet. Exactly
// the transactions before it are committed, it and the ones after are not,
// and nothing is left half-open.
func TestApplyKnowsWhichTransactionsOfAPacketCommitted(t *testing.T) {
	pl := newPipeline(t)
	pl.primary.Exec(t, "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY)")
	if err := pl.apply(t, pl.opts, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// A row the 6th insert will collide with, written on the replica only.
	pl.replica.Exec(t, "SET sql_log_bin=0; INSERT INTO d.t VALUES (6)")
	for i := 1; i <= 10; i++ {
		pl.primary.Exec(t, fmt.Sprintf("INSERT INTO d.t VALUES (%d)", i))
	}
	before := pl.primary.QueryString(t, "SELECT @@gtid_binlog_pos")
	// Let the spool gather all ten before applying: one packet.
	time.Sleep(500 * time.Millisecond)
	o := pl.opts
	o.BatchTxns = 100
	err := pl.apply(t, o, 30*time.Second)
	var ae *ApplyError
	if !errors.As(err, &ae) {
		t.Fatalf("want an ApplyError, got %v", err)
	}
	seq := func(g string) int {
		var d, s, n int
		fmt.Sscanf(g, "%d-%d-%d", &d, &s, &n)
		return n
	}
	failed := seq(ae.GTID)
	if ae.Err.Code != 1062 || failed != seq(before)-4 {
		t.Fatalf("error %v for %s; want duplicate key (1062) in the 6th insert (seq %d)", ae.Err, ae.GTID, seq(before)-4)
	}
	pos := pl.replica.QueryString(t, "SELECT @@gtid_binlog_pos")
	if seq(pos) != failed-1 {
		t.Fatalf("replica at %s after the failure of %s: want exactly the transactions before it", pos, ae.GTID)
	}
	if n := pl.replica.QueryString(t, "SELECT COUNT(*) FROM d.t"); n != "6" { // 1-5 and the local 6
		t.Fatalf("replica holds %s rows, want 6", n)
	}
	// Fixed by hand, the applier goes on from there.
	pl.replica.Exec(t, "SET sql_log_bin=0; DELETE FROM d.t WHERE id = 6")
	if err := pl.apply(t, pl.opts, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if p, r := tableChecksums(t, pl.primary), tableChecksums(t, pl.replica); p != r {
		t.Fatalf("checksums differ after the retry:\nprimary %s\nreplica %s", p, r)
	}
}

// The same with packets in flight: one transaction per packet, four
// packets ahead. The packets sent after the refused one reach the server
// but their guards stop them: the replica holds exactly the transactions
// before the refusal, none after.
func TestApplyPipelinedStopsAtTheRefusedTransaction(t *testing.T) {
	pl := newPipeline(t)
	pl.primary.Exec(t, "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY)")
	if err := pl.apply(t, pl.opts, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// A DDL that will fail on the replica: a refused DDL leaves no
	// transaction open, so without the guard the packets behind it would
	// run (a refused row change leaves its transaction open, which happens
	// to stop them too).
	pl.replica.Exec(t, "SET sql_log_bin=0; CREATE TABLE d.x (local INT)")
	for i := 1; i <= 5; i++ {
		pl.primary.Exec(t, fmt.Sprintf("INSERT INTO d.t VALUES (%d)", i))
	}
	pl.primary.Exec(t, "CREATE TABLE d.x (id INT)")
	for i := 6; i <= 9; i++ {
		pl.primary.Exec(t, fmt.Sprintf("INSERT INTO d.t VALUES (%d)", i))
	}
	before := pl.primary.QueryString(t, "SELECT @@gtid_binlog_pos")
	time.Sleep(500 * time.Millisecond)
	o := pl.opts
	o.BatchTxns, o.InFlight = 1, 4
	err := pl.apply(t, o, 30*time.Second)
	var ae *ApplyError
	if !errors.As(err, &ae) || ae.Err.Code != 1050 {
		t.Fatalf("want the CREATE TABLE refused (1050), got %v", err)
	}
	seq := func(g string) int {
		var d, s, n int
		fmt.Sscanf(g, "%d-%d-%d", &d, &s, &n)
		return n
	}
	if failed := seq(ae.GTID); failed != seq(before)-4 {
		t.Fatalf("refused %s, want the CREATE TABLE (seq %d)", ae.GTID, seq(before)-4)
	}
	if pos := pl.replica.QueryString(t, "SELECT @@gtid_binlog_pos"); seq(pos) != seq(before)-5 {
		t.Fatalf("replica at %s: a packet sent after the refused one ran (want seq %d)", pos, seq(before)-5)
	}
	if got := pl.replica.QueryString(t, "SELECT GROUP_CONCAT(id ORDER BY id) FROM d.t"); got != "1,2,3,4,5" {
		t.Fatalf("replica holds rows %s, want 1..5", got)
	}
	pl.replica.Exec(t, "SET sql_log_bin=0; DROP TABLE d.x")
	if err := pl.apply(t, o, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if p, r := tableChecksums(t, pl.primary), tableChecksums(t, pl.replica); p != r {
		t.Fatalf("checksums differ after the retry:\nprimary %s\nreplica %s", p, r)
	}
}

// Pitfalls 4, 5, 6 and 9: each source transaction keeps its own GTID
// (domain, server, sequence) on the replica, across domains and servers;
// multi-statement transactions are not split into several GTIDs; and the
// replica's binlog does not log the base64 text as annotations.
func TestApplyPreservesGTIDsExactly(t *testing.T) {
	pl := newPipeline(t, "--binlog-annotate-row-events=ON")
	pl.primary.Exec(t, "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v INT)")
	pl.primary.Exec(t, "BEGIN; INSERT INTO d.t VALUES (1, 1); INSERT INTO d.t VALUES (2, 2); UPDATE d.t SET v = 3; COMMIT")
	pl.primary.Exec(t, "SET gtid_domain_id=7; INSERT INTO d.t VALUES (3, 3)")
	pl.primary.Exec(t, "SET gtid_domain_id=7, server_id=55; INSERT INTO d.t VALUES (4, 4)")
	pl.primary.Exec(t, "SET gtid_domain_id=0; CREATE TABLE d.u (x INT)")
	pl.primary.Exec(t, "BEGIN; INSERT INTO d.t VALUES (5, 5); INSERT INTO d.u VALUES (1); COMMIT")
	if err := pl.apply(t, pl.opts, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	p, r := pl.primary.BinlogGTIDs(t), pl.replica.BinlogGTIDs(t)
	if strings.Join(p, " ") != strings.Join(r, " ") {
		t.Fatalf("GTIDs differ:\nprimary %v\nreplica %v", p, r)
	}
	if pp, rp := pl.primary.QueryString(t, "SELECT @@gtid_binlog_pos"), pl.replica.QueryString(t, "SELECT @@gtid_binlog_pos"); pp != rp {
		t.Fatalf("positions differ: primary %s replica %s", pp, rp)
	}
	var annotations int
	db := pl.replica.DB(t)
	rows, err := db.Query("SHOW BINLOG EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var logName, typ, info string
		var pos, sid, end int64
		rows.Scan(&logName, &pos, &typ, &sid, &end, &info)
		if typ == "Annotate_rows" && strings.Contains(info, "BINLOG") {
			annotations++
		}
	}
	rows.Close()
	if annotations > 0 {
		t.Fatalf("the replica's binlog logged %d BINLOG statements as annotations", annotations)
	}
}

// Pitfall 8: a client that dies does not stop its packet. A restarted
// applier must stop the old connection before reading the position, or it
// would apply again what the old packet was still committing.
func TestApplyRestartsSafelyWhileAPacketRuns(t *testing.T) {
	pl := newPipeline(t)
	pl.primary.Exec(t, "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v LONGTEXT)")
	for i := 0; i < 300; i++ {
		pl.primary.Exec(t, fmt.Sprintf("INSERT INTO d.t VALUES (%d, REPEAT('z', 20000))", i))
	}
	time.Sleep(500 * time.Millisecond)
	st, _ := file.New(t.TempDir())
	o := pl.opts
	o.BatchTxns = 300
	o.BatchBytes = 64 << 20
	for i := 0; i < 5; i++ {
		// Abandon the applier mid-packet: its connection is closed under it.
		a := NewApplier(o, "mariadb", pl.spool, st)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		time.Sleep(time.Duration(30+20*i) * time.Millisecond)
		cancel()
		<-done
	}
	if err := pl.apply(t, o, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if p, r := tableChecksums(t, pl.primary), tableChecksums(t, pl.replica); p != r {
		t.Fatalf("checksums differ:\nprimary %s\nreplica %s", p, r)
	}
	p, r := pl.primary.BinlogGTIDs(t), pl.replica.BinlogGTIDs(t)
	sort.Strings(p)
	sort.Strings(r)
	if strings.Join(p, " ") != strings.Join(r, " ") {
		t.Fatalf("GTIDs differ: primary %d, replica %d", len(p), len(r))
	}
}

// A replica killed during a DDL: crash recovery either rolls the DDL back
// (the applier applies it again) or completes it and logs it under the
// replica's own server_id (the applier must count it as applied, not
// refuse the history, and not apply it twice). Either way the replica ends
// equal to the primary.
func TestApplyAfterTheReplicaCrashesDuringDDL(t *testing.T) {
	pl := newPipeline(t)
	pl.primary.Exec(t, "CREATE DATABASE d; CREATE TABLE d.big (id INT PRIMARY KEY, v VARCHAR(200), w INT)")
	for i := 0; i < 20; i++ {
		var vals []string
		for j := 0; j < 5000; j++ {
			vals = append(vals, fmt.Sprintf("(%d, REPEAT('x', 150), %d)", i*5000+j, j))
		}
		pl.primary.Exec(t, "INSERT INTO d.big VALUES "+strings.Join(vals, ","))
	}
	if err := pl.apply(t, pl.opts, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	pl.primary.Exec(t, "ALTER TABLE d.big ADD INDEX iv (v, w), FORCE")
	pl.primary.Exec(t, "INSERT INTO d.big VALUES (-1, 'after', 0)")
	st, _ := file.New(t.TempDir())
	a := NewApplier(pl.opts, "mariadb", pl.spool, st)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// Kill the replica while it runs the ALTER.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := pl.replica.QueryString(t, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'ALTER TABLE d.big%'")
		if n != "0" {
			time.Sleep(150 * time.Millisecond)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never saw the ALTER running on the replica")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := pl.replica.Kill(); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if err := pl.replica.Start(); err != nil {
		t.Fatal(err)
	}
	after := pl.replica.QueryString(t, "SELECT @@gtid_binlog_pos")
	if err := pl.apply(t, pl.opts, 120*time.Second); err != nil {
		t.Fatalf("after the crash (replica restarted at %s): %v", after, err)
	}
	if p, r := tableChecksums(t, pl.primary), tableChecksums(t, pl.replica); p != r {
		t.Fatalf("checksums differ:\nprimary %s\nreplica %s", p, r)
	}
	if idx := pl.replica.QueryString(t, "SELECT COUNT(DISTINCT INDEX_NAME) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA='d' AND TABLE_NAME='big' AND INDEX_NAME='iv'"); idx != "1" {
		t.Fatalf("the index is missing on the replica")
	}
	t.Logf("replica restarted at %s after the crash; caught up", after)
}
