package replicator

import (
	"fmt"
	"strings"

	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/replay"
	"github.com/binvault/binvault/internal/usage"
)

// Events created on the primary reach the replica as CREATE EVENT
// statements. Run there too, an event writes a second time what the
// primary's event already wrote and replicated: the replica diverges (or
// the applier stops on a duplicate key). Native replication creates such
// events SLAVESIDE_DISABLED; binvault rewrites the statement to DISABLE ON
// SLAVE, so the event never runs on the replica, not even for the instant
// between a CREATE and a later ALTER. Events that arrived otherwise (a
// backup loaded into the replica, an applier before this) are disabled at
// the start of each session. After a failover, ALTER EVENT ... ENABLE on
// the new primary, as with native replication.

// disableEnabledEvents marks the replica's enabled events (in databases
// the replica receives) DISABLE ON SLAVE, unlogged (sql_log_bin=0, which
// needs BINLOG ADMIN) so that the replica's GTID history stays the
// primary's. Without that privilege it refuses to go on only if the events
// would run (event_scheduler=ON), and warns otherwise.
func (a *Applier) disableEnabledEvents(c *replay.Conn) error {
	r, err := c.Query("SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS WHERE STATUS = 'ENABLED' ORDER BY 1, 2")
	if err != nil {
		return err
	}
	var enabled []string
	for i := range r.RowNumber() {
		db, _ := r.GetString(i, 0)
		name, _ := r.GetString(i, 1)
		if a.filter.Database(db) {
			enabled = append(enabled, dbconn.QuoteIdent(db)+"."+dbconn.QuoteIdent(name))
		}
	}
	if len(enabled) == 0 {
		return nil
	}
	if err := c.Exec("SET @@session.sql_log_bin=0"); err != nil {
		r, err := c.Query("SELECT @@GLOBAL.event_scheduler")
		if err != nil {
			return err
		}
		if sched, _ := r.GetString(0, 0); strings.EqualFold(sched, "ON") {
			return usage.Errorf("replica: event %s is enabled and would run on the replica too (event_scheduler=ON), writing twice what the primary's event writes: GRANT BINLOG ADMIN ON *.* to the replica user so binvault marks it DISABLE ON SLAVE as native replication does, or run ALTER EVENT %s DISABLE ON SLAVE on the replica with sql_log_bin=0", enabled[0], enabled[0])
		}
		a.opts.Log.Warn("the replica holds enabled events; they would run if its event_scheduler were turned on: GRANT BINLOG ADMIN to the replica user so binvault marks them DISABLE ON SLAVE", "events", len(enabled), "first", enabled[0])
		return nil
	}
	defer c.Exec("SET @@session.sql_log_bin=1")
	for _, e := range enabled {
		if err := c.Exec("ALTER EVENT " + e + " DISABLE ON SLAVE"); err != nil {
			return fmt.Errorf("disable event %s on the replica: %w", e, err)
		}
	}
	a.opts.Log.Info("marked the replica's enabled events DISABLE ON SLAVE, as native replication does", "events", len(enabled), "first", enabled[0])
	return nil
}

// rewrite is the batcher's Rewrite: a replicated CREATE or ALTER EVENT
// leaves the event disabled on the replica (MariaDB's DISABLE ON SLAVE).
func (a *Applier) rewrite() func(query, defaultDB string) (string, bool) {
	if a.flavor != dbconn.MariaDB {
		return nil
	}
	return func(query, defaultDB string) (string, bool) {
		r, db, name, ok := replay.DisableEventOnReplica(query, defaultDB)
		if ok {
			a.opts.Log.Info("a replicated event is kept disabled on the replica (DISABLE ON SLAVE)", "event", db+"."+name)
		}
		return r, ok
	}
}
