package test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/binvault/binvault/backup"
	"github.com/binvault/binvault/restore"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/open"
	"github.com/binvault/binvault/test/harness"
)

// backupSetup is a primary, an S3 server and a configuration for backups.
type backupSetup struct {
	primary *harness.MariaDB
	s3      *harness.S3
	cfg     string
	env     []string
	store   storage.Store
}

func newBackupSetup(t *testing.T, extra ...string) *backupSetup {
	t.Helper()
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	s3 := harness.StartS3(t)
	cfg := writeS3Config(t, p.DSN("", ""), s3, "archive", extra...)
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	st, err := open.Open(context.Background(), open.Options{URL: s3.URL("archive"), Endpoint: s3.Endpoint(), Region: "us-east-1", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return &backupSetup{primary: p, s3: s3, cfg: cfg, env: s3.Env(), store: st}
}

// backupsList runs `binvault backups --json`.
func (b *backupSetup) backupsList(t testing.TB) []map[string]any {
	t.Helper()
	r := binvault(t, b.env, "backups", "--config", b.cfg, "--json")
	if r.code != 0 {
		t.Fatalf("backups: %s", r)
	}
	var rep struct {
		Backups []map[string]any `json:"backups"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("backups --json: %v\n%s", err, r.stdout)
	}
	return rep.Backups
}

var lastBackupLog string

// takeBackup runs `binvault backup` and returns the id it printed.
func (b *backupSetup) takeBackup(t testing.TB) string {
	t.Helper()
	r := binvault(t, b.env, "backup", "--config", b.cfg)
	lastBackupLog = r.stderr
	id := strings.TrimSpace(r.stdout)
	if _, ok := backup.ParseID(id); r.code != 0 || !ok {
		t.Fatalf("backup: %s", r)
	}
	return id
}

// The backup is consistent and tied to its exact position: load it into an
// empty server, make that server a replica of the primary starting at the
// backup's GTID position, and once it has caught up every table equals the
// primary's. A row missing from the backup, or one the backup holds from
// after its position, stops replication (duplicate key, row not found) or
// shows in the checksums.
func TestBackupUnderLoadReplaysToThePrimary(t *testing.T) {
	ctx := context.Background()
	b := newBackupSetup(t, "backup:\n  parallel: 4\n  chunk_size: 1MiB\n")
	p := b.primary
	p.Exec(t, "SET sql_log_bin = 0; CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'repl-pw'; GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'")
	prepareLoadSchema(t, p)
	// A table big enough to be read in primary-key ranges while the load runs.
	p.Exec(t, `CREATE TABLE app.ledger (id BIGINT PRIMARY KEY, account INT, amount DECIMAL(12,2), memo VARCHAR(200), KEY (account));
		INSERT INTO app.ledger SELECT seq, seq % 1000, seq / 100, REPEAT('m', 150) FROM app.seq_1_to_200000;
		INSERT INTO app.accounts SELECT seq, 1000, 'acct' FROM app.seq_0_to_999;
		ANALYZE TABLE app.ledger`)
	// The daemon archives from here on, so the backup's chain to the
	// present can be checked.
	a := &archiveSetup{primary: p, s3: b.s3, cfg: b.cfg, env: b.env, store: b.store, spool: filepath.Join(filepath.Dir(b.cfg), "spool")}
	d := startDaemon(t, b.env, "--config", b.cfg)
	a.waitConnected(t, d)
	l := startLoad(t, p, 4, false)
	defer l.Stop()
	// The ledger moves too: updates across the whole key range.
	ledgerStop := make(chan struct{})
	ledgerDone := make(chan struct{})
	var ledgerOps atomic.Int64
	go func() {
		defer close(ledgerDone)
		db, err := p.Open("")
		if err != nil {
			return
		}
		defer db.Close()
		for i := 0; ; i++ {
			select {
			case <-ledgerStop:
				return
			default:
			}
			db.Exec("UPDATE app.ledger SET amount = amount + 1, memo = ? WHERE id IN (?, ?)", fmt.Sprintf("u%d", i), 1+(i*7919)%200000, 1+(i*104729)%200000)
			db.Exec("INSERT INTO app.ledger VALUES (?, 1, 1, 'new')", 1000000+i)
			ledgerOps.Add(2)
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	before := l.commits.Load() + ledgerOps.Load()
	started := time.Now()
	id := b.takeBackup(t)
	took := time.Since(started)
	during := l.commits.Load() + ledgerOps.Load() - before
	time.Sleep(1500 * time.Millisecond)
	close(ledgerStop)
	<-ledgerDone
	l.Stop()
	if during < 50 {
		t.Fatalf("only %d transactions committed during the backup (%s): the test shows nothing", during, took)
	}

	m, err := backup.ReadManifest(ctx, b.store, id)
	if err != nil {
		t.Fatal(err)
	}
	checkManifest(t, b.store, m)
	var ledger backup.Table
	for _, tb := range m.Tables {
		if tb.Name == "ledger" {
			ledger = tb
		}
	}
	if len(ledger.Objects) < 3 {
		t.Errorf("ledger table in %d objects, want it split", len(ledger.Objects))
	}
	if m.LockHeldSeconds <= 0 || m.LockHeldSeconds > 1 {
		t.Errorf("lock held %.3fs", m.LockHeldSeconds)
	}
	t.Logf("backup %s at %s in %s: %d tables, %d rows, %d transactions committed meanwhile, commits held %.1f ms (waited %.1f ms)",
		id, m.Position, took.Round(time.Millisecond), len(m.Tables), m.Rows, during, m.LockHeldSeconds*1000, m.LockWaitSeconds*1000)
	a.waitArchived(t, 60*time.Second)
	list := b.backupsList(t)
	if len(list) != 1 || list[0]["id"] != id || list[0]["chain_complete"] != true {
		t.Fatalf("backups lists %v, want %s with a complete chain", list, id)
	}
	d.stop(t, 20*time.Second)

	target := harness.StartMariaDB(t, "loaded", harness.MariaDBOptions{})
	res, err := restore.LoadBackup(ctx, b.store, id, target.DSN("", ""), restore.LoadOptions{Parallel: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Position.GTIDSet != m.Position.GTIDSet || len(res.Warnings) > 0 {
		t.Fatalf("load: position %v (manifest %v), warnings %v", res.Position, m.Position, res.Warnings)
	}
	target.Exec(t, fmt.Sprintf(`SET GLOBAL gtid_slave_pos = '%s';
		CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = %d, MASTER_USER = 'repl', MASTER_PASSWORD = 'repl-pw', MASTER_USE_GTID = slave_pos;
		START SLAVE`, m.Position.GTIDSet, p.Port))
	want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	eventually(t, 60*time.Second, "the loaded server to replicate up to "+want, func() bool {
		st := slaveStatus(t, target)
		if e := st["Last_SQL_Error"] + st["Last_IO_Error"]; e != "" {
			t.Fatalf("replication from the backup's position failed: %s", e)
		}
		return target.QueryString(t, "SELECT @@gtid_slave_pos") == want
	})
	target.Exec(t, "STOP SLAVE")
	sameData(t, p, target)
}

// slaveStatus is SHOW SLAVE STATUS by column name.
func slaveStatus(t testing.TB, m *harness.MariaDB) map[string]string {
	t.Helper()
	rows, err := m.DB(t).Query("SHOW SLAVE STATUS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	out := map[string]string{}
	if !rows.Next() {
		return out
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		t.Fatal(err)
	}
	for i, c := range cols {
		out[c] = vals[i].String
	}
	return out
}

// bigTable fills a table that takes a few seconds to dump on one connection.
func bigTable(t *testing.T, p *harness.MariaDB) {
	t.Helper()
	p.Exec(t, `CREATE DATABASE big;
		CREATE TABLE big.t (id INT PRIMARY KEY, a VARCHAR(250), b VARCHAR(250), c DOUBLE);
		INSERT INTO big.t SELECT seq, REPEAT(CHAR(65 + seq % 26), 240), REPEAT(CHAR(97 + seq % 26), 240), seq / 3 FROM big.seq_1_to_400000`)
}

// startBackup runs `binvault backup` in the background.
func startBackup(t *testing.T, b *backupSetup) (*exec.Cmd, *bytes.Buffer, chan struct{}) {
	t.Helper()
	cmd := exec.Command(binvaultBin, "backup", "--config", b.cfg)
	cmd.Env = append(cmd.Environ(), b.env...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return cmd, out, done
}

// Two backups never run at once: the second exits 1 naming the first. A
// backup killed midway leaves no manifest, is not listed, and its objects
// go with the next backup.
func TestBackupKilledMidwayIsInvisibleAndCleanedUp(t *testing.T) {
	ctx := context.Background()
	b := newBackupSetup(t, "backup:\n  parallel: 1\n  chunk_size: 1MiB\n")
	bigTable(t, b.primary)

	first, out, done := startBackup(t, b)
	eventually(t, 30*time.Second, "the first backup to take the lock", func() bool {
		_, err := b.store.Stat(ctx, backup.LockKey)
		return err == nil
	})
	r := binvault(t, b.env, "backup", "--config", b.cfg)
	if r.code != 1 || !strings.Contains(r.stderr, "another backup is running") || !strings.Contains(r.stderr, fmt.Sprintf("pid %d", first.Process.Pid)) {
		t.Fatalf("a second backup while one runs: want exit 1 naming the first: %s", r)
	}
	if msg := messageLine(t, r, true); strings.Contains(msg, "\n") {
		t.Errorf("not one line: %q", msg)
	}

	// Kill it once some data objects are stored, well before the end.
	var leftover string
	eventually(t, 60*time.Second, "data objects of the first backup", func() bool {
		n := 0
		b.store.List(ctx, backup.Prefix, func(oi storage.ObjectInfo) error {
			if strings.Contains(oi.Key, "/data/") {
				n++
				leftover, _, _ = strings.Cut(strings.TrimPrefix(oi.Key, backup.Prefix), "/")
			}
			return nil
		})
		return n >= 2
	})
	first.Process.Signal(syscall.SIGKILL)
	<-done
	if strings.TrimSpace(strings.Split(out.String(), "\n")[0]) == leftover {
		t.Fatalf("the backup finished before it was killed; make the table bigger: %s", out)
	}
	if _, err := b.store.Stat(ctx, backup.ManifestKey(leftover)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("killed backup has a manifest: %v", err)
	}
	if list := b.backupsList(t); len(list) != 0 {
		t.Fatalf("a killed backup is listed: %v", list)
	}
	left := keysUnder(t, b.store, backup.Prefix+leftover+"/")
	if len(left) == 0 {
		t.Fatal("no leftovers to clean: the test shows nothing")
	}

	// The next backup takes over the dead process's lock at once (same
	// host, process gone) and deletes the leftovers.
	id := b.takeBackup(t)
	if got := keysUnder(t, b.store, backup.Prefix+leftover+"/"); len(got) != 0 {
		t.Errorf("leftovers of the killed backup remain: %v\n%s", got, lastBackupLog)
	}
	list := b.backupsList(t)
	if len(list) != 1 || list[0]["id"] != id {
		t.Fatalf("backups lists %v, want only %s", list, id)
	}
	if _, err := b.store.Stat(ctx, backup.LockKey); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the lock is still there after the backup ended: %v", err)
	}
	m, err := backup.ReadManifest(ctx, b.store, id)
	if err != nil {
		t.Fatal(err)
	}
	checkManifest(t, b.store, m)
	if m.Rows != 400000 {
		t.Errorf("backup holds %d rows, want 400000", m.Rows)
	}
}

func keysUnder(t testing.TB, st storage.Store, prefix string) []string {
	t.Helper()
	var keys []string
	if err := st.List(context.Background(), prefix, func(oi storage.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestBackupBadInputExits2NamingTheProblem(t *testing.T) {
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	p.Exec(t, `CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); INSERT INTO d.t VALUES (1);
		CREATE VIEW d.v AS SELECT id FROM d.t; CREATE TRIGGER d.tr BEFORE INSERT ON d.t FOR EACH ROW SET NEW.id = NEW.id;
		CREATE PROCEDURE d.p() SELECT 1; CREATE EVENT d.e ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1;
		SET sql_log_bin = 0;
		CREATE USER weak@'127.0.0.1' IDENTIFIED BY 'weak-pw'; GRANT SELECT ON *.* TO weak@'127.0.0.1';
		CREATE USER enough@'127.0.0.1' IDENTIFIED BY 'enough-pw'; GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, RELOAD ON *.* TO enough@'127.0.0.1'`)
	s3 := harness.StartS3(t)
	noBinlog := harness.StartMariaDB(t, "nobinlog", harness.MariaDBOptions{NoBinlog: true})
	port, _ := harness.FreePort()
	fileStore := "file://" + t.TempDir()
	// An S3 endpoint nobody listens on.
	deadPort, _ := harness.FreePort()
	deadS3 := &harness.S3{Port: deadPort, Bucket: s3.Bucket}

	cases := []struct {
		name   string
		cfg    string
		env    []string
		want   []string
		secret string
	}{
		{"unreachable primary", minimalConfig(t, fmt.Sprintf("mysql://u:p@127.0.0.1:%d", port), fileStore), nil, []string{"connection refused"}, ""},
		{"wrong password", minimalConfig(t, "mysql://enough:not-the-pw@"+p.Addr(), fileStore), nil, []string{"access denied", "enough"}, "not-the-pw"},
		{"missing privileges", minimalConfig(t, "mysql://weak:weak-pw@"+p.Addr(), fileStore), nil,
			[]string{"lacks SHOW VIEW, TRIGGER, EVENT, RELOAD", "GRANT SHOW VIEW, TRIGGER, EVENT, RELOAD ON *.* TO 'weak'@'127.0.0.1'"}, "weak-pw"},
		{"binary log off", minimalConfig(t, noBinlog.DSN("", ""), fileStore), nil, []string{"binary log is off"}, ""},
		{"missing store directory", minimalConfig(t, p.DSN("", ""), "file:///nonexistent/binvault"), nil, []string{"/nonexistent/binvault", "does not exist"}, ""},
		{"wrong S3 secret", writeS3Config(t, p.DSN("", ""), s3, "archive"),
			[]string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret-key", "AWS_EC2_METADATA_DISABLED=true"}, []string{"access denied"}, "wrong-secret-key"},
		{"unreachable S3", writeS3Config(t, p.DSN("", ""), deadS3, "archive"), s3.Env(), []string{"storage", "connection refused"}, ""},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := binvaultWithin(t, 90*time.Second, c.env, "backup", "--config", c.cfg)
			if r.code != 2 || r.stdout != "" {
				t.Fatalf("want exit 2 and no id: %s", r)
			}
			msg := messageLine(t, r, true)
			t.Log(msg)
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q: %s", w, msg)
				}
			}
			if c.secret != "" && strings.Contains(r.stdout+r.stderr, c.secret) {
				t.Errorf("output leaks the secret: %s", r)
			}
		})
	}

	// Exactly the privileges the message names are enough.
	cfg := minimalConfig(t, "mysql://enough:enough-pw@"+p.Addr(), fileStore)
	r := binvault(t, nil, "backup", "--config", cfg)
	if r.code != 0 {
		t.Fatalf("backup with SELECT, SHOW VIEW, TRIGGER, EVENT, RELOAD: %s", r)
	}
	st, err := open.Open(context.Background(), open.Options{URL: fileStore})
	if err != nil {
		t.Fatal(err)
	}
	m, err := backup.ReadManifest(context.Background(), st, strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatal(err)
	}
	s, err := backup.ReadSchema(context.Background(), st, m)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, d := range s.Definitions {
		kinds[d.Kind]++
	}
	for _, k := range []string{backup.KindDatabase, backup.KindTable, backup.KindView, backup.KindTrigger, backup.KindRoutine, backup.KindEvent} {
		if kinds[k] != 1 {
			t.Errorf("backup by the least-privileged user holds %d definitions of kind %s, want 1", kinds[k], k)
		}
	}
}
