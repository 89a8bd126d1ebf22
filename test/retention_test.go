package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/backup"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/open"
	"github.com/binvault/binvault/test/harness"
)

// pruneReport is the part of `prune --json` the tests read.
type pruneReport struct {
	DryRun         bool `json:"dry_run"`
	DeletedBackups []struct {
		ID string `json:"id"`
	} `json:"deleted_backups"`
	Kept []struct {
		ID      string   `json:"id"`
		Reasons []string `json:"reasons"`
	} `json:"kept_backups"`
	DeletedSegments []struct {
		Seq uint64 `json:"seq"`
	} `json:"deleted_segments"`
	SegmentsKept *struct {
		First uint64 `json:"first"`
	} `json:"segments_kept"`
	CatalogRewritten map[string]string `json:"catalog_rewritten"`
	FreedBytes       int64             `json:"freed_bytes"`
}

func runPrune(t testing.TB, env []string, cfg string, args ...string) (pruneReport, result) {
	t.Helper()
	r := binvault(t, env, append([]string{"prune", "--config", cfg, "--json"}, args...)...)
	var rep pruneReport
	if r.code != 0 {
		t.Fatalf("prune %v: %s", args, r)
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("prune --json: %v: %s", err, r)
	}
	return rep, r
}

// storeState lists keys and sizes under the prefixes.
func storeState(t testing.TB, st storage.Store, prefixes ...string) string {
	t.Helper()
	var b strings.Builder
	for _, p := range prefixes {
		if err := st.List(context.Background(), p, func(oi storage.ObjectInfo) error {
			fmt.Fprintf(&b, "%s %d\n", oi.Key, oi.Size)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

type backupsDoc struct {
	Backups []struct {
		ID            string `json:"id"`
		ChainComplete bool   `json:"chain_complete"`
		Position      struct {
			GTIDSet string `json:"gtid_set"`
		} `json:"position"`
		Chain struct {
			Detail string `json:"detail"`
		} `json:"chain"`
	} `json:"backups"`
}

func listBackups(t testing.TB, env []string, cfg string) backupsDoc {
	t.Helper()
	r := binvault(t, env, "backups", "--config", cfg, "--json")
	var doc backupsDoc
	if r.code != 0 {
		t.Fatalf("backups: %s", r)
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("backups --json: %v: %s", err, r)
	}
	return doc
}

// Three backups under a write load, points in time recorded between
// them, the daemon restarted once (so a catalog object spans the oldest
// backups); keep_last 2 prunes the first backup and the segments before
// the second's position. Every recorded point after the second backup
// still restores exactly; the point before it is refused.
func TestPruneKeepsEveryPointAfterTheOldestKeptBackup(t *testing.T) {
	rs := newRestoreSetup(t)
	p := rs.primary
	f, err := os.OpenFile(rs.cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(f, "retention:\n  keep_last: 2\n  keep_within: 0s\n")
	f.Close()

	prepareLoadSchema(t, p)
	l := startLoad(t, p, 2, true)
	defer func() { l.Stop() }()
	takeBackup := func() string {
		r := binvault(t, rs.env, "backup", "--config", rs.cfg)
		id := strings.TrimSpace(r.stdout)
		if _, ok := backup.ParseID(id); r.code != 0 || !ok {
			t.Fatalf("backup: %s", r)
		}
		return id
	}
	gtidPoint := func() pointInTime {
		time.Sleep(1200 * time.Millisecond)
		gtid, digest := snapshotDigest(t, p)
		return pointInTime{gtid: gtid, tables: digest}
	}
	// A point for --to-time: writes pause across a second boundary so the
	// second holds exactly the snapshot's transactions.
	timePoint := func() pointInTime {
		time.Sleep(1200 * time.Millisecond)
		l.Stop()
		gtid, digest := snapshotDigest(t, p)
		now := time.Now()
		time.Sleep(time.Until(now.Truncate(time.Second).Add(time.Second + 50*time.Millisecond)))
		l = startLoad(t, p, 2, true)
		return pointInTime{gtid: gtid, time: now.Truncate(time.Second), tables: digest}
	}

	time.Sleep(time.Second)
	b1 := takeBackup()
	p0 := gtidPoint() // between the first and second backups: pruned away
	// At least one transaction after p0, so that p0 is before the second
	// backup whatever the load did meanwhile.
	p.Exec(t, "INSERT INTO app.counters VALUES ('after-p0', 1) ON DUPLICATE KEY UPDATE n = n + 1")
	b2 := takeBackup()
	p1 := gtidPoint()
	// A clean stop writes the catalog of everything so far: one object
	// that covers segments before and after the second backup's position.
	if code := rs.d.stop(t, 30*time.Second); code != 0 {
		t.Fatalf("daemon stop: exit %d\n%s", code, rs.d.log)
	}
	rs.d = startDaemon(t, rs.env, "--config", rs.cfg)
	rs.waitConnected(t, rs.d)
	p2 := timePoint()
	b3 := takeBackup()
	p3 := gtidPoint()
	l.Stop()
	rs.waitArchived(t, 60*time.Second)
	if before := listBackups(t, rs.env, rs.cfg); len(before.Backups) != 3 {
		t.Fatalf("want 3 backups before the prune: %+v", before)
	}
	segsBefore := archiveSegments(t, rs.archiveSetup)

	// --dry-run: the report, and nothing changed.
	state := storeState(t, rs.store, backup.Prefix, "segments/")
	dry, _ := runPrune(t, rs.env, rs.cfg, "--dry-run")
	r := binvault(t, rs.env, "prune", "--config", rs.cfg, "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "would delete") || !strings.Contains(r.stdout, b1) || !strings.Contains(r.stdout, "keep") {
		t.Fatalf("prune --dry-run: %s", r)
	}
	t.Logf("prune --dry-run:\n%s", r.stdout)
	if got := storeState(t, rs.store, backup.Prefix, "segments/"); got != state {
		t.Fatalf("prune --dry-run changed the store:\nbefore:\n%s\nafter:\n%s", state, got)
	}
	if keys := keysUnder(t, rs.store, "catalog/floor-"); len(keys) > 0 {
		t.Fatalf("prune --dry-run wrote a floor: %v", keys)
	}
	if !dry.DryRun || len(dry.DeletedBackups) != 1 || dry.DeletedBackups[0].ID != b1 || len(dry.Kept) != 2 || len(dry.DeletedSegments) == 0 {
		t.Fatalf("prune --dry-run --json: %+v", dry)
	}

	// The prune, while the daemon runs.
	rep, r := runPrune(t, rs.env, rs.cfg)
	if len(rep.DeletedBackups) != 1 || rep.DeletedBackups[0].ID != b1 || len(rep.DeletedSegments) != len(dry.DeletedSegments) || rep.FreedBytes <= 0 {
		t.Fatalf("prune: %s", r)
	}
	if len(rep.CatalogRewritten) == 0 {
		t.Fatalf("no catalog object was rewritten: the test does not exercise the catalog: %s", r)
	}
	t.Logf("pruned backup %s, segments %d..%d, rewrote %v", b1, rep.DeletedSegments[0].Seq, rep.DeletedSegments[len(rep.DeletedSegments)-1].Seq, rep.CatalogRewritten)

	// backups: the first is gone, the others roll forward to the present.
	after := listBackups(t, rs.env, rs.cfg)
	if len(after.Backups) != 2 || after.Backups[0].ID != b2 || after.Backups[1].ID != b3 || !after.Backups[0].ChainComplete || !after.Backups[1].ChainComplete {
		t.Fatalf("backups after the prune: %+v", after)
	}
	// segments: the coverage starts at or before the second backup's
	// position, after where it started before.
	segs := archiveSegments(t, rs.archiveSetup)
	start, err := binlog.ParseGTIDSet("mariadb", segs.Coverage.Start.GTIDSet)
	if err != nil {
		t.Fatal(err)
	}
	pos2, _ := binlog.ParseGTIDSet("mariadb", after.Backups[0].Position.GTIDSet)
	if !pos2.Contains(start) || len(segs.Gaps) > 0 || segs.Segments[0].Seq != rep.SegmentsKept.First ||
		segs.Segments[0].Seq <= segsBefore.Segments[0].Seq || segs.Coverage.End.GTIDSet != segsBefore.Coverage.End.GTIDSet {
		t.Fatalf("segments after the prune: coverage %+v from segment %d, gaps %v; backup %s at %q; before: from segment %d",
			segs.Coverage, segs.Segments[0].Seq, segs.Gaps, b2, after.Backups[0].Position.GTIDSet, segsBefore.Segments[0].Seq)
	}
	r = binvault(t, rs.env, "verify", "--config", rs.cfg)
	if r.code != 0 || strings.Contains(r.stdout, "orphan") || strings.Contains(r.stdout, "note:") {
		t.Fatalf("verify after the prune: %s", r)
	}
	if keys := keysUnder(t, rs.store, backup.Prefix+b1+"/"); len(keys) != 0 {
		t.Fatalf("objects of the pruned backup remain: %v", keys)
	}

	// Every point after the oldest kept backup restores exactly.
	for _, pt := range []pointInTime{p1, p2, p3} {
		args := []string{"--to-gtid", pt.gtid}
		if !pt.time.IsZero() {
			args = []string{"--to-time", pt.time.UTC().Format(time.RFC3339)}
		}
		target, r := rs.restoreInto(t, args...)
		if r.code != 0 {
			t.Fatalf("restore %v after the prune: %s", args, r)
		}
		sameDigests(t, fmt.Sprintf("restore %v", args), pt.tables, digestOf(t, target))
		if got := target.QueryString(t, "SELECT @@gtid_binlog_pos"); got != pt.gtid {
			t.Fatalf("restore %v: target at GTID %q, the primary was at %q", args, got, pt.gtid)
		}
		target.Stop()
	}
	// The point between the pruned backup and the oldest kept one is gone.
	r = binvault(t, rs.env, "restore", "--config", rs.cfg, "--dry-run", "--to-gtid", p0.gtid)
	if r.code != 2 || !strings.Contains(r.stderr, "backup") {
		t.Fatalf("restore before the oldest kept backup: want exit 2: %s", r)
	}
}

type segmentsDoc struct {
	Segments []struct {
		Seq uint64 `json:"seq"`
	} `json:"segments"`
	Coverage *struct {
		Start struct {
			GTIDSet string `json:"gtid_set"`
		} `json:"start"`
		End struct {
			GTIDSet string `json:"gtid_set"`
		} `json:"end"`
	} `json:"coverage"`
	Gaps []string `json:"gaps"`
}

func archiveSegments(t testing.TB, a *archiveSetup) segmentsDoc {
	t.Helper()
	r := binvault(t, a.env, "segments", "--config", a.cfg, "--json")
	var doc segmentsDoc
	if r.code != 0 {
		t.Fatalf("segments: %s", r)
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc.Coverage == nil || len(doc.Segments) == 0 {
		t.Fatalf("segments --json: %v: %s", err, r)
	}
	return doc
}

// The daemon takes backups on its schedule and prunes after each: with
// keep_last 2, after several ticks exactly two backups remain, both
// rolling forward to the present. SIGTERM during a scheduled backup stops
// it without a manifest and exits 0.
func TestScheduledBackupsInsideRun(t *testing.T) {
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	s3 := harness.StartS3(t)
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	web := "http://" + listen
	cfg := writeS3ConfigWith(t, s3, s3Config{dsn: p.DSN("", ""), prefix: "archive", listen: listen, extra: []string{
		"archive:\n  segment_max_bytes: 256KiB\n  flush_interval: 300ms",
		"backup:\n  schedule: \"@every 2s\"\n  parallel: 2\n  chunk_size: 1MiB",
		"retention:\n  keep_last: 2\n  keep_within: 0s",
	}})
	st, err := open.Open(context.Background(), open.Options{URL: s3.URL("archive"), Endpoint: s3.Endpoint(), Region: "us-east-1", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	a := &archiveSetup{primary: p, s3: s3, cfg: cfg, env: s3.Env(), store: st, spool: filepath.Join(filepath.Dir(cfg), "spool")}
	p.Exec(t, "CREATE DATABASE d; CREATE TABLE d.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(100))")
	d := startDaemon(t, a.env, "--config", cfg)
	a.waitConnected(t, d)

	// A trickle of writes, so that segments come between the backups.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		db, err := p.Open("")
		if err != nil {
			return
		}
		defer db.Close()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			db.Exec("INSERT INTO d.t (v) VALUES (REPEAT('x', 80))")
		}
	}()
	started := time.Now()
	eventually(t, 60*time.Second, "4 scheduled backups", func() bool {
		if d.exited() {
			t.Fatalf("daemon exited: %s", d.log)
		}
		return metric(t, web, `binvault_backups_total{result="ok"}`) >= 4
	})
	close(stop)
	<-done
	a.waitArchived(t, 30*time.Second)
	// One more tick after the archive caught up, so its prune saw everything.
	n := metric(t, web, `binvault_backups_total{result="ok"}`)
	eventually(t, 20*time.Second, "one more scheduled backup and its prune", func() bool {
		st := a.state(t)
		b, _ := st["backup"].(map[string]any)
		lp, _ := b["last_prune"].(map[string]any)
		last, _ := b["last"].(map[string]any)
		return metric(t, web, `binvault_backups_total{result="ok"}`) > n && b["running"] == false &&
			lp != nil && last != nil && !jsonTime(lp["time"]).Before(jsonTime(last["finished"]))
	})
	// One scrape: the next tick may be running meanwhile, so the prune
	// count may lag the backups by one.
	_, body := httpGet(web, "/metrics")
	ms := metricsOf(t, body)
	ok := ms[`binvault_backups_total{result="ok"}`]
	t.Logf("%v backups in %s", ok, time.Since(started).Round(time.Second))
	if ok < 5 || ms[`binvault_backups_total{result="error"}`] != 0 || ms["binvault_prune_deleted_backups_total"] < ok-3 ||
		ms["binvault_prune_deleted_segments_total"] < 1 || ms["binvault_backup_duration_seconds"] <= 0 ||
		time.Since(time.Unix(int64(ms["binvault_backup_last_success_timestamp_seconds"]), 0)) > time.Minute {
		t.Fatalf("metrics:\n%s", grepLines(body, "binvault_backup", "binvault_prune"))
	}
	// status shows the last backup, in text and JSON.
	doc, _ := a.status(t)
	r := binvault(t, a.env, "status", "--config", cfg, "--json")
	var sj struct {
		Daemon struct {
			State struct {
				Backup struct {
					Schedule string `json:"schedule"`
					Last     struct {
						ID    string `json:"id"`
						Error string `json:"error"`
					} `json:"last"`
				} `json:"backup"`
			} `json:"state"`
		} `json:"daemon"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sj); err != nil || sj.Daemon.State.Backup.Schedule != "@every 2s" || sj.Daemon.State.Backup.Last.ID == "" || sj.Daemon.State.Backup.Last.Error != "" {
		t.Fatalf("status --json: %v %+v: %s", err, doc, r)
	}
	r = binvault(t, a.env, "status", "--config", cfg)
	if !strings.Contains(r.stdout, `backups scheduled "@every 2s"`) || !strings.Contains(r.stdout, "last backup 20") || !strings.Contains(r.stdout, "last prune") {
		t.Fatalf("status: %s", r)
	}

	// A backup long enough to be caught running (a table outside the
	// binlog, so the archive does not carry it): SIGTERM stops it.
	p.Exec(t, `SET sql_log_bin = 0; CREATE TABLE d.big (id INT PRIMARY KEY, a VARCHAR(250), b VARCHAR(250));
		INSERT INTO d.big SELECT seq, REPEAT('a', 240), REPEAT('b', 240) FROM d.seq_1_to_150000`)
	var running string
	eventually(t, 20*time.Second, "a scheduled backup of the big table to be running", func() bool {
		b, err := storage.ReadAll(context.Background(), st, backup.LockKey)
		if err != nil {
			return false
		}
		var li struct {
			Kind     string `json:"kind"`
			BackupID string `json:"backup_id"`
		}
		json.Unmarshal(b, &li)
		if li.Kind != "backup" {
			return false
		}
		// The big table is being dumped.
		keys := keysUnder(t, st, backup.Prefix+li.BackupID+"/")
		if len(keys) > 0 {
			running = li.BackupID
		}
		return running != ""
	})
	if code := d.stop(t, 30*time.Second); code != 0 {
		t.Fatalf("SIGTERM during a scheduled backup: exit %d\n%s", code, d.log)
	}
	if _, err := st.Stat(context.Background(), backup.ManifestKey(running)); err == nil {
		t.Fatalf("the backup stopped by SIGTERM has a manifest\n%s", d.log)
	}
	if !strings.Contains(d.log.String(), "stopped by shutdown") {
		t.Errorf("the log does not say the backup was stopped:\n%s", d.log)
	}
	// Every tick that took a backup pruned after it (a retention under
	// way at SIGTERM finishes): exactly keep_last remain, both rolling
	// forward to the present, and not the one stopped.
	after := listBackups(t, a.env, cfg)
	var ids []string
	for _, b := range after.Backups {
		ids = append(ids, b.ID)
		if !b.ChainComplete {
			t.Errorf("backup %s: chain not complete: %s", b.ID, b.Chain.Detail)
		}
	}
	sort.Strings(ids)
	if len(after.Backups) != 2 || strings.Contains(strings.Join(ids, " "), running) {
		t.Fatalf("backups after several scheduled ones with keep_last 2 and a SIGTERM during one: %v (stopped %s)", ids, running)
	}
	if r := binvault(t, a.env, "verify", "--config", cfg); r.code != 0 {
		t.Fatalf("verify: %s", r)
	}
}

func grepLines(body string, prefixes ...string) string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "\n")
}

func jsonTime(v any) time.Time {
	s, _ := v.(string)
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// metricsOf parses the unlabelled and labelled samples of a scrape.
func metricsOf(t testing.TB, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(line, "#") {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(f[1], &v); err == nil {
			out[f[0]] = v
		}
	}
	return out
}
