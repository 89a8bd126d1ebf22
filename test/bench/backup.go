package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/binvault/binvault/backup"
	"github.com/binvault/binvault/storage/file"
	"github.com/binvault/binvault/test/harness"
)

// The backup scenario: a sysbench data set of at least 1 GiB, dumped by
// `binvault backup` and by `mariadb-dump --single-transaction
// --all-databases | zstd` on the same server in the same run, alternating,
// then one more binvault backup under a sysbench write load for the lock
// figures. The data set is prepared once and kept in the cache directory
// (BINVAULT_CACHE, ~/.cache/binvault); later runs copy it (seconds instead
// of minutes). BINVAULT_BENCH_TABLES and BINVAULT_BENCH_TABLE_SIZE change
// its shape (default 8 × 650,000 rows ≈ 1.2 GiB of InnoDB data).

const benchRootPassword = "bench-root-pw"

func benchBackup(ctx context.Context, e *env) error {
	for _, tool := range []string{"sysbench", "mariadb-dump", "zstd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run BINVAULT_SETUP_BENCH=1 scripts/setup.sh (make bench does)", tool)
		}
	}
	tables, rows := envInt("BINVAULT_BENCH_TABLES", 8), envInt("BINVAULT_BENCH_TABLE_SIZE", 650000)
	data, err := sysbenchDataset(ctx, e, tables, rows)
	if err != nil {
		return err
	}
	p, err := harness.NewMariaDB(e.dir, "primary", harness.MariaDBOptions{ServerID: 1, Extra: []string{
		"--innodb-buffer-pool-size=3G", "--innodb-log-file-size=512M", "--max-connections=300"}})
	if err != nil {
		return err
	}
	dataDir := filepath.Join(p.Dir, "data")
	if err := os.RemoveAll(dataDir); err != nil {
		return err
	}
	step("copying the cached data set into a fresh server")
	if err := copyTree(data, dataDir); err != nil {
		return err
	}
	p.RootPassword = benchRootPassword
	e.cleanup(func() { p.Stop() })
	if err := p.Start(); err != nil {
		return err
	}
	db, err := p.Open("")
	if err != nil {
		return err
	}
	defer db.Close()
	var version string
	db.QueryRow("SELECT VERSION()").Scan(&version)
	var dataLen, indexLen int64
	if err := db.QueryRow("SELECT SUM(DATA_LENGTH), SUM(INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'sbtest'").Scan(&dataLen, &indexLen); err != nil {
		return err
	}
	totalRows := int64(tables) * int64(rows)
	step("warming the buffer pool (both tools then read from memory)")
	for i := 1; i <= tables; i++ {
		var n int64
		if err := db.QueryRow(fmt.Sprintf("SELECT COUNT(*) FROM sbtest.sbtest%d FORCE INDEX (PRIMARY) WHERE LENGTH(c) > 0", i)).Scan(&n); err != nil {
			return err
		}
		if n != int64(rows) {
			return fmt.Errorf("sbtest%d holds %d rows, want %d: delete the cached data set %s", i, n, rows, filepath.Dir(data))
		}
	}

	const rounds = 2
	var bv, md []toolRun
	for r := 1; r <= rounds; r++ {
		step("round %d/%d: binvault backup", r, rounds)
		b, err := runBinvaultBackup(ctx, e, p, fmt.Sprintf("store-%d", r))
		if err != nil {
			return err
		}
		bv = append(bv, b)
		fmt.Printf("    %s\n", b)
		step("round %d/%d: mariadb-dump --single-transaction --all-databases | zstd", r, rounds)
		d, err := runMariadbDump(ctx, e, p, fmt.Sprintf("dump-%d.sql.zst", r))
		if err != nil {
			return err
		}
		md = append(md, d)
		fmt.Printf("    %s\n", d)
	}

	step("binvault backup under a sysbench oltp_write_only load (4 threads)")
	loaded, tps, err := backupUnderLoad(ctx, e, p, tables, rows)
	if err != nil {
		return err
	}
	fmt.Printf("    %s; sysbench %.0f transactions/s over the run\n", loaded, tps)

	best := func(runs []toolRun) toolRun {
		b := runs[0]
		for _, r := range runs[1:] {
			if r.took < b.took {
				b = r
			}
		}
		return b
	}
	b, d := best(bv), best(md)
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	fmt.Printf(`
backup benchmark (best of %d rounds each, same server, same run)
  data set: sysbench, %d tables × %d rows = %d rows; InnoDB %.0f MiB data + %.0f MiB indexes; %s; %d CPUs
                                   time      rows/s    data MiB/s   SQL MiB/s   stored
  binvault backup (parallel 4)   %7.2fs  %9.0f   %10.1f   %9.1f   %6.0f MiB (zstd fastest, file store)
  mariadb-dump | zstd            %7.2fs  %9.0f   %10.1f   %9.1f   %6.0f MiB (zstd -3)
  binvault is %.2f× as fast
  commits held by binvault: %.1f ms (lock wait %.1f ms) idle; %.1f ms (lock wait %.1f ms) under the write load
  (mariadb-dump --single-transaction takes no lock and records no position; with --master-data it holds FLUSH TABLES WITH READ LOCK)
`, rounds, tables, rows, totalRows, mib(dataLen), mib(indexLen), version, runtime.NumCPU(),
		b.took.Seconds(), float64(totalRows)/b.took.Seconds(), mib(dataLen)/b.took.Seconds(), mib(b.sqlBytes)/b.took.Seconds(), mib(b.stored),
		d.took.Seconds(), float64(totalRows)/d.took.Seconds(), mib(dataLen)/d.took.Seconds(), mib(d.sqlBytes)/d.took.Seconds(), mib(d.stored),
		d.took.Seconds()/b.took.Seconds(), b.lockHeld.Seconds()*1000, b.lockWait.Seconds()*1000,
		loaded.lockHeld.Seconds()*1000, loaded.lockWait.Seconds()*1000)
	return nil
}

