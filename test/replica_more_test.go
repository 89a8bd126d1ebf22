package test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/binvault/binvault/storage/open"
	"github.com/binvault/binvault/test/harness"
)

// replicaOpts shape a primary + replica + S3 setup beyond newReplicaSetup.
type replicaOpts struct {
	flush  string   // archive.flush_interval; 300ms when empty
	listen bool     // serve /metrics on a free port
	keys   []string // more keys under replica:, e.g. "delay: 3s"
	http   []string // more keys under http:, e.g. "max_replica_lag: 2s"
	// via returns the address the daemon reaches the replica at (a proxy
	// in front of it); the replica itself when nil.
	via func(t *testing.T, r *harness.MariaDB) string
}

// replicaEnv is a replica setup and, with listen, the daemon's HTTP base URL.
type replicaEnv struct {
	*replicaSetup
	base string
}

// startPair starts a primary and a read-only replica at the same time
// (most of a server's start is mariadb-install-db), each with the user
// binvault connects as.
func startPair(t *testing.T) (primary, replica *harness.MariaDB) {
	t.Helper()
	harness.RequireMariaDB(t)
	opts := []harness.MariaDBOptions{{}, {Extra: []string{"--read-only=ON"}}}
	names := []string{"primary", "replica"}
	dirs := []string{t.TempDir(), t.TempDir()}
	ms := make([]*harness.MariaDB, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range ms {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			m, err := harness.NewMariaDB(dirs[i], names[i], opts[i])
			if err != nil {
				errs[i] = err
				return
			}
			ms[i] = m
			if err = m.Start(); err == nil {
				err = m.Bootstrap()
			}
			errs[i] = err
		}(i)
	}
	wg.Wait()
	for _, m := range ms {
		if m != nil {
			t.Cleanup(func() { m.Stop() })
		}
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", names[i], err)
		}
	}
	ms[0].Exec(t, "SET sql_log_bin=0; CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'repl-pw'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO repl@'127.0.0.1'")
	ms[1].Exec(t, "SET sql_log_bin=0; CREATE USER applier@'127.0.0.1' IDENTIFIED BY 'applier-pw'; GRANT ALL ON *.* TO applier@'127.0.0.1'")
	return ms[0], ms[1]
}

