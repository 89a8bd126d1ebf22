package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// The restore scenario: the same archived backlog of sysbench
// oltp_write_only transactions (at least 200,000) replayed into the same
// starting data (the same backup, loaded by binvault) two ways in one run:
// `binvault restore` and `mariadb-binlog <segments> | mariadb`. Both
// targets run the servers' default durability; binvault relaxes it for its
// replay and puts it back, as every restore does. Both targets must end
// equal to the primary.
func benchRestore(ctx context.Context, e *env) error {
	for _, tool := range []string{"sysbench", "mariadb-binlog", "mariadb", "zstd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run BINVAULT_SETUP_BENCH=1 scripts/setup.sh (make bench does)", tool)
		}
	}
	tables, rows := envInt("BINVAULT_BENCH_RESTORE_TABLES", 4), envInt("BINVAULT_BENCH_RESTORE_TABLE_SIZE", 100000)
	events := envInt("BINVAULT_BENCH_RESTORE_TRANSACTIONS", 200000)
	server := func(name string, id int) (*harness.MariaDB, error) { return benchServer(e, name, id) }
	p, err := server("rprimary", 1)
	if err != nil {
		return err
	}
	pdb, err := p.Open("")
	if err != nil {
		return err
	}
	defer pdb.Close()
	if _, err := pdb.Exec("CREATE DATABASE sbtest"); err != nil {
		return err
	}
	step("preparing sysbench (%d tables × %d rows)", tables, rows)
	if err := runCmd(ctx, "sysbench", append(replicaSysbenchArgs(p, tables, rows, 4), "prepare")...); err != nil {
		return err
	}
	archiveDir := filepath.Join(e.dir, "restore-archive")
	os.MkdirAll(archiveDir, 0o755)
	cfg := filepath.Join(e.dir, "restore-bench.yaml")
	body := fmt.Sprintf("source:\n  dsn: mysql://root:%s@%s\n  server_id: 9002\nstorage:\n  url: file://%s\nspool:\n  dir: %s\nhttp:\n  listen: \"\"\n",
		p.RootPassword, p.Addr(), archiveDir, filepath.Join(e.dir, "restore-spool"))
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return err
	}
	d, err := startBinvault(e, cfg)
	if err != nil {
		return err
	}
	step("backing up the prepared data")
	out, err := exec.CommandContext(ctx, e.binvault, "backup", "--config", cfg).Output()
	if err != nil {
		d.stop()
		return fmt.Errorf("binvault backup: %v", err)
	}
	backupID := strings.TrimSpace(string(out))
	g0 := gtidPos(pdb)
	step("writing the backlog: sysbench oltp_write_only, 4 threads, %d transactions (binvault archives it)", events)
	args := append([]string{"oltp_write_only"}, replicaSysbenchArgs(p, tables, rows, 4)[1:]...)
	t0 := time.Now()
	if err := runCmd(ctx, "sysbench", append(args, "--time=0", fmt.Sprintf("--events=%d", events), "run")...); err != nil {
		d.stop()
		return err
	}
	primaryRate := float64(events) / time.Since(t0).Seconds()
	g1 := gtidPos(pdb)
	if err := waitArchived(ctx, e, cfg, g1, 10*time.Minute); err != nil {
		d.stop()
		return err
	}
	d.stop()
	txns := seqOf(g1) - seqOf(g0)
	want, err := checksumSbtest(p, tables)
	if err != nil {
		return err
	}

	// The segments to replay, per the restore plan.
	out, err = exec.CommandContext(ctx, e.binvault, "restore", "--config", cfg, "--latest", "--dry-run", "--json").Output()
	if err != nil {
		return fmt.Errorf("restore --dry-run: %v", err)
	}
	var plan struct {
		BackupID       string `json:"backup_id"`
		BackupPosition string `json:"backup_position"`
		Segments       []struct {
			Seq uint64 `json:"seq"`
		} `json:"segments"`
	}
	if err := json.Unmarshal(out, &plan); err != nil {
		return err
	}
	if plan.BackupID != backupID {
		return fmt.Errorf("the plan uses backup %s, not %s", plan.BackupID, backupID)
	}

	// The pipe: the backup loaded by binvault (same starting data), then
	// mariadb-binlog over the decompressed segments into the mariadb client.
	pipeTarget, err := server("pipetarget", 2)
	if err != nil {
		return err
	}
	step("loading the backup into the target of the pipe")
	if err := runCmd(ctx, e.binvault, "restore", "--config", cfg, "--target", pipeTarget.DSN("", ""), "--to-gtid", lastGTID(plan.BackupPosition)); err != nil {
		return err
	}
	segDir := filepath.Join(e.dir, "restore-segments")
	os.MkdirAll(segDir, 0o755)
	var files []string
	var binlogBytes int64
	for _, s := range plan.Segments {
		src := filepath.Join(archiveDir, "segments", fmt.Sprintf("%016d.binlog.zst", s.Seq))
		dst := filepath.Join(segDir, fmt.Sprintf("%016d.binlog", s.Seq))
		if err := runCmd(ctx, "zstd", "-q", "-d", "-f", src, "-o", dst); err != nil {
			return err
		}
		if st, err := os.Stat(dst); err == nil {
			binlogBytes += st.Size()
		}
		files = append(files, dst)
	}
	step("replaying %d transactions (%s of binlog, %d segments) with mariadb-binlog | mariadb", txns, mib(binlogBytes), len(files))
	pipe := fmt.Sprintf("mariadb-binlog --start-position=%s %s | mariadb --no-defaults -h127.0.0.1 -P%d -uroot -p%s",
		plan.BackupPosition, strings.Join(files, " "), pipeTarget.Port, pipeTarget.RootPassword)
	t0 = time.Now()
	if err := runCmd(ctx, "sh", "-c", pipe); err != nil {
		return err
	}
	pipeSecs := time.Since(t0).Seconds()

	bvTarget, err := server("bvtarget", 3)
	if err != nil {
		return err
	}
	step("binvault restore --latest (load, then replay)")
	out, err = exec.CommandContext(ctx, e.binvault, "restore", "--config", cfg, "--target", bvTarget.DSN("", ""), "--latest", "--json").Output()
	if err != nil {
		return fmt.Errorf("binvault restore: %v", err)
	}
	var sum struct {
		Replay       int64 `json:"replay_duration"`
		Load         int64 `json:"load_duration"`
		Transactions int64 `json:"transactions"`
	}
	if err := json.Unmarshal(out, &sum); err != nil {
		return err
	}
	bvSecs := time.Duration(sum.Replay).Seconds()

	for _, t := range []*harness.MariaDB{pipeTarget, bvTarget} {
		got, err := checksumSbtest(t, tables)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s differs from the primary after the replay", t.Name)
		}
	}
	fmt.Printf("\nrestore replay of %d sysbench oltp_write_only transactions (%s of binlog; primary wrote %.0f/s), same starting data, both ending equal to the primary:\n", txns, mib(binlogBytes), primaryRate)
	fmt.Printf("  %-28s %9s %10s %s\n", "replayer", "seconds", "trx/s", "× the pipe")
	fmt.Printf("  %-28s %9.1f %10.0f %.2f\n", "mariadb-binlog | mariadb", pipeSecs, float64(txns)/pipeSecs, 1.0)
	fmt.Printf("  %-28s %9.1f %10.0f %.2f\n", "binvault restore (replay)", bvSecs, float64(txns)/bvSecs, pipeSecs/bvSecs)
	fmt.Printf("  (binvault's backup load took %.1f s more; the pipe's target was loaded the same way beforehand)\n", time.Duration(sum.Load).Seconds())
	return nil
}

func lastGTID(pos string) string {
	parts := strings.Split(pos, ",")
	return strings.TrimSpace(parts[len(parts)-1])
}

func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB" }
