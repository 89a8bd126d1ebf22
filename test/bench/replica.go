package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// The replica scenario: the catch-up speed of a replica on a backlog of
// sysbench oltp_write_only transactions, every way on the same data in the
// same run: MariaDB's own replication from the primary (1, 4 and 8
// optimistic parallel threads), binvault's client-side applier, and native
// replicas (4 and 8 threads) replicating from binvault: from `binvault
// run`'s binlog server, and from `binvault serve`, which reads the archive
// alone. Every replica starts identical (each replicated the prepare
// natively), all keep durable settings (sync_binlog=1,
// innodb_flush_log_at_trx_commit=1), and they catch up one after the other
// so none competes for the 2 CPUs. binvault reads the backlog from its
// archive (the spool is released once archived), decompressing it.
func benchReplica(ctx context.Context, e *env) error {
	if _, err := exec.LookPath("sysbench"); err != nil {
		return fmt.Errorf("sysbench not found: run BINVAULT_SETUP_BENCH=1 scripts/setup.sh (make bench does)")
	}
	tables, rows := envInt("BINVAULT_BENCH_REPLICA_TABLES", 4), envInt("BINVAULT_BENCH_REPLICA_TABLE_SIZE", 100000)
	seconds := envInt("BINVAULT_BENCH_REPLICA_SECONDS", 30)
	start := func(name string, id int, extra ...string) (*harness.MariaDB, error) {
		return benchServer(e, name, id, extra...)
	}
	p, err := start("primary", 1)
	if err != nil {
		return err
	}
	// How each replica catches up.
	const (
		fromPrimary = iota
		viaApplier
		viaRun   // native, from binvault run's binlog server
		viaServe // native, from binvault serve (the archive alone)
	)
	type replica struct {
		name string
		how  int
		m    *harness.MariaDB
	}
	threads := func(n int) []string {
		if n == 0 {
			return []string{"--slave-parallel-threads=0"}
		}
		return []string{fmt.Sprintf("--slave-parallel-threads=%d", n), "--slave-parallel-mode=optimistic"}
	}
	var replicas []replica
	for i, r := range []struct {
		name  string
		how   int
		extra []string
	}{
		{"native, 1 thread", fromPrimary, threads(0)},
		{"native, 4 threads", fromPrimary, threads(4)},
		{"native, 8 threads", fromPrimary, threads(8)},
		{"binvault applier", viaApplier, []string{"--read-only=ON"}},
		{"4 threads via run", viaRun, threads(4)},
		{"8 threads via run", viaRun, threads(8)},
		{"4 threads via serve", viaServe, threads(4)},
		{"8 threads via serve", viaServe, threads(8)},
	} {
		if only := os.Getenv("BINVAULT_BENCH_REPLICA_ROWS"); only != "" && !slices.Contains(strings.Split(only, ";"), r.name) {
			continue // rows named as printed, separated by semicolons
		}
		m, err := start(fmt.Sprintf("replica%d", i), 10+i, r.extra...)
		if err != nil {
			return err
		}
		replicas = append(replicas, replica{r.name, r.how, m})
	}
	pdb, err := p.Open("")
	if err != nil {
		return err
	}
	defer pdb.Close()
	step("preparing sysbench (%d tables × %d rows); every replica replicates it natively", tables, rows)
	for _, r := range replicas {
		if err := execAll(r.m, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos", p.Port, p.RootPassword), "START SLAVE"); err != nil {
			return err
		}
	}
	if _, err := pdb.Exec("CREATE DATABASE sbtest"); err != nil {
		return err
	}
	if err := runCmd(ctx, "sysbench", append(replicaSysbenchArgs(p, tables, rows, 4), "prepare")...); err != nil {
		return err
	}
	g0 := gtidPos(pdb)
	for _, r := range replicas {
		if err := waitPos(ctx, r.m, g0, 10*time.Minute); err != nil {
			return err
		}
		if err := execAll(r.m, "STOP SLAVE"); err != nil {
			return err
		}
		if r.how == viaApplier {
			if err := execAll(r.m, "RESET SLAVE ALL"); err != nil {
				return err
			}
		}
	}

	// The backlog, archived by binvault as it is written.
	archiveDir := filepath.Join(e.dir, "replica-archive")
	os.MkdirAll(archiveDir, 0o755)
	servePort, err := harness.FreePort()
	if err != nil {
		return err
	}
	os.Setenv("BINVAULT_BENCH_SERVE_PW", "bench-serve-pw")
	serveSection := fmt.Sprintf("serve:\n  listen: 127.0.0.1:%d\n  users:\n    - name: repl\n      password_env: BINVAULT_BENCH_SERVE_PW\n", servePort)
	cfg := func(name, extra string) (string, error) {
		body := fmt.Sprintf("source:\n  dsn: mysql://root:%s@%s\n  server_id: 9001\nstorage:\n  url: file://%s\nspool:\n  dir: %s\nhttp:\n  listen: \"\"\n%s",
			p.RootPassword, p.Addr(), archiveDir, filepath.Join(e.dir, "replica-spool"), extra)
		path := filepath.Join(e.dir, "replica-bench-"+name+".yaml")
		return path, os.WriteFile(path, []byte(body), 0o644)
	}
	archiveCfg, err := cfg("archive", "")
	if err != nil {
		return err
	}
	// From g0, where every replica stopped: the daemon reads the
	// primary's position only once it runs, maybe after sysbench began.
	d, err := startBinvault(e, archiveCfg, "--start-from", "gtid:"+g0)
	if err != nil {
		return err
	}
	step("writing the backlog: sysbench oltp_write_only, 4 threads, %d s (replicas stopped; binvault archives it)", seconds)
	args := append([]string{"oltp_write_only"}, replicaSysbenchArgs(p, tables, rows, 4)[1:]...)
	if err := runCmd(ctx, "sysbench", append(args, fmt.Sprintf("--time=%d", seconds), "run")...); err != nil {
		d.stop()
		return err
	}
	g1 := gtidPos(pdb)
	txns := seqOf(g1) - seqOf(g0)
	if err := waitArchived(ctx, e, archiveCfg, g1, 5*time.Minute); err != nil {
		d.stop()
		return err
	}
	if err := d.stop(); err != nil {
		return err
	}
	step("backlog: %d transactions", txns)

	type result struct {
		name string
		secs float64
		cpu  float64 // binvault's CPU seconds during the catch-up (0: not involved)
	}
	var results []result
	for _, r := range replicas {
		step("catching up: %s", r.name)
		var proc *binvaultProc
		switch r.how {
		case viaApplier:
			c, err := cfg("applier", fmt.Sprintf("replica:\n  dsn: mysql://root:%s@%s\n", r.m.RootPassword, r.m.Addr()))
			if err != nil {
				return err
			}
			proc, err = startBinvault(e, c)
			if err != nil {
				return err
			}
		case viaRun, viaServe:
			c, err := cfg("serve", serveSection)
			if err != nil {
				return err
			}
			if r.how == viaRun {
				proc, err = startBinvault(e, c)
			} else {
				proc, err = startBinvaultCmd(e, "serve", c)
			}
			if err != nil {
				return err
			}
			if err := waitListening(fmt.Sprintf("127.0.0.1:%d", servePort), 30*time.Second); err != nil {
				proc.stop()
				return err
			}
			if err := execAll(r.m, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='repl', MASTER_PASSWORD='bench-serve-pw', MASTER_USE_GTID=slave_pos", servePort)); err != nil {
				proc.stop()
				return err
			}
		}
		t0 := time.Now()
		if r.how != viaApplier {
			if err := execAll(r.m, "START SLAVE"); err != nil {
				return err
			}
		}
		err := waitPos(ctx, r.m, g1, 20*time.Minute)
		el := time.Since(t0).Seconds()
		if r.how != viaApplier {
			execAll(r.m, "STOP SLAVE")
		}
		cpu := 0.0
		if proc != nil {
			proc.stop()
			if ps := proc.cmd.ProcessState; ps != nil {
				cpu = (ps.UserTime() + ps.SystemTime()).Seconds()
			}
		}
		if err != nil {
			return err
		}
		results = append(results, result{r.name, el, cpu})
	}
	step("checking every replica against the primary (CHECKSUM TABLE)")
	want, err := checksumSbtest(p, tables)
	if err != nil {
		return err
	}
	for _, r := range replicas {
		got, err := checksumSbtest(r.m, tables)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s differs from the primary after catching up", r.name)
		}
	}
	fmt.Printf("\nreplica catch-up on %d sysbench oltp_write_only transactions (%d tables × %d rows), sync_binlog=1, innodb_flush_log_at_trx_commit=1:\n", txns, tables, rows)
	fmt.Printf("  %-22s %9s %10s %18s %18s %14s\n", "applier", "seconds", "trx/s", "× native 1 thread", "× native, same threads", "binvault CPU s")
	secsOf := map[string]float64{}
	for _, r := range results {
		secsOf[r.name] = r.secs
	}
	ratio := func(a, b string) string {
		if secsOf[a] == 0 || secsOf[b] == 0 {
			return ""
		}
		return fmt.Sprintf("%.2f", secsOf[a]/secsOf[b])
	}
	for _, r := range results {
		same := ""
		switch {
		case strings.HasPrefix(r.name, "4 threads via"):
			same = ratio("native, 4 threads", r.name)
		case strings.HasPrefix(r.name, "8 threads via"):
			same = ratio("native, 8 threads", r.name)
		}
		cpu := ""
		if r.cpu > 0 {
			cpu = fmt.Sprintf("%.1f", r.cpu)
		}
		fmt.Printf("  %-22s %9.1f %10.0f %18s %18s %14s\n", r.name, r.secs, float64(txns)/r.secs, ratio("native, 1 thread", r.name), same, cpu)
	}
	return nil
}

