package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/restore"
)

type restoreFlags struct {
	target, toTime, toGTID, stopBefore string
	latest, dryRun, force, resume      bool
	asJSON                             bool
	parallel                           int
	databases                          []string
}

func newRestoreCmd(g *globals) *cobra.Command {
	var f restoreFlags
	c := &cobra.Command{
		Use:   "restore",
		Short: "Restore a server to a point in time from the store alone",
		Long: `restore loads the newest backup at or before the target and replays the
archived segments after it, up to the target:

  --to-time T          every transaction committed at or before T (RFC3339;
                       the binlog keeps whole seconds: a transaction committed
                       during second T counts as at T)
  --to-gtid G          up to and including transaction G
  --stop-before-gtid G up to, not including, G (the answer to "someone ran
                       DROP TABLE": find its GTID with binvault find)
  --latest             everything archived

It needs only the store and the target: the primary may be gone. Every
object is verified before any of it is applied. The target must hold no
user databases (or pass --force). The replay groups many transactions per
commit with the target's binlog off, relaxes the target's flushes for its
duration (and puts them back), then records the final GTID position in
gtid_binlog_state and gtid_slave_pos. An interrupted restore is resumed
with --resume.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			target, err := f.targetSpec()
			if err != nil {
				return err
			}
			if f.target == "" && !f.dryRun {
				return usage.Errorf("--target is required: the server to restore into, mysql://user:password@host:port")
			}
			ctx := cmd.Context()
			st, err := openStore(ctx, cfg)
			if err != nil {
				return err
			}
			plan, err := restore.MakePlan(ctx, st, target)
			if err != nil {
				return err
			}
			if f.dryRun {
				return printPlan(g, plan, f.asJSON)
			}
			prog := &restore.Progress{}
			stop := g.restoreProgress(prog)
			sum, err := restore.Run(ctx, st, plan, restore.Options{TargetDSN: f.target, Parallel: f.parallel,
				Force: f.force, Resume: f.resume, Databases: f.databases, Log: slog.Default(), Progress: prog})
			stop()
			if err != nil {
				return err
			}
			if f.asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(sum)
			}
			printSummary(g, sum)
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.target, "target", "", "server to restore into, mysql://user:password@host:port")
	fl.StringVar(&f.toTime, "to-time", "", "restore every transaction committed at or before this RFC3339 time")
	fl.StringVar(&f.toGTID, "to-gtid", "", "restore up to and including this GTID")
	fl.StringVar(&f.stopBefore, "stop-before-gtid", "", "restore up to, excluding, this GTID")
	fl.BoolVar(&f.latest, "latest", false, "restore everything archived")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print the plan and change nothing")
	fl.BoolVar(&f.force, "force", false, "restore into a server that already holds user databases (the backup's are replaced), or over an unfinished restore")
	fl.BoolVar(&f.resume, "resume", false, "continue an unfinished restore from its checkpoint")
	fl.IntVar(&f.parallel, "parallel", restore.DefaultParallel, "tables loaded at once")
	fl.BoolVar(&f.asJSON, "json", false, "print the plan or summary as one JSON document")
	fl.StringSliceVar(&f.databases, "databases", nil, "restore only these databases (comma-separated); their rows and DDL are replayed, the rest skipped")
	return c
}

func (f restoreFlags) targetSpec() (restore.Target, error) {
	var t restore.Target
	n := 0
	if f.toTime != "" {
		n++
		tm, err := time.Parse(time.RFC3339, f.toTime)
		if err != nil {
			return t, usage.Errorf("--to-time %q is not an RFC3339 time: write e.g. 2026-11-28T10:15:00Z", f.toTime)
		}
		t.Time = &tm
	}
	if f.toGTID != "" {
		n++
		t.GTID = strings.TrimSpace(f.toGTID)
	}
	if f.stopBefore != "" {
		n++
		t.StopBefore = strings.TrimSpace(f.stopBefore)
	}
	if f.latest {
		n++
		t.Latest = true
	}
	if n != 1 {
		return t, usage.Errorf("give exactly one of --to-time, --to-gtid, --stop-before-gtid or --latest")
	}
	for _, g := range []string{t.GTID, t.StopBefore} {
		if g != "" && !strings.Contains(g, "-") && !strings.Contains(g, ":") {
			return t, usage.Errorf("%q is not a GTID: write domain-server-sequence (MariaDB, e.g. 0-1-42) or uuid:n (MySQL)", g)
		}
	}
	return t, nil
}

func printPlan(g *globals, p *restore.Plan, asJSON bool) error {
	// Rough figures from this machine's measurements; said so in the output.
	const loadMBps, replayTPS = 40.0, 5000.0
	m := p.Backup
	estLoad := time.Duration(float64(m.Bytes) / (loadMBps * 1e6) * float64(time.Second))
	estReplay := time.Duration(float64(p.Transactions) / replayTPS * float64(time.Second))
	if asJSON {
		type seg struct {
			Seq          uint64    `json:"seq"`
			Transactions int       `json:"transactions"`
			StoredBytes  int64     `json:"stored_bytes"`
			FirstTime    time.Time `json:"first_time"`
			LastTime     time.Time `json:"last_time"`
		}
		doc := struct {
			Target          string    `json:"target"`
			BackupID        string    `json:"backup_id"`
			BackupSnapshot  time.Time `json:"backup_snapshot_time"`
			BackupPosition  string    `json:"backup_position"`
			BackupBytes     int64     `json:"backup_bytes"`
			Segments        []seg     `json:"segments"`
			Transactions    int       `json:"transactions_at_most"`
			StoredBytes     int64     `json:"stored_bytes"`
			EstimateSeconds float64   `json:"estimate_seconds"`
			Coverage        string    `json:"coverage"`
		}{Target: p.Target.String(), BackupID: m.ID, BackupSnapshot: m.SnapshotTime, BackupPosition: m.Position.GTIDSet,
			BackupBytes: m.StoredBytes, Transactions: p.Transactions, StoredBytes: p.StoredBytes,
			EstimateSeconds: (estLoad + estReplay).Seconds(), Coverage: p.Coverage, Segments: []seg{}}
		for _, s := range p.Segments {
			doc.Segments = append(doc.Segments, seg{s.Seq, s.Txns, s.StoredBytes, s.FirstTime, s.LastTime})
		}
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	w := g.stdout
	fmt.Fprintf(w, "restore plan to %s\n", p.Target)
	fmt.Fprintf(w, "  backup    %s  snapshot %s  at GTID %q\n", m.ID, m.SnapshotTime.UTC().Format(time.RFC3339), m.Position.GTIDSet)
	fmt.Fprintf(w, "            %d tables, %d rows, %s of SQL (%s stored)\n", len(m.Tables), m.Rows, humanBytes(m.Bytes), humanBytes(m.StoredBytes))
	if n := len(p.Segments); n > 0 {
		fmt.Fprintf(w, "  replay    segments %d to %d (%d segments, at most %d transactions, %s stored, %s of binlog)\n",
			p.Segments[0].Seq, p.Segments[n-1].Seq, n, p.Transactions, humanBytes(p.StoredBytes), humanBytes(p.BinlogBytes))
	} else {
		fmt.Fprintf(w, "  replay    nothing: the backup is the target\n")
	}
	fmt.Fprintf(w, "  estimate  about %s (rough: %.0f MB/s load, %.0f transactions/s replay)\n", (estLoad + estReplay).Round(time.Second), loadMBps, replayTPS)
	fmt.Fprintf(w, "  coverage  %s\n", p.Coverage)
	fmt.Fprintln(w, "dry run: nothing was changed")
	return nil
}

func printSummary(g *globals, s restore.Summary) {
	w := g.stdout
	fmt.Fprintf(w, "restored to %s from backup %s\n", s.Target, s.BackupID)
	if s.BackupLoaded {
		fmt.Fprintf(w, "  load      %s\n", s.Load.Round(time.Millisecond))
	} else {
		fmt.Fprintf(w, "  load      skipped: resumed after it\n")
	}
	fmt.Fprintf(w, "  replay    %d transactions from %d segments (%s of binlog) in %s: %.0f transactions/s\n",
		s.Transactions, s.Segments, humanBytes(s.BinlogBytes), s.Replay.Round(time.Millisecond), s.Rate)
	mode := fmt.Sprintf("up to %d transactions per commit, the target's binlog off", s.Grouped)
	if !s.BinlogOff {
		mode = "one commit per transaction, logged with its source GTID"
	}
	fmt.Fprintf(w, "  how       %s; durability %s\n", mode, s.Durability)
	fmt.Fprintf(w, "  final     GTID %q, recorded in %s\n", s.FinalGTID, s.GTIDRecorded)
	if s.EventScheduler != "" {
		fmt.Fprintf(w, "  events    scheduler %s\n", s.EventScheduler)
	}
	for _, n := range s.ReplayWarning {
		fmt.Fprintf(w, "  note      %s\n", n)
	}
	for _, n := range s.LoadWarnings {
		fmt.Fprintf(w, "  warning   %s\n", n)
	}
	fmt.Fprintf(w, "  total     %s\n", s.Total.Round(time.Millisecond))
}

// restoreProgress draws the load, then the replay, on a terminal.
func (g *globals) restoreProgress(p *restore.Progress) (stop func()) {
	f, ok := g.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	bar := progressbar.NewOptions64(-1, progressbar.OptionSetWriter(f), progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				bar.Finish()
				return
			case <-t.C:
			}
			phase, _ := p.Phase.Load().(string)
			switch phase {
			case "loading backup":
				bar.ChangeMax64(max(p.Load.RowsTotal.Load(), 1))
				bar.Describe(fmt.Sprintf("loading backup: objects %d/%d, %s SQL", p.Load.ObjectsDone.Load(), p.Load.ObjectsTotal.Load(), humanBytes(p.Load.Bytes.Load())))
				bar.Set64(p.Load.Rows.Load())
			case "replaying":
				bar.ChangeMax64(max(p.TxnsTotal.Load(), 1))
				bar.Describe(fmt.Sprintf("replaying: segments %d, %s of binlog", p.SegmentsDone.Load(), humanBytes(p.BytesDone.Load())))
				bar.Set64(p.TxnsDone.Load())
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		fmt.Fprintln(f)
	}
}