func newReplicaEnv(t *testing.T, o replicaOpts) *replicaEnv {
	t.Helper()
	p, r := startPair(t)
	s3 := harness.StartS3(t)
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	if o.flush == "" {
		o.flush = "300ms"
	}
	raddr := r.Addr()
	if o.via != nil {
		raddr = o.via(t, r)
	}
	listen, base := "", ""
	if o.listen {
		port, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		listen = fmt.Sprintf("127.0.0.1:%d", port)
		base = "http://" + listen
	}
	dir := t.TempDir()
	var keys, httpKeys strings.Builder
	for _, k := range o.keys {
		keys.WriteString("\n  " + k)
	}
	for _, k := range o.http {
		httpKeys.WriteString("\n  " + k)
	}
	body := fmt.Sprintf(`source:
  dsn: mysql://repl:repl-pw@%s
  server_id: 9001
storage:
  url: %s
  endpoint: %s
  path_style: true
  region: us-east-1
spool:
  dir: %s
http:
  listen: %q%s
archive:
  segment_max_bytes: 1MiB
  flush_interval: %s
replica:
  dsn: mysql://applier:applier-pw@%s%s
`, p.Addr(), s3.URL("archive"), s3.Endpoint(), filepath.Join(dir, "spool"), listen, httpKeys.String(), o.flush, raddr, keys.String())
	cfg := writeFile(t, filepath.Join(dir, "binvault.yaml"), body)
	st, err := open.Open(context.Background(), open.Options{URL: s3.URL("archive"), Endpoint: s3.Endpoint(), Region: "us-east-1", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	a := &archiveSetup{primary: p, s3: s3, cfg: cfg, env: s3.Env(), store: st, spool: filepath.Join(dir, "spool")}
	return &replicaEnv{replicaSetup: &replicaSetup{archiveSetup: a, replica: r}, base: base}
}

// startStreaming starts the daemon and waits until this process reports
// that it streams from the primary.
func (e *replicaEnv) startStreaming(t *testing.T) *daemon {
	t.Helper()
	d := startDaemon(t, e.env, "--config", e.cfg)
	eventually(t, 20*time.Second, "the daemon to stream", func() bool {
		if d.exited() {
			t.Fatalf("daemon exited: %s", d.log)
		}
		st := e.state(t)
		pid, _ := st["pid"].(float64)
		src, _ := st["source"].(map[string]any)
		return int(pid) == d.cmd.Process.Pid && src != nil && src["connected"] == true
	})
	return d
}

// replicaState is the replica section of the daemon's state file.
func (e *replicaEnv) replicaState(t testing.TB) map[string]any {
	st := e.state(t)
	r, _ := st["replica"].(map[string]any)
	return r
}

// execOn runs statements on one connection of m (session settings carry
// from one to the next) and fails the test on error.
func execOn(t testing.TB, m *harness.MariaDB, stmts ...string) {
	t.Helper()
	db := m.DB(t)
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, s := range stmts {
		if _, err := c.ExecContext(context.Background(), s); err != nil {
			t.Fatalf("%s: %s: %v", m.Name, shortSQL(s), err)
		}
	}
}

func shortSQL(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// columnExprs renders each column of tbl for an exact comparison: floats
// as they are (read with the binary protocol: exact bits), DECIMAL as
// text, everything else with HEX().
func columnExprs(t testing.TB, db *sql.DB, schema, table string) (exprs, names []string) {
	t.Helper()
	rows, err := db.Query("SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", schema, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			t.Fatal(err)
		}
		q := "`" + name + "`"
		switch typ {
		case "float", "double":
			exprs = append(exprs, q)
		case "decimal":
			exprs = append(exprs, "CONCAT("+q+")")
		default:
			exprs = append(exprs, "HEX("+q+")")
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		t.Fatalf("%s.%s has no columns", schema, table)
	}
	return exprs, names
}

// hexRows reads every row of schema.table ordered by orderBy, each column
// as columnExprs renders it, in UTC.
func hexRows(t testing.TB, m *harness.MariaDB, exprs, names []string, schema, table, orderBy string) [][]string {
	t.Helper()
	ctx := context.Background()
	c, err := m.DB(t).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "SET time_zone = '+00:00'"); err != nil {
		t.Fatal(err)
	}
	stmt, err := c.PrepareContext(ctx, fmt.Sprintf("SELECT %s FROM `%s`.`%s` ORDER BY %s", strings.Join(exprs, ", "), schema, table, orderBy))
	if err != nil {
		t.Fatalf("%s: %v", m.Name, err)
	}
	defer stmt.Close()
	rows, err := stmt.QueryContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		vals := make([]any, len(exprs))
		ptrs := make([]any, len(exprs))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			switch x := v.(type) {
			case nil:
				row[i] = "NULL"
			case float32:
				row[i] = fmt.Sprintf("float32 bits %08x", math.Float32bits(x))
			case float64:
				row[i] = fmt.Sprintf("float64 bits %016x", math.Float64bits(x))
			case []byte:
				row[i] = string(x)
			default:
				row[i] = fmt.Sprint(x)
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameRows compares schema.table row by row on both servers.
func sameRows(t *testing.T, p, r *harness.MariaDB, schema, table, orderBy string) int {
	t.Helper()
	exprs, names := columnExprs(t, p.DB(t), schema, table)
	_, rnames := columnExprs(t, r.DB(t), schema, table)
	if !slices.Equal(names, rnames) {
		t.Fatalf("%s.%s: columns differ: primary %v, replica %v", schema, table, names, rnames)
	}
	pr := hexRows(t, p, exprs, names, schema, table, orderBy)
	rr := hexRows(t, r, exprs, names, schema, table, orderBy)
	if len(pr) != len(rr) {
		t.Fatalf("%s.%s: primary has %d rows, replica %d", schema, table, len(pr), len(rr))
	}
	for i := range pr {
		for c := range names {
			if pr[i][c] != rr[i][c] {
				t.Errorf("%s.%s row %d (%s %s), column %s differs:\nprimary %s\nreplica %s", schema, table, i, names[0], pr[i][0], names[c], shortSQL(pr[i][c]), shortSQL(rr[i][c]))
			}
		}
	}
	return len(pr)
}

// TestReplicaTypeCoverage replays every MariaDB column type, inserted,
// updated and deleted under various session settings, and compares both
// servers byte for byte.
func TestReplicaTypeCoverage(t *testing.T) {
	e := newReplicaEnv(t, replicaOpts{})
	d := e.startStreaming(t)
	p := e.primary

	execOn(t, p, "CREATE DATABASE types CHARACTER SET utf8mb4",
		`CREATE TABLE types.t (
			id INT NOT NULL PRIMARY KEY,
			ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
			mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
			bi BIGINT, biu BIGINT UNSIGNED,
			d65 DECIMAL(65,30), d10 DECIMAL(10,2),
			f FLOAT, dbl DOUBLE,
			b1 BIT(1), b64 BIT(64),
			dt DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, yr YEAR,
			c CHAR(10) CHARACTER SET utf8mb4, vc VARCHAR(300) CHARACTER SET utf8mb4,
			cl CHAR(10) CHARACTER SET latin1, vcl VARCHAR(300) CHARACTER SET latin1,
			bin BINARY(16), vbin VARBINARY(300), bl BLOB, lbl LONGBLOB,
			tx TEXT CHARACTER SET utf8mb4, mtx MEDIUMTEXT CHARACTER SET utf8mb4,
			en ENUM('a', 'b', 'ç', '😀'), st SET('x', 'y', 'z'),
			js JSON,
			geo GEOMETRY, pt POINT, poly POLYGON,
			g_stored BIGINT AS (i * 2) STORED,
			g_virtual VARCHAR(700) AS (CONCAT(IFNULL(vc, '-'), '/', IFNULL(cl, '-'))) VIRTUAL
		) ENGINE=InnoDB`,
		"CREATE TABLE types.nopk (a INT, b VARCHAR(20) CHARACTER SET utf8mb4, c BLOB, d DOUBLE, ts TIMESTAMP(6) NULL) ENGINE=InnoDB",
		"CREATE TABLE types.bulk (id INT PRIMARY KEY, b MEDIUMBLOB) ENGINE=InnoDB")

	cols := "id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, d65, d10, f, dbl, b1, b64, dt, tm, dtm, ts, yr, c, vc, cl, vcl, bin, vbin, bl, lbl, tx, mtx, en, st, js, geo, pt, poly"
	allBytes := make([]byte, 256)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	allHex := fmt.Sprintf("%X", allBytes)
	// 3 MiB of bytes with every value, no pattern a compressor would like.
	big := make([]byte, 3<<20)
	x := uint32(2463534242)
	for i := range big {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		big[i] = byte(x)
	}
	rows := []string{
		// minimums
		`(1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
		  '-99999999999999999999999999999999999.999999999999999999999999999999', -99999999.99,
		  -3.40282e38, -1.7976931348623157e308, b'0', b'0',
		  '1000-01-01', '-838:59:59.000000', '1000-01-01 00:00:00.000000', '1970-01-01 00:00:01.000000', 1901,
		  '', '', '', '', X'00000000000000000000000000000000', X'', X'', X'', '', '',
		  'a', '', '[]', ST_GeomFromText('POINT(0 0)'), POINT(-180, -90),
		  ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 1,0 0))'))`,
		// maximums, 4-byte characters, every byte value
		`(2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615,
		  '99999999999999999999999999999999999.999999999999999999999999999999', 99999999.99,
		  3.40282e38, 1e308, b'1', b'1111111111111111111111111111111111111111111111111111111111111111',
		  '9999-12-31', '838:59:59.000000', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', 2155,
		  '😀😀😀😀😀😀😀😀😀😀', '𝄞 music, 中文, Ελληνικά, emoji 👩‍👩‍👧‍👦 and 𠜎', 'ÀÿÆ', 'Zürich façade ½ ©',
		  X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF', X'` + allHex + `', X'` + strings.Repeat(allHex, 200) + `', ?,
		  '` + strings.Repeat("text 🚀 ", 1000) + `', '` + strings.Repeat("mediumtext Ω ", 10000) + `',
		  '😀', 'x,y,z', '{"k": "v😀", "n": [1, 2.5, null, true, -0.0, 1e300], "nested": {"é": {"deep": [[], {}]}}}',
		  ST_GeomFromText('MULTIPOLYGON(((0 0,10 0,10 10,0 10,0 0),(2 2,3 2,3 3,2 2)))'), POINT(180, 90),
		  ST_GeomFromText('POLYGON((0 0,100.5 0,100.5 100.25,0 100.25,0 0),(10 10,20 10,20 20,10 10))'))`,
		// NULL in every nullable column
		`(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
		  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`,
		// awkward values (MariaDB stores -0.0e0 as 0: a -0 never reaches the binlog)
		`(4, -1, 1, -1, 1, -1, 1, -1, 1, -1, 9223372036854775808,
		  '-0.000000000000000000000000000001', -0.01,
		  0.1, -0.0e0, b'1', b'1000000000000000000000000000000000000000000000000000000000000001',
		  '2000-02-29', '-00:00:00.000001', '2024-02-29 12:34:56.000001', '2024-03-31 02:30:00.5', 2000,
		  'trailing  ', ' lead and trail ', 'x', 'Ünïcödé', X'00FF00FF00FF00FF00FF00FF00FF00FF', X'00', X'FF', X'0000FFFF',
		  'line1\nline2\ttab\\\\ \'quote\'', '', 'ç', 'z,x', '{"a": 0.1, "b": "\\u0000", "c": 18446744073709551615}',
		  ST_GeomFromText('LINESTRING(0 0,1.5 2.25,-3 4)'), POINT(0.1, -0.2),
		  ST_GeomFromText('POLYGON((0 0,0.5 0,0.5 0.5,0 0))'))`,
	}
	conn, err := p.DB(t).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "SET time_zone = '+00:00'"); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		stmt := "INSERT INTO types.t (" + cols + ") VALUES " + r
		var args []any
		if strings.Contains(r, "?") {
			args = append(args, big)
		}
		if _, err := conn.ExecContext(context.Background(), stmt, args...); err != nil {
			t.Fatalf("%s: %v", shortSQL(stmt), err)
		}
	}
	conn.Close()
	// TIMESTAMP written under different session time zones, and DDL whose
	// meaning depends on the session: a TIMESTAMP default read in the
	// session's zone, a string default in the session's character set.
	execOn(t, p, "SET time_zone = '+05:30'",
		"INSERT INTO types.t (id, ts, dtm) VALUES (10, '2024-03-10 02:30:00.123456', NOW(6))",
		"INSERT INTO types.nopk VALUES (10, 'tz+05:30', NULL, NULL, '2024-06-01 00:00:00')",
		"SET time_zone = '-08:00'",
		"INSERT INTO types.t (id, ts) VALUES (11, '2024-03-10 02:30:00.123456')",
		"UPDATE types.t SET ts = '2001-01-01 00:00:00.5' WHERE id = 4",
		"SET time_zone = '+13:00'",
		"INSERT INTO types.t (id, ts) VALUES (12, '1970-01-01 13:00:01')",
		"SET time_zone = '+05:30'",
		"ALTER TABLE types.t ADD COLUMN tsd TIMESTAMP NOT NULL DEFAULT '2021-06-01 12:00:00'",
		"SET NAMES latin1",
		"ALTER TABLE types.t ADD COLUMN latin_default VARCHAR(10) CHARACTER SET utf8mb4 NOT NULL DEFAULT '\xe9\xe8\xbd'",
		"SET NAMES utf8mb4",
		"SET time_zone = SYSTEM")
	// Updates: many columns, a primary key change, to and from NULL, a
	// partial change of a big value; and deletes.
	execOn(t, p, "START TRANSACTION",
		`UPDATE types.t SET ti = ti + 1, d65 = d65 / 3, f = f * 2, dbl = 0.1, b64 = b'0101', tm = '-12:00:00.25',
		   vc = CONCAT(vc, '🙂'), vcl = 'ÿ', vbin = X'0001FEFF', js = JSON_SET(js, '$.a', 'é'), st = 'y', en = 'b',
		   pt = POINT(1, 1), yr = 1999 WHERE id = 4`,
		"UPDATE types.t SET id = 104 WHERE id = 4",
		"COMMIT")
	execOn(t, p,
		"UPDATE types.t SET ti = 7, tm = '25:00:00.5', c = 'ç', js = '{\"null\": null}', geo = POINT(5, 5) WHERE id = 3",
		"UPDATE types.t SET ti = NULL, c = NULL, lbl = NULL, geo = NULL WHERE id = 2",
		"UPDATE types.t SET lbl = CONCAT(SUBSTRING(lbl, 1, 1000), X'00FF', SUBSTRING(lbl, 1003)) WHERE id = 2",
		"UPDATE types.t SET id = id + 1000 WHERE id IN (10, 11)",
		"DELETE FROM types.t WHERE id = 1",
		"INSERT INTO types.t (id, i, vc) VALUES (20, 1, 'gone'), (21, 2, 'kept'), (22, 3, 'gone')",
		"DELETE FROM types.t WHERE vc = 'gone'")
	// A table without a primary key: duplicate rows, updates and deletes
	// that touch one of several identical rows.
	execOn(t, p,
		"INSERT INTO types.nopk VALUES (1, 'x', X'00FF', 0.1, NULL), (1, 'x', X'00FF', 0.1, NULL), (1, 'x', X'00FF', 0.1, NULL), (2, NULL, NULL, NULL, NULL), (3, '😀', X'', -0.0e0, '2030-01-01 00:00:00.000001')",
		"UPDATE types.nopk SET b = 'y' WHERE a = 1 LIMIT 1",
		"DELETE FROM types.nopk WHERE a = 1 AND b = 'x' LIMIT 1",
		"UPDATE types.nopk SET a = 4, c = X'FF00' WHERE a = 2",
		"DELETE FROM types.nopk WHERE a = 3")
	// One statement whose rows span many rows events and more than one
	// BINLOG piece (the applier splits at half its 4 MiB batch): each piece
	// needs its table map.
	execOn(t, p, "INSERT INTO types.bulk SELECT seq, REPEAT(UNHEX(SHA2(seq, 512)), 160) FROM types.seq_1_to_600",
		"UPDATE types.bulk SET b = REVERSE(b) WHERE id % 3 = 0",
		"DELETE FROM types.bulk WHERE id % 5 = 0")

	waitReplicaCaughtUp(t, p, e.replica, 60*time.Second, d)
	sameChecksums(t, p, e.replica)
	n := sameRows(t, p, e.replica, "types", "t", "id")
	n += sameRows(t, p, e.replica, "types", "nopk", "a, b, HEX(c), d, ts")
	n += sameRows(t, p, e.replica, "types", "bulk", "id")
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, d.log)
	}
	if !t.Failed() {
		t.Logf("%d rows equal byte for byte; replica at %s", n, e.replica.QueryString(t, "SELECT @@gtid_binlog_pos"))
	}
}

