package restore_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/binvault/binvault/backup"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/restore"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
	"github.com/binvault/binvault/test/harness"
)

// backupOf takes a backup of a small source into a directory store.
func backupOf(t *testing.T) (*file.Store, *backup.Manifest) {
	t.Helper()
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	p.Exec(t, `CREATE DATABASE d;
		CREATE TABLE d.a (id INT PRIMARY KEY, v VARCHAR(100));
		INSERT INTO d.a SELECT seq, REPEAT('a', 90) FROM d.seq_1_to_20000;
		CREATE TABLE d.b (id INT PRIMARY KEY);
		INSERT INTO d.b VALUES (1), (2), (3)`)
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dsn, _ := dbconn.Parse(p.DSN("", ""))
	m, err := backup.Run(context.Background(), st, dsn, backup.Options{Parallel: 2, ChunkBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return st, m
}

func objectOf(t *testing.T, m *backup.Manifest, table string) backup.Object {
	t.Helper()
	for _, tb := range m.Tables {
		if tb.Name == table && len(tb.Objects) > 0 {
			return tb.Objects[0]
		}
	}
	t.Fatalf("no object for table %s", table)
	return backup.Object{}
}

func TestLoadStopsAtADamagedObjectNamingIt(t *testing.T) {
	ctx := context.Background()
	st, m := backupOf(t)
	obj := objectOf(t, m, "b")
	path := filepath.Join(st.Dir(), obj.Key)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// A flipped byte: the trailer's digest no longer matches.
	bad := bytes.Clone(good)
	bad[len(bad)/3] ^= 0x40
	os.WriteFile(path, bad, 0o644)
	target := harness.StartMariaDB(t, "target", harness.MariaDBOptions{})
	_, err = restore.LoadBackup(ctx, st, m.ID, target.DSN("", ""), restore.LoadOptions{Parallel: 2})
	if !storage.IsChecksum(err) || !strings.Contains(err.Error(), obj.Key) {
		t.Fatalf("want a checksum error naming %s, got %v", obj.Key, err)
	}
	if n := target.QueryString(t, "SELECT COUNT(*) FROM d.b"); n != "0" {
		t.Errorf("%s rows of the damaged object were loaded", n)
	}

	// Another whole object put in its place: its trailer is right, the
	// manifest's digest is not.
	if _, err := st.Put(ctx, obj.Key, bytes.NewReader([]byte("INSERT INTO `d`.`b` (`id`) VALUES (99);\n"))); err != nil {
		t.Fatal(err)
	}
	target2 := harness.StartMariaDB(t, "target2", harness.MariaDBOptions{})
	_, err = restore.LoadBackup(ctx, st, m.ID, target2.DSN("", ""), restore.LoadOptions{Parallel: 2})
	if !storage.IsChecksum(err) || !strings.Contains(err.Error(), obj.Key) || !strings.Contains(err.Error(), "manifest") {
		t.Fatalf("want a checksum error against the manifest naming %s, got %v", obj.Key, err)
	}
	if n := target2.QueryString(t, "SELECT COUNT(*) FROM d.b"); n != "0" {
		t.Errorf("%s rows of the substituted object were loaded", n)
	}
}

func TestLoadRefusesANonEmptyTargetUnlessForced(t *testing.T) {
	ctx := context.Background()
	st, m := backupOf(t)
	target := harness.StartMariaDB(t, "target", harness.MariaDBOptions{})
	target.Exec(t, "CREATE DATABASE d; CREATE TABLE d.old (x INT); CREATE DATABASE other")
	_, err := restore.LoadBackup(ctx, st, m.ID, target.DSN("", ""), restore.LoadOptions{})
	if !usage.Is(err) || !strings.Contains(err.Error(), "already holds databases d, other") {
		t.Fatalf("want a usage error naming the databases, got %v", err)
	}
	res, err := restore.LoadBackup(ctx, st, m.ID, target.DSN("", ""), restore.LoadOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 20003 || target.QueryString(t, "SELECT COUNT(*) FROM d.a") != "20000" {
		t.Errorf("forced load: %+v", res)
	}
	if got := target.QueryString(t, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'd' AND TABLE_NAME = 'old'"); got != "0" {
		t.Error("the backup's database was not replaced")
	}
	if got := target.QueryString(t, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'other'"); got != "1" {
		t.Error("a database the backup does not hold was dropped")
	}

	_, err = restore.LoadBackup(ctx, st, "20200101T000000Z-000000", target.DSN("", ""), restore.LoadOptions{Force: true})
	if !usage.Is(err) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("a missing backup: %v", err)
	}
}

// A target whose max_allowed_packet is below the backup's longest
// statement is refused before anything is created.
func TestLoadChecksMaxAllowedPacket(t *testing.T) {
	ctx := context.Background()
	st, m := backupOf(t)
	target := harness.StartMariaDB(t, "target", harness.MariaDBOptions{Extra: []string{"--max-allowed-packet=65536"}})
	_, err := restore.LoadBackup(ctx, st, m.ID, target.DSN("", ""), restore.LoadOptions{})
	if !usage.Is(err) || !strings.Contains(err.Error(), "max_allowed_packet") {
		t.Fatalf("want a usage error about max_allowed_packet, got %v", err)
	}
	if got := target.QueryString(t, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'd'"); got != "0" {
		t.Error("the load created databases before refusing")
	}
}

// A view already broken on the source (its table dropped) cannot be
// created on the target: the load finishes and names it.
func TestLoadReportsABrokenViewAndGoesOn(t *testing.T) {
	ctx := context.Background()
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	p.Exec(t, `CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); CREATE TABLE d.gone (id INT);
		CREATE VIEW d.ok AS SELECT id FROM d.t; CREATE VIEW d.broken AS SELECT id FROM d.gone; DROP TABLE d.gone;
		INSERT INTO d.t VALUES (1)`)
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dsn, _ := dbconn.Parse(p.DSN("", ""))
	m, err := backup.Run(ctx, st, dsn, backup.Options{})
	if err != nil {
		t.Fatal(err)
	}
	target := harness.StartMariaDB(t, "target", harness.MariaDBOptions{})
	res, err := restore.LoadBackup(ctx, st, m.ID, target.DSN("", ""), restore.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "broken") {
		t.Errorf("warnings %v, want the broken view named", res.Warnings)
	}
	if got := target.QueryString(t, "SELECT COUNT(*) FROM d.ok"); got != "1" {
		t.Errorf("the valid view: %s rows", got)
	}
}
