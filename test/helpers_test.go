package test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/test/harness"
)

// load writes to the primary until stopped: inserts, updates and deletes
// over several tables, multi-statement transactions, rows of a few MiB,
// and an occasional DDL.
type load struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	commits atomic.Int64
	errs    atomic.Int64
	lastErr atomic.Value
}

func prepareLoadSchema(t testing.TB, p *harness.MariaDB) {
	t.Helper()
	p.Exec(t, `CREATE DATABASE IF NOT EXISTS app;
		CREATE TABLE IF NOT EXISTS app.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, note VARCHAR(100));
		CREATE TABLE IF NOT EXISTS app.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, account INT, kind VARCHAR(20), payload LONGBLOB, created TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6));
		CREATE TABLE IF NOT EXISTS app.counters (name VARCHAR(40) PRIMARY KEY, n BIGINT NOT NULL)`)
	p.Exec(t, `INSERT IGNORE INTO app.counters VALUES ('ddl', 0)`)
}

// startLoad runs workers writers; ddl makes one of them issue DDL now and then.
func startLoad(t testing.TB, p *harness.MariaDB, workers int, ddl bool) *load {
	t.Helper()
	l := &load{stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		db, err := p.Open("")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		l.wg.Add(1)
		go func(w int, db *sql.DB) {
			defer l.wg.Done()
			defer db.Close()
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				var err error
				switch k := r.IntN(100); {
				case ddl && w == 0 && k < 2:
					n := r.IntN(1000)
					_, err = db.Exec(fmt.Sprintf("CREATE TABLE IF NOT EXISTS app.ddl_%d (id INT PRIMARY KEY, v INT)", n))
					if err == nil {
						_, err = db.Exec(fmt.Sprintf("ALTER TABLE app.ddl_%d ADD COLUMN IF NOT EXISTS c%d INT", n, i))
					}
				case k < 4:
					_, err = db.Exec("INSERT INTO app.events (account, kind, payload) VALUES (?, 'blob', ?)", r.IntN(100), strings.Repeat("b", 1<<20+r.IntN(1<<20)))
				case k < 40:
					err = tx(db, func(tx *sql.Tx) error {
						a, b := r.IntN(1000), r.IntN(1000)
						amt := r.IntN(100)
						for _, q := range []struct {
							id, delta int
						}{{a, -amt}, {b, amt}} {
							if _, err := tx.Exec("INSERT INTO app.accounts VALUES (?, ?, 'acct') ON DUPLICATE KEY UPDATE balance = balance + ?", q.id, q.delta, q.delta); err != nil {
								return err
							}
						}
						_, err := tx.Exec("INSERT INTO app.events (account, kind) VALUES (?, 'transfer')", a)
						return err
					})
				case k < 55:
					_, err = db.Exec("DELETE FROM app.events WHERE account = ? AND kind = 'transfer' LIMIT 3", r.IntN(100))
				case k < 70:
					_, err = db.Exec("UPDATE app.accounts SET note = ? WHERE id BETWEEN ? AND ?", fmt.Sprintf("n%d", i), r.IntN(900), r.IntN(900)+50)
				default:
					_, err = db.Exec("INSERT INTO app.counters VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1", fmt.Sprintf("w%d-%d", w, r.IntN(50)))
				}
				if err != nil {
					l.errs.Add(1)
					l.lastErr.Store(err.Error())
					time.Sleep(50 * time.Millisecond) // the primary may be restarting
					continue
				}
				l.commits.Add(1)
			}
		}(w, db)
	}
	return l
}

func tx(db *sql.DB, fn func(*sql.Tx) error) error {
	t, err := db.Begin()
	if err != nil {
		return err
	}
	if err := fn(t); err != nil {
		t.Rollback()
		return err
	}
	return t.Commit()
}

func (l *load) Stop() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// archiveGTIDs reads every archived segment (verifying it) and lists the
// GTIDs of its transactions in order.
func archiveGTIDs(t testing.TB, st storage.Store) []string {
	t.Helper()
	ctx := context.Background()
	ix, err := archive.Load(ctx, st, false)
	if err != nil {
		t.Fatal(err)
	}
	if p := archive.Chain(ix.Segments); len(p) > 0 {
		t.Fatalf("archive chain broken: %v", p)
	}
	var gtids []string
	for _, seg := range ix.Segments {
		rc, err := archive.OpenSegment(ctx, st, seg)
		if err != nil {
			t.Fatal(err)
		}
		r, err := binlog.NewReader(rc, seg.Source.Flavor)
		if err != nil {
			t.Fatal(err)
		}
		var g binlog.Grouper
		for {
			ev, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("segment %d: %v", seg.Seq, err)
			}
			role, err := g.Feed(ev)
			if err != nil {
				t.Fatal(err)
			}
			if role == binlog.End {
				gtids = append(gtids, g.Txn().GTID)
			}
		}
		rc.Close()
	}
	return gtids
}

// sameHistory fails unless got holds exactly want's GTIDs after the first
// from (the position binvault started at), each once, in order.
func sameHistory(t testing.TB, want, got []string, from int) {
	t.Helper()
	want = want[from:]
	missing, doubled := compareGTIDs(want, got)
	if len(missing) > 0 || len(doubled) > 0 || len(got) != len(want) {
		t.Fatalf("archive holds %d transactions, primary committed %d; missing %d %v; doubled %d %v",
			len(got), len(want), len(missing), head(missing), len(doubled), head(doubled))
	}
	for i := range want {
		if want[i] != got[i] {
			t.Fatalf("archive order differs at %d: %s vs primary %s", i, got[i], want[i])
		}
	}
}

// compareGTIDs lists want's GTIDs absent from got, and those got holds twice.
func compareGTIDs(want, got []string) (missing, doubled []string) {
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	for _, w := range want {
		if seen[w] == 0 {
			missing = append(missing, w)
		}
	}
	for g, n := range seen {
		if n > 1 {
			doubled = append(doubled, g)
		}
	}
	return missing, doubled
}

func head(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}
