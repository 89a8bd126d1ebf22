package backup_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/binvault/binvault/backup"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
	"github.com/binvault/binvault/test/harness"
)

func startSource(t *testing.T) (dbconn.DSN, *harness.MariaDB) {
	t.Helper()
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	p.Exec(t, `CREATE DATABASE a; CREATE DATABASE b;
		CREATE TABLE a.wide (id INT PRIMARY KEY, v VARCHAR(500));
		INSERT INTO a.wide SELECT seq, REPEAT('w', 400) FROM a.seq_1_to_30000;
		CREATE TABLE b.small (k VARCHAR(10) PRIMARY KEY, n INT);
		INSERT INTO b.small VALUES ('x', 1), ('y', 2);
		CREATE TABLE b.empty (id INT PRIMARY KEY);
		ANALYZE TABLE a.wide`)
	dsn, err := dbconn.Parse(p.DSN("", ""))
	if err != nil {
		t.Fatal(err)
	}
	return dsn, p
}

// Workers share the table list, the object writers and the progress
// counters: run under -race, this covers the concurrent paths.
func TestRunWritesEveryObjectThenTheManifest(t *testing.T) {
	dsn, _ := startSource(t)
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	prog := &backup.Progress{}
	m, err := backup.Run(context.Background(), st, dsn, backup.Options{Parallel: 4, ChunkBytes: 1 << 20, Progress: prog})
	if err != nil {
		t.Fatal(err)
	}
	if m.Rows != 30002 || prog.Rows.Load() != m.Rows || prog.TablesDone.Load() != 3 {
		t.Errorf("rows %d, progress %d rows %d tables", m.Rows, prog.Rows.Load(), prog.TablesDone.Load())
	}
	var wide backup.Table
	for _, tb := range m.Tables {
		if tb.Name == "wide" {
			wide = tb
		}
		if tb.Name == "empty" && len(tb.Objects) != 0 {
			t.Errorf("an empty table got objects: %+v", tb.Objects)
		}
	}
	if len(wide.Objects) < 8 {
		t.Errorf("a 12MiB table in 1MiB chunks made %d objects", len(wide.Objects))
	}
	var sum int64
	for _, o := range wide.Objects {
		sum += o.Rows
		if o.Bytes > 2<<20 {
			t.Errorf("%s: %d bytes, chunks are 1MiB plus one statement", o.Key, o.Bytes)
		}
		b, err := backup.ReadObject(context.Background(), st, o)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != o.StoredBytes {
			t.Errorf("%s: %d bytes", o.Key, len(b))
		}
	}
	if sum != 30000 {
		t.Errorf("wide rows across objects: %d", sum)
	}
	ms, err := backup.List(context.Background(), st)
	if err != nil || len(ms) != 1 || ms[0].ID != m.ID {
		t.Fatalf("List: %v %v", ms, err)
	}
	if _, err := st.Stat(context.Background(), backup.LockKey); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("lock left behind: %v", err)
	}
}

// Of two backups started together, one runs and the other is refused.
func TestConcurrentRunsOneRefused(t *testing.T) {
	dsn, _ := startSource(t)
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = backup.Run(context.Background(), st, dsn, backup.Options{Parallel: 2, ChunkBytes: 1 << 20})
		}()
	}
	wg.Wait()
	ok, locked := 0, 0
	for _, err := range errs {
		var le *backup.LockedError
		switch {
		case err == nil:
			ok++
		case errors.As(err, &le):
			locked++
			if !strings.Contains(err.Error(), "another backup is running") {
				t.Errorf("message: %v", err)
			}
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	// A later one may have found the lock already released: at least one
	// ran, and every refusal was a lock refusal.
	if ok < 1 || ok+locked != len(errs) {
		t.Fatalf("%d ran, %d refused: %v", ok, locked, errs)
	}
	ms, _ := backup.List(context.Background(), st)
	if len(ms) != ok {
		t.Errorf("%d backups listed, %d succeeded", len(ms), ok)
	}
}

// A cancelled backup writes no manifest and deletes what it wrote.
func TestCancelledRunLeavesNothing(t *testing.T) {
	dsn, _ := startSource(t)
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	prog := &backup.Progress{}
	go func() {
		for prog.Rows.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err = backup.Run(ctx, st, dsn, backup.Options{Parallel: 1, ChunkBytes: 1 << 20, Progress: prog})
	if err == nil {
		t.Fatal("cancelled backup succeeded")
	}
	var keys []string
	st.List(context.Background(), "", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil })
	if len(keys) != 0 {
		t.Errorf("a cancelled backup left %v", keys)
	}
}

// A line break in an identifier would split a statement's line: refused.
func TestLineBreakInANameIsRefused(t *testing.T) {
	dsn, p := startSource(t)
	p.Exec(t, "CREATE TABLE a.`two\nlines` (id INT PRIMARY KEY)")
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = backup.Run(context.Background(), st, dsn, backup.Options{})
	if err == nil || !strings.Contains(err.Error(), "line break") {
		t.Fatalf("want a refusal naming the line break, got %v", err)
	}
	var keys []string
	st.List(context.Background(), "", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil })
	if len(keys) != 0 {
		t.Errorf("a refused backup left %v", keys)
	}
}
