package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/binvault/binvault/backup"
)

// roundResult is what a round reports.
type roundResult struct {
	n      int
	kind   string
	detail string // the fault with its parameters
	err    error
	rpoMax float64
	took   time.Duration
}

// backupEvery is how many rounds go between backups (one is taken at
// setup): restores replay at most a few rounds of history.
const backupEvery = 3

// restoreWindow bounds how far back the restore target is drawn: the
// scratch server then replicates natively from there to the present.
const restoreWindow = 15000

// round runs one round: load, fault, recovery, checks.
func (c *chaos) round(parent context.Context, n, rounds int, kind string, timeout time.Duration) (res roundResult) {
	res = roundResult{n: n, kind: kind, detail: kind}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	fmt.Printf("\nround %d/%d: %s\n", n, rounds, kind)
	rw := watchRPO(c.web)
	var ld *load
	defer func() {
		if ld != nil {
			ld.Stop()
		}
		rpo, age, scrapes := rw.end()
		res.rpoMax, res.took = rpo, time.Since(t0)
		if res.err != nil && ctx.Err() == context.DeadlineExceeded && parent.Err() == nil {
			res.err = fmt.Errorf("%w (the round's bound is %v, CHAOS_ROUND_TIMEOUT)", res.err, timeout)
		}
		status := "passed"
		if res.err != nil {
			status = "FAILED"
		}
		fmt.Printf("  round %d %s in %.1fs; RPO max %.1fs (oldest unarchived commit's age max %.0fs; %d scrapes)\n", n, status, res.took.Seconds(), rpo, age, scrapes)
		if res.err != nil {
			fmt.Printf("  error: %v\n", res.err)
		}
	}()
	step := func(format string, args ...any) { fmt.Printf("  "+format+"\n", args...) }
	fail := func(what string, err error) roundResult {
		res.err = fmt.Errorf("%s: %w", what, err)
		fmt.Printf("  binvault run's log (%s) ends:\n%s\n", c.daemonLog(), indent(tailFile(c.daemonLog(), 12), "    "))
		return res
	}

	ld = startLoad(c.primary, c.seed+uint64(n)*1000)
	if err := sleep(ctx, time.Duration(2000+c.rng.IntN(2000))*time.Millisecond); err != nil {
		return fail("load", err)
	}
	if n%backupEvery == 0 {
		id, took, err := c.takeBackup(ctx)
		if err != nil {
			return fail("backup under load", err)
		}
		step("backup %s under load in %.1fs", id, took.Seconds())
	}

	var oldPrimary *server
	switch kind {
	case "daemon":
		down := time.Duration(1000+c.rng.IntN(5000)) * time.Millisecond
		res.detail = fmt.Sprintf("kill -9 of binvault run, down %.1fs", down.Seconds())
		step("fault: %s", res.detail)
		c.daemon.kill()
		if err := sleep(ctx, down); err != nil {
			return fail("daemon fault", err)
		}
		t := time.Now()
		if err := c.startDaemon(ctx); err != nil {
			return fail("restarting binvault", err)
		}
		step("binvault restarted, streaming again %.1fs later", time.Since(t).Seconds())
	case "replica":
		down := time.Duration(1000+c.rng.IntN(5000)) * time.Millisecond
		res.detail = fmt.Sprintf("kill -9 of the DR replica, down %.1fs", down.Seconds())
		step("fault: %s", res.detail)
		if err := c.replica.Kill(); err != nil {
			return fail("killing the replica", err)
		}
		if err := sleep(ctx, down); err != nil {
			return fail("replica fault", err)
		}
		if err := c.replica.Start(); err != nil {
			return fail("restarting the replica", err)
		}
		c.recovery(ctx, step, "the applier reconnected", func(m map[string]float64) bool { return m["binvault_replica_connected"] == 1 })
	case "store":
		down := time.Duration(10+c.rng.IntN(51)) * time.Second
		mode := []string{"versitygw killed", "store proxy disabled (connections refused)", "store proxy a black hole (data dropped, connections held)"}[c.rng.IntN(3)]
		res.detail = fmt.Sprintf("store outage, %s, for %v", mode, down)
		step("fault: %s", res.detail)
		if err := c.storeOutage(ctx, mode, down); err != nil {
			return fail("store outage", err)
		}
		c.recovery(ctx, step, "the RPO is under 2 s again", func(m map[string]float64) bool {
			v, ok := m["binvault_archive_rpo_seconds"]
			return ok && v < 2
		})
	case "failover":
		// Promoted at once, or only after binvault's failover_wait
		// passed with no writable candidate.
		delay := time.Duration(c.rng.IntN(int(2*failoverWait/time.Millisecond))) * time.Millisecond
		res.detail = fmt.Sprintf("failover: kill -9 of the primary %s, %s promoted %.1fs later", c.primary.Name, c.standby.Name, delay.Seconds())
		step("fault: %s", res.detail)
		t := time.Now()
		oldPrimary = c.primary
		// binvault's link to the primary is cut first: the proxy drops
		// what it holds back (the last sourceLatency of stream), so the
		// standby, replicating directly, has everything binvault has (the
		// latency toxic alone delivers what it holds even after the
		// primary died). The proxy listens again at once: binvault's
		// connections to the dead primary then fail as they would.
		c.primary.proxy.Stop()
		err := c.primary.Kill()
		if perr := c.primary.proxy.Start(); perr != nil {
			return fail("restarting the proxy to the dead primary", perr)
		}
		if err != nil {
			return fail("killing the primary", err)
		}
		if err := sleep(ctx, delay); err != nil {
			return fail("failover", err)
		}
		if err := c.promote(ctx, c.standby); err != nil {
			return fail("promoting "+c.standby.Name, err)
		}
		c.primary, c.standby = c.standby, c.primary
		ld.moveTo(c.primary)
		step("%s promoted %.1fs after the kill; the load writes to it", c.primary.Name, time.Since(t).Seconds())
		if err := c.waitFollowing(ctx, c.primary, failoverWait+60*time.Second); err != nil {
			return fail("binvault following the new primary", err)
		}
		step("binvault streams from %s %.1fs after the kill", c.primary.Name, time.Since(t).Seconds())
	default:
		return fail("fault", fmt.Errorf("no fault %q", kind))
	}
	if err := sleep(ctx, time.Duration(3000+c.rng.IntN(2000))*time.Millisecond); err != nil {
		return fail("load", err)
	}
	ld.Stop()
	step("load: %s", ld)
	ld = nil

	if oldPrimary != nil {
		t := time.Now()
		if err := c.rebuild(ctx, oldPrimary, c.primary); err != nil {
			return fail("rebuilding "+oldPrimary.Name+" as the standby", err)
		}
		step("%s rebuilt from a dump of %s and replicating from it in %.1fs", oldPrimary.Name, c.primary.Name, time.Since(t).Seconds())
	}

	t := time.Now()
	if err := c.settle(ctx, 2*time.Minute); err != nil {
		return fail("settling", err)
	}
	step("settled in %.1fs: archive and DR replica at the primary's position, /readyz 200", time.Since(t).Seconds())
	if err := c.checks(ctx, step); err != nil {
		return fail("check", err)
	}
	return res
}

