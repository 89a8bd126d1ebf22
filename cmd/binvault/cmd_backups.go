package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/binvault/binvault/backup"
	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
)

// backupEntry is one backup as `backups` shows it.
type backupEntry struct {
	ID              string          `json:"id"`
	StartTime       time.Time       `json:"start_time"`
	EndTime         time.Time       `json:"end_time"`
	SnapshotTime    time.Time       `json:"snapshot_time"`
	Position        binlog.Position `json:"position"`
	Flavor          string          `json:"flavor"`
	ServerVersion   string          `json:"server_version"`
	Databases       int             `json:"databases"`
	Tables          int             `json:"tables"`
	Rows            int64           `json:"rows"`
	Bytes           int64           `json:"bytes"`
	StoredBytes     int64           `json:"stored_bytes"`
	LockHeldSeconds float64         `json:"lock_held_seconds"`
	Warnings        []string        `json:"warnings,omitempty"`
	// ChainComplete: the archive rolls this backup forward, without a
	// gap, to its newest segment.
	ChainComplete bool               `json:"chain_complete"`
	Chain         backup.ChainStatus `json:"chain"`
}

type backupsReport struct {
	Store   string        `json:"store"`
	Backups []backupEntry `json:"backups"`
	// ArchiveError is set when the segment index could not be read (then
	// no chain is complete).
	ArchiveError string `json:"archive_error,omitempty"`
}

func newBackupsCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "backups",
		Short: "List backups",
		Long: `backups lists the complete backups in the store, oldest first: id, times,
the binlog position each is tied to, size, tables, and whether the archive's
segments roll it forward to the newest archived transaction without a gap.
Objects of an interrupted or running backup (no manifest yet) are not listed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			st, err := openStore(ctx, cfg)
			if err != nil {
				return err
			}
			ms, err := backup.List(ctx, st)
			if err != nil {
				return fmt.Errorf("list backups in %s: %w", st, err)
			}
			rep := backupsReport{Store: st.String(), Backups: []backupEntry{}}
			var segs []archive.Segment
			if len(ms) > 0 {
				ix, err := archive.Load(ctx, st, false)
				if err != nil {
					rep.ArchiveError = oneLine(err.Error())
					slog.Warn("cannot read the archive's segments: no chain is complete", "err", err)
				} else {
					segs = ix.Segments
				}
			}
			for _, m := range ms {
				e := backupEntry{ID: m.ID, StartTime: m.StartTime, EndTime: m.EndTime, SnapshotTime: m.SnapshotTime,
					Position: m.Position, Flavor: m.Source.Flavor, ServerVersion: m.Source.Version, Databases: len(m.Databases),
					Tables: len(m.Tables), Rows: m.Rows, Bytes: m.Bytes, StoredBytes: m.StoredBytes,
					LockHeldSeconds: m.LockHeldSeconds, Warnings: m.Warnings}
				if rep.ArchiveError == "" {
					e.Chain = backup.Chain(m, segs)
				} else {
					e.Chain = backup.ChainStatus{Detail: "the archive could not be read"}
				}
				e.ChainComplete = e.Chain.Complete
				rep.Backups = append(rep.Backups, e)
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printBackups(g, rep)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	return c
}

func printBackups(g *globals, rep backupsReport) {
	if len(rep.Backups) == 0 {
		fmt.Fprintf(g.stdout, "no backups in %s yet\n", rep.Store)
		return
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSNAPSHOT\tDURATION\tLOCK\tTABLES\tROWS\tSIZE\tSTORED\tPOSITION\tCHAIN")
	for _, b := range rep.Backups {
		chain := "complete"
		if !b.ChainComplete {
			chain = "broken: " + b.Chain.Detail
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", b.ID, b.SnapshotTime.Format(time.RFC3339),
			b.EndTime.Sub(b.StartTime).Round(time.Second), time.Duration(b.LockHeldSeconds*float64(time.Second)).Round(time.Millisecond),
			b.Tables, b.Rows, humanBytes(b.Bytes), humanBytes(b.StoredBytes), b.Position, chain)
	}
	tw.Flush()
	if rep.ArchiveError != "" {
		fmt.Fprintf(g.stdout, "archive unreadable: %s\n", rep.ArchiveError)
	}
}
