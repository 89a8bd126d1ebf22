package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// The semisync scenario: what a semi-synchronous replica costs the
// primary's commits. sysbench oltp_write_only on one durable primary
// (sync_binlog=1, innodb_flush_log_at_trx_commit=1) with 1 and 16 client
// threads, four ways in the same run: the primary alone, asynchronous
// (the baseline); with a native MariaDB replica as its semi-sync replica;
// with `binvault run` as its semi-sync replica acknowledging once a
// transaction is fsync'd in its spool (source.semi_sync: spool); and once
// the segment holding it is in the store (store; versitygw on loopback).
// The primary waits AFTER_SYNC, up to 10 s. Exactly one semi-sync replica
// is connected in each semi-sync row (Rpl_semi_sync_master_clients), and
// the primary's own counters (Rpl_semi_sync_master_yes_tx, no_tx) show
// that it waited for every commit. Latencies are sysbench's per
// transaction (BEGIN, four writes, COMMIT), read from its --histogram, so
// p50 and p99 come from one run. A native replica acknowledges once an
// event is written to its relay log, which it does not fsync by default
// (sync_relay_log=10000); binvault's spool mode acknowledges after fsync.
// The native replica applies what it receives, durably like every server
// here, on the same disk and CPUs as the primary and binvault.
func benchSemiSync(ctx context.Context, e *env) error {
	if _, err := exec.LookPath("sysbench"); err != nil {
		return fmt.Errorf("sysbench not found: run BINVAULT_SETUP_BENCH=1 scripts/setup.sh (make bench does)")
	}
	tables, rows := envInt("BINVAULT_BENCH_SEMISYNC_TABLES", 4), envInt("BINVAULT_BENCH_SEMISYNC_TABLE_SIZE", 10000)
	seconds := envInt("BINVAULT_BENCH_SEMISYNC_SECONDS", 20)
	threadCounts := []int{1, 16}
	p, err := benchServer(e, "ss-primary", 1, "--rpl-semi-sync-master-enabled=OFF",
		"--rpl-semi-sync-master-wait-point=AFTER_SYNC", "--rpl-semi-sync-master-timeout=10000")
	if err != nil {
		return err
	}
	r, err := benchServer(e, "ss-replica", 2, "--rpl-semi-sync-slave-enabled=ON")
	if err != nil {
		return err
	}
	bin, err := harness.VersityGWPath()
	if err != nil {
		return err
	}
	s3, err := harness.NewS3(filepath.Join(e.dir, "ss-s3"), bin)
	if err != nil {
		return err
	}
	e.cleanup(s3.Stop)
	if err := s3.Start(); err != nil {
		return err
	}
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	pdb, err := p.Open("")
	if err != nil {
		return err
	}
	defer pdb.Close()

	step("preparing sysbench (%d tables × %d rows); the native replica copies it asynchronously, then stops", tables, rows)
	if err := execAll(r, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos", p.Port, p.RootPassword), "START SLAVE"); err != nil {
		return err
	}
	if err := execAll(p, "CREATE DATABASE sbtest"); err != nil {
		return err
	}
	if err := runCmd(ctx, "sysbench", append(replicaSysbenchArgs(p, tables, rows, 4), "prepare")...); err != nil {
		return err
	}
	if err := waitPos(ctx, r, gtidPos(pdb), 5*time.Minute); err != nil {
		return err
	}
	if err := execAll(r, "STOP SLAVE"); err != nil {
		return err
	}
	if err := waitSemiSyncClients(ctx, pdb, 0, 30*time.Second, ""); err != nil {
		return err
	}

	type result struct {
		row           string
		threads       int
		sb            sysbenchResult
		semi          bool
		yesTx, noTx   int64
		waitMs        float64 // the primary's average wait per commit it waited for
		clientsBefore int64
		clientsAfter  int64
		status        string // Rpl_semi_sync_master_status after the run
		binvault      string // binvault's side, from its /metrics
	}
	var results []result
	// measure runs sysbench at each thread count with the row's replica
	// connected; metrics is binvault's /metrics URL, or "".
	measure := func(row string, semi bool, metrics string) error {
		for _, th := range threadCounts {
			step("%s: sysbench oltp_write_only, %d thread(s), %d s", row, th, seconds)
			before, err := semiSyncCounters(pdb)
			if err != nil {
				return err
			}
			var mBefore map[string]float64
			if metrics != "" {
				if mBefore, err = scrape(metrics); err != nil {
					return fmt.Errorf("scrape binvault: %w", err)
				}
			}
			sb, err := sysbenchWriteOnly(ctx, p, tables, rows, th, seconds)
			if err != nil {
				return err
			}
			after, err := semiSyncCounters(pdb)
			if err != nil {
				return err
			}
			res := result{row: row, threads: th, sb: sb, semi: semi,
				yesTx:         counterInt(after, "yes_tx") - counterInt(before, "yes_tx"),
				noTx:          counterInt(after, "no_tx") - counterInt(before, "no_tx"),
				clientsBefore: counterInt(before, "clients"), clientsAfter: counterInt(after, "clients"),
				status: after["status"]}
			if waits := counterInt(after, "tx_waits") - counterInt(before, "tx_waits"); waits > 0 {
				res.waitMs = float64(counterInt(after, "tx_wait_time")-counterInt(before, "tx_wait_time")) / float64(waits) / 1000
			}
			if metrics != "" {
				mAfter, err := scrape(metrics)
				if err != nil {
					return fmt.Errorf("scrape binvault: %w", err)
				}
				res.binvault = semiSyncAckSummary(mBefore, mAfter)
			}
			results = append(results, res)
		}
		return nil
	}

	// 1. The primary alone, semi-sync off.
	if err := measure("asynchronous", false, ""); err != nil {
		return err
	}
	if err := execAll(p, "SET GLOBAL rpl_semi_sync_master_enabled=ON"); err != nil {
		return err
	}
	var wp string
	if err := pdb.QueryRow("SELECT CONCAT(@@rpl_semi_sync_master_enabled, ' ', @@rpl_semi_sync_master_wait_point, ' ', @@rpl_semi_sync_master_timeout)").Scan(&wp); err != nil {
		return err
	}
	if wp != "ON AFTER_SYNC 10000" {
		return fmt.Errorf("the primary's semi-sync settings are %q, want enabled, AFTER_SYNC, 10000 ms", wp)
	}

	// 2. The native replica, semi-sync.
	if err := execAll(r, "START SLAVE"); err != nil {
		return err
	}
	if err := waitSemiSyncClients(ctx, pdb, 1, 30*time.Second, ""); err != nil {
		return err
	}
	if err := measure("native semi-sync", true, ""); err != nil {
		return err
	}
	if err := execAll(r, "STOP SLAVE"); err != nil {
		return err
	}
	if err := r.Stop(); err != nil { // it competes for the CPUs no more
		return err
	}
	if err := waitSemiSyncClients(ctx, pdb, 0, 30*time.Second, ""); err != nil {
		return err
	}

	// 3, 4. binvault run, one mode after the other, each with its own
	// spool and store prefix, from the primary's current position.
	logPath := filepath.Join(e.dir, "binvault-run.log") // where startBinvault logs
	for _, mode := range []string{"spool", "store"} {
		port, err := harness.FreePort()
		if err != nil {
			return err
		}
		cfg := filepath.Join(e.dir, "semisync-"+mode+".yaml")
		body := fmt.Sprintf("source:\n  dsn: mysql://root:%s@%s\n  server_id: 9004\n  semi_sync: %s\nstorage:\n  url: %s\n  endpoint: %s\n  path_style: true\n  region: us-east-1\nspool:\n  dir: %s\nhttp:\n  listen: 127.0.0.1:%d\n",
			p.RootPassword, p.Addr(), mode, s3.URL("semisync-"+mode), s3.Endpoint(), filepath.Join(e.dir, "semisync-spool-"+mode), port)
		if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
			return err
		}
		d, err := startBinvault(e, cfg)
		if err != nil {
			return err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if err := waitListening(addr, 30*time.Second); err != nil {
			d.stop()
			return fmt.Errorf("binvault (%s): %v\n%s", mode, err, logTail(logPath, 20))
		}
		if err := waitSemiSyncClients(ctx, pdb, 1, 60*time.Second, logPath); err != nil {
			d.stop()
			return err
		}
		if err := measure("binvault "+mode, true, "http://"+addr+"/metrics"); err != nil {
			d.stop()
			return err
		}
		if err := d.stop(); err != nil {
			return fmt.Errorf("binvault (%s) stopped with %v\n%s", mode, err, logTail(logPath, 20))
		}
		if err := waitSemiSyncClients(ctx, pdb, 0, 30*time.Second, ""); err != nil {
			return err
		}
	}

	tpsOf := map[string]float64{}
	for _, res := range results {
		tpsOf[fmt.Sprintf("%s/%d", res.row, res.threads)] = res.sb.tps
	}
	ratio := func(res result, row string) string {
		base := tpsOf[fmt.Sprintf("%s/%d", row, res.threads)]
		if base == 0 {
			return ""
		}
		return fmt.Sprintf("%.2f", res.sb.tps/base)
	}
	fmt.Printf("\nsemi-synchronous replication: sysbench oltp_write_only on the primary (%d tables × %d rows, %d s per run, one run each), sync_binlog=1, innodb_flush_log_at_trx_commit=1;\n", tables, rows, seconds)
	fmt.Printf("semi-sync rows: rpl_semi_sync_master_wait_point=AFTER_SYNC, timeout 10 s, one semi-sync replica connected. Latency: per sysbench transaction (BEGIN … COMMIT), from its histogram.\n")
	fmt.Printf("  %-24s %7s %9s %8s %8s %9s %8s %8s %6s %14s\n", "row", "threads", "tps", "p50 ms", "p99 ms", "× native", "× async", "yes_tx", "no_tx", "primary wait")
	var warnings []string
	for _, res := range results {
		yes, no, wait := "-", "-", "-"
		if res.semi {
			yes, no = strconv.FormatInt(res.yesTx, 10), strconv.FormatInt(res.noTx, 10)
			wait = fmt.Sprintf("%.2f ms", res.waitMs)
			if res.noTx != 0 || res.status != "ON" {
				warnings = append(warnings, fmt.Sprintf("warning: %s, %d thread(s): the primary committed %d transactions without waiting (no_tx), semi-sync status %s after the run", res.row, res.threads, res.noTx, res.status))
			}
			if res.yesTx == 0 {
				warnings = append(warnings, fmt.Sprintf("warning: %s, %d thread(s): the primary waited for no commit (yes_tx 0)", res.row, res.threads))
			}
			if res.clientsBefore != 1 || res.clientsAfter != 1 {
				warnings = append(warnings, fmt.Sprintf("warning: %s, %d thread(s): Rpl_semi_sync_master_clients %d before, %d after the run (want 1)", res.row, res.threads, res.clientsBefore, res.clientsAfter))
			}
		}
		if res.sb.errors > 0 {
			warnings = append(warnings, fmt.Sprintf("note: %s, %d thread(s): sysbench ignored %d errors (--mysql-ignore-errors=all, as in the other scenarios)", res.row, res.threads, res.sb.errors))
		}
		if res.sb.p99Check != "" {
			warnings = append(warnings, fmt.Sprintf("warning: %s, %d thread(s): %s", res.row, res.threads, res.sb.p99Check))
		}
		fmt.Printf("  %-24s %7d %9.1f %8.2f %8.2f %9s %8s %8s %6s %14s\n", res.row, res.threads, res.sb.tps, res.sb.p50, res.sb.p99,
			ratio(res, "native semi-sync"), ratio(res, "asynchronous"), yes, no, wait)
	}
	fmt.Printf("  (primary wait: Rpl_semi_sync_master_tx_wait_time / tx_waits over the run, the average a commit waited for its acknowledgement;\n")
	fmt.Printf("   the native replica acknowledges once an event is in its relay log, not fsync'd (sync_relay_log=10000, the default);\n")
	fmt.Printf("   binvault spool once fsync'd, store once its segment is uploaded)\n")
	for _, res := range results {
		if res.binvault != "" {
			fmt.Printf("  %s, %d thread(s): %s\n", res.row, res.threads, res.binvault)
		}
	}
	for _, w := range warnings {
		fmt.Println("  " + w)
	}
	goal := "not measured"
	if n, s := tpsOf["native semi-sync/16"], tpsOf["binvault spool/16"]; n > 0 && s > 0 {
		verdict := "met"
		if s < 0.9*n {
			verdict = "not met"
		}
		goal = fmt.Sprintf("%.2f× → %s", s/n, verdict)
	}
	fmt.Printf("  goal: binvault spool within 10 %% of the native semi-sync replica's throughput at 16 threads: %s\n", goal)
	return nil
}

