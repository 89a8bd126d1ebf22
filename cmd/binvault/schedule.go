package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/binvault/binvault/backup"
	"github.com/binvault/binvault/internal/dbconn"
)

// pruneTimeout bounds the retention that follows a scheduled backup; it is
// allowed to finish (within this) when the daemon is told to stop, so that
// a backup that completed is followed by its retention.
const pruneTimeout = drainTimeout

// scheduler takes the backups of backup.schedule inside `binvault run`:
// at each tick a full backup exactly as `binvault backup` takes it, then
// retention (`binvault prune`). A tick that finds the previous backup
// still running is skipped; across processes the backup lock keeps a
// second backup out. A failure is logged and counted, and the daemon goes
// on; the next tick tries again.
type scheduler struct {
	d      *daemon
	dsn    dbconn.DSN
	spec   string
	cron   *cron.Cron
	entry  cron.EntryID
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	running atomic.Bool
	mu      sync.Mutex
	state   backupState
}

// backupState is the scheduler's part of the state file and of status.
type backupState struct {
	Schedule     string      `json:"schedule"`
	NextRun      *time.Time  `json:"next_run,omitempty"`
	Running      bool        `json:"running"` // a backup, or the retention after it, runs
	RunningSince *time.Time  `json:"running_since,omitempty"`
	SkippedTicks int         `json:"skipped_ticks,omitempty"`
	Last         *lastBackup `json:"last,omitempty"`
	LastSuccess  *lastBackup `json:"last_success,omitempty"`
	LastPrune    *lastPrune  `json:"last_prune,omitempty"`
}

// lastBackup is one scheduled backup that ended.
type lastBackup struct {
	ID              string    `json:"id,omitempty"`
	Started         time.Time `json:"started"`
	Finished        time.Time `json:"finished"`
	DurationSeconds float64   `json:"duration_seconds"`
	Error           string    `json:"error,omitempty"`
}

// lastPrune is the retention that followed the last successful backup.
type lastPrune struct {
	Time            time.Time `json:"time"`
	DeletedBackups  []string  `json:"deleted_backups"`
	DeletedSegments int       `json:"deleted_segments"`
	FreedBytes      int64     `json:"freed_bytes"`
	KeptBackups     int       `json:"kept_backups"`
	Error           string    `json:"error,omitempty"`
}

func newScheduler(d *daemon) (*scheduler, error) {
	sched, err := cron.ParseStandard(d.cfg.Backup.Schedule) // validated with the configuration
	if err != nil {
		return nil, err
	}
	s := &scheduler{d: d, spec: d.cfg.Backup.Schedule, log: d.log.With("part", "scheduled-backup")}
	s.cron = cron.New(cron.WithLogger(cronLogger{s.log}), cron.WithChain(cron.Recover(cronLogger{s.log})))
	s.entry = s.cron.Schedule(sched, cron.FuncJob(s.tick))
	s.state.Schedule = s.spec
	return s, nil
}

// start begins ticking; ticks stop when ctx ends or stop is called.
func (s *scheduler) start(ctx context.Context) {
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.cron.Start()
	s.log.Info("scheduled backups", "schedule", s.spec, "next", s.cron.Entry(s.entry).Next.Format(time.RFC3339))
}

// stop cancels a running backup (it stops without a manifest; the next
// backup deletes what it wrote) and waits for the tick to end.
func (s *scheduler) stop() {
	s.cancel()
	<-s.cron.Stop().Done()
}

