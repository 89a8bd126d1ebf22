package test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/storage/open"
	"github.com/binvault/binvault/test/harness"
)

// pointInTime is the primary's state at one instant: its GTID position and
// a content digest of every table, read under one consistent snapshot.
type pointInTime struct {
	gtid   string
	time   time.Time // whole second: every transaction at or before it is in
	tables map[string]string
}

// snapshotDigest reads the GTID position of a consistent snapshot and a
// digest of every user table inside that same snapshot. A DDL committed
// meanwhile invalidates the snapshot for that table (error 1412): then
// the whole reading starts over.
func snapshotDigest(t testing.TB, m *harness.MariaDB) (string, map[string]string) {
	t.Helper()
	db, err := m.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for attempt := 0; ; attempt++ {
		gtid, digest, err := snapshotOnce(db)
		if err == nil {
			return gtid, digest
		}
		if !strings.Contains(err.Error(), "1412") || attempt == 20 {
			t.Fatal(err)
		}
	}
}

func snapshotOnce(db *sql.DB) (string, map[string]string, error) {
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT"); err != nil {
		return "", nil, err
	}
	defer c.ExecContext(ctx, "COMMIT")
	var file string
	var pos int64
	rows, err := c.QueryContext(ctx, "SHOW STATUS LIKE 'binlog_snapshot_%'")
	if err != nil {
		return "", nil, err
	}
	for rows.Next() {
		var k, v string
		rows.Scan(&k, &v)
		switch k {
		case "Binlog_snapshot_file":
			file = v
		case "Binlog_snapshot_position":
			fmt.Sscan(v, &pos)
		}
	}
	rows.Close()
	var gtid sql.NullString
	if err := c.QueryRowContext(ctx, "SELECT BINLOG_GTID_POS(?, ?)", file, pos).Scan(&gtid); err != nil {
		return "", nil, err
	}
	digest, err := tableDigestsErr(ctx, c)
	return gtid.String, digest, err
}