// waitApplied waits until the replica's GTID position equals the
// primary's, failing at once when the applier reports that it stopped.
func (e *replicaEnv) waitApplied(t testing.TB, d *daemon, timeout time.Duration) {
	t.Helper()
	e.waitReplica(t, d, timeout, true)
}

// waitRecovered waits for the replica to catch up while the applier
// reports an earlier refusal: it tries the replica again by itself.
func (e *replicaEnv) waitRecovered(t testing.TB, d *daemon, timeout time.Duration) {
	t.Helper()
	e.waitReplica(t, d, timeout, false)
}

func (e *replicaEnv) waitReplica(t testing.TB, d *daemon, timeout time.Duration, failOnStop bool) {
	t.Helper()
	want := e.primary.QueryString(t, "SELECT @@gtid_binlog_pos")
	deadline := time.Now().Add(timeout)
	for {
		got := e.replica.QueryString(t, "SELECT @@gtid_binlog_pos")
		if got == want {
			return
		}
		if rs := e.replicaState(t); failOnStop && rs != nil && rs["stopped"] == true {
			t.Fatalf("the applier stopped at %q (primary at %q): %v\ndaemon log:\n%s", got, want, rs["last_error"], tailLog(d))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica is at %q after %v, the primary at %q; replica state %v; daemon log:\n%s", got, timeout, want, e.replicaState(t), tailLog(d))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tablesOf lists db.table of every base table outside the system schemas.
func tablesOf(t testing.TB, m *harness.MariaDB) []string {
	t.Helper()
	return harness.Strings(t, m.DB(t), `SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES
		WHERE TABLE_SCHEMA NOT IN ('mysql','sys','information_schema','performance_schema') AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1`)
}

func databasesOf(t testing.TB, m *harness.MariaDB) []string {
	t.Helper()
	return harness.Strings(t, m.DB(t), `SELECT SCHEMA_NAME FROM information_schema.SCHEMATA
		WHERE SCHEMA_NAME NOT IN ('mysql','sys','information_schema','performance_schema') ORDER BY 1`)
}

// TestReplicaFilters: replica.include/exclude keep data and DDL of
// filtered tables and databases off the replica, whatever the session's
// default database was; the archive keeps everything.
func TestReplicaFilters(t *testing.T) {
	e := newReplicaEnv(t, replicaOpts{keys: []string{`include: ["app", "shop.orders"]`, `exclude: ["app.secret*"]`}})
	d := e.startStreaming(t)
	p := e.primary

	// DDL without a default database, names qualified.
	execOn(t, p, "CREATE DATABASE app", "CREATE DATABASE shop", "CREATE DATABASE other",
		"CREATE TABLE app.accounts (id INT PRIMARY KEY, balance BIGINT)",
		"CREATE TABLE app.secret_keys (id INT PRIMARY KEY, k VARBINARY(64))",
		"CREATE TABLE shop.orders (id INT PRIMARY KEY, account INT, amount DECIMAL(10,2))",
		"CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(50))",
		"CREATE TABLE other.x (id INT PRIMARY KEY)")
	// DDL in the table's own database.
	execOn(t, p, "USE app",
		"CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)",
		"CREATE TABLE secret_tokens (id INT PRIMARY KEY, tok VARCHAR(64))",
		"ALTER TABLE secret_keys ADD COLUMN rotated DATETIME")
	execOn(t, p, "USE shop",
		"CREATE TABLE returns (id INT PRIMARY KEY)",
		"ALTER TABLE orders ADD COLUMN note VARCHAR(20)")
	// DDL in one database naming a table of another.
	execOn(t, p, "USE other",
		"CREATE TABLE app.audit (id INT PRIMARY KEY)",
		"CREATE TABLE app.secret_audit (id INT PRIMARY KEY)")
	execOn(t, p, "USE app", "CREATE TABLE other.y (id INT PRIMARY KEY)", "CREATE TABLE shop.wishlist (id INT PRIMARY KEY)")

	// Data: transactions that mix included and excluded tables, and some
	// that touch excluded tables only.
	var stmts []string
	for i := 1; i <= 30; i++ {
		stmts = append(stmts, "START TRANSACTION",
			fmt.Sprintf("INSERT INTO app.accounts VALUES (%d, %d)", i, i*100),
			fmt.Sprintf("INSERT INTO app.secret_keys (id, k) VALUES (%d, RANDOM_BYTES(32))", i),
			fmt.Sprintf("INSERT INTO shop.orders (id, account, amount) VALUES (%d, %d, %d.25)", i, i, i),
			fmt.Sprintf("INSERT INTO shop.customers VALUES (%d, 'c%d')", i, i),
			fmt.Sprintf("INSERT INTO app.notes VALUES (%d, 'note %d')", i, i),
			fmt.Sprintf("INSERT INTO app.audit VALUES (%d)", i),
			"COMMIT",
			fmt.Sprintf("INSERT INTO app.secret_tokens VALUES (%d, 'tok%d')", i, i),
			fmt.Sprintf("INSERT INTO other.x VALUES (%d)", i),
			fmt.Sprintf("INSERT INTO shop.returns VALUES (%d)", i),
			fmt.Sprintf("INSERT INTO app.secret_audit VALUES (%d)", i))
	}
	stmts = append(stmts,
		"UPDATE app.accounts SET balance = balance - 1 WHERE id % 2 = 0",
		"UPDATE app.secret_keys SET rotated = NOW()",
		"UPDATE shop.orders o JOIN shop.customers c ON c.id = o.id SET o.note = c.name, c.name = 'x'",
		"DELETE FROM shop.orders WHERE id % 7 = 0",
		"DELETE FROM app.secret_tokens WHERE id % 3 = 0",
		"TRUNCATE TABLE app.secret_keys",
		"DROP TABLE other.x",
		"CREATE DATABASE other2",
		"CREATE TABLE other2.z (id INT PRIMARY KEY)",
		"INSERT INTO other2.z VALUES (1)",
		"DROP DATABASE other2",
		"ALTER TABLE app.secret_audit ADD COLUMN c INT",
		"RENAME TABLE app.secret_tokens TO app.secret_tokens_old",
		"DROP TABLE app.secret_tokens_old",
		"INSERT INTO app.accounts VALUES (1000, 0)") // ends on an included table: the positions meet
	execOn(t, p, stmts...)

	// The archive holds every transaction, filtered or not.
	e.waitArchived(t, 20*time.Second)
	want, got := p.BinlogGTIDs(t), archiveGTIDs(t, e.store)
	sameHistory(t, want, got, 0)

	e.waitApplied(t, d, 30*time.Second)
	gotDBs, gotTables := databasesOf(t, e.replica), tablesOf(t, e.replica)
	wantDBs := []string{"app", "shop"}
	wantTables := []string{"app.accounts", "app.audit", "app.notes", "shop.orders"}
	if !slices.Equal(gotDBs, wantDBs) || !slices.Equal(gotTables, wantTables) {
		t.Errorf("the replica holds databases %v and tables %v; want %v and %v (primary: %v)", gotDBs, gotTables, wantDBs, wantTables, tablesOf(t, p))
	}
	pc, rc := checksums(t, p), checksums(t, e.replica)
	for _, tb := range []string{"`app`.`accounts`", "`app`.`audit`", "`app`.`notes`", "`shop`.`orders`"} {
		if pc[tb] != rc[tb] {
			t.Errorf("%s: CHECKSUM TABLE primary %s, replica %q", tb, pc[tb], rc[tb])
		}
	}
	for _, tb := range wantTables {
		if slices.Contains(gotTables, tb) {
			db, name, _ := strings.Cut(tb, ".")
			sameRows(t, p, e.replica, db, name, "id")
		}
	}
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, d.log)
	}
	t.Logf("the archive holds all %d transactions; the replica holds %v", len(got), gotTables)
}

// TestReplicaDelay: with replica.delay a transaction reaches the replica
// only once it is that old, while the archive has it at once.
func TestReplicaDelay(t *testing.T) {
	const delay = 3 * time.Second
	e := newReplicaEnv(t, replicaOpts{flush: "200ms", keys: []string{"delay: 3s"}})
	// The table exists on both servers before binvault starts, so the test
	// does not wait out the delay of its CREATE.
	for _, m := range []*harness.MariaDB{e.primary, e.replica} {
		execOn(t, m, "SET sql_log_bin=0", "CREATE DATABASE d", "CREATE TABLE d.t (id INT PRIMARY KEY, at DATETIME(6))")
	}
	d := e.startStreaming(t)
	eventually(t, 20*time.Second, "the applier to connect", func() bool {
		rs := e.replicaState(t)
		return rs != nil && rs["connected"] == true
	})

	execOn(t, e.primary, "INSERT INTO d.t VALUES (1, NOW(6))")
	committed := time.Now()
	want := e.primary.QueryString(t, "SELECT @@gtid_binlog_pos")

	// Watch the replica from the commit on.
	seen := make(chan time.Duration, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		db, err := e.replica.Open("")
		if err != nil {
			return
		}
		defer db.Close()
		for {
			var n int
			if db.QueryRow("SELECT COUNT(*) FROM d.t WHERE id = 1").Scan(&n) == nil && n == 1 {
				seen <- time.Since(committed)
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
		}
	}()

	eventually(t, 5*time.Second, "`binvault segments` to list "+want, func() bool { return e.archivedPosition(t) == want })
	archived := time.Since(committed)
	var applied time.Duration
	select {
	case applied = <-seen:
	case <-time.After(delay + 2*time.Second):
		t.Fatalf("the row is not on the replica %v after its commit; replica state %v; log:\n%s", delay+2*time.Second, e.replicaState(t), tailLog(d))
	}
	// Never early (the primary's timestamps have whole seconds: the
	// applier counts from the end of the commit's second), at most a
	// second late.
	if applied < delay-50*time.Millisecond || applied > delay+1500*time.Millisecond {
		t.Errorf("the row reached the replica %v after its commit; want %v to %v", applied.Round(time.Millisecond), delay, delay+1500*time.Millisecond)
	}
	if got := e.replica.QueryString(t, "SELECT @@gtid_binlog_pos"); got != want {
		t.Errorf("replica at %q, want %q", got, want)
	}
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, d.log)
	}
	t.Logf("archived and listed within %v; applied to the replica %v after its commit (delay %v)", archived.Round(time.Millisecond), applied.Round(time.Millisecond), delay)
}