// sysbenchResult is one sysbench run's throughput and transaction latency.
type sysbenchResult struct {
	tps, p50, p99 float64 // transactions/s; milliseconds
	errors        int     // ignored errors
	p99Check      string  // set when the histogram's p99 disagrees with sysbench's own
}

var (
	sbTPS       = regexp.MustCompile(`transactions:\s+\d+\s+\(([\d.]+) per sec`)
	sbErrors    = regexp.MustCompile(`ignored errors:\s+(\d+)`)
	sbP99       = regexp.MustCompile(`99th percentile:\s+([\d.]+)`)
	sbHistogram = regexp.MustCompile(`(?m)^\s*([\d.]+)\s+\|\**\s+(\d+)\s*$`)
)

// sysbenchWriteOnly runs oltp_write_only on m and reads the throughput and
// the p50 and p99 latency from --histogram (sysbench computes its own
// --percentile from the same buckets; its p99 is kept as a check).
func sysbenchWriteOnly(ctx context.Context, m *harness.MariaDB, tables, rows, threads, seconds int) (sysbenchResult, error) {
	args := append(replicaSysbenchArgs(m, tables, rows, threads),
		fmt.Sprintf("--time=%d", seconds), "--report-interval=0", "--histogram", "--percentile=99", "run")
	cmd := exec.CommandContext(ctx, "sysbench", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return sysbenchResult{}, fmt.Errorf("sysbench: %v\n%s%s", err, out, stderr.Bytes())
	}
	var res sysbenchResult
	mt := sbTPS.FindSubmatch(out)
	if mt == nil {
		return res, fmt.Errorf("sysbench printed no transactions per second:\n%s", out)
	}
	res.tps, _ = strconv.ParseFloat(string(mt[1]), 64)
	if me := sbErrors.FindSubmatch(out); me != nil {
		res.errors, _ = strconv.Atoi(string(me[1]))
	}
	type bucket struct {
		ms float64
		n  int64
	}
	var hist []bucket
	var total int64
	for _, l := range sbHistogram.FindAllSubmatch(out, -1) {
		ms, _ := strconv.ParseFloat(string(l[1]), 64)
		n, _ := strconv.ParseInt(string(l[2]), 10, 64)
		hist = append(hist, bucket{ms, n})
		total += n
	}
	if total == 0 {
		return res, fmt.Errorf("sysbench printed no latency histogram:\n%s", out)
	}
	sort.Slice(hist, func(i, j int) bool { return hist[i].ms < hist[j].ms })
	pct := func(q float64) float64 {
		want := max(1, int64(math.Floor(float64(total)*q+0.5)))
		var seen int64
		for _, b := range hist {
			if seen += b.n; seen >= want {
				return b.ms
			}
		}
		return hist[len(hist)-1].ms
	}
	res.p50, res.p99 = pct(0.5), pct(0.99)
	if mp := sbP99.FindSubmatch(out); mp != nil {
		own, _ := strconv.ParseFloat(string(mp[1]), 64)
		if math.Abs(own-res.p99) > 0.01*own+0.01 {
			res.p99Check = fmt.Sprintf("p99 from the histogram %.2f ms, sysbench's own %.2f ms", res.p99, own)
		}
	}
	return res, nil
}

