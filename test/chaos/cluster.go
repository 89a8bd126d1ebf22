package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/open"
	"github.com/binvault/binvault/test/harness"
)

// Accounts, created unlogged on every server: binvault's source user, the
// native replication user, and the load's, which may write only to the
// chaos database (no READ ONLY ADMIN: a read_only server refuses it, so
// the load can never write to a standby by mistake).
const (
	bvUser, bvPass     = "bv", "bv-pw"
	replUser, replPass = "repl", "repl-pw"
	loadUser, loadPass = "load", "load-pw"
	// sourceLatency delays what the primaries send binvault (toxiproxy,
	// downstream), so that the standby, replicating directly, always has a
	// transaction before binvault does: otherwise binvault may archive a
	// transaction the standby never got, and rightly refuse to follow it.
	// The failover fault cuts the proxy (dropping what it holds) before it
	// kills the primary.
	sourceLatency = 50
	// failoverWait is source.failover_wait in the daemon's configuration.
	failoverWait = 5 * time.Second
)

// server is one MariaDB with the role it plays.
type server struct {
	*harness.MariaDB
	proxy  *toxiproxy.Proxy // binvault's way to it (primaries only)
	binlog binlogCache      // the GTIDs of its binlog, read incrementally
}

type chaos struct {
	dir  string
	bin  string
	seed uint64
	rng  *rand.Rand

	db1, db2 *server // primary and standby, roles alternate
	primary  *server
	standby  *server
	replica  *server // C: binvault applies to it
	scratch  *server // D: restores go there
	s3       *harness.S3
	s3proxy  *toxiproxy.Proxy
	proxies  *toxiproxy.ApiServer
	store    storage.Store // the archive, read directly (not through the proxy)
	env      []string      // binvault's environment (S3 credentials)
	cfg      string
	web      string // http://listen of the daemon
	failover bool   // this binvault follows a promoted primary
	daemon   *daemonProc
	history  archiveHistory
	backups  int
	rebuilds int

	cleanups []func()
}

func (c *chaos) cleanup(f func()) { c.cleanups = append(c.cleanups, f) }

// shutdown stops everything started, newest first, by PID.
func (c *chaos) shutdown() {
	for i := len(c.cleanups) - 1; i >= 0; i-- {
		c.cleanups[i]()
	}
	c.cleanups = nil
}