// TestReplicaStopsOnConflictAndArchivingGoesOn: a transaction the replica
// refuses stops the applier with the GTID, the statement and the server's
// error, never skipped; archiving goes on; a restart after the fix retries.
// A replica misconfigured when the daemon starts (read_only=OFF, as after a
// restart without it in its option file) stops only the applying: the
// daemon starts, streams and archives with a low RPO, reports why the
// replica is not applied, and applies again by itself once it is fixed.
func TestReplicaMisconfiguredAtStartNeverStopsTheArchive(t *testing.T) {
	e := newReplicaEnv(t, replicaOpts{listen: true})
	p, r := e.primary, e.replica
	execOn(t, r, "SET GLOBAL read_only=OFF")
	d := e.startStreaming(t)
	execOn(t, p, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40))")
	var rs map[string]any
	eventually(t, 20*time.Second, "the applier to report the replica's read_only", func() bool {
		rs = e.replicaState(t)
		msg, _ := rs["last_error"].(string)
		return rs["stopped"] == true && strings.Contains(msg, "read_only=OFF")
	})
	code, body := httpGet(e.base, "/readyz")
	if code != 503 || !strings.Contains(body, "replica") || !strings.Contains(body, "read_only=OFF") {
		t.Errorf("/readyz while the replica is refused: %d %s", code, body)
	}
	worst := 0.0
	for i := 0; i < 40; i++ {
		execOn(t, p, fmt.Sprintf("INSERT INTO app.t VALUES (%d, 'while the replica is refused')", i))
		worst = max(worst, metric(t, e.base, "binvault_archive_rpo_seconds"))
		time.Sleep(100 * time.Millisecond)
	}
	e.waitArchived(t, 20*time.Second)
	if worst >= 3 {
		t.Errorf("the archive's RPO reached %.1fs while the replica was refused", worst)
	}
	if n := r.QueryString(t, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'app'"); n != "0" {
		t.Fatalf("binvault applied to a replica with read_only=OFF")
	}
	execOn(t, r, "SET GLOBAL read_only=ON")
	e.waitRecovered(t, d, 90*time.Second)
	sameChecksums(t, p, r)
	eventually(t, 5*time.Second, "the state to show the applier applying", func() bool {
		rs := e.replicaState(t)
		return rs["stopped"] != true && rs["connected"] == true
	})
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, d.log)
	}
}