// tableDigests hashes every user table's rows with the current snapshot.
func tableDigests(t testing.TB, ctx context.Context, c *sql.Conn) map[string]string {
	t.Helper()
	d, err := tableDigestsErr(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func tableDigestsErr(ctx context.Context, c *sql.Conn) (map[string]string, error) {
	rows, err := c.QueryContext(ctx, `SELECT TABLE_SCHEMA, TABLE_NAME, GROUP_CONCAT(CONCAT('`+"`"+`', COLUMN_NAME, '`+"`"+`') ORDER BY ORDINAL_POSITION)
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA NOT IN ('mysql','sys','information_schema','performance_schema','binvault_restore')
		GROUP BY TABLE_SCHEMA, TABLE_NAME ORDER BY 1, 2`)
	if err != nil {
		return nil, err
	}
	type tbl struct{ db, name, cols string }
	var tables []tbl
	for rows.Next() {
		var x tbl
		rows.Scan(&x.db, &x.name, &x.cols)
		tables = append(tables, x)
	}
	rows.Close()
	out := map[string]string{}
	for _, x := range tables {
		var n int64
		var sum sql.NullString
		q := fmt.Sprintf("SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('|', %s))) FROM `%s`.`%s`", hexCols(x.cols), x.db, x.name)
		if err := c.QueryRowContext(ctx, q).Scan(&n, &sum); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
		out[x.db+"."+x.name] = fmt.Sprintf("%d/%s", n, sum.String)
	}
	return out, nil
}

func hexCols(cols string) string {
	var out []string
	for _, c := range strings.Split(cols, ",") {
		out = append(out, "IFNULL(HEX("+c+"), 'NULL')")
	}
	return strings.Join(out, ", ")
}

func digestOf(t testing.TB, m *harness.MariaDB) map[string]string {
	t.Helper()
	db := m.DB(t)
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return tableDigests(t, context.Background(), c)
}

func sameDigests(t testing.TB, what string, want, got map[string]string) {
	t.Helper()
	var diff []string
	for k, v := range want {
		if got[k] != v {
			diff = append(diff, fmt.Sprintf("%s: want %s, got %q", k, v, got[k]))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diff = append(diff, k+": not expected")
		}
	}
	sort.Strings(diff)
	if len(diff) > 0 {
		t.Fatalf("%s: %d tables differ:\n%s", what, len(diff), strings.Join(diff, "\n"))
	}
}

// restoreSetup is a primary archived to S3 by a running daemon, with a
// configuration whose source user may also take backups.
type restoreSetup struct {
	*archiveSetup
	d *daemon
}

func newRestoreSetup(t *testing.T) *restoreSetup {
	t.Helper()
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	s3 := harness.StartS3(t)
	cfg := writeS3Config(t, p.DSN("", ""), s3, "archive", "archive:\n  segment_max_bytes: 256KiB\n  flush_interval: 300ms\n")
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	st, err := open.Open(context.Background(), open.Options{URL: s3.URL("archive"), Endpoint: s3.Endpoint(), Region: "us-east-1", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	a := &archiveSetup{primary: p, s3: s3, cfg: cfg, env: s3.Env(), store: st, spool: filepath.Join(filepath.Dir(cfg), "spool")}
	rs := &restoreSetup{archiveSetup: a}
	rs.d = startDaemon(t, a.env, "--config", cfg)
	eventually(t, 20*time.Second, "the daemon to connect", func() bool {
		st := a.state(t)
		return st != nil && st["source"].(map[string]any)["connected"] == true
	})
	return rs
}

func (rs *restoreSetup) restoreInto(t *testing.T, args ...string) (*harness.MariaDB, result) {
	t.Helper()
	target := harness.StartMariaDB(t, "target", harness.MariaDBOptions{})
	r := binvault(t, rs.env, append([]string{"restore", "--config", rs.cfg, "--target", target.DSN("", "")}, args...)...)
	return target, r
}

func TestRestoreToPointsInTimeUnderLoad(t *testing.T) {
	rs := newRestoreSetup(t)
	p := rs.primary
	prepareLoadSchema(t, p)
	l := startLoad(t, p, 3, true)
	defer l.Stop()
	time.Sleep(1500 * time.Millisecond)
	var points []pointInTime
	backupID := ""
	for i := 0; i < 6; i++ {
		if i == 1 {
			// The backup happens in the middle of the load. One write of
			// our own first: a load stalled on a slow machine must not leave
			// the backup at the first point, which the end of this test
			// needs to be unreachable.
			p.Exec(t, "INSERT INTO app.counters VALUES ('before-backup', 1) ON DUPLICATE KEY UPDATE n = n + 1")
			r := binvault(t, rs.env, "backup", "--config", rs.cfg)
			if r.code != 0 {
				t.Fatalf("backup: %s", r)
			}
			backupID = strings.TrimSpace(r.stdout)
		}
		time.Sleep(1200 * time.Millisecond)
		if i%2 == 0 {
			// A point for --to-gtid: no pause needed.
			gtid, digest := snapshotDigest(t, p)
			points = append(points, pointInTime{gtid: gtid, tables: digest})
			continue
		}
		// A point for --to-time: writes pause across a second boundary so
		// the second holds exactly the snapshot's transactions.
		l.Stop()
		gtid, digest := snapshotDigest(t, p)
		now := time.Now()
		points = append(points, pointInTime{gtid: gtid, time: now.Truncate(time.Second), tables: digest})
		time.Sleep(time.Until(now.Truncate(time.Second).Add(time.Second + 50*time.Millisecond)))
		l = startLoad(t, p, 3, i == 3)
	}
	l.Stop()
	rs.waitArchived(t, 30*time.Second)
	if backupID == "" {
		t.Fatal("no backup")
	}
	for i, pt := range points[1:] { // the first point predates the backup
		var args []string
		if pt.time.IsZero() {
			last := pt.gtid // single domain: the position is the last GTID
			args = []string{"--to-gtid", last}
		} else {
			args = []string{"--to-time", pt.time.UTC().Format(time.RFC3339)}
		}
		target, r := rs.restoreInto(t, args...)
		if r.code != 0 {
			t.Fatalf("restore %d %v: %s", i, args, r)
		}
		sameDigests(t, fmt.Sprintf("restore %v", args), pt.tables, digestOf(t, target))
		if got := target.QueryString(t, "SELECT @@gtid_binlog_pos"); got != pt.gtid {
			t.Fatalf("restore %v: target at GTID %q, the primary was at %q", args, got, pt.gtid)
		}
		if !strings.Contains(r.stdout, "transactions/s") {
			t.Errorf("no summary: %s", r.stdout)
		}
		t.Logf("restore %v: %s", args, strings.ReplaceAll(strings.TrimSpace(r.stdout), "\n", " | "))
		target.Stop()
	}
	// The point before the backup cannot be reached: exit 2 with the coverage.
	r := binvault(t, rs.env, "restore", "--config", rs.cfg, "--dry-run", "--to-gtid", points[0].gtid)
	if r.code != 2 || !strings.Contains(r.stderr, "backup") {
		t.Fatalf("restore before the backup: %s", r)
	}
}

func TestRestoreRefusesBadTargetsAndDamage(t *testing.T) {
	rs := newRestoreSetup(t)
	p := rs.primary
	p.Exec(t, "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v VARCHAR(100))")
	r := binvault(t, rs.env, "backup", "--config", rs.cfg)
	if r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	for i := 0; i < 200; i++ {
		p.Exec(t, fmt.Sprintf("INSERT INTO d.t VALUES (%d, REPEAT('v', 80))", i))
		if i%50 == 49 {
			time.Sleep(500 * time.Millisecond) // past the flush interval: several segments
		}
	}
	rs.waitArchived(t, 30*time.Second)

	// Dry runs on targets outside the coverage: exit 2, coverage in the message.
	for _, args := range [][]string{
		{"--to-time", "2001-01-01T00:00:00Z"},
		{"--to-time", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)},
		{"--to-gtid", "0-1-999999"},
		{"--to-time", "yesterday"},
		{"--latest", "--to-gtid", "0-1-1"},
	} {
		r := binvault(t, rs.env, append([]string{"restore", "--config", rs.cfg, "--dry-run"}, args...)...)
		if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("dry run %v: want exit 2 and one line: %s", args, r)
		}
	}
	r = binvault(t, rs.env, "restore", "--config", rs.cfg, "--dry-run", "--to-time", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if !strings.Contains(r.stderr, "after the newest archived transaction") || !strings.Contains(r.stderr, "archived transactions from") {
		t.Errorf("a target after the archive should say so with the coverage: %s", r)
	}
	r = binvault(t, rs.env, "restore", "--config", rs.cfg, "--dry-run", "--latest")
	if r.code != 0 || !strings.Contains(r.stdout, "restore plan") || !strings.Contains(r.stdout, "nothing was changed") {
		t.Fatalf("dry run --latest: %s", r)
	}

	// A target that holds user databases is refused without --force.
	busy := harness.StartMariaDB(t, "busy", harness.MariaDBOptions{})
	busy.Exec(t, "CREATE DATABASE precious")
	r = binvault(t, rs.env, "restore", "--config", rs.cfg, "--target", busy.DSN("", ""), "--latest")
	if r.code != 2 || !strings.Contains(r.stderr, "precious") {
		t.Fatalf("non-empty target: %s", r)
	}

	// One bit flipped in the middle of the chain: restore stops there,
	// naming it; nothing of it or after it is applied; verify names it too.
	ctx := context.Background()
	ix, err := archive.Load(ctx, rs.store, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Segments) < 3 {
		t.Fatalf("want several segments, have %d", len(ix.Segments))
	}
	victim := ix.Segments[len(ix.Segments)/2]
	path := filepath.Join(rs.s3.Dir, rs.s3.Bucket, "archive", victim.Key)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	target, r := rs.restoreInto(t, "--latest")
	if r.code == 0 || !strings.Contains(r.stderr, victim.Key) {
		t.Fatalf("restore over a damaged segment: want a failure naming %s: %s", victim.Key, r)
	}
	prevEnd := ix.Segments[len(ix.Segments)/2-1].End.GTIDSet
	n := target.QueryString(t, "SELECT COUNT(*) FROM d.t")
	if got := target.QueryString(t, "SELECT position FROM binvault_restore.state"); got != prevEnd {
		t.Errorf("the unfinished restore's checkpoint is %q, want the end of the last good segment %q", got, prevEnd)
	}
	t.Logf("stopped before %s with %s rows applied", victim.Key, n)
	r = binvault(t, rs.env, "verify", "--config", rs.cfg)
	if r.code != 1 || !strings.Contains(r.stdout, victim.Key) {
		t.Fatalf("verify: want exit 1 naming %s: %s", victim.Key, r)
	}
	// Rerunning says how to resume or restart.
	r = binvault(t, rs.env, "restore", "--config", rs.cfg, "--target", target.DSN("", ""), "--latest")
	if r.code != 2 || !strings.Contains(r.stderr, "--resume") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("rerun over an unfinished restore: %s", r)
	}
}

// "Someone ran DROP TABLE at 10:14": find its GTID, restore to just before it.
func TestFindTheDropAndRestoreBeforeIt(t *testing.T) {
	rs := newRestoreSetup(t)
	p := rs.primary
	p.Exec(t, "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, qty INT); CREATE TABLE shop.log (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(20))")
	if r := binvault(t, rs.env, "backup", "--config", rs.cfg); r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	for i := 0; i < 30; i++ {
		p.Exec(t, fmt.Sprintf("INSERT INTO shop.orders VALUES (%d, %d)", i, i))
	}
	p.Exec(t, "UPDATE shop.orders SET qty = qty + 1 WHERE id < 10; DELETE FROM shop.orders WHERE id >= 25")
	p.Exec(t, "INSERT INTO shop.log (note) VALUES ('before')")
	want := digestOf(t, p)
	wantGTID := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	p.Exec(t, "DROP TABLE shop.orders")
	p.Exec(t, "INSERT INTO shop.log (note) VALUES ('after')")
	rs.waitArchived(t, 30*time.Second)

	r := binvault(t, rs.env, "find", "--config", rs.cfg, "--table", "shop.orders", "--json")
	if r.code != 0 {
		t.Fatalf("find: %s", r)
	}
	var found struct {
		Transactions []struct {
			GTID      string `json:"gtid"`
			Kind      string `json:"kind"`
			Inserted  int    `json:"inserted"`
			Updated   int    `json:"updated"`
			Deleted   int    `json:"deleted"`
			Statement string `json:"statement"`
		} `json:"transactions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &found); err != nil {
		t.Fatal(err)
	}
	var drop string
	ins, upd, del := 0, 0, 0
	for _, f := range found.Transactions {
		ins, upd, del = ins+f.Inserted, upd+f.Updated, del+f.Deleted
		if f.Kind == "ddl" && strings.HasPrefix(f.Statement, "DROP TABLE") {
			drop = f.GTID
		}
	}
	if drop == "" || ins != 30 || upd != 10 || del != 5 {
		t.Fatalf("find: drop %q, rows +%d ~%d -%d (want 30, 10, 5):\n%s", drop, ins, upd, del, r.stdout)
	}
	r = binvault(t, rs.env, "find", "--config", rs.cfg, "--table", "shop.orders", "--ddl")
	if r.code != 0 || !strings.Contains(r.stdout, drop) || strings.Contains(r.stdout, "rows:") {
		t.Fatalf("find --ddl: %s", r)
	}
	// The primary is gone: restore needs only the store and the target.
	if code := rs.d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("daemon exit %d", code)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	target, r := rs.restoreInto(t, "--stop-before-gtid", drop)
	if r.code != 0 {
		t.Fatalf("restore --stop-before-gtid %s: %s", drop, r)
	}
	sameDigests(t, "restore before the DROP, the primary stopped", want, digestOf(t, target))
	if got := target.QueryString(t, "SELECT @@gtid_binlog_pos"); got != wantGTID {
		t.Fatalf("target at %q, want %q", got, wantGTID)
	}
}

func TestRestoreSomeDatabases(t *testing.T) {
	rs := newRestoreSetup(t)
	p := rs.primary
	p.Exec(t, "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, qty INT); CREATE DATABASE other; CREATE TABLE other.t (id INT PRIMARY KEY)")
	p.Exec(t, "INSERT INTO shop.orders VALUES (1, 1); INSERT INTO other.t VALUES (1)")
	if r := binvault(t, rs.env, "backup", "--config", rs.cfg); r.code != 0 {
		t.Fatalf("backup: %s", r)
	}
	p.Exec(t, "INSERT INTO shop.orders VALUES (2, 2); INSERT INTO other.t VALUES (2); ALTER TABLE shop.orders ADD COLUMN note VARCHAR(10); CREATE TABLE other.u (x INT)")
	p.Exec(t, "UPDATE shop.orders SET note = 'n'")
	rs.waitArchived(t, 30*time.Second)
	want := map[string]string{}
	for k, v := range digestOf(t, p) {
		if strings.HasPrefix(k, "shop.") {
			want[k] = v
		}
	}
	target, r := rs.restoreInto(t, "--latest", "--databases", "shop")
	if r.code != 0 {
		t.Fatalf("restore --databases shop: %s", r)
	}
	sameDigests(t, "only shop", want, digestOf(t, target))
	r = binvault(t, rs.env, "restore", "--config", rs.cfg, "--target", target.DSN("", ""), "--latest", "--databases", "nope", "--force")
	if r.code != 2 || !strings.Contains(r.stderr, "nope") {
		t.Fatalf("unknown database: %s", r)
	}
}
