package backup

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/internal/work"
)

// How the consistent instant is taken.
//
// MariaDB (tested here, 10.11): the control connection runs BACKUP STAGE
// START and BACKUP STAGE BLOCK_COMMIT, which blocks every commit and every
// DDL but not reads or running statements. While it holds, each worker
// runs START TRANSACTION WITH CONSISTENT SNAPSHOT and reads
// binlog_snapshot_file/position, the control connection reads
// @@gtid_binlog_pos, and the definitions are read (DDL being blocked, they
// match the snapshot exactly). All workers must report the same file and
// position, and BINLOG_GTID_POS of it must equal @@gtid_binlog_pos, or the
// backup stops. Then BACKUP STAGE END. Needs RELOAD (BACKUP STAGE).
//
// MySQL (written to the documentation, NOT tested here: no MySQL server
// is available to the test suite): LOCK INSTANCE FOR BACKUP for the whole
// backup (blocks DDL, needs BACKUP_ADMIN), FLUSH TABLES WITH READ LOCK
// while the workers start their snapshots (blocks commits, needs RELOAD),
// position from performance_schema.log_status (consistent file, position
// and gtid_executed), UNLOCK TABLES. Its manifests carry a warning saying
// the method is untested.
const (
	MethodMariaDB = "mariadb-backup-stage"
	MethodMySQL   = "mysql-ftwrl"
)

// lockWaitTimeout bounds how long the commit lock may be waited for: while
// the request waits (for a long DDL or commit), commits on the primary
// queue behind it, so it gives up quickly and retries.
const (
	lockWaitTimeout = 2 * time.Second
	lockAttempts    = 5
	lockRetryPause  = 3 * time.Second
)

// systemSchemas are never backed up: the server's own.
var systemSchemas = []string{"mysql", "sys", "information_schema", "performance_schema"}

func notSystemSchema(col string) string {
	q := make([]string, len(systemSchemas))
	for i, s := range systemSchemas {
		q[i] = dbconn.QuoteString(s)
	}
	return col + " NOT IN (" + strings.Join(q, ",") + ")"
}

// openSource opens the pool the backup runs on, with a driver
// configuration for exact values: no time parsing (zero dates survive),
// binary protocol via prepared statements, UTC session.
func openSource(ctx context.Context, dsn dbconn.DSN, conns int) (*sql.DB, error) {
	cfg, err := dsn.DriverConfig()
	if err != nil {
		return nil, err
	}
	cfg.ParseTime = false
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	pctx, cancel := context.WithTimeout(ctx, dsn.Timeout+time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		// The backup cannot start without its source: the user acts (exit 2).
		return nil, usage.Wrap(dbconn.Explain("source", dsn, err))
	}
	return db, nil
}

// RequiredPrivileges lists the global privileges a flavor's method needs.
func RequiredPrivileges(flavor string) []string {
	if flavor == dbconn.MySQL {
		return []string{"SELECT", "SHOW VIEW", "TRIGGER", "EVENT", "RELOAD", "BACKUP_ADMIN"}
	}
	return []string{"SELECT", "SHOW VIEW", "TRIGGER", "EVENT", "RELOAD"}
}

// checkPrivileges returns a usage error naming every missing privilege.
// Without SELECT on *.* a backup would miss whatever the user cannot see,
// and without TRIGGER SHOW TRIGGERS returns nothing rather than an error,
// so privileges are checked up front.
func checkPrivileges(ctx context.Context, c *sql.Conn, flavor string, dsn dbconn.DSN) error {
	g, err := dbconn.ReadGrants(ctx, c)
	if err != nil {
		return fmt.Errorf("source %s: read the user's privileges (SHOW GRANTS): %w", dsn, err)
	}
	var missing []string
	for _, p := range g.Missing(RequiredPrivileges(flavor)...) {
		if p == "BACKUP_ADMIN" && g.Has("SUPER") {
			continue
		}
		missing = append(missing, p)
	}
	if len(missing) > 0 {
		return usage.Errorf("source %s: user %s lacks %s for backups: %s", dsn, g.Account, strings.Join(missing, ", "), g.GrantStatement("%", missing...))
	}
	return nil
}