func TestReplicaStopsOnConflictAndArchivingGoesOn(t *testing.T) {
	e := newReplicaEnv(t, replicaOpts{})
	d := e.startStreaming(t)
	p, r := e.primary, e.replica
	execOn(t, p, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40))", "INSERT INTO app.t VALUES (1, 'one')")
	e.waitApplied(t, d, 20*time.Second)

	// Someone writes on the replica behind binvault's back: root passes
	// read_only (ALL PRIVILEGES includes READ ONLY ADMIN in 10.11).
	if ro := r.QueryString(t, "SELECT @@read_only"); ro != "1" {
		t.Fatalf("replica read_only = %s", ro)
	}
	execOn(t, r, "SET sql_log_bin=0", "INSERT INTO app.t VALUES (42, 'written on the replica')")
	execOn(t, p, "INSERT INTO app.t VALUES (42, 'from the primary')")
	failing := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	execOn(t, p, "INSERT INTO app.t VALUES (43, 'after the conflict')")

	var rs map[string]any
	eventually(t, 20*time.Second, "the applier to stop", func() bool {
		rs = e.replicaState(t)
		return rs != nil && rs["stopped"] == true
	})
	lastErr, _ := rs["last_error"].(string)
	for _, w := range []string{failing, "1062", "Duplicate entry '42'", "BINLOG (rows of app.t)"} {
		if !strings.Contains(lastErr, w) {
			t.Errorf("state.json replica.last_error lacks %q: %q", w, lastErr)
		}
	}
	// status --json shows it (the daemon's state, as the daemon wrote it).
	res := binvault(t, e.env, "status", "--config", e.cfg, "--json")
	var doc struct {
		Daemon struct {
			Running bool `json:"running"`
			State   struct {
				Replica struct {
					Stopped   bool   `json:"stopped"`
					LastError string `json:"last_error"`
				} `json:"replica"`
			} `json:"state"`
		} `json:"daemon"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil {
		t.Fatalf("status --json: %v: %s", err, res)
	}
	if !doc.Daemon.Running || !doc.Daemon.State.Replica.Stopped || doc.Daemon.State.Replica.LastError != lastErr {
		t.Errorf("status --json does not show the stopped applier and its error: %s", res)
	}
	res = binvault(t, e.env, "status", "--config", e.cfg)
	if !strings.Contains(res.stdout, "1062") {
		t.Logf("note: plain `binvault status` does not show the replica error:\n%s", res.stdout)
	}
	if !strings.Contains(d.log.String(), failing) || !strings.Contains(d.log.String(), "Duplicate entry '42'") {
		t.Errorf("the daemon's log does not name the failing GTID %s and the error:\n%s", failing, tailLog(d))
	}

	// Archiving goes on; the replica stays where it stopped.
	for i := 44; i < 54; i++ {
		execOn(t, p, fmt.Sprintf("INSERT INTO app.t VALUES (%d, 'while stopped')", i))
	}
	e.waitArchived(t, 20*time.Second)
	if n := r.QueryString(t, "SELECT COUNT(*) FROM app.t WHERE id >= 43"); n != "0" {
		t.Errorf("the replica applied %s transactions past the failing one", n)
	}
	if v := r.QueryString(t, "SELECT v FROM app.t WHERE id = 42"); v != "written on the replica" {
		t.Errorf("row 42 on the replica: %q", v)
	}
	// It keeps trying, and keeps being refused while the cause is there.
	if rs := e.replicaState(t); rs["stopped"] != true {
		t.Errorf("the applier no longer reports the refusal: %v", rs)
	}

	// Fixed by hand, the applier catches up by itself at its next try (at
	// most a minute later), without a restart of the daemon.
	execOn(t, r, "SET sql_log_bin=0", "DELETE FROM app.t WHERE id = 42")
	e.waitRecovered(t, d, 90*time.Second)
	sameChecksums(t, p, r)
	if v := r.QueryString(t, "SELECT v FROM app.t WHERE id = 42"); v != "from the primary" {
		t.Errorf("row 42 on the replica after the retry: %q", v)
	}
	eventually(t, 5*time.Second, "the state to drop the error after the retry", func() bool {
		rs := e.replicaState(t)
		return rs["stopped"] != true && rs["last_error"] == nil
	})
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, d.log)
	}
	t.Logf("stopped with: %s", lastErr)
}

// TestReplicaNeverSkipsAfterALocalWrite: a transaction written on the
// replica with its binlog on takes the next sequence number of the
// primary's GTID domain. The primary's transaction with that number is
// then refused (gtid_strict_mode), and must stay refused, or be applied,
// after the daemon restarts: never counted as applied because the
// replica's gtid_binlog_pos reached its sequence number.
func TestReplicaNeverSkipsAfterALocalWrite(t *testing.T) {
	e := newReplicaEnv(t, replicaOpts{})
	d := e.startStreaming(t)
	p, r := e.primary, e.replica
	execOn(t, p, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40))", "INSERT INTO app.t VALUES (1, 'one')")
	e.waitApplied(t, d, 20*time.Second)

	execOn(t, r, "INSERT INTO app.t VALUES (42, 'written on the replica')") // binlogged, as root
	local := r.QueryString(t, "SELECT @@gtid_binlog_pos")
	execOn(t, p, "INSERT INTO app.t VALUES (42, 'from the primary')")
	refused := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	eventually(t, 20*time.Second, "the applier to stop", func() bool {
		rs := e.replicaState(t)
		return rs != nil && rs["stopped"] == true
	})
	t.Logf("local write %s; the applier stopped: %v", local, e.replicaState(t)["last_error"])

	// The natural repair of the row; the replica's binlog keeps the local GTID.
	execOn(t, r, "SET sql_log_bin=0", "DELETE FROM app.t WHERE id = 42")
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, d.log)
	}
	d = e.startStreaming(t)
	execOn(t, p, "INSERT INTO app.t VALUES (43, 'after')")
	want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	deadline := time.Now().Add(20 * time.Second)
	for {
		rs := e.replicaState(t)
		pid, _ := e.state(t)["pid"].(float64)
		if int(pid) == d.cmd.Process.Pid && rs != nil && rs["stopped"] == true {
			// Refusing is right, if it says why.
			msg, _ := rs["last_error"].(string)
			if !strings.Contains(msg, refused) && !strings.Contains(msg, local) {
				t.Errorf("the applier stopped without naming %s or the local %s: %s", refused, local, msg)
			}
			t.Logf("after the restart the applier refuses: %s", msg)
			break
		}
		if r.QueryString(t, "SELECT @@gtid_binlog_pos") == want {
			v := r.QueryString(t, "SELECT IFNULL((SELECT v FROM app.t WHERE id = 42), 'missing')")
			if v != "from the primary" {
				t.Fatalf("the replica reports the primary's position %s but row 42 of transaction %s is %s: the applier skipped it as applied because the local %s has its sequence number", want, refused, v, local)
			}
			sameChecksums(t, p, r)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("neither caught up nor stopped after 20s: %v\n%s", rs, tailLog(d))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, d.log)
	}
}

// gtidSeq is the sequence number of domain 0 in a MariaDB GTID position.
func gtidSeq(pos string) int64 {
	for _, g := range strings.Split(pos, ",") {
		parts := strings.Split(strings.TrimSpace(g), "-")
		if len(parts) == 3 && parts[0] == "0" {
			n, _ := strconv.ParseInt(parts[2], 10, 64)
			return n
		}
	}
	return 0
}

// scrape reads the daemon's /metrics as name{labels} → value.
func scrape(t testing.TB, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// TestReplicaKeepsUpAcross40msLatency: with 40 ms each way between the
// daemon and the replica (80 ms round trips), the replica follows a
// primary committing 300+ small transactions per second with under 2 s of
// lag.
func TestReplicaKeepsUpAcross40msLatency(t *testing.T) {
	const (
		target  = 350 // primary transactions/s asked of the load
		minRate = 300 // the load must achieve this, or the test proves nothing
		workers = 6
		loadFor = 20 * time.Second
		warmUp  = 2 * time.Second
		maxLag  = 2 * time.Second
	)
	var proxyAddr string
	e := newReplicaEnv(t, replicaOpts{listen: true, via: func(t *testing.T, r *harness.MariaDB) string {
		srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
		px := toxiproxy.NewProxy(srv, "replica", "127.0.0.1:0", r.Addr())
		if err := px.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(px.Stop)
		for _, s := range []string{"downstream", "upstream"} {
			if _, err := px.Toxics.AddToxicJson(strings.NewReader(`{"name":"latency_` + s + `","type":"latency","stream":"` + s + `","attributes":{"latency":40}}`)); err != nil {
				t.Fatal(err)
			}
		}
		proxyAddr = px.Listen
		return px.Listen
	}})
	p, r := e.primary, e.replica

	// The proxy really delays: a query through it takes two crossings.
	via, err := sql.Open("mysql", "applier:applier-pw@tcp("+proxyAddr+")/")
	if err != nil {
		t.Fatal(err)
	}
	via.SetMaxOpenConns(1)
	via.Exec("DO 1")
	t0 := time.Now()
	if _, err := via.Exec("DO 1"); err != nil {
		t.Fatal(err)
	}
	rtt := time.Since(t0)
	via.Close()
	if rtt < 80*time.Millisecond {
		t.Fatalf("a round trip through the proxy took %v, want ≥ 80ms", rtt)
	}

	d := e.startStreaming(t)
	execOn(t, p, "CREATE DATABASE bench",
		"CREATE TABLE bench.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, w INT, n INT, pad CHAR(100))",
		"CREATE TABLE bench.c (id INT PRIMARY KEY, n BIGINT)",
		"INSERT INTO bench.c SELECT seq, 0 FROM bench.seq_0_to_99")
	e.waitApplied(t, d, 30*time.Second)
	before := scrape(t, e.base)

	type sample struct {
		at  time.Time
		seq int64
	}
	var (
		mu       sync.Mutex
		pSamples []sample // when the primary reached each new sequence number (10 ms resolution)
		rSamples []sample // the replica's sequence number every 200 ms
		lags     []time.Duration
		metLags  []float64
		commits  atomic.Int64
		loadErr  atomic.Value
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	poll := func(m *harness.MariaDB, every time.Duration, fn func(time.Time, int64)) {
		db, err := m.Open("")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer db.Close()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				var pos string
				if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos); err == nil {
					fn(time.Now(), gtidSeq(pos))
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	start := time.Now()
	poll(p, 10*time.Millisecond, func(at time.Time, seq int64) {
		mu.Lock()
		if n := len(pSamples); n == 0 || pSamples[n-1].seq != seq {
			pSamples = append(pSamples, sample{at, seq})
		}
		mu.Unlock()
	})
	poll(r, 200*time.Millisecond, func(at time.Time, seq int64) {
		mu.Lock()
		defer mu.Unlock()
		rSamples = append(rSamples, sample{at, seq})
		if at.Sub(start) < warmUp || at.Sub(start) > loadFor {
			return
		}
		// Lag: how long ago the primary committed the oldest transaction
		// the replica does not have.
		i, _ := slices.BinarySearchFunc(pSamples, seq+1, func(s sample, n int64) int { return int(s.seq - n) })
		lag := time.Duration(0)
		if i < len(pSamples) {
			lag = at.Sub(pSamples[i].at)
		}
		lags = append(lags, lag)
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if time.Since(start) < warmUp || time.Since(start) > loadFor {
				continue
			}
			resp, err := http.Get(e.base + "/metrics")
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "binvault_replica_seconds_behind "); ok {
					f, _ := strconv.ParseFloat(v, 64)
					mu.Lock()
					metLags = append(metLags, f)
					mu.Unlock()
				}
			}
			resp.Body.Close()
		}
	}()

	// The load: workers paced to target/s in all, each transaction an
	// insert and an update, sent in one round trip.
	var lwg sync.WaitGroup
	interval := time.Second * workers / target
	for w := 0; w < workers; w++ {
		db, err := p.Open("")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		lwg.Add(1)
		go func(w int) {
			defer lwg.Done()
			defer db.Close()
			next := start.Add(time.Duration(w) * interval / workers)
			for k := 0; ; k++ {
				if time.Until(next) > 0 {
					time.Sleep(time.Until(next))
				}
				if time.Since(start) >= loadFor {
					return
				}
				next = next.Add(interval)
				q := fmt.Sprintf("BEGIN; INSERT INTO bench.t (w, n, pad) VALUES (%d, %d, 'p'); UPDATE bench.c SET n = n + 1 WHERE id = %d; COMMIT", w, k, (w*7+k)%100)
				if _, err := db.Exec(q); err != nil {
					loadErr.Store(err.Error())
					return
				}
				commits.Add(1)
			}
		}(w)
	}
	lwg.Wait()
	loadTime := time.Since(start)
	if v := loadErr.Load(); v != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("load: %v", v)
	}
	caughtUp := time.Now()
	e.waitApplied(t, d, 60*time.Second)
	catchUp := time.Since(caughtUp)
	close(stop)
	wg.Wait()
	after := scrape(t, e.base)
	sameChecksums(t, p, r)

	rate := float64(commits.Load()) / loadTime.Seconds()
	mu.Lock()
	defer mu.Unlock()
	// The replica's apply rate over the load, after the warm-up.
	var applyRate float64
	var first, last *sample
	for i := range rSamples {
		s := &rSamples[i]
		if s.at.Sub(start) >= warmUp && first == nil {
			first = s
		}
		if s.at.Sub(start) <= loadFor {
			last = s
		}
	}
	if first != nil && last != nil && last.at.After(first.at) {
		applyRate = float64(last.seq-first.seq) / last.at.Sub(first.at).Seconds()
	}
	slices.Sort(lags)
	slices.Sort(metLags)
	var metMax float64
	if len(metLags) > 0 {
		metMax = metLags[len(metLags)-1]
	}
	count := after["binvault_replica_batch_transactions_count"] - before["binvault_replica_batch_transactions_count"]
	sum := after["binvault_replica_batch_transactions_sum"] - before["binvault_replica_batch_transactions_sum"]
	rtCount := after["binvault_replica_batch_duration_seconds_count"] - before["binvault_replica_batch_duration_seconds_count"]
	rtSum := after["binvault_replica_batch_duration_seconds_sum"] - before["binvault_replica_batch_duration_seconds_sum"]
	var buckets []string
	prev := 0.0
	for _, le := range []string{"1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "+Inf"} {
		k := `binvault_replica_batch_transactions_bucket{le="` + le + `"}`
		c := after[k] - before[k]
		if c-prev > 0 {
			buckets = append(buckets, fmt.Sprintf("≤%s: %.0f", le, c-prev))
		}
		prev = c
	}
	t.Logf("proxy round trip %v; primary %.0f trx/s achieved (%d in %v, %d workers, target %d/s); replica applied %.0f trx/s; caught up %v after the load stopped",
		rtt.Round(time.Millisecond), rate, commits.Load(), loadTime.Round(time.Millisecond), workers, target, applyRate, catchUp.Round(time.Millisecond))
	t.Logf("lag by GTID (%d samples after %v warm-up): p50 %v p99 %v max %v; binvault_replica_seconds_behind: p50 %.2f p99 %.2f max %.2f",
		len(lags), warmUp, percentile(lags, 0.5).Round(time.Millisecond), percentile(lags, 0.99).Round(time.Millisecond), lags[len(lags)-1].Round(time.Millisecond),
		pct(metLags, 0.5), pct(metLags, 0.99), metMax)
	if count > 0 {
		t.Logf("batches: %.0f round trips, %.1f transactions each on average, %.0f ms each on average; sizes %s", count, sum/count, 1000*rtSum/max(rtCount, 1), strings.Join(buckets, ", "))
	}
	if rate < minRate {
		t.Fatalf("the load generator reached only %.0f trx/s (< %d): the test proves nothing; give it less work per transaction", rate, minRate)
	}
	if len(lags) == 0 {
		t.Fatal("no lag samples")
	}
	if m := lags[len(lags)-1]; m >= maxLag {
		t.Errorf("the replica lagged up to %v (≥ %v)", m.Round(time.Millisecond), maxLag)
	}
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, d.log)
	}
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
