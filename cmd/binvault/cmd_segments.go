package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/config"
	"github.com/binvault/binvault/storage"
)

// coverage is the continuous stretch of history the archive holds.
type coverage struct {
	Segments     int             `json:"segments"`
	Transactions int             `json:"transactions"`
	StoredBytes  int64           `json:"stored_bytes"`
	BinlogBytes  int64           `json:"binlog_bytes"`
	FromTime     *time.Time      `json:"from_time,omitempty"`
	ToTime       *time.Time      `json:"to_time,omitempty"`
	Start        binlog.Position `json:"start"`
	End          binlog.Position `json:"end"`
}

type segmentsReport struct {
	Store    string            `json:"store"`
	Segments []archive.Segment `json:"segments"`
	Coverage *coverage         `json:"coverage,omitempty"`
	Gaps     []string          `json:"gaps,omitempty"`
	// Forks are failovers that lost archived transactions
	// (--accept-lost-transactions): the history restarts there.
	Forks    []string `json:"forks,omitempty"`
	Requests int      `json:"requests"`
}

// forksOf describes each recorded fork in segs.
func forksOf(segs []archive.Segment) []string {
	var out []string
	for i := 1; i < len(segs); i++ {
		if s := segs[i]; s.Forks(segs[i-1]) {
			out = append(out, fmt.Sprintf("segment %d (%s): a failover to server_id %d lost %s; the history ending at %q continues from %q; restores past it need a backup taken after it",
				s.Seq, s.Fork.Time.Format(time.RFC3339), s.Source.ServerID, s.Fork.Lost, s.Fork.After.GTIDSet, s.Start.GTIDSet))
		}
	}
	return out
}

func newSegmentsCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "segments",
		Short: "List archived segments and the covered time and GTID range",
		Long: `segments reads the archive's catalog (and the manifests of segments not yet
catalogued) and lists every segment with its GTID and time range, then the
continuous coverage. Breaks in the chain are listed as gaps.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			st, ix, err := loadIndex(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			rep := segmentsReport{Store: st.String(), Segments: ix.Segments, Gaps: archive.Chain(ix.Segments), Forks: forksOf(ix.Segments), Requests: ix.Requests}
			if rep.Segments == nil {
				rep.Segments = []archive.Segment{}
			}
			rep.Coverage = coverageOf(ix.Segments)
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printSegments(g, rep)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	return c
}

func loadIndex(ctx context.Context, cfg *config.Config) (storage.Store, *archive.Index, error) {
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	ix, err := archive.Load(ctx, st, false)
	if err != nil {
		return nil, nil, fmt.Errorf("read the archive in %s: %w", st, err)
	}
	return st, ix, nil
}

func coverageOf(segs []archive.Segment) *coverage {
	if len(segs) == 0 {
		return nil
	}
	c := &coverage{Segments: len(segs), Start: segs[0].Start, End: segs[len(segs)-1].End}
	for i := range segs {
		s := &segs[i]
		c.Transactions += s.Txns
		c.StoredBytes += s.StoredBytes
		c.BinlogBytes += s.Bytes
		if s.Txns > 0 {
			if c.FromTime == nil {
				c.FromTime = &s.FirstTime
			}
			c.ToTime = &s.LastTime
		}
	}
	return c
}

func printSegments(g *globals, rep segmentsReport) {
	if len(rep.Segments) == 0 {
		fmt.Fprintf(g.stdout, "no segments in %s yet\n", rep.Store)
		return
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tFIRST COMMIT\tLAST COMMIT\tTXNS\tBINLOG\tSTORED\tFIRST GTID\tLAST GTID\tDDL\tSOURCE")
	for _, s := range rep.Segments {
		ddl := ""
		if s.DDL {
			ddl = "yes"
		}
		src := fmt.Sprintf("%d@%s:%d", s.Source.ServerID, s.Source.Hostname, s.Source.Port)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Seq, s.FirstTime.Format(time.RFC3339), s.LastTime.Format(time.RFC3339),
			s.Txns, humanBytes(s.Bytes), humanBytes(s.StoredBytes), s.FirstGTID, s.LastGTID, ddl, src)
	}
	tw.Flush()
	c := rep.Coverage
	fmt.Fprintf(g.stdout, "\ncoverage: %d segments, %d transactions, %s stored (%s of binlog)\n", c.Segments, c.Transactions, humanBytes(c.StoredBytes), humanBytes(c.BinlogBytes))
	if c.FromTime != nil {
		fmt.Fprintf(g.stdout, "  time: %s .. %s\n", c.FromTime.Format(time.RFC3339), c.ToTime.Format(time.RFC3339))
	}
	fmt.Fprintf(g.stdout, "  gtid: from %q to %q\n", c.Start.GTIDSet, c.End.GTIDSet)
	for _, gap := range rep.Gaps {
		fmt.Fprintf(g.stdout, "gap: %s\n", gap)
	}
	for _, f := range rep.Forks {
		fmt.Fprintf(g.stdout, "fork: %s\n", f)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