// setup starts the servers, the proxies and the daemon, creates the chaos
// schema and takes the first backup.
func (c *chaos) setup(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(c.dir, "logs"), 0o755); err != nil {
		return err
	}
	durable := []string{"--sync-binlog=1", "--innodb-flush-log-at-trx-commit=1"}
	type spec struct {
		name  string
		id    int
		extra []string
		out   **server
	}
	specs := []spec{
		{"db1", 1, durable, &c.db1},
		{"db2", 2, durable, &c.db2},
		{"replica", 3, append([]string{"--read-only=ON"}, durable...), &c.replica},
		// Scratch: restores and a native catch-up, durability not needed.
		{"scratch", 4, []string{"--sync-binlog=0", "--innodb-flush-log-at-trx-commit=2"}, &c.scratch},
	}
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		m, err := harness.NewMariaDB(c.dir, s.name, harness.MariaDBOptions{ServerID: s.id, Extra: s.extra})
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		c.cleanup(func() { m.Kill() })
		*s.out = &server{MariaDB: m}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.Start(); err != nil {
				errs[i] = err
				return
			}
			if err := m.Bootstrap(); err != nil {
				errs[i] = err
				return
			}
			errs[i] = createUsers(ctx, m)
		}()
	}
	bin, err := harness.VersityGWPath()
	if err != nil {
		return err
	}
	if c.s3, err = harness.NewS3(c.dir, bin); err != nil {
		return err
	}
	c.cleanup(c.s3.Kill)
	if err := c.s3.Start(); err != nil {
		return err
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.primary, c.standby = c.db1, c.db2
	if err := c.follow(ctx, c.standby, c.primary); err != nil {
		return err
	}

	// binvault reaches each primary candidate and the store through proxies.
	c.proxies = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	for _, s := range []*server{c.db1, c.db2} {
		s.proxy = toxiproxy.NewProxy(c.proxies, s.Name, "127.0.0.1:0", s.Addr())
		if err := s.proxy.Start(); err != nil {
			return err
		}
		c.cleanup(s.proxy.Stop)
		lat := fmt.Sprintf(`{"name":"latency","type":"latency","stream":"downstream","attributes":{"latency":%d}}`, sourceLatency)
		if _, err := s.proxy.Toxics.AddToxicJson(strings.NewReader(lat)); err != nil {
			return err
		}
	}
	c.s3proxy = toxiproxy.NewProxy(c.proxies, "store", "127.0.0.1:0", strings.TrimPrefix(c.s3.Endpoint(), "http://"))
	if err := c.s3proxy.Start(); err != nil {
		return err
	}
	c.cleanup(c.s3proxy.Stop)

	c.env = c.s3.Env()
	for _, kv := range c.env {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	c.store, err = open.Open(ctx, open.Options{URL: c.s3.URL("chaos"), Endpoint: c.s3.Endpoint(), Region: "us-east-1", PathStyle: true})
	if err != nil {
		return err
	}
	if c.failover, err = c.probeFailover(ctx); err != nil {
		return err
	}
	if err := c.writeConfig(); err != nil {
		return err
	}
	fmt.Printf("setup: primary %s :%d, standby %s :%d (native GTID replica), DR replica :%d, scratch :%d, versitygw :%d; binvault reads the primaries through proxies adding %d ms",
		c.primary.Name, c.primary.Port, c.standby.Name, c.standby.Port, c.replica.Port, c.scratch.Port, c.s3.Port, sourceLatency)
	if c.failover {
		fmt.Printf(", multi-host source.dsn, failover_wait %v\n", failoverWait)
	} else {
		fmt.Printf(", source.dsn names %s only\n", c.primary.Name)
	}
	if err := c.startDaemon(ctx); err != nil {
		return err
	}
	if err := execSQL(ctx, c.primary.MariaDB, schemaSQL...); err != nil {
		return err
	}
	if err := c.settle(ctx, time.Minute); err != nil {
		return err
	}
	id, took, err := c.takeBackup(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("setup: backup %s in %.1fs\n", id, took.Seconds())
	return nil
}

// createUsers adds the accounts, unlogged.
func createUsers(ctx context.Context, m *harness.MariaDB) error {
	return execSQL(ctx, m, "SET sql_log_bin=0",
		fmt.Sprintf("CREATE USER IF NOT EXISTS '%s'@'127.0.0.1' IDENTIFIED BY '%s'", bvUser, bvPass),
		fmt.Sprintf("GRANT ALL ON *.* TO '%s'@'127.0.0.1'", bvUser),
		fmt.Sprintf("CREATE USER IF NOT EXISTS '%s'@'127.0.0.1' IDENTIFIED BY '%s'", replUser, replPass),
		fmt.Sprintf("GRANT ALL ON *.* TO '%s'@'127.0.0.1'", replUser),
		fmt.Sprintf("CREATE USER IF NOT EXISTS '%s'@'127.0.0.1' IDENTIFIED BY '%s'", loadUser, loadPass),
		fmt.Sprintf("GRANT ALL ON chaos.* TO '%s'@'127.0.0.1'", loadUser))
}

// follow makes r a read-only native GTID replica of p.
func (c *chaos) follow(ctx context.Context, r, p *server) error {
	return execSQL(ctx, r.MariaDB, "SET GLOBAL read_only=ON",
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
			p.Port, replUser, replPass),
		"START SLAVE")
}

// dial connects as root over TCP with timeouts, so that no query waits
// forever on a server that went away.
func dial(ctx context.Context, m *harness.MariaDB) (*sql.DB, error) {
	db, err := sql.Open("mysql", fmt.Sprintf("root:%s@tcp(%s)/?multiStatements=true&timeout=5s&readTimeout=60s&writeTimeout=60s", m.RootPassword, m.Addr()))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	return db, nil
}

// execSQL runs statements in order on one connection.
func execSQL(ctx context.Context, m *harness.MariaDB, stmts ...string) error {
	db, err := dial(ctx, m)
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	defer conn.Close()
	for _, s := range stmts {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %s: %w", m.Name, s, err)
		}
	}
	return nil
}

// queryString returns the first column of the first row.
func queryString(ctx context.Context, m *harness.MariaDB, q string, args ...any) (string, error) {
	db, err := dial(ctx, m)
	if err != nil {
		return "", err
	}
	defer db.Close()
	var s sql.NullString
	if err := db.QueryRowContext(ctx, q, args...).Scan(&s); err != nil {
		return "", fmt.Errorf("%s: %s: %w", m.Name, q, err)
	}
	return s.String, nil
}

// queryStrings returns the first column of every row.
func queryStrings(ctx context.Context, m *harness.MariaDB, q string, args ...any) ([]string, error) {
	db, err := dial(ctx, m)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", m.Name, q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s sql.NullString
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s.String)
	}
	return out, rows.Err()
}