type toolRun struct {
	name     string
	took     time.Duration
	sqlBytes int64 // uncompressed SQL
	stored   int64 // what went to the store or file
	lockHeld time.Duration
	lockWait time.Duration
}

func (r toolRun) String() string {
	s := fmt.Sprintf("%s: %.2fs, %.0f MiB SQL, %.0f MiB stored", r.name, r.took.Seconds(), float64(r.sqlBytes)/(1<<20), float64(r.stored)/(1<<20))
	if r.lockHeld > 0 {
		s += fmt.Sprintf(", commits held %.1f ms (wait %.1f ms)", r.lockHeld.Seconds()*1000, r.lockWait.Seconds()*1000)
	}
	return s
}

func step(format string, args ...any) { fmt.Printf("--> "+format+"\n", args...) }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// sysbenchDataset returns the data directory of a prepared sysbench data
// set, preparing it into the cache first if needed.
func sysbenchDataset(ctx context.Context, e *env, tables, rows int) (string, error) {
	ver, _ := exec.Command("mariadbd", "--version").Output()
	tag := regexp.MustCompile(`Ver (\S+)`).FindSubmatch(ver)
	version := "unknown"
	if tag != nil {
		version = string(tag[1])
	}
	cache := filepath.Join(harness.CacheDir(), fmt.Sprintf("bench-sysbench-%dx%d-%s", tables, rows, version))
	data := filepath.Join(cache, "data")
	if _, err := os.Stat(filepath.Join(cache, "ready")); err == nil {
		step("reusing the sysbench data set in %s", cache)
		return data, nil
	}
	step("preparing the sysbench data set (%d tables × %d rows) once, into %s", tables, rows, cache)
	started := time.Now()
	// No binlog, no doublewrite, lazy log flushes: only the rows matter,
	// and the set is copied from a clean shutdown.
	m, err := harness.NewMariaDB(e.dir, "prepare", harness.MariaDBOptions{ServerID: 2, NoBinlog: true, Extra: []string{
		"--innodb-buffer-pool-size=3G", "--innodb-log-file-size=1G", "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0"}})
	if err != nil {
		return "", err
	}
	e.cleanup(func() { m.Stop() })
	if err := m.Start(); err != nil {
		return "", err
	}
	if err := m.Bootstrap(); err != nil {
		return "", err
	}
	db, err := m.Open("")
	if err != nil {
		return "", err
	}
	_, err = db.Exec(fmt.Sprintf(`ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '%[1]s'; ALTER USER 'root'@'localhost' IDENTIFIED BY '%[1]s'; CREATE DATABASE sbtest`, benchRootPassword))
	db.Close()
	if err != nil {
		return "", err
	}
	m.RootPassword = benchRootPassword
	cmd := exec.CommandContext(ctx, "sysbench", append(sysbenchArgs(m, tables, rows, tables), "prepare")...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("sysbench prepare: %w", err)
	}
	if err := m.Stop(); err != nil {
		return "", err
	}
	os.RemoveAll(cache)
	if err := copyTree(filepath.Join(m.Dir, "data"), data); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(cache, "ready"), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return "", err
	}
	step("prepared in %s", time.Since(started).Round(time.Second))
	return data, nil
}

func sysbenchArgs(m *harness.MariaDB, tables, rows, threads int) []string {
	return []string{"oltp_read_write", "--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-port=" + strconv.Itoa(m.Port),
		"--mysql-user=root", "--mysql-password=" + m.RootPassword, "--mysql-db=sbtest",
		"--tables=" + strconv.Itoa(tables), "--table-size=" + strconv.Itoa(rows), "--threads=" + strconv.Itoa(threads)}
}

