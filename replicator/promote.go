package replicator

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/usage"
)

// PromoteOptions say how to make the DR replica the primary.
type PromoteOptions struct {
	Replica dbconn.DSN
	Flavor  string
	// StateDir is the spool directory: the applier's connection record and
	// the promotion marker live there.
	StateDir string
	// Holds is what binvault holds (archived or spooled): the replica must
	// have applied all of it, or Force.
	Holds binlog.GTIDSet
	// Wait is how long the applier may take to catch up first.
	Wait  time.Duration
	Force bool
	// Blocked says why nothing will apply to the replica while Promote
	// waits ("": it is being applied to); a reason ends the wait at once.
	Blocked func() string
	Log     *slog.Logger
}

// PromoteResult says what a promotion did.
type PromoteResult struct {
	Replica        string   `json:"replica"`
	FinalGTID      string   `json:"final_gtid"`
	Holds          string   `json:"binvault_holds"`
	Lost           int64    `json:"transactions_not_applied"` // with Force
	EventsEnabled  []string `json:"events_enabled"`
	Waited         float64  `json:"waited_seconds"`
	AlreadyDone    bool     `json:"already_promoted"`
	PromotedAt     string   `json:"promoted_at"`
	ReadOnlyBefore bool     `json:"read_only_before"`
}

// ErrBehind: the replica has not applied everything binvault holds.
type ErrBehind struct {
	Replica, Applied, Holds string
	Behind                  int64
	Reason                  string // why nothing applies to it, if known
}

func (e *ErrBehind) Error() string {
	why := "let the applier catch up (binvault status) and promote again"
	if e.Reason != "" {
		why = "nothing applies to it now (" + e.Reason + "): fix that and promote again"
	}
	return fmt.Sprintf("the replica %s is %d transaction(s) behind what binvault holds (it is at GTID %q, binvault holds %q): promoting it now would lose them; %s, or pass --force to promote it anyway", e.Replica, e.Behind, e.Applied, e.Holds, why)
}