// waitListening waits until addr accepts TCP connections.
func waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %v", addr, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// benchServer starts a MariaDB sized for the benchmarks and registers its stop.
func benchServer(e *env, name string, id int, extra ...string) (*harness.MariaDB, error) {
	// Durable, as production servers run: every commit fsyncs the binlog
	// and the redo log.
	m, err := harness.NewMariaDB(e.dir, name, harness.MariaDBOptions{ServerID: id, Extra: append([]string{"--innodb-buffer-pool-size=512M", "--innodb-log-file-size=256M",
		"--sync-binlog=1", "--innodb-flush-log-at-trx-commit=1"}, extra...)})
	if err != nil {
		return nil, err
	}
	e.cleanup(func() { m.Stop() })
	if err := m.Start(); err != nil {
		return nil, err
	}
	return m, m.Bootstrap()
}

func replicaSysbenchArgs(m *harness.MariaDB, tables, rows, threads int) []string {
	return []string{"oltp_write_only", "--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-port=" + strconv.Itoa(m.Port),
		"--mysql-user=root", "--mysql-password=" + m.RootPassword, "--mysql-db=sbtest", "--mysql-ignore-errors=all",
		"--tables=" + strconv.Itoa(tables), "--table-size=" + strconv.Itoa(rows), "--threads=" + strconv.Itoa(threads)}
}