func runBinvaultBackup(ctx context.Context, e *env, p *harness.MariaDB, store string) (toolRun, error) {
	dir := filepath.Join(e.dir, store)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return toolRun{}, err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(e.dir, store+".yaml")
	body := fmt.Sprintf("source:\n  dsn: %s\n  server_id: 9001\nstorage:\n  url: file://%s\nspool:\n  dir: %s\nhttp:\n  listen: \"\"\nbackup:\n  parallel: 4\n",
		p.DSN("", ""), dir, filepath.Join(e.dir, "spool"))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		return toolRun{}, err
	}
	logf, err := os.Create(filepath.Join(e.dir, store+".log"))
	if err != nil {
		return toolRun{}, err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, e.binvault, "backup", "--config", cfg)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, logf
	started := time.Now()
	if err := cmd.Run(); err != nil {
		return toolRun{}, fmt.Errorf("binvault backup: %v (log %s)", err, logf.Name())
	}
	took := time.Since(started)
	st, err := file.New(dir)
	if err != nil {
		return toolRun{}, err
	}
	m, err := backup.ReadManifest(ctx, st, strings.TrimSpace(out.String()))
	if err != nil {
		return toolRun{}, err
	}
	return toolRun{name: "binvault backup", took: took, sqlBytes: m.Bytes, stored: m.StoredBytes,
		lockHeld: secs(m.LockHeldSeconds), lockWait: secs(m.LockWaitSeconds)}, nil
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// countingReader counts what the dump writes on its way to zstd.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func runMariadbDump(ctx context.Context, e *env, p *harness.MariaDB, name string) (toolRun, error) {
	outPath := filepath.Join(e.dir, name)
	defer os.Remove(outPath)
	dump := exec.CommandContext(ctx, "mariadb-dump", "-h127.0.0.1", "-P"+strconv.Itoa(p.Port), "-uroot", "-p"+p.RootPassword,
		"--single-transaction", "--all-databases")
	dump.Stderr = os.Stderr
	stdout, err := dump.StdoutPipe()
	if err != nil {
		return toolRun{}, err
	}
	outFile, err := os.Create(outPath)
	if err != nil {
		return toolRun{}, err
	}
	defer outFile.Close()
	counter := &countingReader{r: bufio.NewReaderSize(stdout, 1<<20)}
	zst := exec.CommandContext(ctx, "zstd", "-q", "-c")
	zst.Stdin, zst.Stdout, zst.Stderr = counter, outFile, os.Stderr
	started := time.Now()
	if err := dump.Start(); err != nil {
		return toolRun{}, err
	}
	if err := zst.Run(); err != nil {
		dump.Process.Kill()
		dump.Wait()
		return toolRun{}, fmt.Errorf("zstd: %w", err)
	}
	if err := dump.Wait(); err != nil {
		return toolRun{}, fmt.Errorf("mariadb-dump: %w", err)
	}
	took := time.Since(started)
	st, err := outFile.Stat()
	if err != nil {
		return toolRun{}, err
	}
	return toolRun{name: "mariadb-dump | zstd", took: took, sqlBytes: counter.n, stored: st.Size()}, nil
}

// backupUnderLoad takes a backup while sysbench writes, for the lock figures.
func backupUnderLoad(ctx context.Context, e *env, p *harness.MariaDB, tables, rows int) (toolRun, float64, error) {
	args := append([]string{"oltp_write_only"}, sysbenchArgs(p, tables, rows, 4)[1:]...)
	args = append(args, "--time=30", "--report-interval=0", "run")
	load := exec.CommandContext(ctx, "sysbench", args...)
	var out strings.Builder
	load.Stdout, load.Stderr = &out, os.Stderr
	if err := load.Start(); err != nil {
		return toolRun{}, 0, err
	}
	done := make(chan error, 1)
	go func() { done <- load.Wait() }()
	select {
	case err := <-done:
		return toolRun{}, 0, fmt.Errorf("sysbench run ended early: %v\n%s", err, out.String())
	case <-time.After(5 * time.Second):
	}
	r, err := runBinvaultBackup(ctx, e, p, "store-load")
	if err != nil {
		load.Process.Kill()
		<-done
		return toolRun{}, 0, err
	}
	if err := <-done; err != nil {
		return r, 0, fmt.Errorf("sysbench run: %v\n%s", err, out.String())
	}
	tps := 0.0
	if m := regexp.MustCompile(`transactions:\s+\d+\s+\(([\d.]+) per sec`).FindStringSubmatch(out.String()); m != nil {
		tps, _ = strconv.ParseFloat(m[1], 64)
	}
	return r, tps, nil
}

// copyTree copies a directory (regular files and directories only).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil // sockets, pid files' links
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
