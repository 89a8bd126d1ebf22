package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/config"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/replicator"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/open"
)

// serverStatus is one server's part of `status`.
type serverStatus struct {
	DSN string `json:"dsn"`
	*dbconn.ServerInfo
	Reachable bool     `json:"reachable"`
	Problems  []string `json:"problems,omitempty"`
	// Warnings weaken a guarantee without stopping binvault.
	Warnings []string `json:"warnings,omitempty"`
}

type storeStatus struct {
	URL       string   `json:"url"`
	Reachable bool     `json:"reachable"`
	Problems  []string `json:"problems,omitempty"`
}

// daemonStatus is what the daemon last wrote to its state file.
type daemonStatus struct {
	StateFile string `json:"state_file"`
	// Running: the daemon said it runs and wrote the file within
	// daemonStaleAfter (it writes it four times a second).
	Running bool `json:"running"`
	// AgeSeconds is how long ago the daemon last wrote the file.
	AgeSeconds float64      `json:"age_seconds,omitempty"`
	State      *daemonState `json:"state,omitempty"`
	Notes      []string     `json:"notes,omitempty"`
}

// archiveStatus is where the archive in the store ends.
type archiveStatus struct {
	// Empty: the store holds no segment yet.
	Empty         bool             `json:"empty"`
	NewestSegment uint64           `json:"newest_segment,omitempty"`
	End           *binlog.Position `json:"end,omitempty"`
	NewestTxnTime *time.Time       `json:"newest_transaction_time,omitempty"`
	NewestTxnAge  float64          `json:"newest_transaction_age_seconds,omitempty"`
	Problems      []string         `json:"problems,omitempty"`
}

// daemonStaleAfter: a state file older than this means the daemon that
// wrote it is gone (killed, or its host is hung).
const daemonStaleAfter = 5 * time.Second

