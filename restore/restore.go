// Package restore brings a server to a point in time: it loads the newest
// backup before that point and replays the archived segments after it,
// with the same exact replay as the replica (row events applied by the
// server itself), from the store alone.
package restore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/replay"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/storage"
)

// stateDB holds an unfinished restore's progress on the target; it is
// written with the binlog off and dropped when the restore completes.
const stateDB = "binvault_restore"

// Options tune a restore.
type Options struct {
	TargetDSN string
	Parallel  int
	// Force restores into a server holding user databases (those of the
	// backup are replaced) or over an unfinished restore.
	Force bool
	// Resume continues an unfinished restore from its checkpoint.
	Resume bool
	// Databases restores only these databases (empty: all).
	Databases []string
	// GroupTxns is how many source transactions share one target commit.
	GroupTxns int
	TempDir   string
	Log       *slog.Logger
	Progress  *Progress
}

// Progress counts a restore as it runs; safe to read concurrently.
type Progress struct {
	Phase        atomic.Value // string: "loading backup", "replaying", "done"
	Load         LoadProgress
	TxnsTotal    atomic.Int64
	TxnsDone     atomic.Int64
	SegmentsDone atomic.Int64
	BytesDone    atomic.Int64 // binlog bytes replayed
}

// Summary is what a restore did; cmd prints it.
type Summary struct {
	Target        string        `json:"target"`
	BackupID      string        `json:"backup_id"`
	BackupLoaded  bool          `json:"backup_loaded"` // false when resumed past the load
	Load          time.Duration `json:"load_duration"`
	Replay        time.Duration `json:"replay_duration"`
	Total         time.Duration `json:"total_duration"`
	Transactions  int64         `json:"transactions"`
	Segments      int           `json:"segments"`
	BinlogBytes   int64         `json:"binlog_bytes"`
	Rate          float64       `json:"transactions_per_second"`
	FinalGTID     string        `json:"final_gtid"`
	StoppedAt     string        `json:"stopped_at,omitempty"`
	BinlogOff     bool          `json:"binlog_off"`
	Grouped       int           `json:"transactions_per_commit"`
	Durability    string        `json:"durability"`
	GTIDRecorded  string        `json:"gtid_recorded"`
	LoadWarnings  []string      `json:"load_warnings,omitempty"`
	ReplayWarning []string      `json:"notes,omitempty"`
	// EventScheduler says how the target's event scheduler was paused ("":
	// it was not running).
	EventScheduler string `json:"event_scheduler,omitempty"`
}