func (s *scheduler) tick() {
	if !s.running.CompareAndSwap(false, true) {
		s.mu.Lock()
		s.state.SkippedTicks++
		since := s.state.RunningSince
		s.mu.Unlock()
		s.log.Warn("scheduled backup skipped: the previous one is still running", "running_since", since)
		return
	}
	defer s.running.Store(false)
	if s.ctx.Err() != nil {
		return
	}
	cfg, m := s.d.cfg, s.d.metrics
	started := time.Now()
	s.mu.Lock()
	s.state.Running, s.state.RunningSince = true, &started
	s.mu.Unlock()
	s.log.Info("scheduled backup starting")
	man, err := backup.Run(s.ctx, s.d.store, s.d.source.Primary(), backup.Options{
		Parallel:   cfg.Backup.Parallel,
		ChunkBytes: int64(cfg.Backup.ChunkSize),
		Log:        s.log,
	})
	last := &lastBackup{Started: started.UTC(), Finished: time.Now().UTC()}
	last.DurationSeconds = last.Finished.Sub(last.Started).Seconds()
	var le *backup.LockedError
	switch {
	case err != nil && s.ctx.Err() != nil:
		last.Error = "stopped: the daemon is shutting down (the next backup deletes what this one wrote)"
		s.log.Info("scheduled backup stopped by shutdown; no manifest was written, the next backup deletes what it wrote")
	case errors.As(err, &le):
		last.Error = oneLine(err.Error())
		m.Backups.WithLabelValues("error").Inc()
		s.log.Warn("scheduled backup skipped: the store's backup lock is held; trying again at the next tick", "err", last.Error)
	case err != nil:
		last.Error = oneLine(err.Error())
		m.Backups.WithLabelValues("error").Inc()
		s.log.Error("scheduled backup failed; the daemon goes on and tries again at the next tick", "err", last.Error)
	default:
		last.ID = man.ID
		m.Backups.WithLabelValues("ok").Inc()
		m.BackupLastSuccess.Set(float64(last.Finished.Unix()))
		m.BackupDuration.Set(last.DurationSeconds)
	}
	s.mu.Lock()
	s.state.Last = last
	if err == nil {
		s.state.LastSuccess = last
	}
	s.mu.Unlock()
	if err == nil {
		s.prune()
	}
	s.mu.Lock()
	s.state.Running, s.state.RunningSince = false, nil
	s.mu.Unlock()
	s.d.writeState(true)
}

// prune applies retention after a successful backup.
func (s *scheduler) prune() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), pruneTimeout)
	defer cancel()
	lp := &lastPrune{Time: time.Now().UTC(), DeletedBackups: []string{}}
	pos, hasReplica := s.d.replicaPosition()
	rep, err := backup.Prune(ctx, s.d.store, retentionPolicy(s.d.cfg, pos, hasReplica), time.Now(), false, s.log)
	if err != nil {
		lp.Error = oneLine(err.Error())
		s.log.Error("retention after the scheduled backup failed; the next one tries again", "err", lp.Error)
	} else {
		for _, b := range rep.DeletedBackups {
			lp.DeletedBackups = append(lp.DeletedBackups, b.ID)
		}
		lp.DeletedSegments, lp.FreedBytes, lp.KeptBackups = len(rep.DeletedSegs), rep.FreedBytes, len(rep.Kept)
		s.d.metrics.PruneDeletedBackups.Add(float64(len(rep.DeletedBackups)))
		s.d.metrics.PruneDeletedSegments.Add(float64(len(rep.DeletedSegs)))
		if len(rep.DeletedSegs) > 0 && rep.SegmentsKept != nil {
			s.d.archiver.Pruned(rep.SegmentsKept.First)
		}
		s.log.Info("retention applied", "summary", rep.Summary())
	}
	s.mu.Lock()
	s.state.LastPrune = lp
	s.mu.Unlock()
	s.d.writeState(true)
}

// status is the scheduler's state now.
func (s *scheduler) status() *backupState {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if next := s.cron.Entry(s.entry).Next; !next.IsZero() {
		n := next.UTC()
		st.NextRun = &n
	}
	return &st
}

// cronLogger routes robfig/cron's own messages to slog.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.Debug("cron: "+msg, kv...) }
func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("cron: "+msg, append(kv, "err", err)...)
}