func runCmd(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", name, err, out)
	}
	return nil
}

func execAll(m *harness.MariaDB, stmts ...string) error {
	db, err := m.Open("")
	if err != nil {
		return err
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			return fmt.Errorf("%s: %s: %w", m.Name, s, err)
		}
	}
	return nil
}

func gtidPos(db *sql.DB) string {
	var s string
	db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&s)
	return s
}

func seqOf(gtid string) int64 {
	var d, s, n int64
	fmt.Sscanf(gtid, "%d-%d-%d", &d, &s, &n)
	return n
}

func waitPos(ctx context.Context, m *harness.MariaDB, want string, timeout time.Duration) error {
	db, err := m.Open("")
	if err != nil {
		return err
	}
	defer db.Close()
	deadline := time.Now().Add(timeout)
	for {
		var pos string
		db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos)
		if pos == want {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s reached %q, not %q, within %v", m.Name, pos, want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type binvaultProc struct{ cmd *exec.Cmd }

func startBinvault(e *env, cfg string, args ...string) (*binvaultProc, error) {
	return startBinvaultCmd(e, "run", cfg, args...)
}

// startBinvaultCmd starts a long-running binvault command (run, serve).
func startBinvaultCmd(e *env, command, cfg string, args ...string) (*binvaultProc, error) {
	logf, err := os.OpenFile(filepath.Join(e.dir, "binvault-"+command+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(e.binvault, append([]string{command, "--config", cfg}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &binvaultProc{cmd}
	e.cleanup(func() { b.stop() })
	return b, nil
}

func (b *binvaultProc) stop() error {
	if b.cmd.ProcessState != nil {
		return nil
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	return b.cmd.Wait()
}

func waitArchived(ctx context.Context, e *env, cfg, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, _ := exec.CommandContext(ctx, e.binvault, "segments", "--config", cfg, "--json").Output()
		var rep struct {
			Coverage *struct {
				End struct {
					GTIDSet string `json:"gtid_set"`
				} `json:"end"`
			} `json:"coverage"`
		}
		if json.Unmarshal(out, &rep) == nil && rep.Coverage != nil && rep.Coverage.End.GTIDSet == want {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the archive did not reach %s within %v", want, timeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func checksumSbtest(m *harness.MariaDB, tables int) (string, error) {
	db, err := m.Open("")
	if err != nil {
		return "", err
	}
	defer db.Close()
	var out []string
	for i := 1; i <= tables; i++ {
		var name, sum string
		if err := db.QueryRow(fmt.Sprintf("CHECKSUM TABLE sbtest.sbtest%d", i)).Scan(&name, &sum); err != nil {
			return "", err
		}
		out = append(out, sum)
	}
	return strings.Join(out, ","), nil
}
