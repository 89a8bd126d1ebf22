package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/binvault/binvault/internal/config"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/open"
)

// serverStatus is one server's part of `status`.
type serverStatus struct {
	DSN string `json:"dsn"`
	*dbconn.ServerInfo
	Reachable bool     `json:"reachable"`
	Problems  []string `json:"problems,omitempty"`
}

type storeStatus struct {
	URL       string   `json:"url"`
	Reachable bool     `json:"reachable"`
	Problems  []string `json:"problems,omitempty"`
}

type statusReport struct {
	Source  serverStatus  `json:"source"`
	Replica *serverStatus `json:"replica,omitempty"`
	Storage storeStatus   `json:"storage"`
	OK      bool          `json:"ok"`
}

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Check the source, replica and store, and report positions and lag",
		Long: `status connects to the source (and the replica, if configured) and the store,
and reports server version, flavor, binlog settings, GTID position and store
reachability. Each problem is one line. Exit 2 when a problem is in the
configuration or a server's settings, 1 when a service cannot be reached.`,
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
	rep.Source = checkServer(ctx, "source", cfg.Source.DSN, worse, func(si dbconn.ServerInfo) []string { return si.SourceProblems() })
	if cfg.Replica != nil {
		r := checkServer(ctx, "replica", cfg.Replica.DSN, worse, func(si dbconn.ServerInfo) []string {
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
	}
	rep.OK = code == exitOK
	return rep, code
}

func storeOptions(cfg *config.Config) open.Options {
	return open.Options{URL: cfg.Storage.URL, Endpoint: cfg.Storage.Endpoint, Region: cfg.Storage.Region, PathStyle: cfg.Storage.PathStyle}
}

func checkServer(ctx context.Context, role, raw string, worse func(error), problems func(dbconn.ServerInfo) []string) serverStatus {
	d, err := dbconn.Parse(raw)
	if err != nil { // Validate already parsed it; kept for safety
		worse(usage.Errorf("%s.dsn: %v", role, err))
		return serverStatus{Problems: []string{err.Error()}}
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
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