// Run restores plan into the target.
func Run(ctx context.Context, st storage.Store, plan *Plan, o Options) (sum Summary, err error) {
	started := time.Now()
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
	if o.GroupTxns <= 0 {
		o.GroupTxns = 500
	}
	m := plan.Backup
	flavor := m.Source.Flavor
	sum = Summary{Target: plan.Target.String(), BackupID: m.ID, Grouped: o.GroupTxns}
	dsn, err := dbconn.Parse(o.TargetDSN)
	if err != nil {
		return sum, usage.Errorf("--target: %v", err)
	}
	db, err := dbconn.Open(ctx, "target", dsn)
	if err != nil {
		return sum, usage.Wrap(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(2)

	// An unfinished restore on the target: resume it or say how.
	prev, err := readState(ctx, db)
	if err != nil {
		return sum, err
	}
	if prev == nil && o.Resume {
		return sum, usage.Errorf("--resume: the target holds no unfinished restore (no %s database): run without --resume", stateDB)
	}
	if prev != nil && o.Resume && (prev.BackupID != m.ID || prev.Target != sum.Target) {
		return sum, usage.Errorf("the target holds an unfinished restore of backup %s to %s, not of backup %s to %s: resume it with the same target, or pass --force to start over", prev.BackupID, prev.Target, m.ID, sum.Target)
	}
	if prev != nil && !o.Resume && !o.Force {
		where := fmt.Sprintf("stopped at GTID %q", prev.Position)
		if prev.Phase == phaseLoad {
			where = "stopped while loading the backup"
		}
		return sum, usage.Errorf("the target holds an unfinished restore of backup %s to %s, %s (%s): rerun with --resume to continue it, or --force to start over", prev.BackupID, prev.Target, where, prev.Updated)
	}
	// Events must not run while the target is rebuilt: one firing between
	// the load and the replay, or between two replayed transactions,
	// writes what the source never had at that point.
	resumeEvents, paused, events := pauseEvents(ctx, db, o.Log)
	sum.EventScheduler = events
	defer func() {
		// A refusal before the load changed anything leaves the target as
		// it was; a restore that stopped halfway keeps its events still.
		if err == nil || (usage.Is(err) && prev == nil && !sum.BackupLoaded) {
			resumeEvents()
			return
		}
		if paused {
			o.Log.Error("the target's event scheduler stays OFF: the restore did not finish; after finishing it (--resume), run SET GLOBAL event_scheduler=ON on the target")
		}
	}()
	var pos binlog.GTIDSet
	var ddlInBinlog bool
	var ddlDone func(gtid string) bool
	if prev != nil && !o.Resume {
		// --force: start over.
		if err := dropState(ctx, db, true); err != nil {
			return sum, err
		}
		prev = nil
	}
	if prev == nil || prev.Phase == phaseLoad {
		// The load records each data object it commits, inside that
		// object's transaction, so that an interrupted load resumes.
		o.Progress.Phase.Store("loading backup")
		if prev != nil {
			o.Log.Info("resuming the unfinished restore's load", "backup", m.ID)
		}
		lo := LoadOptions{Parallel: o.Parallel, Force: o.Force, Log: o.Log, Progress: &o.Progress.Load, Databases: o.Databases,
			Journal: stateDB + ".loaded", Resume: prev != nil,
			Begin: func() error {
				if prev != nil {
					return nil
				}
				return writeState(ctx, db, state{BackupID: m.ID, Target: sum.Target, Position: m.Position.GTIDSet, Phase: phaseLoad})
			}}
		res, err := LoadBackup(ctx, st, m.ID, o.TargetDSN, lo)
		if err != nil {
			return sum, err
		}
		sum.BackupLoaded, sum.Load, sum.LoadWarnings = true, res.Duration, res.Warnings
		if pos, err = binlog.ParseGTIDSet(flavor, m.Position.GTIDSet); err != nil {
			return sum, err
		}
		ddlInBinlog = prepareDDLLog(ctx, db, flavor, o.Log)
		if err := writeState(ctx, db, state{BackupID: m.ID, Target: sum.Target, Position: pos.String(), DDLInBinlog: ddlInBinlog, Phase: phaseReplay}); err != nil {
			return sum, err
		}
	} else {
		if pos, err = binlog.ParseGTIDSet(flavor, prev.Position); err != nil {
			return sum, err
		}
		if ddlInBinlog = prev.DDLInBinlog; ddlInBinlog {
			if ddlDone, err = loggedDDL(ctx, db); err != nil {
				return sum, err
			}
		}
		o.Log.Info("resuming the unfinished restore", "backup", m.ID, "position", prev.Position)
	}

	// Replay.
	o.Progress.Phase.Store("replaying")
	for _, s := range plan.Segments {
		o.Progress.TxnsTotal.Add(int64(s.Txns))
	}
	replayStart := time.Now()
	if ddlInBinlog {
		sum.ReplayWarning = append(sum.ReplayWarning, "each DDL was logged in the target's binlog under its source GTID (binlog reset first), so that a resume knows whether it ran")
	}
	restoreDurability, durability := relaxDurability(ctx, db, o.Log)
	sum.Durability = durability
	defer restoreDurability()
	final, stoppedAt, binlogOff, err := replaySegments(ctx, st, plan, pos, ddlInBinlog, ddlDone, dsn, o, &sum)
	sum.Replay = time.Since(replayStart)
	sum.BinlogOff = binlogOff
	if err != nil {
		return sum, err
	}
	sum.FinalGTID, sum.StoppedAt = final.String(), stoppedAt
	sum.GTIDRecorded = recordGTID(ctx, db, final.String(), o.Log)
	if err := dropState(ctx, db, false); err != nil {
		o.Log.Warn("could not drop the restore's state database", "err", err.Error())
	}
	o.Progress.Phase.Store("done")
	sum.Total = time.Since(started)
	if sum.Replay > 0 {
		sum.Rate = float64(sum.Transactions) / sum.Replay.Seconds()
	}
	return sum, nil
}

// replaySegments applies the plan's segments after pos and returns the
// final position.
func replaySegments(ctx context.Context, st storage.Store, plan *Plan, pos binlog.GTIDSet, logDDL bool, ddlDone func(string) bool, dsn dbconn.DSN, o Options, sum *Summary) (final binlog.GTIDSet, stoppedAt string, binlogOff bool, err error) {
	final = pos.Clone()
	if len(plan.Segments) == 0 {
		return final, "", true, nil
	}
	c, err := replay.Dial(ctx, dsn)
	if err != nil {
		return final, "", false, usage.Wrap(dbconn.Explain("target", dsn, err))
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, c.Interrupt)
	defer stop()
	mode := replay.Restore
	binlogOff = true
	if err := c.Exec("SET SESSION sql_log_bin=0"); err != nil {
		// Without BINLOG ADMIN the target logs what is replayed: then each
		// transaction keeps its source GTID, as on a replica (slower).
		binlogOff, mode, logDDL = false, replay.Replica, false
		sum.ReplayWarning = append(sum.ReplayWarning, "the user may not turn the binlog off (BINLOG ADMIN): replayed one commit per transaction, each logged with its source GTID")
	}
	c.Exec("SET SESSION binlog_annotate_row_events=0")

	target := plan.Target
	applied := pos.Clone() // what is committed on the target
	queued := pos.Clone()  // what the batcher has taken
	ckpt := pos.Clone()    // what the checkpoints written so far record
	var mu sync.Mutex
	var filter replay.Filter
	if len(o.Databases) > 0 {
		filter = replay.NewFilter(o.Databases, nil)
	}
	b := replay.New(c, replay.Options{
		Mode:      mode,
		GroupTxns: o.GroupTxns,
		BatchTxns: 2 * o.GroupTxns,
		Filter:    filter,
		LogDDL:    logDDL,
		Skip: func(g string, _ bool) (bool, error) {
			if queued.ContainsGTID(g) {
				return true, nil
			}
			if ddlDone != nil && ddlDone(g) {
				// Past the checkpoint, yet it ran: the stop came between
				// a DDL and its checkpoint.
				o.Log.Info("skipping a DDL the target's binlog shows ran before the stop", "gtid", g)
				queued.Add(g)
				ckpt.Add(g)
				return true, nil
			}
			return false, nil
		},
		Stop: func(t replay.Txn) bool {
			switch {
			case target.Time != nil:
				return int64(t.Time) > target.Time.Unix()
			case target.StopBefore != "":
				return t.GTID == target.StopBefore
			case target.GTID != "":
				// Everything up to the target is taken (or was in the
				// backup already): stop before the next one.
				if queued.ContainsGTID(target.GTID) {
					return true
				}
			}
			queued.Add(t.GTID)
			return false
		},
		// Groups are checkpointed in order, each inside its own commit, so
		// the running set is exactly what that commit makes durable.
		Checkpoint: func(group []replay.Txn) string {
			for _, t := range group {
				ckpt.Add(t.GTID)
			}
			return checkpointSQL(state{BackupID: plan.Backup.ID, Target: target.String(), Position: ckpt.String(), DDLInBinlog: logDDL, Phase: phaseReplay})
		},
		Committed: func(t replay.Txn) {
			mu.Lock()
			applied.Add(t.GTID)
			mu.Unlock()
			o.Progress.TxnsDone.Add(1)
			sum.Transactions++
		},
		Log: o.Log,
	})

	tmp, err := os.MkdirTemp(o.TempDir, "binvault-restore-")
	if err != nil {
		return final, "", binlogOff, err
	}
	defer os.RemoveAll(tmp)
	fetched := prefetch(ctx, st, plan.Segments, tmp, 3)
	stopped := false
	for f := range fetched {
		if f.err != nil {
			// Keep what the good segments brought, checkpointed, so a
			// rerun can resume once the object is repaired.
			if err := b.Finish(); err != nil {
				return applied, "", binlogOff, err
			}
			return applied, "", binlogOff, fmt.Errorf("restore stopped before segment %d (nothing of it or after it was applied; the target holds everything up to GTID %q; rerun with --resume once the object is repaired): %w", f.seg.Seq, applied.String(), f.err)
		}
		err := replayFile(ctx, b, f.path, f.seg.Source.Flavor)
		os.Remove(f.path)
		if errors.Is(err, replay.ErrStop) {
			stopped = true
			sum.Segments++ // read up to the stop point
			break
		}
		if err != nil {
			return applied, "", binlogOff, fmt.Errorf("segment %d: %w", f.seg.Seq, err)
		}
		sum.Segments++
		sum.BinlogBytes += f.seg.Bytes
		o.Progress.SegmentsDone.Add(1)
		o.Progress.BytesDone.Add(f.seg.Bytes)
	}
	if ctx.Err() != nil {
		return applied, "", binlogOff, ctx.Err()
	}
	if err := b.Finish(); err != nil {
		return applied, "", binlogOff, err
	}
	if target.GTID != "" && !applied.ContainsGTID(target.GTID) {
		return applied, "", binlogOff, fmt.Errorf("the archive ended before GTID %s", target.GTID)
	}
	if stopped {
		stoppedAt = "the first transaction past the target"
	}
	return applied, stoppedAt, binlogOff, nil
}

func replayFile(ctx context.Context, b *replay.Batcher, path, flavor string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := binlog.NewReader(f, flavor)
	if err != nil {
		return err
	}
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := b.Event(ctx, ev); err != nil {
			return err
		}
	}
}

type fetchedSegment struct {
	seg  archive.Segment
	path string
	err  error
}

// prefetch downloads segments ahead of the replay, each decompressed into a
// local file and verified whole (stored checksum, binlog SHA-256) before it
// is handed over, so nothing of a damaged segment is ever applied.
func prefetch(ctx context.Context, st storage.Store, segs []archive.Segment, dir string, ahead int) <-chan fetchedSegment {
	out := make(chan fetchedSegment, ahead)
	go func() {
		defer close(out)
		for _, s := range segs {
			path := filepath.Join(dir, fmt.Sprintf("%016d.binlog", s.Seq))
			err := fetchOne(ctx, st, s, path)
			select {
			case out <- fetchedSegment{s, path, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return out
}

func fetchOne(ctx context.Context, st storage.Store, s archive.Segment, path string) error {
	rc, err := archive.OpenSegment(ctx, st, s)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// The phases of a restore, as its state records them.
const (
	phaseLoad   = "load"
	phaseReplay = "replay"
)

type state struct {
	BackupID, Target, Position, Updated string
	Phase                               string
	// DDLInBinlog: the replay logs each DDL under its source GTID in the
	// target's binlog (reset before the replay), so a resume adds the
	// binlog's position to Position.
	DDLInBinlog bool
}

// dropState removes the restore's state database, unlogged. Without
// BINLOG ADMIN it is dropped logged only if evenLogged (before the load:
// the binlog is reset later); after the final GTID is set a logged drop
// would add a GTID of the target's own, so the database stays.
func dropState(ctx context.Context, db *sql.DB, evenLogged bool) error {
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "SET SESSION sql_log_bin=0"); err != nil && !evenLogged {
		return fmt.Errorf("drop %s unlogged: %w", stateDB, err)
	}
	_, err = c.ExecContext(ctx, "DROP DATABASE IF EXISTS "+stateDB)
	return err
}

// checkpointSQL records s as the restore's progress.
func checkpointSQL(s state) string {
	return fmt.Sprintf("REPLACE INTO %s.state (id, backup_id, target, position, updated, ddl_in_binlog, phase) VALUES (1, %s, %s, %s, NOW(6), %t, %s)",
		stateDB, dbconn.QuoteString(s.BackupID), dbconn.QuoteString(s.Target), dbconn.QuoteString(s.Position), s.DDLInBinlog, dbconn.QuoteString(s.Phase))
}

func readState(ctx context.Context, db *sql.DB) (*state, error) {
	var s state
	err := db.QueryRowContext(ctx, "SELECT backup_id, target, position, CAST(updated AS CHAR), ddl_in_binlog, phase FROM "+stateDB+".state WHERE id = 1").Scan(&s.BackupID, &s.Target, &s.Position, &s.Updated, &s.DDLInBinlog, &s.Phase)
	if err != nil {
		if dbconn.IsUnknownDatabase(err) || dbconn.IsNoSuchTable(err) || errors.Is(err, sql.ErrNoRows) {
			return nil, nil // no unfinished restore
		}
		return nil, err
	}
	return &s, nil
}

// writeState creates the progress table (binlog off) with the load's position.
func writeState(ctx context.Context, db *sql.DB, s state) error {
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "SET SESSION sql_log_bin=0"); err != nil {
		// Without BINLOG ADMIN the state table is logged too; harmless on
		// a server being restored.
		slog.Default().Debug("state table logged: cannot turn the session binlog off", "err", err.Error())
	}
	stmts := []string{
		"CREATE DATABASE IF NOT EXISTS " + stateDB,
		"CREATE TABLE IF NOT EXISTS " + stateDB + ".state (id INT PRIMARY KEY, backup_id VARCHAR(100), target VARCHAR(200), position TEXT, updated DATETIME(6), ddl_in_binlog BOOL NOT NULL DEFAULT 0, phase VARCHAR(16) NOT NULL) ENGINE=InnoDB",
		"CREATE TABLE IF NOT EXISTS " + stateDB + ".loaded (object VARCHAR(512) PRIMARY KEY) ENGINE=InnoDB",
		checkpointSQL(s),
	}
	if s.Phase == phaseLoad {
		stmts = append(stmts, "DELETE FROM "+stateDB+".loaded") // a load starting over
	}
	for _, q := range stmts {
		if _, err := c.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("record the restore's progress on the target: %w", err)
		}
	}
	return nil
}

// relaxDurability turns the target's per-commit flushes off for the replay
// (innodb_flush_log_at_trx_commit=2, sync_binlog=0) and returns the
// function that puts the old values back, which runs even after a failure.
func relaxDurability(ctx context.Context, db *sql.DB, log *slog.Logger) (func(), string) {
	var flush, sync string
	if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.innodb_flush_log_at_trx_commit, @@GLOBAL.sync_binlog").Scan(&flush, &sync); err != nil {
		return func() {}, "unchanged (could not read it)"
	}
	if _, err := db.ExecContext(ctx, "SET GLOBAL innodb_flush_log_at_trx_commit=2, GLOBAL sync_binlog=0"); err != nil {
		log.Info("replaying with the target's durability unchanged (SET GLOBAL needs SUPER or SYSTEM VARIABLES ADMIN)", "err", err.Error())
		return func() {}, fmt.Sprintf("unchanged (innodb_flush_log_at_trx_commit=%s, sync_binlog=%s): the user may not change it", flush, sync)
	}
	return func() {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := db.ExecContext(c, fmt.Sprintf("SET GLOBAL innodb_flush_log_at_trx_commit=%s, GLOBAL sync_binlog=%s", flush, sync)); err != nil {
			log.Error("could not put the target's durability settings back: set them by hand", "innodb_flush_log_at_trx_commit", flush, "sync_binlog", sync, "err", err.Error())
		}
	}, fmt.Sprintf("relaxed for the replay (innodb_flush_log_at_trx_commit=2, sync_binlog=0), then put back to %s and %s", flush, sync)
}

// loggedDDL reads the target's binlog state: the replay logged each DDL
// there under its source GTID. A transaction is done when the binlog holds
// one of the same domain and server at or after its sequence number (the
// source's order is the replay's). Keyed by server as well, so a write
// made on the target meanwhile (logged under the target's server_id)
// counts for nothing.
func loggedDDL(ctx context.Context, db *sql.DB) (func(gtid string) bool, error) {
	var state string
	if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_state").Scan(&state); err != nil {
		return nil, fmt.Errorf("read the target's binlog state: %w", err)
	}
	type stream struct{ domain, server uint32 }
	last := map[stream]uint64{}
	for _, g := range binlog.ParseMariaDBGTIDList(state) {
		k := stream{g.Domain, g.Server}
		last[k] = max(last[k], g.Seq)
	}
	return func(gtid string) bool {
		g, ok := binlog.ParseMariaDBGTID(gtid)
		n, found := last[stream{g.Domain, g.Server}]
		return ok && found && n >= g.Seq
	}, nil
}

// prepareDDLLog resets the target's binlog so that the replay can log
// each DDL there under its source GTID (MariaDB, binlog on, RESET MASTER
// and sql_log_bin allowed): the restore ends with RESET MASTER anyway.
func prepareDDLLog(ctx context.Context, db *sql.DB, flavor string, log *slog.Logger) bool {
	if flavor != dbconn.MariaDB {
		return false
	}
	c, err := db.Conn(ctx)
	if err != nil {
		return false
	}
	defer c.Close()
	const without = "DDL replayed without a record in the target's binlog: a restore stopped between a DDL and its checkpoint cannot resume"
	var logBin int
	if err := c.QueryRowContext(ctx, "SELECT @@GLOBAL.log_bin").Scan(&logBin); err != nil || logBin != 1 {
		log.Info(without, "why", "the target's binlog is off")
		return false
	}
	if _, err := c.ExecContext(ctx, "SET SESSION sql_log_bin=1"); err != nil {
		log.Info(without, "why", "the user may not set sql_log_bin (BINLOG ADMIN)")
		return false
	}
	if _, err := c.ExecContext(ctx, "RESET MASTER"); err != nil {
		log.Info(without, "why", "RESET MASTER refused (RELOAD)", "err", err.Error())
		return false
	}
	return true
}

// pauseEvents stops the target's event scheduler if it runs and returns
// the function that starts it again. A target with events left DISABLED or
// the scheduler off is left alone.
func pauseEvents(ctx context.Context, db *sql.DB, log *slog.Logger) (resume func(), paused bool, note string) {
	var sched string
	if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.event_scheduler").Scan(&sched); err != nil || !strings.EqualFold(sched, "ON") {
		return func() {}, false, ""
	}
	if _, err := db.ExecContext(ctx, "SET GLOBAL event_scheduler=OFF"); err != nil {
		log.Warn("the target's event scheduler is ON and cannot be paused: events may fire during the restore and write what the source did not (SET GLOBAL needs SUPER or SYSTEM VARIABLES ADMIN)", "err", err.Error())
		return func() {}, false, "left ON: the user may not pause it, events may have fired during the restore"
	}
	log.Info("paused the target's event scheduler for the restore")
	return func() {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := db.ExecContext(c, "SET GLOBAL event_scheduler=ON"); err != nil {
			log.Error("could not start the target's event scheduler again: run SET GLOBAL event_scheduler=ON", "err", err.Error())
		}
	}, true, "paused during the restore, then ON again"
}