// Promote makes the replica the primary: it waits until the replica has
// applied everything binvault holds (or Force), stops the applier for
// good, records the replica's final GTID position, turns read_only off,
// and enables the events replication left SLAVESIDE_DISABLED. A second
// call finds the marker and reports the first promotion; one interrupted
// half-way is completed (every step may run twice).
func Promote(ctx context.Context, o PromoteOptions) (PromoteResult, error) {
	res := PromoteResult{Replica: o.Replica.String(), Holds: o.Holds.String(), EventsEnabled: []string{}}
	prev, err := ReadPromoted(o.StateDir)
	if err != nil {
		return res, fmt.Errorf("read %s: %w", PromotedFile, err)
	}
	if prev != nil && prev.State == promoteDone {
		res.AlreadyDone, res.FinalGTID, res.PromotedAt = true, prev.FinalGTID, prev.Time.UTC().Format(time.RFC3339)
		return res, nil
	}
	db, err := dbconn.Open(ctx, "replica", o.Replica)
	if err != nil {
		return res, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	start := time.Now()
	for prev == nil { // once promoting began, the applier is off: nothing to wait for
		pos, err := replicaPosition(ctx, db, o.Flavor)
		if err != nil {
			return res, dbconn.Explain("replica", o.Replica, err)
		}
		if pos.Contains(o.Holds) {
			break
		}
		reason := ""
		if o.Blocked != nil {
			reason = o.Blocked()
		}
		if reason != "" || time.Since(start) >= o.Wait {
			behind := o.Holds.SeqsAhead(pos)
			if !o.Force {
				return res, &ErrBehind{Replica: o.Replica.String(), Applied: pos.String(), Holds: o.Holds.String(), Behind: behind, Reason: reason}
			}
			o.Log.Warn("promoting a replica that has not applied everything binvault holds (--force)", "behind", behind, "replica_at", pos.String(), "binvault_holds", o.Holds.String())
			res.Lost = behind
			break
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	res.Waited = time.Since(start).Seconds()
	now := time.Now().UTC()
	// The marker first, then the kill: an applier session either is the
	// one killed or finds the marker once it recorded itself.
	if err := WritePromoted(o.StateDir, Promoted{State: promotePromoting, Replica: o.Replica.Addr(), Time: now}); err != nil {
		return res, fmt.Errorf("record the promotion: %w", err)
	}
	if err := StopApplierConnection(ctx, o.Replica, o.StateDir); err != nil {
		return res, fmt.Errorf("stop binvault's applier: %w", err)
	}
	pos, err := replicaPosition(ctx, db, o.Flavor)
	if err != nil {
		return res, dbconn.Explain("replica", o.Replica, err)
	}
	res.FinalGTID = pos.String()
	var ro string
	if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.read_only").Scan(&ro); err != nil {
		return res, dbconn.Explain("replica", o.Replica, err)
	}
	res.ReadOnlyBefore = ro == "1" || strings.EqualFold(ro, "ON")
	if _, err := db.ExecContext(ctx, "SET GLOBAL read_only = OFF"); err != nil {
		if dbconn.IsMissingPrivilege(err) || dbconn.IsAccessDenied(err) {
			return res, usage.Errorf("replica user %q may not turn read_only off: GRANT READ_ONLY ADMIN (or SUPER) ON *.* to it, then promote again (binvault's applier is already stopped)", o.Replica.User)
		}
		return res, fmt.Errorf("turn read_only off on %s: %w", o.Replica, err)
	}
	events, err := disabledEvents(ctx, db)
	if err != nil {
		return res, fmt.Errorf("list the events replication left disabled: %w", err)
	}
	for _, e := range events {
		if _, err := db.ExecContext(ctx, "ALTER EVENT "+e+" ENABLE"); err != nil {
			if dbconn.IsMissingPrivilege(err) || dbconn.IsAccessDenied(err) {
				return res, usage.Errorf("replica user %q may not enable event %s: GRANT EVENT ON the event's database to it, then promote again (the replica is already writable)", o.Replica.User, e)
			}
			return res, fmt.Errorf("enable event %s: %w", e, err)
		}
		res.EventsEnabled = append(res.EventsEnabled, e)
	}
	if err := WritePromoted(o.StateDir, Promoted{State: promoteDone, Replica: o.Replica.Addr(), FinalGTID: res.FinalGTID, Time: now}); err != nil {
		return res, fmt.Errorf("record the promotion: %w", err)
	}
	res.PromotedAt = now.Format(time.RFC3339)
	o.Log.Warn("the replica is promoted: it is writable and binvault applies nothing to it any more", "replica", o.Replica.String(), "final_gtid", res.FinalGTID, "events_enabled", len(res.EventsEnabled), "transactions_not_applied", res.Lost)
	return res, nil
}

func replicaPosition(ctx context.Context, db *sql.DB, flavor string) (binlog.GTIDSet, error) {
	q := "SELECT @@GLOBAL.gtid_binlog_pos"
	if flavor == dbconn.MySQL {
		q = "SELECT @@GLOBAL.gtid_executed"
	}
	var s string
	if err := db.QueryRowContext(ctx, q).Scan(&s); err != nil {
		return binlog.GTIDSet{}, err
	}
	return binlog.ParseGTIDSet(flavor, s)
}

// disabledEvents names the events replication left SLAVESIDE_DISABLED,
// quoted, as `db`.`event`.
func disabledEvents(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS WHERE STATUS = 'SLAVESIDE_DISABLED' ORDER BY 1, 2")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var schema, name string
		if err := rows.Scan(&schema, &name); err != nil {
			return nil, err
		}
		out = append(out, dbconn.QuoteIdent(schema)+"."+dbconn.QuoteIdent(name))
	}
	return out, rows.Err()
}

// PromotedFile, in the spool directory, marks the replica promoted: the
// applier never applies to it again.
const PromotedFile = "promoted.json"

// The marker's states.
const (
	promotePromoting = "promoting"
	promoteDone      = "done"
)

// Promoted is what PromotedFile holds.
type Promoted struct {
	State     string    `json:"state"` // "promoting", then "done"
	Replica   string    `json:"replica"`
	FinalGTID string    `json:"final_gtid,omitempty"`
	Time      time.Time `json:"time"`
}

// ReadPromoted reads the marker in dir (nil: not promoted).
func ReadPromoted(dir string) (*Promoted, error) {
	var p Promoted
	if err := readJSON(filepath.Join(dir, PromotedFile), &p); err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	return &p, nil
}

// WritePromoted writes the marker in dir, durably.
func WritePromoted(dir string, p Promoted) error {
	return writeJSONAtomic(dir, filepath.Join(dir, PromotedFile), p)
}

// StopApplierConnection kills the replica connection an applier recorded
// in dir (applier.json) and waits until it is gone: a packet it sent may
// still be running, and must end before the replica turns writable.
func StopApplierConnection(ctx context.Context, d dbconn.DSN, dir string) error {
	var st applierState
	if err := readJSON(filepath.Join(dir, "applier.json"), &st); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	db, err := dbconn.Open(ctx, "replica", d)
	if err != nil {
		return err
	}
	defer db.Close()
	var boot int64
	if err := db.QueryRowContext(ctx, "SELECT CAST(UNIX_TIMESTAMP() - VARIABLE_VALUE AS SIGNED) FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME'").Scan(&boot); err != nil {
		return err
	}
	if st.Replica != d.Addr() || abs64(st.ServerBoot-boot) > 2 {
		return nil // recorded on another server, or before the replica restarted: that connection is gone
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", st.ConnID)); err != nil && !dbconn.IsUnknownThread(err) {
		return fmt.Errorf("stop the applier's connection %d: %w", st.ConnID, err)
	}
	deadline := time.Now().Add(predecessorWait)
	for {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", st.ConnID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the applier's connection %d still runs on the replica after %s", st.ConnID, predecessorWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