// session prepares a connection for dumping: exact value text, one time
// zone, repeatable read, no time limits on long reads.
func session(ctx context.Context, c *sql.Conn, flavor string) error {
	stmts := []string{
		"SET NAMES binary",
		"SET SESSION time_zone = '+00:00'",
		"SET SESSION sql_mode = ''",
		"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
		// The store may stall a worker mid-result: the server must wait.
		"SET SESSION net_write_timeout = 3600",
		"SET SESSION net_read_timeout = 3600",
		"SET SESSION wait_timeout = 86400",
		"SET SESSION lock_wait_timeout = 600",
	}
	if flavor == dbconn.MariaDB {
		stmts = append(stmts, "SET SESSION max_statement_time = 0")
	} else {
		stmts = append(stmts, "SET SESSION max_execution_time = 0")
	}
	for _, s := range stmts {
		if _, err := c.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// snapshotResult is what the instant gave.
type snapshotResult struct {
	position     binlog.Position
	snapshotTime time.Time
	lockWait     time.Duration
	lockHeld     time.Duration
	schema       *schemaInfo
}

// takeSnapshot starts every worker's snapshot at one instant and reads
// the definitions and the position at that instant.
func takeSnapshot(ctx context.Context, flavor string, control *sql.Conn, workers []*sql.Conn, o *Options) (*snapshotResult, error) {
	var lastErr error
	for attempt := 1; attempt <= lockAttempts; attempt++ {
		res, err := trySnapshot(ctx, flavor, control, workers)
		if err == nil {
			return res, nil
		}
		if !dbconn.IsLockConflict(err) {
			return nil, err
		}
		lastErr = err
		o.Log.Warn("could not block commits in time; retrying", "attempt", attempt, "timeout", lockWaitTimeout, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(lockRetryPause):
		}
	}
	return nil, fmt.Errorf("could not block commits for a consistent snapshot within %s in %d attempts (a long DDL or commit holds them; see SHOW PROCESSLIST): %w", lockWaitTimeout, lockAttempts, lastErr)
}

func trySnapshot(ctx context.Context, flavor string, control *sql.Conn, workers []*sql.Conn) (res *snapshotResult, err error) {
	res = &snapshotResult{}
	exec := func(q string) error {
		if _, err := control.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
		return nil
	}
	if err := exec(fmt.Sprintf("SET SESSION lock_wait_timeout = %d", int(lockWaitTimeout/time.Second))); err != nil {
		return nil, err
	}
	var lockSQL, unlockSQL []string
	if flavor == dbconn.MariaDB {
		lockSQL = []string{"BACKUP STAGE START", "BACKUP STAGE BLOCK_COMMIT"}
		unlockSQL = []string{"BACKUP STAGE END"}
	} else {
		lockSQL = []string{"FLUSH TABLES WITH READ LOCK"}
		unlockSQL = []string{"UNLOCK TABLES"}
	}
	begin := time.Now()
	var acquired time.Time
	locked := false
	unlock := func() error {
		for _, q := range unlockSQL {
			if err := exec(q); err != nil {
				return err
			}
		}
		return nil
	}
	defer func() {
		if locked {
			// On any failure the lock must go: the primary is stalled.
			if uerr := unlock(); uerr != nil && err == nil {
				err = uerr
			}
			for _, w := range workers {
				w.ExecContext(context.Background(), "ROLLBACK")
			}
		}
	}()
	for _, q := range lockSQL {
		if err := exec(q); err != nil {
			return nil, err
		}
		locked = true
	}
	acquired = time.Now()
	res.lockWait = acquired.Sub(begin)
	res.snapshotTime = acquired.UTC()

	// Start every snapshot and read each one's binlog coordinates.
	type coords struct {
		file string
		pos  uint64
	}
	wc := make([]coords, len(workers))
	err = parallel(ctx, len(workers), len(workers), func(ctx context.Context, i int) error {
		w := workers[i]
		if _, err := w.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT"); err != nil {
			return fmt.Errorf("START TRANSACTION WITH CONSISTENT SNAPSHOT: %w", err)
		}
		if flavor != dbconn.MariaDB {
			return nil
		}
		rows, err := w.QueryContext(ctx, "SHOW STATUS LIKE 'binlog_snapshot_%'")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				return err
			}
			switch strings.ToLower(k) {
			case "binlog_snapshot_file":
				wc[i].file = v
			case "binlog_snapshot_position":
				wc[i].pos, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	// The definitions, read while DDL is blocked, on the workers.
	si, err := readSchema(ctx, flavor, workers)
	if err != nil {
		return nil, err
	}
	res.schema = si

	if flavor == dbconn.MariaDB {
		var gtidPos string
		if err := control.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_pos").Scan(&gtidPos); err != nil {
			return nil, err
		}
		for i := range wc {
			if wc[i] != wc[0] {
				return nil, fmt.Errorf("workers' snapshots disagree on the binlog position (%s:%d vs %s:%d) although commits were blocked", wc[0].file, wc[0].pos, wc[i].file, wc[i].pos)
			}
		}
		if wc[0].file == "" {
			return nil, usage.Errorf("the source's binary log is off: a backup needs log_bin to record the position replay starts from")
		}
		if err := unlock(); err != nil {
			return nil, err
		}
		locked = false
		res.lockHeld = time.Since(acquired)
		var snapGTID sql.NullString
		if err := control.QueryRowContext(ctx, "SELECT BINLOG_GTID_POS(?, ?)", wc[0].file, wc[0].pos).Scan(&snapGTID); err != nil {
			return nil, fmt.Errorf("BINLOG_GTID_POS(%s, %d): %w", wc[0].file, wc[0].pos, err)
		}
		if !sameGTIDSet(flavor, snapGTID.String, gtidPos) {
			return nil, fmt.Errorf("the snapshot's binlog position %s:%d is GTID %q but @@gtid_binlog_pos read under the lock is %q", wc[0].file, wc[0].pos, snapGTID.String, gtidPos)
		}
		res.position = binlog.Position{GTIDSet: normalizeGTID(flavor, gtidPos), File: wc[0].file, Pos: uint32(wc[0].pos)}
		return res, nil
	}

	// MySQL (untested, see above).
	var file string
	var pos uint64
	var gtid string
	var local string
	if err := control.QueryRowContext(ctx, "SELECT LOCAL FROM performance_schema.log_status").Scan(&local); err == nil {
		file, pos, gtid = parseLogStatus(local)
	} else {
		rows, err := control.QueryContext(ctx, "SHOW MASTER STATUS")
		if err != nil {
			return nil, fmt.Errorf("read the binlog position: %w", err)
		}
		cols, _ := rows.Columns()
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if rows.Next() {
			rows.Scan(ptrs...)
		}
		rows.Close()
		for i, c := range cols {
			switch c {
			case "File":
				file = vals[i].String
			case "Position":
				pos, _ = strconv.ParseUint(vals[i].String, 10, 64)
			case "Executed_Gtid_Set":
				gtid = vals[i].String
			}
		}
	}
	if file == "" {
		return nil, usage.Errorf("the source's binary log is off: a backup needs log_bin to record the position replay starts from")
	}
	if err := unlock(); err != nil {
		return nil, err
	}
	locked = false
	res.lockHeld = time.Since(acquired)
	res.position = binlog.Position{GTIDSet: normalizeGTID(flavor, gtid), File: file, Pos: uint32(pos)}
	return res, nil
}

var logStatusRe = regexp.MustCompile(`"binary_log_file"\s*:\s*"([^"]*)".*"binary_log_position"\s*:\s*(\d+)`)
var logStatusGTID = regexp.MustCompile(`"gtid_executed"\s*:\s*"([^"]*)"`)

func parseLogStatus(js string) (string, uint64, string) {
	var file, gtid string
	var pos uint64
	if m := logStatusRe.FindStringSubmatch(js); m != nil {
		file = m[1]
		pos, _ = strconv.ParseUint(m[2], 10, 64)
	}
	if m := logStatusGTID.FindStringSubmatch(js); m != nil {
		gtid = strings.ReplaceAll(m[1], "\\n", "")
	}
	return file, pos, gtid
}

func normalizeGTID(flavor, s string) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", "")
	set, err := binlog.ParseGTIDSet(flavor, s)
	if err != nil {
		return s
	}
	return set.String()
}

func sameGTIDSet(flavor, a, b string) bool {
	sa, err1 := binlog.ParseGTIDSet(flavor, a)
	sb, err2 := binlog.ParseGTIDSet(flavor, b)
	if err1 != nil || err2 != nil {
		return strings.TrimSpace(a) == strings.TrimSpace(b)
	}
	return sa.Equal(sb)
}

// parallel runs fn(0..n-1) on at most width goroutines and returns the
// first error; the others see ctx cancelled.
func parallel(ctx context.Context, n, width int, fn func(ctx context.Context, i int) error) error {
	return work.Each(ctx, width, n, func(ctx context.Context, _, i int) error { return fn(ctx, i) })
}

// schemaJobs runs jobs across the worker connections, each job on one
// connection at a time.
func schemaJobs(ctx context.Context, conns []*sql.Conn, jobs []func(context.Context, *sql.Conn) error) error {
	pool := make(chan *sql.Conn, len(conns))
	for _, c := range conns {
		pool <- c
	}
	return parallel(ctx, len(jobs), len(conns), func(ctx context.Context, i int) error {
		c := <-pool
		defer func() { pool <- c }()
		return jobs[i](ctx, c)
	})
}