// recordGTID makes the target's GTID state the restored position, so it can
// replicate from the primary (gtid_slave_pos) or serve replicas
// (gtid_binlog_state), and says what it did.
func recordGTID(ctx context.Context, db *sql.DB, pos string, log *slog.Logger) string {
	var logBin string
	db.QueryRowContext(ctx, "SELECT @@GLOBAL.log_bin").Scan(&logBin)
	var done []string
	if logBin == "1" || strings.EqualFold(logBin, "ON") {
		if _, err := db.ExecContext(ctx, "RESET MASTER"); err != nil {
			log.Warn("could not reset the target's binlog to record the restored GTID position", "err", err.Error())
		} else if _, err := db.ExecContext(ctx, "SET GLOBAL gtid_binlog_state = "+dbconn.QuoteString(pos)); err != nil {
			log.Warn("could not set gtid_binlog_state", "err", err.Error())
		} else {
			done = append(done, "gtid_binlog_state (after RESET MASTER)")
		}
	}
	if _, err := db.ExecContext(ctx, "SET GLOBAL gtid_slave_pos = "+dbconn.QuoteString(pos)); err != nil {
		log.Warn("could not set gtid_slave_pos", "err", err.Error())
	} else {
		done = append(done, "gtid_slave_pos")
	}
	if len(done) == 0 {
		return "not recorded (privileges)"
	}
	return strings.Join(done, " and ")
}
