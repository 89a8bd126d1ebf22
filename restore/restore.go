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
	"sync/atomic"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/replay"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/storage"
)

// Defaults and limits, in one place: what an option left at zero means,
// and the fixed numbers the restore runs by.
const (
	// DefaultParallel data objects load at once.
	DefaultParallel = 4
	// DefaultGroupTxns source transactions share one target commit.
	DefaultGroupTxns = replay.DefaultRestoreGroupTxns
	// segmentsAhead are downloaded ahead of the replay, so that the
	// store's latency hides behind the target's work; each waits as a
	// decompressed file in Options.TempDir.
	segmentsAhead = 3
	// loadAttempts of a data object chosen as a lock-conflict victim
	// (rolled back whole, so it can run again) before the load gives up.
	loadAttempts = 5
	// maxWarnings of the target's are reported one by one; the rest are
	// counted, so that a bad column cannot flood the summary.
	maxWarnings = 20
)

// stateDB holds an unfinished restore's progress on the target; it is
// written with the binlog off and dropped when the restore completes.
const stateDB = "binvault_restore"

// Options tune a restore.
type Options struct {
	TargetDSN string
	// Parallel is how many data objects load at once (default
	// DefaultParallel).
	Parallel int
	// Force restores into a server holding user databases (those of the
	// backup are replaced) or over an unfinished restore.
	Force bool
	// Resume continues an unfinished restore from its checkpoint.
	Resume bool
	// Databases restores only these databases (empty: all).
	Databases []string
	// GroupTxns is how many source transactions share one target commit
	// (default DefaultGroupTxns).
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
func Run(ctx context.Context, st storage.Store, plan *Plan, o Options) (Summary, error) {
	r := newRestorer(st, plan, o)
	if err := r.run(ctx); err != nil {
		return r.sum, err
	}
	if r.sum.Replay > 0 {
		r.sum.Rate = float64(r.sum.Transactions) / r.sum.Replay.Seconds()
	}
	return r.sum, nil
}

// restorer is one run of Run: the target, and the summary it fills in as
// it goes (a failed restore reports how far it got).
type restorer struct {
	started time.Time
	st      storage.Store
	plan    *Plan
	o       Options
	dsn     dbconn.DSN
	db      *sql.DB
	// prev is the unfinished restore found on the target (nil: none, or
	// dropped by --force).
	prev *state
	sum  Summary
}

func newRestorer(st storage.Store, plan *Plan, o Options) *restorer {
	started := time.Now()
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
	if o.GroupTxns <= 0 {
		o.GroupTxns = DefaultGroupTxns
	}
	sum := Summary{Target: plan.Target.String(), BackupID: plan.Backup.ID, Grouped: o.GroupTxns}
	return &restorer{started: started, st: st, plan: plan, o: o, sum: sum}
}

func (r *restorer) run(ctx context.Context) (err error) {
	if r.dsn, err = dbconn.Parse(r.o.TargetDSN); err != nil {
		return usage.Errorf("--target: %v", err)
	}
	if r.db, err = dbconn.Open(ctx, "target", r.dsn); err != nil {
		return usage.Wrap(err)
	}
	defer r.db.Close()
	r.db.SetMaxOpenConns(2)
	if r.prev, err = readState(ctx, r.db); err != nil {
		return err
	}
	if err := r.checkUnfinished(); err != nil {
		return err
	}
	// Events must not run while the target is rebuilt: one firing between
	// the load and the replay, or between two replayed transactions,
	// writes what the source never had at that point.
	resumeEvents, paused, note := pauseEvents(ctx, r.db, r.o.Log)
	r.sum.EventScheduler = note
	defer func() {
		// A refusal before the load changed anything leaves the target as
		// it was; a restore that stopped halfway keeps its events still.
		if err == nil || (usage.Is(err) && r.prev == nil && !r.sum.BackupLoaded) {
			resumeEvents()
			return
		}
		if paused {
			r.o.Log.Error("the target's event scheduler stays OFF: the restore did not finish; after finishing it (--resume), run SET GLOBAL event_scheduler=ON on the target")
		}
	}()
	from, err := r.start(ctx)
	if err != nil {
		return err
	}
	return r.replay(ctx, from)
}

// checkUnfinished refuses to start over an unfinished restore, or to
// resume one that is not there or not this one, and says what to do.
func (r *restorer) checkUnfinished() error {
	prev, m, o := r.prev, r.plan.Backup, r.o
	if prev == nil && o.Resume {
		return usage.Errorf("--resume: the target holds no unfinished restore (no %s database): run without --resume", stateDB)
	}
	if prev != nil && o.Resume && (prev.BackupID != m.ID || prev.Target != r.sum.Target) {
		return usage.Errorf("the target holds an unfinished restore of backup %s to %s, not of backup %s to %s: resume it with the same target, or pass --force to start over", prev.BackupID, prev.Target, m.ID, r.sum.Target)
	}
	if prev != nil && !o.Resume && !o.Force {
		where := fmt.Sprintf("stopped at GTID %q", prev.Position)
		if prev.Phase == phaseLoad {
			where = "stopped while loading the backup"
		}
		return usage.Errorf("the target holds an unfinished restore of backup %s to %s, %s (%s): rerun with --resume to continue it, or --force to start over", prev.BackupID, prev.Target, where, prev.Updated)
	}
	return nil
}

// startPoint is where the replay begins.
type startPoint struct {
	pos binlog.GTIDSet // applied already (exclusive start)
	// logDDL: each DDL is logged in the target's binlog under its source
	// GTID, so that a resume knows whether it ran.
	logDDL bool
	// ddlDone, when resuming, reports a DDL the target's binlog shows ran
	// past the checkpoint.
	ddlDone func(gtid string) bool
}

// start loads the backup, or finds where an unfinished restore stopped.
func (r *restorer) start(ctx context.Context) (startPoint, error) {
	if r.prev != nil && !r.o.Resume {
		// --force: start over.
		if err := dropState(ctx, r.db, true); err != nil {
			return startPoint{}, err
		}
		r.prev = nil
	}
	if r.prev == nil || r.prev.Phase == phaseLoad {
		return r.load(ctx)
	}
	return r.resumeReplay(ctx)
}

// load loads the backup. It records each data object it commits, inside
// that object's transaction, so that an interrupted load resumes.
func (r *restorer) load(ctx context.Context) (startPoint, error) {
	m := r.plan.Backup
	r.o.Progress.Phase.Store("loading backup")
	if r.prev != nil {
		r.o.Log.Info("resuming the unfinished restore's load", "backup", m.ID)
	}
	lo := LoadOptions{Parallel: r.o.Parallel, Force: r.o.Force, Log: r.o.Log, Progress: &r.o.Progress.Load, Databases: r.o.Databases,
		Journal: stateDB + ".loaded", Resume: r.prev != nil,
		Begin: func() error {
			if r.prev != nil {
				return nil
			}
			return writeState(ctx, r.db, r.state(m.Position.GTIDSet, false, phaseLoad))
		}}
	res, err := LoadBackup(ctx, r.st, m.ID, r.o.TargetDSN, lo)
	if err != nil {
		return startPoint{}, err
	}
	r.sum.BackupLoaded, r.sum.Load, r.sum.LoadWarnings = true, res.Duration, res.Warnings
	pos, err := binlog.ParseGTIDSet(m.Source.Flavor, m.Position.GTIDSet)
	if err != nil {
		return startPoint{}, err
	}
	logDDL := prepareDDLLog(ctx, r.db, m.Source.Flavor, r.o.Log)
	if err := writeState(ctx, r.db, r.state(pos.String(), logDDL, phaseReplay)); err != nil {
		return startPoint{}, err
	}
	return startPoint{pos: pos, logDDL: logDDL}, nil
}

// resumeReplay continues from the unfinished restore's checkpoint.
func (r *restorer) resumeReplay(ctx context.Context) (startPoint, error) {
	pos, err := binlog.ParseGTIDSet(r.plan.Backup.Source.Flavor, r.prev.Position)
	if err != nil {
		return startPoint{}, err
	}
	from := startPoint{pos: pos, logDDL: r.prev.DDLInBinlog}
	if from.logDDL {
		if from.ddlDone, err = loggedDDL(ctx, r.db); err != nil {
			return startPoint{}, err
		}
	}
	r.o.Log.Info("resuming the unfinished restore", "backup", r.plan.Backup.ID, "position", r.prev.Position)
	return from, nil
}

func (r *restorer) state(pos string, logDDL bool, phase string) state {
	return state{BackupID: r.plan.Backup.ID, Target: r.sum.Target, Position: pos, DDLInBinlog: logDDL, Phase: phase}
}

// replay replays the segments after from and records the final position
// on the target, with the target's flushes relaxed until it returns.
func (r *restorer) replay(ctx context.Context, from startPoint) error {
	r.o.Progress.Phase.Store("replaying")
	for _, s := range r.plan.Segments {
		r.o.Progress.TxnsTotal.Add(int64(s.Txns))
	}
	replayStart := time.Now()
	if from.logDDL {
		r.sum.ReplayWarning = append(r.sum.ReplayWarning, "each DDL was logged in the target's binlog under its source GTID (binlog reset first), so that a resume knows whether it ran")
	}
	restoreDurability, durability := relaxDurability(ctx, r.db, r.o.Log)
	r.sum.Durability = durability
	defer restoreDurability()
	rp := newReplayer(r.plan, r.o, from)
	final, err := rp.run(ctx, r.st, r.dsn)
	r.sum.Replay = time.Since(replayStart)
	r.sum.BinlogOff = rp.binlogOff
	r.sum.ReplayWarning = append(r.sum.ReplayWarning, rp.notes...)
	r.sum.Transactions, r.sum.Segments, r.sum.BinlogBytes = rp.txns, rp.segments, rp.binlogBytes
	if err != nil {
		return err
	}
	r.sum.FinalGTID, r.sum.StoppedAt = final.String(), rp.stoppedAt()
	r.sum.GTIDRecorded = recordGTID(ctx, r.db, final.String(), r.o.Log)
	if err := dropState(ctx, r.db, false); err != nil {
		r.o.Log.Warn("could not drop the restore's state database", "err", err.Error())
	}
	r.o.Progress.Phase.Store("done")
	r.sum.Total = time.Since(r.started)
	return nil
}

// replayer applies a plan's segments to the target on one connection.
// Its three positions move at different times: queued when the batcher
// takes a transaction, ckpt when a group's checkpoint statement is built
// (it commits with the group), applied when the target has committed it.
type replayer struct {
	plan    *Plan
	o       Options
	logDDL  bool
	ddlDone func(gtid string) bool

	c *replay.Conn
	b *replay.Batcher

	queued  binlog.GTIDSet
	ckpt    binlog.GTIDSet
	applied binlog.GTIDSet

	// What the summary reports.
	binlogOff   bool
	notes       []string
	txns        int64
	segments    int
	binlogBytes int64
	stopped     bool // at the first transaction past the target
}

func newReplayer(plan *Plan, o Options, from startPoint) *replayer {
	return &replayer{plan: plan, o: o, logDDL: from.logDDL, ddlDone: from.ddlDone,
		queued: from.pos.Clone(), ckpt: from.pos.Clone(), applied: from.pos.Clone()}
}

// run replays the segments and returns the target's final position.
func (r *replayer) run(ctx context.Context, st storage.Store, dsn dbconn.DSN) (binlog.GTIDSet, error) {
	if len(r.plan.Segments) == 0 {
		r.binlogOff = true
		return r.applied, nil
	}
	var err error
	if r.c, err = replay.Dial(ctx, dsn); err != nil {
		return r.applied, usage.Wrap(dbconn.Explain("target", dsn, err))
	}
	defer r.c.Close()
	stop := context.AfterFunc(ctx, r.c.Interrupt)
	defer stop()
	r.b = replay.New(r.c, r.options(r.session()))

	tmp, err := os.MkdirTemp(r.o.TempDir, "binvault-restore-")
	if err != nil {
		return r.applied, err
	}
	defer os.RemoveAll(tmp)
	err = fetchAhead(ctx, st, r.plan.Segments, tmp, segmentsAhead, func(f fetchedSegment) error {
		return r.segment(ctx, f)
	})
	if err != nil && !errors.Is(err, replay.ErrStop) {
		return r.applied, err
	}
	if ctx.Err() != nil {
		return r.applied, ctx.Err()
	}
	if err := r.b.Finish(); err != nil {
		return r.applied, err
	}
	if g := r.plan.Target.GTID; g != "" && !r.applied.ContainsGTID(g) {
		return r.applied, fmt.Errorf("the archive ended before GTID %s", g)
	}
	return r.applied, nil
}

// session turns the binlog off for the replay and returns the mode that
// allows. Without BINLOG ADMIN the target logs what is replayed: then each
// transaction keeps its source GTID, as on a replica (slower).
func (r *replayer) session() replay.Mode {
	mode := replay.Restore
	r.binlogOff = true
	if err := r.c.Exec("SET SESSION sql_log_bin=0"); err != nil {
		r.binlogOff, mode, r.logDDL = false, replay.Replica, false
		r.notes = append(r.notes, "the user may not turn the binlog off (BINLOG ADMIN): replayed one commit per transaction, each logged with its source GTID")
	}
	r.c.Exec("SET SESSION binlog_annotate_row_events=0")
	return mode
}

func (r *replayer) options(mode replay.Mode) replay.Options {
	var filter replay.Filter
	if len(r.o.Databases) > 0 {
		filter = replay.NewFilter(r.o.Databases, nil)
	}
	return replay.Options{
		Mode:       mode,
		GroupTxns:  r.o.GroupTxns,
		BatchTxns:  2 * r.o.GroupTxns,
		Filter:     filter,
		LogDDL:     r.logDDL,
		Skip:       r.skip,
		Stop:       r.stop,
		Checkpoint: r.checkpoint,
		Committed:  r.committed,
		Log:        r.o.Log,
	}
}

func (r *replayer) skip(g string, _ bool) (bool, error) {
	if r.queued.ContainsGTID(g) {
		return true, nil
	}
	if r.ddlDone != nil && r.ddlDone(g) {
		// Past the checkpoint, yet it ran: the stop came between a DDL
		// and its checkpoint.
		r.o.Log.Info("skipping a DDL the target's binlog shows ran before the stop", "gtid", g)
		r.queued.Add(g)
		r.ckpt.Add(g)
		return true, nil
	}
	return false, nil
}

func (r *replayer) stop(t replay.Txn) bool {
	target := r.plan.Target
	switch {
	case target.Time != nil:
		return int64(t.Time) > target.Time.Unix()
	case target.StopBefore != "":
		return t.GTID == target.StopBefore
	case target.GTID != "":
		// Everything up to the target is taken (or was in the backup
		// already): stop before the next one.
		if r.queued.ContainsGTID(target.GTID) {
			return true
		}
	}
	r.queued.Add(t.GTID)
	return false
}

// checkpoint records a group's progress. Groups are checkpointed in
// order, each inside its own commit, so the running set is exactly what
// that commit makes durable.
func (r *replayer) checkpoint(group []replay.Txn) string {
	for _, t := range group {
		r.ckpt.Add(t.GTID)
	}
	return checkpointSQL(state{BackupID: r.plan.Backup.ID, Target: r.plan.Target.String(), Position: r.ckpt.String(), DDLInBinlog: r.logDDL, Phase: phaseReplay})
}

func (r *replayer) committed(t replay.Txn) {
	r.applied.Add(t.GTID)
	r.o.Progress.TxnsDone.Add(1)
	r.txns++
}

// segment replays one fetched segment; replay.ErrStop ends the replay at
// the target.
func (r *replayer) segment(ctx context.Context, f fetchedSegment) error {
	if f.err != nil {
		// Keep what the good segments brought, checkpointed, so a rerun
		// can resume once the object is repaired.
		if err := r.b.Finish(); err != nil {
			return err
		}
		return fmt.Errorf("restore stopped before segment %d (nothing of it or after it was applied; the target holds everything up to GTID %q; rerun with --resume once the object is repaired): %w", f.seg.Seq, r.applied.String(), f.err)
	}
	err := replayFile(ctx, r.b, f.path, f.seg.Source.Flavor)
	os.Remove(f.path)
	if errors.Is(err, replay.ErrStop) {
		r.stopped = true
		r.segments++ // read up to the stop point
		return err
	}
	if err != nil {
		return fmt.Errorf("segment %d: %w", f.seg.Seq, err)
	}
	r.segments++
	r.binlogBytes += f.seg.Bytes
	r.o.Progress.SegmentsDone.Add(1)
	r.o.Progress.BytesDone.Add(f.seg.Bytes)
	return nil
}

func (r *replayer) stoppedAt() string {
	if r.stopped {
		return "the first transaction past the target"
	}
	return ""
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

// fetchAhead calls fn for each segment in order, each fetched by prefetch
// up to ahead segments before fn needs it, and returns fn's first error.
// The prefetch ends before fetchAhead returns, whichever way it returns:
// left alone, it would block forever on a send nobody receives, holding a
// goroutine and a file in dir (which the caller is about to remove).
func fetchAhead(ctx context.Context, st storage.Store, segs []archive.Segment, dir string, ahead int, fn func(fetchedSegment) error) error {
	ctx, cancel := context.WithCancel(ctx)
	fetched := prefetch(ctx, st, segs, dir, ahead)
	defer func() {
		cancel()
		for f := range fetched { // fetched, never replayed
			os.Remove(f.path)
		}
	}()
	for f := range fetched {
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// prefetch downloads segments ahead of the replay, each decompressed into a
// local file and verified whole (stored checksum, binlog SHA-256) before it
// is handed over, so nothing of a damaged segment is ever applied. It stops
// when ctx ends, removing the file it could not hand over.
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
				os.Remove(path)
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
