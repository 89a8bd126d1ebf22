// Command demo walks through binvault on local servers it starts itself,
// narrating each step. `make demo` runs it; everything it creates lives in
// .demo/ and every server it starts is stopped at the end.
package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/binvault/binvault/test/harness"
)

var cleanups []func()

func main() {
	code := 0
	if err := demo(); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		code = 1
	}
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func demo() error {
	root, err := filepath.Abs(".demo")
	if err != nil {
		return err
	}
	os.RemoveAll(root)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		os.Exit(130)
	}()

	step("Starting a MariaDB primary (log_bin, binlog_format=ROW, gtid_strict_mode) in %s", filepath.Join(root, "primary"))
	primary, err := startServer(root, "primary", 1)
	if err != nil {
		return err
	}

	step("Creating the replication user binvault streams with (not logged: sql_log_bin=0)")
	db, err := primary.Open("")
	if err != nil {
		return err
	}
	defer db.Close()
	if err := run(db, "SET sql_log_bin=0",
		"CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'demo-repl-pw'",
		"GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT, RELOAD, SHOW VIEW, TRIGGER, EVENT ON *.* TO repl@'127.0.0.1'",
		"SET sql_log_bin=1"); err != nil {
		return err
	}

	step("Starting a second MariaDB as the replica (read_only=ON, binlog on) in %s", filepath.Join(root, "replica"))
	replica, err := startServer(root, "replica", 2, "--read-only=ON")
	if err != nil {
		return err
	}
	rdb, err := replica.Open("")
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := run(rdb, "SET sql_log_bin=0",
		"CREATE USER applier@'127.0.0.1' IDENTIFIED BY 'demo-applier-pw'",
		"GRANT ALL ON *.* TO applier@'127.0.0.1'"); err != nil {
		return err
	}

	if err := os.MkdirAll(filepath.Join(root, "archive"), 0o755); err != nil {
		return err
	}
	cfgPath := filepath.Join(root, "binvault.yaml")
	cfg := fmt.Sprintf(`source:
  dsn: mysql://repl:${REPL_PASSWORD}@%s
  server_id: 9001
storage:
  url: file://%s
spool:
  dir: %s
http:
  listen: ""
replica:
  dsn: mysql://applier:${APPLIER_PASSWORD}@%s
`, primary.Addr(), filepath.Join(root, "archive"), filepath.Join(root, "spool"), replica.Addr())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	step("Writing %s (passwords come from $REPL_PASSWORD and $APPLIER_PASSWORD):", cfgPath)
	fmt.Print(indent(cfg))
	os.Setenv("REPL_PASSWORD", "demo-repl-pw")
	os.Setenv("APPLIER_PASSWORD", "demo-applier-pw")

	step("binvault status: is the primary ready to stream from, the replica ready, the store reachable?")
	if err := binvault("status", "--config", cfgPath); err != nil {
		return err
	}

	step("Starting the daemon: binvault run (log in %s)", filepath.Join(root, "daemon.log"))
	logf, err := os.Create(filepath.Join(root, "daemon.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	daemon := exec.Command("bin/binvault", "run", "--config", cfgPath, "--log-format", "text")
	daemon.Stdout, daemon.Stderr = logf, logf
	if err := daemon.Start(); err != nil {
		return err
	}
	stopped := false
	cleanups = append(cleanups, func() {
		if !stopped {
			daemon.Process.Kill()
			daemon.Wait()
		}
	})
	if err := waitFor(20*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(root, "spool", "state.json"))
		return strings.Contains(string(b), `"connected": true`)
	}); err != nil {
		return fmt.Errorf("the daemon did not connect: %v; log:\n%s", err, readFile(filepath.Join(root, "daemon.log")))
	}
	fmt.Printf("    connected to the primary as a replica (server_id 9001), pid %d\n", daemon.Process.Pid)

	step("Writing to the primary while the daemon archives and applies")
	for _, q := range []string{
		"CREATE DATABASE shop",
		"CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(40), qty INT)",
		"INSERT INTO shop.orders (item, qty) VALUES ('apple', 3), ('pear', 1)",
		"INSERT INTO shop.orders (item, qty) VALUES ('plum', 7)",
		"UPDATE shop.orders SET qty = qty + 1 WHERE item = 'apple'",
		"ALTER TABLE shop.orders ADD COLUMN price DECIMAL(8,2) NULL",
		"INSERT INTO shop.orders (item, qty, price) VALUES ('fig', 2, 3.50), ('kiwi', 5, 0.80)",
		"DELETE FROM shop.orders WHERE item = 'pear'",
	} {
		fmt.Printf("    mariadb> %s\n", q)
		if _, err := db.Exec(q); err != nil {
			return err
		}
	}
	var want string
	db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&want)
	fmt.Printf("    the primary is now at GTID %s\n", want)
	if err := waitFor(20*time.Second, func() bool {
		out, _ := exec.Command("bin/binvault", "segments", "--config", cfgPath, "--json").Output()
		return strings.Contains(string(out), fmt.Sprintf(`"gtid_set": %q`, want))
	}); err != nil {
		return fmt.Errorf("the archive did not reach %s: %v", want, err)
	}

	step("The replica follows: same rows, same checksum, same GTID position")
	if err := waitFor(20*time.Second, func() bool {
		var pos string
		rdb.QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos)
		return pos == want
	}); err != nil {
		return fmt.Errorf("the replica did not reach %s: %v; log:\n%s", want, err, readFile(filepath.Join(root, "daemon.log")))
	}
	for _, side := range []struct {
		name string
		db   *sql.DB
	}{{"primary", db}, {"replica", rdb}} {
		var rows []string
		r, err := side.db.Query("SELECT CONCAT(id, ':', item, ':', qty, ':', COALESCE(price, '-')) FROM shop.orders ORDER BY id")
		if err != nil {
			return err
		}
		for r.Next() {
			var s string
			r.Scan(&s)
			rows = append(rows, s)
		}
		r.Close()
		var name, sum, pos string
		side.db.QueryRow("CHECKSUM TABLE shop.orders").Scan(&name, &sum)
		side.db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos)
		fmt.Printf("    %-8s orders %v  checksum %s  gtid %s\n", side.name, rows, sum, pos)
	}

	step("binvault backup: a consistent full backup of the primary, tied to its exact GTID position")
	out, err := exec.Command("bin/binvault", "backup", "--config", cfgPath).Output()
	if err != nil {
		return fmt.Errorf("binvault backup: %v", err)
	}
	backupID := strings.TrimSpace(string(out))
	fmt.Printf("    $ binvault backup --config %s\n    %s\n", cfgPath, backupID)
	if err := binvault("backups", "--config", cfgPath); err != nil {
		return err
	}

	step("More orders arrive... then someone drops the table")
	if err := run(db,
		"INSERT INTO shop.orders (item, qty, price) VALUES ('mango', 4, 1.20), ('lime', 9, 0.30)",
		"UPDATE shop.orders SET qty = qty - 1 WHERE item = 'kiwi'"); err != nil {
		return err
	}
	var beforeDrop string
	db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&beforeDrop)
	if err := run(db, "DROP TABLE shop.orders", "CREATE TABLE shop.audit (id INT PRIMARY KEY, note VARCHAR(40))", "INSERT INTO shop.audit VALUES (1, 'after the drop')"); err != nil {
		return err
	}
	var now string
	db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&now)
	if err := waitFor(20*time.Second, func() bool {
		out, _ := exec.Command("bin/binvault", "segments", "--config", cfgPath, "--json").Output()
		return strings.Contains(string(out), fmt.Sprintf(`"gtid_set": %q`, now))
	}); err != nil {
		return fmt.Errorf("the archive did not reach %s: %v", now, err)
	}

	step("binvault find: which transaction dropped shop.orders?")
	if err := binvault("find", "--config", cfgPath, "--table", "shop.orders"); err != nil {
		return err
	}
	out, err = exec.Command("bin/binvault", "find", "--config", cfgPath, "--table", "shop.orders", "--ddl", "--json").Output()
	if err != nil {
		return err
	}
	var found struct {
		Transactions []struct {
			GTID string `json:"gtid"`
		} `json:"transactions"`
	}
	if err := json.Unmarshal(out, &found); err != nil || len(found.Transactions) == 0 {
		return fmt.Errorf("find found no DROP: %v %s", err, out)
	}
	drop := found.Transactions[len(found.Transactions)-1].GTID

	step("Starting a third MariaDB, empty, to restore into, in %s", filepath.Join(root, "restored"))
	restored, err := startServer(root, "restored", 3)
	if err != nil {
		return err
	}

	step("binvault restore --stop-before-gtid %s: the backup, then the archive up to just before the DROP", drop)
	target := restored.DSN("", "")
	if err := binvault("restore", "--config", cfgPath, "--target", target, "--stop-before-gtid", drop, "--dry-run"); err != nil {
		return err
	}
	if err := binvault("restore", "--config", cfgPath, "--target", target, "--stop-before-gtid", drop); err != nil {
		return err
	}

	step("The restored server holds the orders as they were just before the DROP")
	sdb, err := restored.Open("")
	if err != nil {
		return err
	}
	defer sdb.Close()
	var rows []string
	r, err := sdb.Query("SELECT CONCAT(id, ':', item, ':', qty, ':', COALESCE(price, '-')) FROM shop.orders ORDER BY id")
	if err != nil {
		return err
	}
	for r.Next() {
		var s string
		r.Scan(&s)
		rows = append(rows, s)
	}
	r.Close()
	var pos string
	sdb.QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos)
	var primaryHas int
	db.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='shop' AND TABLE_NAME='orders'").Scan(&primaryHas)
	fmt.Printf("    restored orders %v  gtid %s (the primary was at %s before the DROP)\n", rows, pos, beforeDrop)
	fmt.Printf("    primary  shop.orders exists: %v\n", primaryHas == 1)
	if pos != beforeDrop {
		return fmt.Errorf("the restored server is at %s, not %s", pos, beforeDrop)
	}

	step("binvault segments: what the archive holds (each segment is a zstd-compressed binlog file)")
	if err := binvault("segments", "--config", cfgPath); err != nil {
		return err
	}

	step("binvault verify: every object's SHA-256, every event's CRC32, the chain has no gap")
	if err := binvault("verify", "--config", cfgPath); err != nil {
		return err
	}

	step("binvault status: the daemon's positions, lag and RPO")
	if err := binvault("status", "--config", cfgPath); err != nil {
		return err
	}

	step("Stopping the daemon with SIGTERM: it uploads what is left and exits 0")
	daemon.Process.Signal(syscall.SIGTERM)
	err = daemon.Wait()
	stopped = true
	if err != nil {
		return fmt.Errorf("daemon exit: %v; log:\n%s", err, readFile(filepath.Join(root, "daemon.log")))
	}
	fmt.Println("    exit code 0")

	step("A misspelt key is caught before anything runs (exit code 2):")
	bad := filepath.Join(root, "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(cfg, "server_id", "sever_id", 1)), 0o644)
	if err := binvault("run", "--config", bad); err == nil {
		return fmt.Errorf("a misspelt key was accepted")
	}
	fmt.Println("\nThat was the whole pipeline: stream, archive, replicate, back up, find, restore to a point in time.")
	return nil
}

