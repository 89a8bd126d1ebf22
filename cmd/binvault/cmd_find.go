package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/restore"
)

func newFindCmd(g *globals) *cobra.Command {
	var table, since, until string
	var ddl, asJSON bool
	c := &cobra.Command{
		Use:   "find",
		Short: "List the archived transactions that touched a table (to pick a restore point)",
		Long: `find lists the archived transactions that changed a table: GTID, commit time,
and what they did (rows inserted, updated, deleted, or the DDL statement).
Use it to find the GTID of a bad statement, then restore to just before it:

  binvault find --config FILE --table shop.orders --ddl --since 2026-11-28T10:00:00Z
  binvault restore --config FILE --target ... --stop-before-gtid 0-1-4711

Only segments whose manifest names the table (or that hold DDL) are read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			if table == "" {
				return usage.Errorf("--table is required: write --table db.table")
			}
			db, tbl, err := restore.ParseTable(table)
			if err != nil {
				return err
			}
			q := restore.FindQuery{DB: db, Table: tbl, DDLOnly: ddl}
			for _, f := range []struct {
				flag, val string
				dst       **time.Time
			}{{"--since", since, &q.Since}, {"--until", until, &q.Until}} {
				if f.val == "" {
					continue
				}
				tm, err := time.Parse(time.RFC3339, f.val)
				if err != nil {
					return usage.Errorf("%s %q is not an RFC3339 time: write e.g. 2026-11-28T10:15:00Z", f.flag, f.val)
				}
				*f.dst = &tm
			}
			ctx := cmd.Context()
			st, err := openStore(ctx, cfg)
			if err != nil {
				return err
			}
			found, read, err := restore.Find(ctx, st, q)
			if err != nil {
				return err
			}
			if asJSON {
				if found == nil {
					found = []restore.Found{}
				}
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					Table        string          `json:"table"`
					SegmentsRead int             `json:"segments_read"`
					Transactions []restore.Found `json:"transactions"`
				}{table, read, found})
			}
			if len(found) == 0 {
				fmt.Fprintf(g.stdout, "no archived transaction touched %s (%d segments read)\n", table, read)
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GTID\tCOMMIT TIME\tSEGMENT\tWHAT")
			for _, f := range found {
				what := fmt.Sprintf("rows: %d inserted, %d updated, %d deleted", f.Inserted, f.Updated, f.Deleted)
				if f.Kind == "ddl" {
					what = f.Statement
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", f.GTID, f.Time.Format(time.RFC3339), f.Segment, what)
			}
			tw.Flush()
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&table, "table", "", "the table, db.table")
	f.BoolVar(&ddl, "ddl", false, "only statements (DDL) naming the table")
	f.StringVar(&since, "since", "", "only transactions committed at or after this RFC3339 time")
	f.StringVar(&until, "until", "", "only transactions committed at or before this RFC3339 time")
	f.BoolVar(&asJSON, "json", false, "print one JSON document")
	return c
}
