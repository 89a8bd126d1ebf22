package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/config"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/replicator"
)

// defaultPromoteWait bounds how long promote lets the applier catch up.
const defaultPromoteWait = 5 * time.Minute

func newPromoteCmd(g *globals) *cobra.Command {
	var force, asJSON bool
	var wait time.Duration
	c := &cobra.Command{
		Use:   "promote",
		Short: "Make the replica the primary: apply everything binvault holds, stop applying, turn read_only off",
		Long: `promote turns the replica of the replica: section into a primary, for when
the primary is lost. It waits (at most --wait) until the replica has applied
every transaction binvault holds (archived or spooled), stops binvault's
applier for good (promoted.json in spool.dir), records the replica's final
GTID position, sets read_only=OFF, enables the events replication left
SLAVESIDE_DISABLED, and prints what clients must change.

It refuses, changing nothing, when the replica is behind what binvault holds
and says how many transactions would be lost; --force promotes it anyway.
Running it again after a promotion reports the first one and changes
nothing. It works whether binvault run is running or not; a running daemon
keeps streaming and archiving. POST /promote on the HTTP port does the same
(http.token_file).

Exit codes: 0 promoted (or already), 1 failure, 2 refused or misconfigured.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			o, err := promoteFromCLI(cmd.Context(), cfg, force, wait, g)
			if err != nil {
				return err
			}
			res, err := replicator.Promote(cmd.Context(), o)
			if err != nil {
				var behind *replicator.ErrBehind
				if errors.As(err, &behind) {
					return usage.Wrap(err)
				}
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			printPromoted(g.stdout, cfg, res)
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "promote even when the replica has not applied everything binvault holds (those transactions are lost on it)")
	c.Flags().DurationVar(&wait, "wait", defaultPromoteWait, "how long the replica may take to apply what binvault holds")
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}

// promoteFromCLI gathers what Promote needs when no daemon hands it over:
// what binvault holds is the running daemon's spool end (its state file),
// or, with no daemon running, the spool's own end, and at least the
// archive's end.
func promoteFromCLI(ctx context.Context, cfg *config.Config, force bool, wait time.Duration, g *globals) (replicator.PromoteOptions, error) {
	if cfg.Replica == nil {
		return replicator.PromoteOptions{}, usage.Errorf("promote needs a replica: section naming the replica to promote")
	}
	rdsn, err := dbconn.Parse(cfg.Replica.DSN)
	if err != nil {
		return replicator.PromoteOptions{}, usage.Errorf("replica.dsn: %v", err)
	}
	db, err := dbconn.Open(ctx, "replica", rdsn)
	if err != nil {
		return replicator.PromoteOptions{}, usage.Wrap(err)
	}
	info, err := dbconn.Inspect(ctx, db)
	db.Close()
	if err != nil {
		return replicator.PromoteOptions{}, usage.Wrap(dbconn.Explain("replica", rdsn, err))
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return replicator.PromoteOptions{}, err
	}
	ix, err := archive.Load(ctx, st, true)
	if err != nil {
		return replicator.PromoteOptions{}, fmt.Errorf("read the archive's end in %s: %w", st, err)
	}
	var archived, spooled binlog.Position
	if last := ix.Last(); last != nil {
		archived = last.End
	}
	ds := readDaemonStatus(cfg.Spool.Dir)
	running := ds.Running && ds.State != nil && pidAlive(ds.State.PID)
	if running {
		spooled = ds.State.Source.Position
	} else if _, err := os.Stat(cfg.Spool.Dir); err == nil {
		// No daemon: the spool is ours to read (and recover, as run would).
		sp, err := replicator.OpenSpool(cfg.Spool.Dir, info.Flavor, replicator.SpoolLimits{}, slog.Default())
		if err != nil {
			return replicator.PromoteOptions{}, err
		}
		spooled, _, _ = sp.End()
		sp.Close()
	}
	holds, err := heldPosition(info.Flavor, archived, spooled)
	if err != nil {
		return replicator.PromoteOptions{}, err
	}
	blocked := func() string {
		ds := readDaemonStatus(cfg.Spool.Dir)
		switch {
		case !ds.Running || ds.State == nil:
			return "binvault run is not running, so nothing applies to the replica"
		case ds.State.Replica == nil:
			return "the running daemon applies to no replica"
		case ds.State.Replica.Stopped:
			return "the applier stopped: " + oneLine(ds.State.Replica.LastError)
		}
		return ""
	}
	return replicator.PromoteOptions{Replica: rdsn, Flavor: info.Flavor, StateDir: cfg.Spool.Dir, Holds: holds,
		Wait: wait, Force: force, Blocked: blocked, Log: slog.Default()}, nil
}

// heldPosition is the furthest of the archive's and the spool's ends.
func heldPosition(flavor string, archived, spooled binlog.Position) (binlog.GTIDSet, error) {
	a, err := binlog.ParseGTIDSet(flavor, archived.GTIDSet)
	if err != nil {
		return binlog.GTIDSet{}, fmt.Errorf("the archive's end %q: %w", archived.GTIDSet, err)
	}
	s, err := binlog.ParseGTIDSet(flavor, spooled.GTIDSet)
	if err != nil {
		return binlog.GTIDSet{}, fmt.Errorf("the spool's end %q: %w", spooled.GTIDSet, err)
	}
	if s.Contains(a) {
		return s, nil
	}
	return a, nil
}

func pidAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// printPromoted says what happened and what clients must change.
func printPromoted(w io.Writer, cfg *config.Config, res replicator.PromoteResult) {
	if res.AlreadyDone {
		fmt.Fprintf(w, "already promoted at %s (final GTID %s): nothing to do\n", res.PromotedAt, res.FinalGTID)
		return
	}
	fmt.Fprintf(w, "promoted %s: writable at GTID %s\n", res.Replica, res.FinalGTID)
	if res.Lost > 0 {
		fmt.Fprintf(w, "  --force: %d transaction(s) binvault holds (up to %s) are NOT on it\n", res.Lost, res.Holds)
	} else {
		fmt.Fprintf(w, "  every transaction binvault holds is applied (%s; waited %.1fs)\n", res.Holds, res.Waited)
	}
	if len(res.EventsEnabled) > 0 {
		fmt.Fprintf(w, "  events enabled: %s\n", strings.Join(res.EventsEnabled, ", "))
	}
	fmt.Fprintln(w, "  binvault applies nothing to it any more (promoted.json in spool.dir)")
	fmt.Fprintln(w, "what to change now:")
	replica, _ := dbconn.Parse(cfg.Replica.DSN)
	fmt.Fprintf(w, "  - point writers (and the load balancer's write pool) at %s\n", replica.Addr())
	hosts, _ := dbconn.ParseHosts(cfg.Source.DSN)
	listed := false
	for _, h := range hosts {
		listed = listed || h.Addr() == replica.Addr()
	}
	if listed {
		fmt.Fprintf(w, "  - binvault run archives it once the old primary is gone: %s is among source.dsn's hosts\n", replica.Addr())
	} else {
		fmt.Fprintf(w, "  - to archive its writes, add %s to source.dsn's hosts (binvault follows it from the archive's end) and remove the replica: section\n", replica.Addr())
	}
	fmt.Fprintln(w, "  - make sure the old primary stays down or is rebuilt as a replica: it must not take writes again")
}

// promoteHandler answers POST /promote (?force=1, ?wait=30s) with a bearer
// token from http.token_file: a promotion for orchestration tools, the
// same as binvault promote.
func (d *daemon) promoteHandler(w http.ResponseWriter, r *http.Request) {
	token := d.cfg.HTTP.Token()
	switch {
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST /promote", http.StatusMethodNotAllowed)
		return
	case token == "":
		http.Error(w, "POST /promote is off: set http.token_file", http.StatusForbidden)
		return
	case subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) != 1:
		w.Header().Set("WWW-Authenticate", `Bearer realm="binvault"`)
		http.Error(w, "missing or wrong bearer token (Authorization: Bearer <http.token_file's token>)", http.StatusUnauthorized)
		return
	case d.applier == nil:
		http.Error(w, "no replica: section: nothing to promote", http.StatusConflict)
		return
	}
	wait := defaultPromoteWait
	if v := r.URL.Query().Get("wait"); v != "" {
		var err error
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 {
			http.Error(w, fmt.Sprintf("wait=%q is not a duration like 30s", v), http.StatusBadRequest)
			return
		}
	}
	force := r.URL.Query().Get("force") == "1" || r.URL.Query().Get("force") == "true"
	if !d.promoting.TryLock() {
		http.Error(w, "a promotion is already running", http.StatusConflict)
		return
	}
	defer d.promoting.Unlock()
	end, _, _ := d.spool.End()
	holds, err := binlog.ParseGTIDSet(d.info.Flavor, end.GTIDSet)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	rdsn, _ := dbconn.Parse(d.cfg.Replica.DSN)
	res, err := replicator.Promote(r.Context(), replicator.PromoteOptions{Replica: rdsn, Flavor: d.info.Flavor, StateDir: d.cfg.Spool.Dir,
		Holds: holds, Wait: wait, Force: force, Log: d.log,
		Blocked: func() string {
			if err := d.applier.Stopped(); err != nil {
				return "the applier stopped: " + oneLine(err.Error())
			}
			return ""
		}})
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusInternalServerError
		var behind *replicator.ErrBehind
		if errors.As(err, &behind) || usage.Is(err) {
			code = http.StatusConflict
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"error": oneLine(err.Error())})
		return
	}
	json.NewEncoder(w).Encode(res)
}
