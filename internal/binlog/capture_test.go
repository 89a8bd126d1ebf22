//go:build capture

package binlog

// How testdata/mariadb-10.11.binlog was made: a real MariaDB writes a small
// workload of every group shape binvault handles, and its closed binlog file
// is copied. The unit tests need no server; rerun this only to refresh it:
//
//	go test -tags capture -run TestCaptureMariaDBBinlog ./internal/binlog/

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/binvault/binvault/test/harness"
)

func TestCaptureMariaDBBinlog(t *testing.T) {
	m := harness.StartMariaDB(t, "capture", harness.MariaDBOptions{ServerID: 7})
	// One connection: BEGIN, XA START and what follows them must share it.
	c, err := m.DB(t).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, q := range []string{
		"CREATE DATABASE app",
		"CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB",
		"CREATE TABLE app.m (id INT PRIMARY KEY) ENGINE=MyISAM",
		"INSERT INTO app.t VALUES (1, 'one')",
		"BEGIN",
		"INSERT INTO app.t VALUES (2, 'two')",
		"UPDATE app.t SET v = 'uno' WHERE id = 1",
		"COMMIT",
		"INSERT INTO app.m VALUES (1)",
		// About 32 KiB of rows: several rows events under one table map.
		"INSERT INTO app.t SELECT seq + 10, REPEAT('x', 150) FROM app.seq_1_to_200",
		"XA START 'x1'",
		"INSERT INTO app.t VALUES (300, 'xa')",
		"XA END 'x1'",
		"XA PREPARE 'x1'",
		"XA COMMIT 'x1'",
		"DELETE FROM app.t WHERE id = 2",
		"FLUSH BINARY LOGS",
	} {
		if _, err := c.ExecContext(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Logf("gtid_binlog_pos %s", m.QueryString(t, "SELECT @@gtid_binlog_pos"))
	raw, err := os.ReadFile(filepath.Join(m.Dir, "data", "mariadb-bin.000001"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "mariadb-10.11.binlog"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
}