// storeOutage takes the store away for d, one of three ways.
func (c *chaos) storeOutage(ctx context.Context, mode string, d time.Duration) error {
	switch {
	case strings.HasPrefix(mode, "versitygw killed"):
		c.s3.Kill()
		defer func() {
			if err := c.s3.Start(); err != nil {
				fmt.Printf("  restarting versitygw: %v\n", err)
			}
		}()
	case strings.Contains(mode, "disabled"):
		c.s3proxy.Stop()
		defer func() {
			if err := c.s3proxy.Start(); err != nil {
				fmt.Printf("  re-enabling the store proxy: %v\n", err)
			}
		}()
	default:
		for _, s := range []string{"upstream", "downstream"} {
			if _, err := c.s3proxy.Toxics.AddToxicJson(strings.NewReader(`{"name":"blackhole_` + s + `","type":"timeout","stream":"` + s + `","attributes":{"timeout":0}}`)); err != nil {
				return err
			}
		}
		defer func() {
			for _, s := range []string{"upstream", "downstream"} {
				c.s3proxy.Toxics.RemoveToxic(context.Background(), "blackhole_"+s)
			}
		}()
	}
	return sleep(ctx, d)
}

// waitFollowing waits until binvault streams from p: a binlog dump
// connection of its user there, and the stream connected.
func (c *chaos) waitFollowing(ctx context.Context, p *server, timeout time.Duration) error {
	return waitFor(ctx, timeout, "a binlog dump of binvault's user on "+p.Name, func() (bool, error) {
		if err := c.daemonAlive(); err != nil {
			return false, err
		}
		n, err := queryString(ctx, p.MariaDB, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ? AND COMMAND LIKE 'Binlog Dump%'", bvUser)
		if err != nil || n == "0" {
			return false, err
		}
		m, err := scrape(ctx, c.web)
		return err == nil && m["binvault_source_connected"] == 1, err
	})
}

// checks runs the round's checks once everything settled.
func (c *chaos) checks(ctx context.Context, step func(string, ...any)) error {
	// Archive continuity.
	t := time.Now()
	r, err := c.cli(ctx, 2*time.Minute, "verify", "verify", "--config", c.cfg)
	if err != nil {
		return err
	}
	if r.code != 0 {
		return fmt.Errorf("binvault verify: %s", r)
	}
	archived, err := c.history.gtids(ctx, c)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	binlogGTIDs, err := c.primary.binlog.read(ctx, c.primary.MariaDB)
	if err != nil {
		return fmt.Errorf("the primary's binlog: %w", err)
	}
	from, err := compareHistory(archived, binlogGTIDs, c.history.verified)
	if err != nil {
		return fmt.Errorf("archive continuity: %w", err)
	}
	added := len(archived) - c.history.verified
	c.history.verified = len(archived)
	step("archive: verify ok; %d transactions in %d segments (+%d), equal to %s's binlog from %s on, each once, in order (%.1fs)",
		len(archived), len(c.history.segs), added, c.primary.Name, first(binlogGTIDs), time.Since(t).Seconds())

	// The DR replica.
	t = time.Now()
	want, err := checksums(ctx, c.primary)
	if err != nil {
		return err
	}
	got, err := checksums(ctx, c.replica)
	if err != nil {
		return err
	}
	if d := diffChecksums(want, got); d != "" {
		return fmt.Errorf("the DR replica differs from the primary: %s", d)
	}
	step("DR replica: CHECKSUM TABLE equal to the primary's on %d tables (%.1fs)", len(want), time.Since(t).Seconds())

	// A restore to a random archived GTID.
	return c.checkRestore(ctx, archived, from, want, step)
}

// checksums returns CHECKSUM TABLE of every table in the chaos database.
func checksums(ctx context.Context, s *server) (map[string]string, error) {
	tables, err := queryStrings(ctx, s.MariaDB, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'chaos' AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1")
	if err != nil {
		return nil, err
	}
	db, err := dial(ctx, s.MariaDB)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	out := map[string]string{}
	for _, t := range tables {
		var name, sum string
		if err := db.QueryRowContext(ctx, "CHECKSUM TABLE chaos.`"+t+"`").Scan(&name, &sum); err != nil {
			return nil, fmt.Errorf("%s: CHECKSUM TABLE chaos.%s: %w", s.Name, t, err)
		}
		out[t] = sum
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no table in the chaos database", s.Name)
	}
	return out, nil
}

func diffChecksums(want, got map[string]string) string {
	var d []string
	for t, w := range want {
		if g, ok := got[t]; !ok {
			d = append(d, t+" missing")
		} else if g != w {
			d = append(d, fmt.Sprintf("%s checksum %s, primary %s", t, g, w))
		}
	}
	for t := range got {
		if _, ok := want[t]; !ok {
			d = append(d, t+" not on the primary")
		}
	}
	sort.Strings(d)
	return strings.Join(d, "; ")
}

// checkRestore restores the scratch server to a random archived GTID the
// primary's binlog also holds (after the oldest backup, within the last
// restoreWindow transactions), then makes it a native replica of the
// primary from that GTID: it must catch up without error and end with the
// primary's checksums, which proves it held exactly the state at that GTID.
func (c *chaos) checkRestore(ctx context.Context, archived []string, from int, want map[string]string, step func(string, ...any)) error {
	t := time.Now()
	backups, err := backup.List(ctx, c.store)
	if err != nil {
		return fmt.Errorf("listing backups: %w", err)
	}
	if len(backups) == 0 {
		return errors.New("no backup in the store")
	}
	oldest := backups[0].Position.GTIDSet
	lo := max(from, len(archived)-restoreWindow)
	for lo < len(archived) && seqOf(archived[lo]) <= seqOf(oldest) {
		lo++
	}
	if lo >= len(archived) {
		return fmt.Errorf("no archived GTID to restore to after the oldest backup's %s", oldest)
	}
	target := archived[lo+c.rng.IntN(len(archived)-lo)]
	behind := len(archived) - 1 - indexOf(archived, target)

	if err := c.wipeScratch(ctx); err != nil {
		return err
	}
	r, err := c.cli(ctx, 3*time.Minute, "restore", "restore", "--config", c.cfg, "--target", c.scratch.DSN("", ""), "--to-gtid", target)
	if err != nil {
		return err
	}
	if r.code != 0 {
		return fmt.Errorf("binvault restore --to-gtid %s: %s", target, r)
	}
	restored := time.Since(t)
	pos, err := queryString(ctx, c.scratch.MariaDB, "SELECT @@gtid_slave_pos")
	if err != nil {
		return err
	}
	if pos != target {
		return fmt.Errorf("restored to %s, the scratch server's gtid_slave_pos is %q (output in %s)", target, pos, r.log)
	}
	// Before the catch-up the restored server must differ from the
	// present (unless the target is the newest transaction): a restore
	// that went past its target would not.
	early, err := checksums(ctx, c.scratch)
	if err != nil {
		return err
	}
	differ := len(strings.Split(diffChecksums(want, early), "; "))
	if diffChecksums(want, early) == "" {
		differ = 0
	}
	if behind > 0 && differ == 0 {
		return fmt.Errorf("restored to %s, %d transactions before the end, yet the scratch server already equals the primary", target, behind)
	}
	t = time.Now()
	if err := execSQL(ctx, c.scratch.MariaDB, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
		c.primary.Port, replUser, replPass), "START SLAVE"); err != nil {
		return err
	}
	end, err := queryString(ctx, c.primary.MariaDB, "SELECT @@gtid_binlog_pos")
	if err != nil {
		return err
	}
	var at string
	err = waitFor(ctx, 2*time.Minute, "the restored server to replicate up to "+end, func() (bool, error) {
		st, err := slaveStatus(ctx, c.scratch.MariaDB)
		if err != nil {
			return false, err
		}
		if st != nil && st["Last_IO_Errno"] != "0" && st["Slave_IO_Running"] != "Yes" {
			return false, fmt.Errorf("IO thread error %s: %s", st["Last_IO_Errno"], st["Last_IO_Error"])
		}
		if e := replicationError(st); e != "" {
			return false, errors.New(e)
		}
		at, err = queryString(ctx, c.scratch.MariaDB, "SELECT @@gtid_slave_pos")
		return err == nil && at == end, err
	})
	if err != nil {
		return fmt.Errorf("restored to %s (output in %s), then replicating from %s: %w; at %q", target, r.log, c.primary.Name, err, at)
	}
	got, err := checksums(ctx, c.scratch)
	if err != nil {
		return err
	}
	if d := diffChecksums(want, got); d != "" {
		return fmt.Errorf("restored to %s, caught up natively to %s: differs from the primary: %s", target, end, d)
	}
	step("restore: to %s (%d transactions before the end; %d tables differ from the present) in %.1fs; replicated natively from there to %s in %.1fs; CHECKSUM TABLE equal on %d tables",
		target, behind, differ, restored.Seconds(), end, time.Since(t).Seconds(), len(got))
	return execSQL(ctx, c.scratch.MariaDB, "STOP SLAVE")
}

// wipeScratch empties the scratch server for the next restore.
func (c *chaos) wipeScratch(ctx context.Context) error {
	stmts := []string{"STOP SLAVE", "RESET SLAVE ALL"}
	dbs, err := userDatabases(ctx, c.scratch.MariaDB)
	if err != nil {
		return err
	}
	for _, d := range dbs {
		stmts = append(stmts, "DROP DATABASE `"+d+"`")
	}
	stmts = append(stmts, "RESET MASTER", "SET GLOBAL gtid_slave_pos=''")
	return execSQL(ctx, c.scratch.MariaDB, stmts...)
}

func indexOf(s []string, x string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == x {
			return i
		}
	}
	return -1
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

// heal restarts what a failed round may have left down (with
// CHAOS_KEEP_GOING=1): the store, its proxy, the DR replica, the daemon.
func (c *chaos) heal(ctx context.Context) error {
	if err := c.s3.Start(); err != nil && !strings.Contains(err.Error(), "already running") {
		return err
	}
	for _, s := range []string{"upstream", "downstream"} {
		c.s3proxy.Toxics.RemoveToxic(ctx, "blackhole_"+s)
	}
	if !c.s3proxy.Enabled {
		if err := c.s3proxy.Start(); err != nil {
			return err
		}
	}
	if c.replica.PID() == 0 {
		if err := c.replica.Start(); err != nil {
			return err
		}
	}
	if c.daemon == nil || c.daemon.exited() {
		return c.startDaemon(ctx)
	}
	return nil
}

// recovery reports how long after the fault ended the daemon's metrics
// showed it recovered (at most 90 s; the checks judge, this only measures).
func (c *chaos) recovery(ctx context.Context, step func(string, ...any), what string, cond func(map[string]float64) bool) {
	t := time.Now()
	err := waitFor(ctx, 90*time.Second, what, func() (bool, error) {
		m, err := scrape(ctx, c.web)
		return err == nil && cond(m), nil
	})
	if err != nil {
		step("not recovered 90 s after the fault ended: %v", err)
		return
	}
	step("%s %.1fs after the fault ended", what, time.Since(t).Seconds())
}