// semiSyncCounters reads the primary's Rpl_semi_sync_master_* status,
// keyed without the prefix (yes_tx, no_tx, clients, status, …).
func semiSyncCounters(db *sql.DB) (map[string]string, error) {
	rows, err := db.Query("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[strings.TrimPrefix(k, "Rpl_semi_sync_master_")] = v
	}
	return out, rows.Err()
}

func counterInt(st map[string]string, k string) int64 {
	n, _ := strconv.ParseInt(st[k], 10, 64)
	return n
}

// waitSemiSyncClients waits until the primary counts want semi-sync
// replicas, and with one, until it waits for it again (a primary that fell
// back when the previous replica left switches on again only once a
// commit is acknowledged: a probe row is committed meanwhile); on failure
// it shows the tail of log, when given.
func waitSemiSyncClients(ctx context.Context, db *sql.DB, want int64, timeout time.Duration, log string) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := semiSyncCounters(db)
		if err == nil && counterInt(st, "clients") == want && (want == 0 || st["status"] == "ON") {
			return nil
		}
		if err == nil && want > 0 && counterInt(st, "clients") == want {
			db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS ssprobe")
			db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS ssprobe.t (id INT AUTO_INCREMENT PRIMARY KEY)")
			db.ExecContext(ctx, "INSERT INTO ssprobe.t VALUES (NULL)")
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			msg := fmt.Sprintf("the primary counts %s semi-sync replicas, not %d, after %v", st["clients"], want, timeout)
			if log != "" {
				msg += "\n" + logTail(log, 20)
			}
			return fmt.Errorf("%s", msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// semiSyncAckSummary is binvault's side of a run from two scrapes: its
// acknowledgements and the delay from a request's receipt to its
// acknowledgement (binvault_semisync_ack_delay_seconds; quantiles are
// bucket upper bounds), and the segments it uploaded.
func semiSyncAckSummary(before, after map[string]float64) string {
	const h = "binvault_semisync_ack_delay_seconds"
	d := func(k string) float64 { return after[k] - before[k] }
	count, sum := d(h+"_count"), d(h+"_sum")
	type bucket struct{ le, n float64 }
	var buckets []bucket
	for k := range after {
		le, ok := strings.CutPrefix(k, h+`_bucket{le="`)
		if !ok {
			continue
		}
		le = strings.TrimSuffix(le, `"}`)
		v, err := strconv.ParseFloat(le, 64) // +Inf parses as well
		if err != nil {
			continue
		}
		buckets = append(buckets, bucket{v, d(k)})
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].le < buckets[j].le })
	q := func(q float64) string {
		for _, b := range buckets {
			if b.n >= q*count {
				if math.IsInf(b.le, 1) {
					return "> last bucket"
				}
				return fmt.Sprintf("≤ %.1f ms", b.le*1000)
			}
		}
		return "?"
	}
	if count == 0 {
		return fmt.Sprintf("binvault sent %.0f acknowledgements and observed no request", d("binvault_semisync_acks_total"))
	}
	return fmt.Sprintf("%.0f acknowledgements for %.0f requests; receipt → acknowledgement mean %.2f ms, p50 %s, p99 %s; %.0f segments uploaded",
		d("binvault_semisync_acks_total"), count, sum/count*1000, q(0.5), q(0.99), d("binvault_archive_segments_total"))
}

// logTail is the last n lines of a log file, for error messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
