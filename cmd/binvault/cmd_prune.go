package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/binvault/binvault/backup"
	"github.com/binvault/binvault/internal/config"
)

func newPruneCmd(g *globals) *cobra.Command {
	var dryRun, asJSON bool
	c := &cobra.Command{
		Use:   "prune",
		Short: "Apply retention: delete old backups and the segments only they need",
		Long: `prune keeps the newest retention.keep_last backups and every backup younger
than retention.keep_within (never the newest), and deletes the others; then
it deletes the archived segments that only deleted backups needed: those
before the oldest kept backup's position. A segment any kept backup needs to
roll forward to the present, the newest segment, and (with a replica:
section) what the replica has not applied yet according to the daemon's
state file always stay. With no backup in the store nothing is deleted.

Each backup's manifest goes first, then its objects; the segments go oldest
first, after the catalog stops naming them (docs/archive-format.md §5.1), so
a reader at any moment, or after a crash, sees a whole archive.

prune takes the backup lock: while a backup or another prune runs it exits 1
naming it and deletes nothing. --dry-run lists what would go and what stays,
takes no lock and writes nothing. binvault run prunes after each scheduled
backup.`,
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
			pos, hasReplica := "", false
			if cfg.Replica != nil {
				// The daemon's last word on the replica: its history must stay.
				if s, err := readStateFile(cfg.Spool.Dir); err == nil && s.Replica != nil && s.Replica.Position != "" {
					pos, hasReplica = s.Replica.Position, true
				}
			}
			rep, err := backup.Prune(ctx, st, retentionPolicy(cfg, pos, hasReplica), time.Now(), dryRun, slog.Default())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printPrune(g, rep)
			return nil
		},
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be deleted and what stays; delete nothing")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	return c
}

// retentionPolicy is the configured retention; a replica's applied
// position (when known) holds the history after it back.
func retentionPolicy(cfg *config.Config, replicaPos string, hasReplica bool) backup.Policy {
	p := backup.Policy{KeepLast: cfg.Retention.KeepLast, KeepWithin: cfg.Retention.KeepWithin.D()}
	if hasReplica {
		p.Protect = map[string]string{"replica": replicaPos}
	}
	return p
}

func printPrune(g *globals, rep *backup.Report) {
	w := g.stdout
	head := "prune"
	if rep.DryRun {
		head = "prune --dry-run (nothing is deleted)"
	}
	fmt.Fprintf(w, "%s of %s: keep_last %d, keep_within %s\n", head, rep.Store, rep.KeepLast, rep.KeepWithin)
	verb := "delete"
	if rep.DryRun {
		verb = "would delete"
	}
	if len(rep.Kept)+len(rep.DeletedBackups) == 0 {
		fmt.Fprintln(w, "backups: none in the store: nothing is deleted")
	} else {
		fmt.Fprintln(w, "backups:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, b := range rep.DeletedBackups {
			fmt.Fprintf(tw, "  %s\t%s\tsnapshot %s\t%s\t%s\n", verb, b.ID, b.SnapshotTime.UTC().Format(time.RFC3339), humanBytes(b.StoredBytes), b.Why)
		}
		for _, b := range rep.Kept {
			reasons := ""
			for i, r := range b.Reasons {
				if i > 0 {
					reasons += "; "
				}
				reasons += r
			}
			fmt.Fprintf(tw, "  keep\t%s\tsnapshot %s\t%s\t%s\n", b.ID, b.SnapshotTime.UTC().Format(time.RFC3339), humanBytes(b.StoredBytes), reasons)
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "segments:")
	if n := len(rep.DeletedSegs); n > 0 {
		a, b := rep.DeletedSegs[0], rep.DeletedSegs[n-1]
		txns, bytes := 0, int64(0)
		for _, s := range rep.DeletedSegs {
			txns += s.Transactions
			bytes += s.StoredBytes
		}
		fmt.Fprintf(w, "  %s %d to %d: %d segments, %d transactions committed %s to %s, %s\n", verb, a.Seq, b.Seq, n, txns,
			a.FirstTime.UTC().Format(time.RFC3339), b.LastTime.UTC().Format(time.RFC3339), humanBytes(bytes))
	}
	if k := rep.SegmentsKept; k != nil {
		fmt.Fprintf(w, "  keep %d to %d: %d segments from GTID %q (%s), because %s\n", k.First, k.Last, k.Count, k.Start.GTIDSet,
			k.FromTime.UTC().Format(time.RFC3339), k.Why)
	} else {
		fmt.Fprintln(w, "  none in the store")
	}
	if len(rep.CatalogRewritten)+len(rep.CatalogDeleted) > 0 {
		fmt.Fprintf(w, "catalog: %d object(s) rewritten without the deleted segments, %d deleted\n", len(rep.CatalogRewritten), len(rep.CatalogDeleted))
	}
	if len(rep.Leftovers) > 0 {
		fmt.Fprintf(w, "leftovers of interrupted backups deleted: %v\n", rep.Leftovers)
	}
	if len(rep.Strays) > 0 {
		fmt.Fprintf(w, "leftovers of an interrupted prune deleted: %d object(s) under segments/\n", len(rep.Strays))
	}
	if rep.DryRun {
		fmt.Fprintf(w, "would free %s\n", humanBytes(rep.FreedBytes))
	} else {
		fmt.Fprintf(w, "freed %s\n", humanBytes(rep.FreedBytes))
	}
}
