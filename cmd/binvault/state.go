package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/binvault/binvault/internal/availability"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/replicator"
	"github.com/binvault/binvault/replicator/serve"
)

// stateFile is where a running daemon reports itself, four times a second, for
// `binvault status` (in the spool directory).
const stateFile = "state.json"

// daemonState is the daemon's self-report; status prints it as is.
type daemonState struct {
	UpdatedAt time.Time `json:"updated_at"`
	PID       int       `json:"pid"`
	Started   time.Time `json:"started"`
	Running   bool      `json:"running"`
	Source    struct {
		Primary       string          `json:"primary"`
		Connected     bool            `json:"connected"`
		Position      binlog.Position `json:"position"`
		SecondsBehind int64           `json:"seconds_behind"`
		LastError     string          `json:"last_error,omitempty"`
		// SemiSync: binvault as a semi-synchronous replica (source.semi_sync).
		SemiSync *replicator.SemiSyncStatus `json:"semi_sync,omitempty"`
	} `json:"source"`
	Spool struct {
		Dir      string `json:"dir"`
		Bytes    int64  `json:"bytes"`
		Segments int    `json:"segments"`
	} `json:"spool"`
	Archive struct {
		Store         string          `json:"store"`
		Segment       uint64          `json:"segment"`
		Position      binlog.Position `json:"position"`
		NewestTxnTime *time.Time      `json:"newest_transaction_time,omitempty"`
		NewestTxnAge  float64         `json:"newest_transaction_age_seconds,omitempty"`
		RPOSeconds    float64         `json:"rpo_seconds"`
		// CommitAgeSeconds: the same transaction's age from its commit on
		// the primary (whole-second binlog timestamps): end to end.
		CommitAgeSeconds float64 `json:"unarchived_commit_age_seconds"`
		LastError        string  `json:"last_error,omitempty"`
	} `json:"archive"`
	Replica *replicaState `json:"replica,omitempty"`
	// Backup: the scheduled backups (backup.schedule), when configured.
	Backup *backupState `json:"backup,omitempty"`
	// Serve: the binlog server (serve.listen), when configured.
	Serve *serveState `json:"serve,omitempty"`
	// Availability of the parts the daemon watches.
	Availability []availability.Stats `json:"availability,omitempty"`
}

type serveState struct {
	Listen   string                `json:"listen"`
	Replicas []serve.ReplicaStatus `json:"replicas"`
}

type replicaState struct {
	Replica            string     `json:"replica"`
	Connected          bool       `json:"connected"`
	Position           string     `json:"position"`
	LastAppliedTime    *time.Time `json:"last_applied_commit_time,omitempty"`
	SecondsBehind      float64    `json:"seconds_behind"`
	TransactionsBehind float64    `json:"transactions_behind"`
	Stopped            bool       `json:"stopped"`
	LastError          string     `json:"last_error,omitempty"`
	// Promoted: binvault promote made the replica a primary; nothing is
	// applied to it any more.
	Promoted bool `json:"promoted,omitempty"`
}

func (d *daemon) state() daemonState {
	var st daemonState
	st.UpdatedAt, st.PID, st.Started, st.Running = time.Now().UTC(), os.Getpid(), d.started.UTC(), true
	st.Source.Primary = d.source.Primary().String()
	st.Source.Connected = d.source.Connected()
	st.Source.Position, _, _ = d.spool.End()
	st.Source.SecondsBehind = d.source.SecondsBehind()
	st.Source.LastError = d.source.LastError()
	if ss := d.source.SemiSync(); ss.Mode != "" {
		st.Source.SemiSync = &ss
	}
	d.mu.Lock()
	if d.sourceErr != "" {
		st.Source.LastError = d.sourceErr
	}
	d.mu.Unlock()
	st.Spool.Dir, st.Spool.Bytes, st.Spool.Segments = d.spool.Dir(), d.spool.Bytes(), d.spool.Segments()
	st.Archive.Store = d.store.String()
	if n := d.archiver.Newest(); n != nil {
		st.Archive.Segment, st.Archive.Position = n.Seq, n.End
		t := n.LastTime
		st.Archive.NewestTxnTime = &t
		st.Archive.NewestTxnAge = time.Since(t).Seconds()
	}
	if arrived, committed, ok := d.spool.OldestUnarchived(); ok {
		st.Archive.RPOSeconds = max(0, time.Since(arrived).Seconds())
		st.Archive.CommitAgeSeconds = max(0, time.Since(committed).Seconds())
	}
	st.Archive.LastError = d.archiver.LastError()
	if d.applier != nil {
		as := d.applier.Status()
		r := &replicaState{Connected: as.Connected, Position: as.Applied, Stopped: as.Stopped, LastError: as.LastError,
			TransactionsBehind: d.applier.TxnsBehind(), Promoted: as.Promoted}
		if dsn, err := parseDSN(d.cfg.Replica.DSN); err == nil {
			r.Replica = dsn
		}
		if !as.LastTime.IsZero() {
			t := as.LastTime.UTC()
			r.LastAppliedTime = &t
		}
		r.SecondsBehind = as.Lag.Seconds()
		st.Replica = r
	}
	if d.sched != nil {
		st.Backup = d.sched.status()
	}
	if d.avail != nil {
		st.Availability = d.avail.Stats()
	}
	if d.server != nil {
		st.Serve = &serveState{Listen: d.server.Addr(), Replicas: d.server.Replicas()}
		if st.Serve.Replicas == nil {
			st.Serve.Replicas = []serve.ReplicaStatus{}
		}
	}
	return st
}

// replicaPosition is what the replica has applied, which retention must
// not delete the history after; ok is false without a replica.
func (d *daemon) replicaPosition() (pos string, ok bool) {
	if d.applier == nil {
		return "", false
	}
	return d.applier.Status().Applied, true
}

func (d *daemon) writeState(running bool) {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	st := d.state()
	st.Running = running
	if err := writeStateFile(d.cfg.Spool.Dir, st); err != nil {
		d.log.Debug("cannot write the state file", "err", err.Error())
	}
}

func writeStateFile(dir string, st daemonState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

func readStateFile(dir string) (*daemonState, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var st daemonState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}