// slaveStatus returns SHOW SLAVE STATUS as column → value (nil: none).
func slaveStatus(ctx context.Context, m *harness.MariaDB) (map[string]string, error) {
	db, err := dial(ctx, m)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		return nil, fmt.Errorf("%s: SHOW SLAVE STATUS: %w", m.Name, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		return nil, rows.Err()
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for i, col := range cols {
		out[col] = vals[i].String
	}
	return out, nil
}

// replicationError describes a stopped or failing native replication.
func replicationError(st map[string]string) string {
	if st == nil {
		return "not a replica"
	}
	if st["Last_SQL_Errno"] != "0" && st["Last_SQL_Errno"] != "" {
		return fmt.Sprintf("SQL thread error %s: %s", st["Last_SQL_Errno"], st["Last_SQL_Error"])
	}
	if st["Slave_SQL_Running"] != "Yes" {
		return "SQL thread not running"
	}
	return ""
}

// waitFor polls cond every interval until it holds, the timeout passes
// (what names the wait in the error) or ctx ends. cond's last error is
// returned with the timeout.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("timed out after %v waiting for %s (last: %v)", timeout, what, last)
			}
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// promote makes the standby the primary once it applied what it received:
// STOP SLAVE, RESET SLAVE ALL, read_only=OFF.
func (c *chaos) promote(ctx context.Context, s *server) error {
	err := waitFor(ctx, 30*time.Second, s.Name+" to apply its relay log", func() (bool, error) {
		st, err := slaveStatus(ctx, s.MariaDB)
		if err != nil || st == nil {
			return false, err
		}
		if e := replicationError(st); e != "" {
			return false, errors.New(e)
		}
		pos, err := queryString(ctx, s.MariaDB, "SELECT @@gtid_slave_pos")
		if err != nil {
			return false, err
		}
		// The IO thread has lost the primary, and the SQL thread applied
		// everything the IO thread wrote (a transaction the primary died
		// in the middle of sending is never applied: then the SQL thread
		// says it has read all of the relay log).
		idle := strings.Contains(st["Slave_SQL_Running_State"], "read all relay log")
		return st["Slave_IO_Running"] != "Yes" && (pos == st["Gtid_IO_Pos"] || idle), nil
	})
	if err != nil {
		return err
	}
	return execSQL(ctx, s.MariaDB, "STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only=OFF")
}

// rebuild makes the dead old primary s a standby of the primary p on the
// same port: a new data directory, the primary's databases from
// mariadb-dump --gtid --master-data=1 --single-transaction loaded unlogged,
// its binlog state taken over, then GTID replication from p.
func (c *chaos) rebuild(ctx context.Context, s, p *server) error {
	c.rebuilds++
	if err := s.Kill(); err != nil {
		return err
	}
	data := filepath.Join(s.Dir, "data")
	if err := os.RemoveAll(data); err != nil {
		return err
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	install := exec.CommandContext(ctx, "mariadb-install-db", "--no-defaults", "--user=root", "--datadir="+data, "--tmpdir="+filepath.Join(s.Dir, "tmp"),
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
	if out, err := install.CombinedOutput(); err != nil {
		return fmt.Errorf("mariadb-install-db for %s: %v\n%s", s.Name, err, out)
	}
	if err := s.Start(); err != nil {
		return err
	}
	if err := s.Bootstrap(); err != nil {
		return err
	}
	if err := createUsers(ctx, s.MariaDB); err != nil {
		return err
	}
	s.binlog = binlogCache{}

	dbs, err := userDatabases(ctx, p.MariaDB)
	if err != nil {
		return err
	}
	dump := filepath.Join(c.dir, "logs", fmt.Sprintf("rebuild-%d-%s.sql", c.rebuilds, s.Name))
	f, err := os.Create(dump)
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, "mariadb-dump", append([]string{"--host=127.0.0.1", fmt.Sprintf("--port=%d", p.Port), "--user=root", "--password=" + p.RootPassword,
		"--gtid", "--master-data=1", "--single-transaction", "--routines", "--events", "--triggers", "--databases"}, dbs...)...)
	cmd.Stdout, cmd.Stderr = f, &stderr
	err = cmd.Run()
	f.Close()
	if err != nil {
		return fmt.Errorf("mariadb-dump of %s: %v: %s", p.Name, err, stderr.String())
	}
	state, err := queryString(ctx, p.MariaDB, "SELECT @@gtid_binlog_state")
	if err != nil {
		return err
	}
	in, err := os.Open(dump)
	if err != nil {
		return err
	}
	stderr.Reset()
	cmd = exec.CommandContext(ctx, "mariadb", "--host=127.0.0.1", fmt.Sprintf("--port=%d", s.Port), "--user=root", "--password="+s.RootPassword,
		"--init-command=SET sql_log_bin=0")
	cmd.Stdin, cmd.Stderr = in, &stderr
	err = cmd.Run()
	in.Close()
	if err != nil {
		return fmt.Errorf("loading the dump of %s into %s: %v: %s", p.Name, s.Name, err, stderr.String())
	}
	// The dump set gtid_slave_pos; the binlog takes the primary's state,
	// as if s had replicated all along.
	if err := execSQL(ctx, s.MariaDB, "RESET MASTER", "SET GLOBAL gtid_binlog_state='"+state+"'"); err != nil {
		return err
	}
	if err := c.follow(ctx, s, p); err != nil {
		return err
	}
	want, err := queryString(ctx, p.MariaDB, "SELECT @@gtid_binlog_pos")
	if err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, s.Name+" to catch up with "+p.Name, func() (bool, error) {
		st, err := slaveStatus(ctx, s.MariaDB)
		if err != nil {
			return false, err
		}
		if e := replicationError(st); e != "" {
			return false, errors.New(e)
		}
		pos, err := queryString(ctx, s.MariaDB, "SELECT @@gtid_slave_pos")
		return err == nil && pos == want && st["Slave_IO_Running"] == "Yes", err
	})
}

// userDatabases lists the databases that are not the server's own.
func userDatabases(ctx context.Context, m *harness.MariaDB) ([]string, error) {
	return queryStrings(ctx, m, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ('mysql','sys','information_schema','performance_schema') ORDER BY 1")
}
