package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// schemaSQL creates the chaos database: a few tables the load updates in
// place (ids 1..loadRows, so their size stays bounded), and a log table it
// appends to and trims.
var schemaSQL = func() []string {
	s := []string{"CREATE DATABASE chaos"}
	for i := 1; i <= loadTables; i++ {
		s = append(s, fmt.Sprintf("CREATE TABLE chaos.t%d (id INT PRIMARY KEY, k INT NOT NULL, v VARCHAR(64) NOT NULL, n BIGINT NOT NULL DEFAULT 0, KEY (k))", i))
	}
	return append(s, "CREATE TABLE chaos.log (id BIGINT AUTO_INCREMENT PRIMARY KEY, worker INT NOT NULL, at DATETIME(6) NOT NULL, note VARCHAR(200) NOT NULL)")
}()

const (
	loadTables  = 4
	loadRows    = 2000
	loadWorkers = 4
	// loadPause is each worker's mean pause between transactions: about
	// 4 × 25 = 100 transactions/s asked, so that a long run's history
	// stays quick to check.
	loadPause = 40 * time.Millisecond
)

// load writes to whichever server is the primary until stopped: several
// workers of small transactions (multi-statement, inserts, updates,
// deletes), worker 0 now and then a DDL (ADD/DROP COLUMN, CREATE/DROP
// TABLE). A failed statement is counted and the worker reconnects, to the
// new primary once there is one.
type load struct {
	target  atomic.Pointer[server]
	stop    chan struct{}
	wg      sync.WaitGroup
	commits atomic.Int64
	errs    atomic.Int64
	ddl     atomic.Int64
	mu      sync.Mutex
	lastErr string
}

func startLoad(p *server, seed uint64) *load {
	l := &load{stop: make(chan struct{})}
	l.target.Store(p)
	for w := 0; w < loadWorkers; w++ {
		l.wg.Add(1)
		go l.worker(w, rand.New(rand.NewPCG(seed, uint64(w))))
	}
	return l
}

// moveTo points the load at a new primary.
func (l *load) moveTo(p *server) { l.target.Store(p) }

func (l *load) Stop() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *load) fail(err error) {
	l.errs.Add(1)
	l.mu.Lock()
	l.lastErr = err.Error()
	l.mu.Unlock()
}

func (l *load) worker(w int, r *rand.Rand) {
	defer l.wg.Done()
	var db *sql.DB
	var at *server
	defer func() {
		if db != nil {
			db.Close()
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		case <-time.After(time.Duration(r.Int64N(int64(2 * loadPause)))):
		}
		if p := l.target.Load(); db == nil || p != at {
			if db != nil {
				db.Close()
			}
			at = p
			var err error
			db, err = sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/chaos?timeout=2s&readTimeout=20s&writeTimeout=20s", loadUser, loadPass, p.Addr()))
			if err != nil {
				l.fail(err)
				db = nil
				continue
			}
			db.SetMaxOpenConns(1)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := l.step(ctx, db, w, i, r)
		cancel()
		if err != nil {
			l.fail(err)
			// A dead connection is dropped by database/sql; give a
			// restarting server a moment.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		l.commits.Add(1)
	}
}

func (l *load) step(ctx context.Context, db *sql.DB, w, i int, r *rand.Rand) error {
	t := func() string { return fmt.Sprintf("t%d", 1+r.IntN(loadTables)) }
	id := func() int { return 1 + r.IntN(loadRows) }
	switch k := r.IntN(1000); {
	case w == 0 && k < 12:
		l.ddl.Add(1)
		var q []string
		switch r.IntN(4) {
		case 0:
			q = []string{fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS extra%d VARCHAR(20) NULL", t(), r.IntN(3))}
		case 1:
			q = []string{fmt.Sprintf("ALTER TABLE %s DROP COLUMN IF EXISTS extra%d", t(), r.IntN(3))}
		case 2:
			n := r.IntN(5)
			q = []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS side%d (id INT PRIMARY KEY, v INT NOT NULL)", n),
				fmt.Sprintf("INSERT INTO side%d VALUES (%d, %d) ON DUPLICATE KEY UPDATE v = v + 1", n, r.IntN(100), i)}
		default:
			q = []string{fmt.Sprintf("DROP TABLE IF EXISTS side%d", r.IntN(5))}
		}
		for _, s := range q {
			if _, err := db.ExecContext(ctx, s); err != nil {
				return err
			}
		}
		return nil
	case k < 400:
		// A transfer-like transaction over two tables.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		a, b, amt := id(), id(), r.IntN(100)
		stmts := []struct {
			q    string
			args []any
		}{
			{"INSERT INTO " + t() + " (id, k, v, n) VALUES (?, ?, 'acct', ?) ON DUPLICATE KEY UPDATE n = n - ?", []any{a, a % 97, -amt, amt}},
			{"INSERT INTO " + t() + " (id, k, v, n) VALUES (?, ?, 'acct', ?) ON DUPLICATE KEY UPDATE n = n + ?", []any{b, b % 97, amt, amt}},
			{"INSERT INTO log (worker, at, note) VALUES (?, NOW(6), ?)", []any{w, fmt.Sprintf("transfer %d %d->%d", amt, a, b)}},
		}
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s.q, s.args...); err != nil {
				tx.Rollback()
				return err
			}
		}
		return tx.Commit()
	case k < 600:
		_, err := db.ExecContext(ctx, "INSERT INTO "+t()+" (id, k, v) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v), k = k + 1",
			id(), r.IntN(1000), strings.Repeat(string(rune('a'+r.IntN(26))), 1+r.IntN(60)))
		return err
	case k < 750:
		lo := id()
		_, err := db.ExecContext(ctx, "UPDATE "+t()+" SET n = n + 1, v = CONCAT(LEFT(v, 50), ?) WHERE id BETWEEN ? AND ?", fmt.Sprintf("-%d", i%1000), lo, lo+20)
		return err
	case k < 900:
		lo := id()
		_, err := db.ExecContext(ctx, "DELETE FROM "+t()+" WHERE id BETWEEN ? AND ?", lo, lo+3)
		return err
	case k < 980:
		_, err := db.ExecContext(ctx, "INSERT INTO log (worker, at, note) VALUES (?, NOW(6), REPEAT('x', ?))", w, r.IntN(200))
		return err
	default:
		// Keep the log table from growing without end (and make a
		// larger transaction now and then).
		_, err := db.ExecContext(ctx, "DELETE FROM log ORDER BY id LIMIT 2500")
		return err
	}
}

func (l *load) String() string {
	l.mu.Lock()
	last := l.lastErr
	l.mu.Unlock()
	s := fmt.Sprintf("%d commits (%d DDL asked), %d errors", l.commits.Load(), l.ddl.Load(), l.errs.Load())
	if last != "" {
		s += " (last: " + oneLine(last, 120) + ")"
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