type statusReport struct {
	Source  serverStatus   `json:"source"`
	Replica *serverStatus  `json:"replica,omitempty"`
	Storage storeStatus    `json:"storage"`
	Daemon  daemonStatus   `json:"daemon"`
	Archive *archiveStatus `json:"archive,omitempty"`
	OK      bool           `json:"ok"`
}

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Check the source, replica and store, and report positions and lag",
		Long: `status connects to the source (and the replica, if configured) and the store,
and reports server version, flavor, binlog settings, GTID position and store
reachability; what the daemon last reported in its state file (spool.dir/state.json:
stream position, lag, spool, archive progress, and how old that report is); and
where the archive in the store ends (newest segment, GTID position, newest
transaction). Each problem is one line. Exit 2 when a problem is in the
configuration or a server's settings, 1 when a service cannot be reached. A
daemon that is not running does not change the exit code.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			rep, code := collectStatus(cmd.Context(), cfg)
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printStatus(g, rep)
			}
			if code != exitOK {
				return exitError{code}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	return c
}

// collectStatus checks every part and picks the exit code: 2 if any problem
// is the user's to fix, else 1 if anything is unreachable.
func collectStatus(ctx context.Context, cfg *config.Config) (statusReport, int) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	code := exitOK
	worse := func(err error) {
		c := exitFailure
		var ce *storage.ConfigError
		if usage.Is(err) || errors.As(err, &ce) {
			c = exitUsage
		}
		code = max(code, c)
	}
	var rep statusReport
	rep.Source = checkServer(ctx, "source", func() (dbconn.DSN, error) { return primaryDSN(ctx, cfg) }, worse, func(si dbconn.ServerInfo) []string { return si.SourceProblems() })
	if mode := cfg.Source.SemiSync; mode != replicator.SemiSyncOff && rep.Source.ServerInfo != nil {
		problems, warnings := rep.Source.ServerInfo.SemiSyncProblems(mode)
		for _, p := range problems {
			rep.Source.Problems = append(rep.Source.Problems, "source: "+p)
			worse(usage.Errorf("%s", p))
		}
		for _, w := range warnings {
			rep.Source.Warnings = append(rep.Source.Warnings, "source: "+w)
		}
	}
	if cfg.Replica != nil {
		r := checkServer(ctx, "replica", func() (dbconn.DSN, error) {
			d, err := dbconn.Parse(cfg.Replica.DSN)
			if err != nil {
				return d, usage.Errorf("replica.dsn: %v", err)
			}
			return d, nil
		}, worse, func(si dbconn.ServerInfo) []string {
			if !si.LogBin {
				return []string{"binary log is off: turn log_bin on so the replica records the applied GTIDs and can serve its own replicas"}
			}
			return nil
		})
		rep.Replica = &r
	}
	rep.Storage = storeStatus{URL: cfg.Storage.URL}
	st, err := open.Open(ctx, storeOptions(cfg))
	if err == nil {
		if ck, ok := st.(storage.Checker); ok {
			err = ck.Check(ctx)
		}
	}
	if err != nil {
		rep.Storage.Problems = append(rep.Storage.Problems, oneLine(err.Error()))
		worse(err)
	} else {
		rep.Storage.Reachable = true
		rep.Archive = archiveEnd(ctx, st, worse)
	}
	rep.Daemon = readDaemonStatus(cfg.Spool.Dir)
	rep.OK = code == exitOK
	return rep, code
}

// archiveEnd reads where the archive ends from the newest catalog object
// and the manifests after it (a few requests, no full listing).
func archiveEnd(ctx context.Context, st storage.Store, worse func(error)) *archiveStatus {
	a := &archiveStatus{}
	ix, err := archive.Load(ctx, st, true)
	if err != nil {
		err = fmt.Errorf("read the archive's end in %s: %w", st, err)
		a.Problems = append(a.Problems, oneLine(err.Error()))
		worse(err)
		return a
	}
	a.Empty = ix.Last() == nil
	if last := ix.Last(); last != nil {
		a.NewestSegment = last.Seq
		end := last.End
		a.End = &end
		if last.Txns > 0 {
			t := last.LastTime
			a.NewestTxnTime = &t
			a.NewestTxnAge = max(0, time.Since(t).Seconds())
		}
	}
	return a
}

// readDaemonStatus reads the daemon's state file from the spool directory.
func readDaemonStatus(dir string) daemonStatus {
	ds := daemonStatus{StateFile: filepath.Join(dir, stateFile)}
	st, err := readStateFile(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		ds.Notes = append(ds.Notes, "no state file: the daemon (binvault run) has not run with this spool.dir")
		return ds
	case err != nil:
		ds.Notes = append(ds.Notes, oneLine("cannot read the daemon's state file: "+err.Error()))
		return ds
	}
	ds.State = st
	ds.AgeSeconds = max(0, time.Since(st.UpdatedAt).Seconds())
	ds.Running = st.Running && ds.AgeSeconds < daemonStaleAfter.Seconds()
	if st.Running && !ds.Running {
		ds.Notes = append(ds.Notes, fmt.Sprintf("the daemon (pid %d) last reported %s ago and is not running any more (killed or hung)", st.PID, roundDur(ds.AgeSeconds)))
	}
	return ds
}

func roundDur(seconds float64) time.Duration {
	return time.Duration(seconds * float64(time.Second)).Round(100 * time.Millisecond)
}

// openStore opens the configured store; a URL or option it cannot use is
// the user's to fix.
func openStore(ctx context.Context, cfg *config.Config) (storage.Store, error) {
	st, err := open.Open(ctx, storeOptions(cfg))
	if err != nil {
		return nil, usage.Wrap(err)
	}
	return st, nil
}

func storeOptions(cfg *config.Config) open.Options {
	return open.Options{URL: cfg.Storage.URL, Endpoint: cfg.Storage.Endpoint, Region: cfg.Storage.Region, PathStyle: cfg.Storage.PathStyle}
}

func checkServer(ctx context.Context, role string, dsn func() (dbconn.DSN, error), worse func(error), problems func(dbconn.ServerInfo) []string) serverStatus {
	d, err := dsn()
	if err != nil {
		worse(err)
		return serverStatus{Problems: []string{oneLine(err.Error())}}
	}
	s := serverStatus{DSN: d.String()}
	db, err := dbconn.Open(ctx, role, d)
	if err != nil {
		s.Problems = append(s.Problems, oneLine(err.Error()))
		worse(err)
		return s
	}
	defer db.Close()
	s.Reachable = true
	si, err := dbconn.Inspect(ctx, db)
	if err != nil {
		err = dbconn.Explain(role, d, err)
		s.Problems = append(s.Problems, oneLine(err.Error()))
		worse(err)
		return s
	}
	s.ServerInfo = &si
	for _, p := range problems(si) {
		s.Problems = append(s.Problems, role+": "+p)
		worse(usage.Errorf("%s", p))
	}
	return s
}

func printStatus(g *globals, rep statusReport) {
	server := func(role string, s serverStatus) {
		if s.ServerInfo != nil {
			si := s.ServerInfo
			fmt.Fprintf(g.stdout, "%-8s %s  %s %s  server_id %d  binlog %s/%s  gtid %q\n",
				role, s.DSN, si.Flavor, si.Version, si.ServerID, orDash(si.BinlogFormat), orDash(si.BinlogRowImage), si.GTIDPosition)
		} else {
			fmt.Fprintf(g.stdout, "%-8s %s  unreachable\n", role, s.DSN)
		}
		for _, p := range s.Problems {
			fmt.Fprintf(g.stdout, "problem: %s\n", p)
		}
		for _, w := range s.Warnings {
			fmt.Fprintf(g.stdout, "warning: %s\n", w)
		}
	}
	server("source", rep.Source)
	if rep.Replica != nil {
		server("replica", *rep.Replica)
	}
	state := "reachable"
	if !rep.Storage.Reachable {
		state = "unreachable"
	}
	fmt.Fprintf(g.stdout, "%-8s %s  %s\n", "storage", rep.Storage.URL, state)
	for _, p := range rep.Storage.Problems {
		fmt.Fprintf(g.stdout, "problem: %s\n", p)
	}
	if a := rep.Archive; a != nil {
		switch {
		case a.End != nil:
			fmt.Fprintf(g.stdout, "%-8s newest segment %d  ends at %s", "archive", a.NewestSegment, a.End)
			if a.NewestTxnTime != nil {
				fmt.Fprintf(g.stdout, "  newest transaction %s (%s ago)", a.NewestTxnTime.UTC().Format(time.RFC3339), roundDur(a.NewestTxnAge))
			}
			fmt.Fprintln(g.stdout)
		case a.Empty && len(a.Problems) == 0:
			fmt.Fprintf(g.stdout, "%-8s empty\n", "archive")
		}
		for _, p := range a.Problems {
			fmt.Fprintf(g.stdout, "problem: %s\n", p)
		}
	}
	d := rep.Daemon
	if st := d.State; st != nil {
		what := "stopped"
		if d.Running {
			what = "running"
		} else if st.Running {
			what = "not running"
		}
		fmt.Fprintf(g.stdout, "%-8s %s (pid %d, started %s, state %s old)\n", "daemon", what, st.PID, st.Started.Format(time.RFC3339), roundDur(d.AgeSeconds))
		conn := "disconnected"
		if st.Source.Connected {
			conn = "connected"
		}
		fmt.Fprintf(g.stdout, "%-8s stream %s  spooled to %s  %ds behind\n", "", conn, st.Source.Position, st.Source.SecondsBehind)
		if st.Source.LastError != "" {
			fmt.Fprintf(g.stdout, "%-8s last stream error: %s\n", "", oneLine(st.Source.LastError))
		}
		if ss := st.Source.SemiSync; ss != nil {
			printSemiSync(g, ss)
		}
		fmt.Fprintf(g.stdout, "%-8s spool %s in %d closed segments  archived segment %d at %s  rpo %s\n", "",
			humanBytes(st.Spool.Bytes), st.Spool.Segments, st.Archive.Segment, st.Archive.Position, roundDur(st.Archive.RPOSeconds))
		if st.Archive.LastError != "" {
			fmt.Fprintf(g.stdout, "%-8s last upload error: %s\n", "", oneLine(st.Archive.LastError))
		}
		if r := st.Replica; r != nil {
			what := "applier disconnected"
			switch {
			case r.Stopped:
				what = "applier STOPPED"
			case r.Connected:
				what = "applier connected"
			}
			fmt.Fprintf(g.stdout, "%-8s %s  applied to gtid %q  %.0f transactions and %s behind\n", "", what, r.Position, r.TransactionsBehind, roundDur(r.SecondsBehind))
			if r.LastError != "" {
				fmt.Fprintf(g.stdout, "%-8s last apply error: %s\n", "", oneLine(r.LastError))
			}
		}
		if b := st.Backup; b != nil {
			printBackupState(g, b)
		}
		for _, a := range st.Availability {
			state := "up"
			if !a.Up {
				state = "DOWN"
			}
			fmt.Fprintf(g.stdout, "%-8s %-8s %-4s observed %s: %d failure(s), MTBF %s, MTTR %s, available %.4f%% (model %.4f%%, %d transitions)\n", "",
				a.Part, state, roundDur(a.Window.Seconds()), a.Failures, roundDur(a.MTBF.Seconds()), roundDur(a.MTTR.Seconds()), 100*a.Observed, 100*a.Steady, a.Transitions)
		}
		if sv := st.Serve; sv != nil {
			fmt.Fprintf(g.stdout, "%-8s binlog server on %s: %d replica(s)\n", "", sv.Listen, len(sv.Replicas))
			for _, r := range sv.Replicas {
				host := r.Address
				if r.Host != "" {
					host = fmt.Sprintf("%s (reports %s:%d)", r.Address, r.Host, r.Port)
				}
				fmt.Fprintf(g.stdout, "%-8s   server_id %d  %s  sent to gtid %q  %d transactions and %s behind\n", "",
					r.ServerID, host, r.Position, r.LagTransactions, roundDur(r.LagSeconds))
			}
		}
	} else {
		fmt.Fprintf(g.stdout, "%-8s not running\n", "daemon")
	}
	for _, p := range d.Notes {
		fmt.Fprintf(g.stdout, "note: %s\n", p)
	}
}

// printSemiSync shows binvault's acknowledgements and whether the
// primary waits for them.
func printSemiSync(g *globals, ss *replicator.SemiSyncStatus) {
	fmt.Fprintf(g.stdout, "%-8s semi-sync %s: %d acknowledgement(s) for %d transaction(s), last after %s, %d waiting\n", "",
		ss.Mode, ss.Acks, ss.Transactions, time.Duration(ss.LastAckSeconds*float64(time.Second)).Round(10*time.Microsecond), ss.Pending)
	p := ss.Primary
	switch {
	case p.Checked.IsZero():
		fmt.Fprintf(g.stdout, "%-8s primary's semi-sync not read yet\n", "")
		return
	case p.Error != "":
		fmt.Fprintf(g.stdout, "%-8s primary's semi-sync unknown: %s\n", "", oneLine(p.Error))
		return
	}
	waits := "waits for acknowledgements"
	switch {
	case !p.Enabled:
		waits = "does NOT wait: rpl_semi_sync_master_enabled=OFF"
	case !p.Active:
		waits = "does NOT wait: fell back to asynchronous (Rpl_semi_sync_master_status=OFF)"
	}
	line := fmt.Sprintf("primary %s (%d semi-sync client(s)); %d fallback(s) and %d commit(s) without acknowledgement seen", waits, p.Clients, p.Fallbacks, p.UnackedCommits)
	if !p.LastFallback.IsZero() {
		line += ", last fallback " + p.LastFallback.Format(time.RFC3339)
	}
	fmt.Fprintf(g.stdout, "%-8s %s\n", "", line)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printBackupState shows the daemon's scheduled backups: schedule, the
// last backup (id, time, error) and the retention after it.
func printBackupState(g *globals, b *backupState) {
	line := fmt.Sprintf("backups scheduled %q", b.Schedule)
	if b.Running && b.RunningSince != nil {
		line += fmt.Sprintf("  one running since %s", b.RunningSince.UTC().Format(time.RFC3339))
	}
	if b.NextRun != nil {
		line += "  next " + b.NextRun.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(g.stdout, "%-8s %s\n", "", line)
	if l := b.Last; l != nil {
		if l.Error == "" {
			fmt.Fprintf(g.stdout, "%-8s last backup %s finished %s (took %s)\n", "", l.ID, l.Finished.UTC().Format(time.RFC3339), roundDur(l.DurationSeconds))
		} else {
			fmt.Fprintf(g.stdout, "%-8s last backup FAILED at %s: %s\n", "", l.Finished.UTC().Format(time.RFC3339), oneLine(l.Error))
			if s := b.LastSuccess; s != nil {
				fmt.Fprintf(g.stdout, "%-8s last successful backup %s finished %s\n", "", s.ID, s.Finished.UTC().Format(time.RFC3339))
			}
		}
	}
	if p := b.LastPrune; p != nil {
		if p.Error != "" {
			fmt.Fprintf(g.stdout, "%-8s last prune FAILED at %s: %s\n", "", p.Time.UTC().Format(time.RFC3339), oneLine(p.Error))
		} else {
			fmt.Fprintf(g.stdout, "%-8s last prune %s: deleted %d backup(s) and %d segment(s), freed %s; %d backup(s) kept\n", "",
				p.Time.UTC().Format(time.RFC3339), len(p.DeletedBackups), p.DeletedSegments, humanBytes(p.FreedBytes), p.KeptBackups)
		}
	}
}