func binvault(args ...string) error {
	fmt.Printf("    $ binvault %s\n", strings.Join(args, " "))
	cmd := exec.Command("bin/binvault", append(args, "--log-format", "text")...)
	cmd.Stdout, cmd.Stderr = prefixWriter{}, prefixWriter{}
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		fmt.Printf("    (exit code %d)\n", ee.ExitCode())
	}
	return err
}

// startServer starts a MariaDB under root and registers its stop.
func startServer(root, name string, id int, extra ...string) (*harness.MariaDB, error) {
	m, err := harness.NewMariaDB(root, name, harness.MariaDBOptions{ServerID: id, Extra: extra})
	if err != nil {
		return nil, err
	}
	if err := m.Start(); err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() {
		fmt.Printf("\n==> Stopping the %s server (pid %d)\n", name, m.PID())
		m.Stop()
	})
	if err := m.Bootstrap(); err != nil {
		return nil, err
	}
	fmt.Printf("    listening on %s, pid %d\n", m.Addr(), m.PID())
	return m, nil
}

func run(db *sql.DB, stmts ...string) error {
	for _, q := range stmts {
		if !strings.HasPrefix(q, "SET sql_log_bin") {
			fmt.Printf("    mariadb> %s\n", q)
		}
		if _, err := db.Exec(q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

func waitFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

type prefixWriter struct{}

func (prefixWriter) Write(p []byte) (int, error) {
	fmt.Print(indent(string(p)))
	return len(p), nil
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return "    " + strings.Join(lines, "\n    ") + "\n"
}
