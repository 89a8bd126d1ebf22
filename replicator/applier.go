package replicator

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/metrics"
	"github.com/binvault/binvault/internal/replay"
	"github.com/binvault/binvault/internal/retry"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/storage"
	"github.com/go-mysql-org/go-mysql/replication"
)

const (
	// RetryMax: a replica that is down, misconfigured or refusing is tried
	// again at least this often.
	RetryMax = time.Minute
	// DefaultInFlight packets ahead: at an 80 ms round trip and 256
	// transactions a packet, room for about 12,000 transactions per second
	// before the network, not the replica, is the limit.
	DefaultInFlight = 4
	// stableSession: a session that lasted this long worked; the next
	// reconnect starts again at the shortest delay.
	stableSession = time.Minute
	// predecessorWait bounds the wait for a killed predecessor connection.
	predecessorWait = 2 * time.Minute
)

// ApplierOptions configure the replica applier.
type ApplierOptions struct {
	DSN           dbconn.DSN
	Include       []string
	Exclude       []string
	Delay         time.Duration
	AllowWritable bool
	// BatchTxns and BatchBytes bound one round trip: that many source
	// transactions, or that many bytes of statements, whichever comes
	// first (zero: replay.DefaultReplicaBatchTxns, DefaultBatchBytes).
	BatchTxns  int
	BatchBytes int
	// InFlight is how many packets the applier sends before it reads the
	// first one's answers (zero: DefaultInFlight): across a long round
	// trip the replica works while answers travel.
	InFlight int
	// StateDir keeps the applier's connection id, so a restarted daemon can
	// stop a packet its predecessor left running on the replica.
	StateDir string
	// Retry is the reconnect backoff (zero: retry.Default).
	Retry   retry.Policy
	Metrics *metrics.Metrics
	Log     *slog.Logger
}

// Applier keeps a replica identical to the primary by replaying each source
// transaction with the server's own row applier (BINLOG statements), with
// the source GTID, exactly once.
//
// Exactly once: the replica's binary log is on, and every transaction is
// applied with the primary's GTID (gtid_domain_id, server_id, gtid_seq_no),
// so the replica's @@gtid_binlog_pos moves with its data in one atomic
// commit (the binlog's two-phase commit with InnoDB). On every (re)start
// the applier reads that position and skips what it covers. DDL is atomic
// in MariaDB 10.6+ and MySQL 8.0 (crash recovery finishes or undoes it
// together with its binlog entry), which closes the DDL window: a DDL's
// GTID is in the position exactly when the DDL took effect. A connection
// that dies does not stop the packet it sent (the server runs the rest,
// COMMIT included), so a new session first kills the previous one's
// connection, found by the id recorded in StateDir, and waits until it is
// gone before reading the position.
type Applier struct {
	opts   ApplierOptions
	spool  *Spool
	store  storage.Store
	flavor string
	filter replay.Filter

	mu         sync.Mutex
	isPromoted bool
	pending    []pendingTxn // read from the feed, not applied yet, oldest first
	applied    binlog.GTIDSet
	lastTime   time.Time // commit time of the last applied transaction
	lastErr    string
	stopped    error // an apply error: the applier stopped
	connected  atomic.Bool
}

// pendingTxn is a transaction handed to the batcher and not yet applied.
type pendingTxn struct {
	gtid      string
	committed time.Time // on the primary: the GTID event's timestamp
}

// ApplyError is a transaction the replica refused: the applier stops (the
// archive goes on) until the daemon is restarted.
type ApplyError = replay.ApplyError

// NewApplier prepares an applier; it checks the replica (ReplicaPreflight)
// each time it connects.
func NewApplier(o ApplierOptions, flavor string, sp *Spool, st storage.Store) *Applier {
	if o.InFlight <= 0 {
		o.InFlight = DefaultInFlight
	}
	return &Applier{opts: o, spool: sp, store: st, flavor: flavor, filter: replay.NewFilter(o.Include, o.Exclude)}
}

// ReplicaPreflight checks the replica before anything is applied.
func ReplicaPreflight(ctx context.Context, o ApplierOptions, sourceFlavor string) (dbconn.ServerInfo, error) {
	db, err := dbconn.Open(ctx, "replica", o.DSN)
	if err != nil {
		return dbconn.ServerInfo{}, err
	}
	defer db.Close()
	si, err := dbconn.Inspect(ctx, db)
	if err != nil {
		return si, dbconn.Explain("replica", o.DSN, err)
	}
	if si.Flavor != sourceFlavor {
		return si, usage.Errorf("replica %s is %s but the source is %s: binvault replays into the same flavor only", o.DSN, si.Flavor, sourceFlavor)
	}
	if !si.LogBin {
		return si, usage.Errorf("replica %s has its binary log off: binvault keeps the applied position in the replica's binlog GTID state; start the replica with log_bin", o.DSN)
	}
	if !si.ReadOnly && !o.AllowWritable {
		return si, usage.Errorf("replica %s has read_only=OFF: others could write to it and make it diverge; SET GLOBAL read_only=ON (and in its config file), or set replica.allow_writable: true", o.DSN)
	}
	g, err := dbconn.ReadGrants(ctx, db)
	if err != nil {
		return si, dbconn.Explain("replica", o.DSN, err)
	}
	user := o.DSN.User
	if !g.HasAny("BINLOG REPLAY", "SUPER") {
		return si, usage.Errorf("replica user %q lacks BINLOG REPLAY: run %s on the replica (row events are replayed with BINLOG statements)", user, g.GrantStatement("<binvault host>", "BINLOG REPLAY"))
	}
	if si.ReadOnly && !g.HasAny("READ_ONLY ADMIN", "SUPER") {
		return si, usage.Errorf("replica user %q cannot write while read_only=ON: run %s on the replica", user, g.GrantStatement("<binvault host>", "READ ONLY ADMIN"))
	}
	var running sql.NullString
	rows, err := db.QueryContext(ctx, "SHOW ALL SLAVES STATUS")
	if err == nil {
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			rows.Scan(ptrs...)
			for i, c := range cols {
				if c == "Slave_SQL_Running" && vals[i].String == "Yes" {
					running = vals[i]
				}
			}
		}
		rows.Close()
	}
	if running.Valid {
		return si, usage.Errorf("replica %s is also replicating natively (Slave_SQL_Running=Yes): run STOP ALL SLAVES on it; two appliers would apply everything twice", o.DSN)
	}
	if si.Flavor == dbconn.MariaDB && !si.GTIDStrictMode {
		o.Log.Warn("replica has gtid_strict_mode=OFF: turn it on so the replica itself refuses a GTID twice (a second guard against double apply)")
	}
	return si, nil
}

// Status is the applier's state for status and metrics.
type ApplierStatus struct {
	Connected bool
	Applied   string
	LastTime  time.Time
	LastError string
	Stopped   bool
	// Lag is how long ago the oldest transaction read and not yet applied
	// was committed on the primary (whole seconds); 0 when the applier has
	// applied everything it has read and waits for more.
	Lag time.Duration
	// Promoted: the replica became the primary; the applier is off.
	Promoted bool
}

// errPromoted ends a session that found the replica promoted.
var errPromoted = errors.New("the replica was promoted")

// promoted reports (and remembers) that the replica was promoted.
func (a *Applier) promoted() bool {
	p, err := ReadPromoted(a.opts.StateDir)
	if err != nil || p == nil {
		return false
	}
	a.mu.Lock()
	was := a.isPromoted
	a.isPromoted = true
	a.pending = nil
	a.mu.Unlock()
	a.connected.Store(false)
	a.opts.Metrics.ReplicaConnected.Set(0)
	if !was {
		a.opts.Log.Warn("the replica was promoted: binvault applies nothing to it any more", "state", p.State, "final_gtid", p.FinalGTID)
	}
	return true
}

// Stopped is why the applier does not apply now (a refused transaction,
// a misconfigured replica), nil while it applies or only reconnects.
func (a *Applier) Stopped() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stopped
}

// Status reports where the applier is.
func (a *Applier) Status() ApplierStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := ApplierStatus{Connected: a.connected.Load(), LastTime: a.lastTime, LastError: a.lastErr, Stopped: a.stopped != nil, Promoted: a.isPromoted}
	if len(a.pending) > 0 {
		st.Lag = max(0, time.Since(a.pending[0].committed))
	}
	if !a.applied.IsZero() {
		st.Applied = a.applied.String()
	}
	return st
}

// TxnsBehind counts the transactions the spool holds beyond the replica,
// by GTID sequence numbers per domain (MariaDB) — exact while a domain's
// sequence numbers have no holes.
func (a *Applier) TxnsBehind() float64 {
	// Cloned under the lock: Committed advances the set in place, and a
	// set read while a new domain is added to it is a concurrent map
	// access (a crash on any /metrics scrape).
	a.mu.Lock()
	applied := a.applied.Clone()
	a.mu.Unlock()
	end, _, ok := a.spool.End()
	if !ok || applied.IsZero() {
		return 0
	}
	endSet, err := binlog.ParseGTIDSet(a.flavor, end.GTIDSet)
	if err != nil {
		return 0
	}
	return float64(endSet.SeqsAhead(applied))
}

// Run applies transactions until ctx ends. Nothing the replica does ends
// it, so nothing the replica does can stop the stream or the archive: a
// replica that is unreachable, misconfigured (read_only=OFF, binlog off,
// replicating natively, privileges) or that refuses a transaction stops
// only the applying; Run reports why (Status) and tries the replica
// again, at a backoff up to RetryMax, until the cause is gone.
func (a *Applier) Run(ctx context.Context) error {
	p := a.opts.Retry
	if p == (retry.Policy{}) {
		p = retry.Policy{Initial: retry.DefaultInitial, Max: RetryMax, Jitter: retry.DefaultJitter}
	}
	b := p.Start()
	for {
		if a.promoted() {
			// The replica is the primary now: never apply to it again.
			<-ctx.Done()
			return nil
		}
		started := time.Now()
		err := a.session(ctx)
		if errors.Is(err, errPromoted) || (ctx.Err() == nil && a.promoted()) {
			continue // a promote ended the session
		}
		a.connected.Store(false)
		a.mu.Lock()
		a.pending = nil
		a.mu.Unlock()
		a.opts.Metrics.ReplicaConnected.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		var ae *ApplyError
		var he *HistoryError
		refused := errors.As(err, &ae) || usage.Is(err) || errors.As(err, &he)
		a.mu.Lock()
		repeat := a.lastErr == err.Error()
		a.lastErr = err.Error()
		if refused {
			a.stopped = err
		}
		a.mu.Unlock()
		if errors.As(err, &ae) && !repeat {
			a.opts.Metrics.ReplicaApplyErrors.Inc()
		}
		if time.Since(started) > stableSession {
			b.Reset()
		}
		msg := "replica applier interrupted; reconnecting"
		if refused {
			msg = "replica applier stopped; archiving continues; binvault tries the replica again"
			if !repeat {
				a.opts.Log.Error(msg, "err", err.Error())
			}
		}
		if b.Wait(ctx, a.opts.Log, msg, "err", err.Error()) != nil {
			return nil
		}
	}
}

// stateFile records the applier's replica connection.
type applierState struct {
	Replica    string `json:"replica"`
	ServerBoot int64  `json:"server_boot"`
	ConnID     uint32 `json:"connection_id"`
}

func (a *Applier) statePath() string { return filepath.Join(a.opts.StateDir, "applier.json") }

// takeOver stops a connection a previous applier left on the replica and
// records ours.
func (a *Applier) takeOver(ctx context.Context, c *replay.Conn) error {
	boot, err := serverBoot(c)
	if err != nil {
		return err
	}
	var old applierState
	if b, err := os.ReadFile(a.statePath()); err == nil && json.Unmarshal(b, &old) == nil &&
		old.Replica == a.opts.DSN.Addr() && abs64(old.ServerBoot-boot) <= 2 && old.ConnID != c.ID() {
		// Same server run: the old connection may still be executing.
		if err := c.Exec(fmt.Sprintf("KILL CONNECTION %d", old.ConnID)); err != nil {
			if !dbconn.IsUnknownThread(err) { // already gone
				return fmt.Errorf("stop the previous applier connection %d: %w", old.ConnID, err)
			}
		}
		deadline := time.Now().Add(predecessorWait)
		for {
			r, err := c.Query(fmt.Sprintf("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %d", old.ConnID))
			if err != nil {
				return err
			}
			n, _ := r.GetInt(0, 0)
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the previous applier connection %d is still running on the replica after %s", old.ConnID, predecessorWait)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		a.opts.Log.Info("stopped the previous applier's connection", "connection_id", old.ConnID)
	}
	b, _ := json.Marshal(applierState{Replica: a.opts.DSN.Addr(), ServerBoot: boot, ConnID: c.ID()})
	return writeJSONAtomic(a.opts.StateDir, a.statePath(), json.RawMessage(b))
}

func serverBoot(c *replay.Conn) (int64, error) {
	r, err := c.Query("SELECT UNIX_TIMESTAMP() - VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME'")
	if err != nil {
		return 0, err
	}
	v, err := r.GetInt(0, 0)
	return v, err
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// position reads the replica's applied GTID position.
func (a *Applier) position(c *replay.Conn) (binlog.GTIDSet, error) {
	q := "SELECT @@GLOBAL.gtid_binlog_pos"
	if a.flavor == dbconn.MySQL {
		q = "SELECT @@GLOBAL.gtid_executed"
	}
	r, err := c.Query(q)
	if err != nil {
		return binlog.GTIDSet{}, err
	}
	s, _ := r.GetString(0, 0)
	return binlog.ParseGTIDSet(a.flavor, strings.ReplaceAll(s, "\n", ""))
}

// promotedPoll is how often a session looks for a promotion's marker: a
// session idle on a dead primary's feed would not notice the kill of its
// connection otherwise.
const promotedPoll = 250 * time.Millisecond

// session is one connection's life: take over, read the position, apply.
func (a *Applier) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(promotedPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if p, err := ReadPromoted(a.opts.StateDir); err == nil && p != nil {
					cancel()
					return
				}
			}
		}
	}()
	if _, err := ReplicaPreflight(ctx, a.opts, a.flavor); err != nil {
		return err
	}
	c, err := replay.Dial(ctx, a.opts.DSN)
	if err != nil {
		return dbconn.Explain("replica", a.opts.DSN, err)
	}
	defer c.Close()
	// Closing the connection unblocks a flush waiting on the network when
	// ctx ends.
	stop := context.AfterFunc(ctx, c.Interrupt)
	defer stop()
	if err := a.takeOver(ctx, c); err != nil {
		return err
	}
	// After takeOver recorded this connection: a promote that wrote its
	// marker before reading applier.json has killed us; one that wrote it
	// after, we see here.
	if a.promoted() {
		return errPromoted
	}
	applied, err := a.position(c)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.applied = applied
	a.mu.Unlock()
	for _, q := range []string{"SET @@session.binlog_annotate_row_events=0"} {
		if err := c.Exec(q); err != nil {
			// Needs BINLOG ADMIN; without it the replica's binlog also logs
			// the base64 text (bigger, not wrong).
			a.opts.Log.Debug("cannot turn off row annotations on the replica", "err", err.Error())
		}
	}
	if a.flavor == dbconn.MariaDB {
		if err := a.disableEnabledEvents(c); err != nil {
			return err
		}
	}
	f, err := NewFeed(ctx, FeedOptions{Spool: a.spool, Store: a.store, Flavor: a.flavor}, applied)
	var he *HistoryError
	if errors.As(err, &he) && he.LostInFork {
		return usage.Errorf("the replica at GTID %q holds transactions a failover lost (%s): the new primary's history (segment %d, from %q) cannot apply on top of them; rebuild the replica from a backup taken after the failover", he.Position, he.Oldest.Fork.Lost, he.Oldest.Seq, he.Oldest.Start.GTIDSet)
	}
	if errors.As(err, &he) {
		return usage.Errorf("the replica is at GTID %q but the oldest history binvault holds after it (segment %d) starts at %q: seed the replica from a backup (or restore) at a position binvault archived, then start again", he.Position, he.Oldest.Seq, he.Oldest.Start.GTIDSet)
	}
	if err != nil {
		return fmt.Errorf("position the replica's feed: %w", err)
	}
	defer f.Close()
	a.connected.Store(true)
	a.opts.Metrics.ReplicaConnected.Set(1)
	a.opts.Log.Info("applying to the replica", "replica", a.opts.DSN.String(), "from", applied.String(), "segment", f.seq)
	mine := applied.Clone()
	m := a.opts.Metrics
	b := replay.New(c, replay.Options{
		Mode:       replay.Replica,
		BatchTxns:  a.opts.BatchTxns,
		BatchBytes: a.opts.BatchBytes,
		InFlight:   a.opts.InFlight,
		Filter:     a.filter,
		Rewrite:    a.rewrite(),
		Skip:       skipper(a.flavor, mine, a.recoveredDDL(c, applied), a.opts.Log),
		Due:        a.due(),
		Committed: func(t replay.Txn) {
			mine.Add(t.GTID)
			a.committed(t)
		},
		Flushed: func(txns int, d time.Duration) {
			m.ReplicaBatchTxns.Observe(float64(txns))
			m.ReplicaBatchSeconds.Observe(d.Seconds())
		},
		Log: a.opts.Log,
	})
	for {
		ev, err := f.Next(ctx, false)
		if errors.Is(err, ErrWouldBlock) {
			// Nothing more right now: send what is batched, then wait.
			if err := b.Flush(); err != nil {
				return err
			}
			// Caught up: whatever stopped the applier is over; what is
			// still pending was skipped (the replica had it).
			a.mu.Lock()
			a.lastErr, a.stopped, a.pending = "", nil, a.pending[:0]
			a.mu.Unlock()
			ev, err = f.Next(ctx, true)
		}
		if err != nil {
			return err
		}
		a.read(ev)
		if err := b.Event(ctx, ev); err != nil {
			return err
		}
	}
}

// read notes a transaction's start as the feed hands it over, for Lag.
func (a *Applier) read(ev binlog.Event) {
	var gtid string
	switch e := ev.Parsed.(type) {
	case *replication.MariadbGTIDEvent:
		if g, ok := binlog.ParseMariaDBGTID(fmt.Sprintf("%d-%d-%d", e.GTID.DomainID, ev.Header.ServerID, e.GTID.SequenceNumber)); ok {
			gtid = g.String()
		}
	case *replication.GTIDEvent:
		gtid = binlog.MySQLGTID(e)
	default:
		return
	}
	a.mu.Lock()
	a.pending = append(a.pending, pendingTxn{gtid: gtid, committed: time.Unix(int64(ev.Header.Timestamp), 0)})
	a.mu.Unlock()
}

// committed records a transaction the replica made durable.
func (a *Applier) committed(t replay.Txn) {
	a.mu.Lock()
	// The pending ones before it were skipped: the replica had them.
	for i, p := range a.pending {
		if p.gtid == t.GTID {
			a.pending = a.pending[i+1:]
			break
		}
	}
	a.applied.Add(t.GTID)
	a.lastTime = time.Unix(int64(t.Time), 0)
	a.lastErr, a.stopped = "", nil
	a.mu.Unlock()
	a.opts.Metrics.ReplicaAppliedTxns.Inc()
}

// skipper skips what the replica already has, and stops at a departure of
// its history: a GTID with the sequence number the replica is at in that
// domain but from another server is another transaction (the replica took
// a write of its own); skipping it would lose the primary's. One departure
// is expected: a DDL the replica was running when it crashed is completed
// by its crash recovery and logged under the replica's own server_id
// (recoveredDDL); the primary's DDL at that sequence number took effect.
func skipper(flavor string, applied binlog.GTIDSet, recoveredDDL map[binlog.MariaDBGTID]bool, log *slog.Logger) func(string, bool) (bool, error) {
	return func(gtid string, ddl bool) (bool, error) {
		if !applied.ContainsGTID(gtid) {
			return false, nil
		}
		if flavor != dbconn.MariaDB {
			return true, nil
		}
		g, ok := binlog.ParseMariaDBGTID(gtid)
		if !ok {
			return true, nil
		}
		have, ok := applied.At(g.Domain)
		if !ok || have.Seq != g.Seq || have == g {
			return true, nil
		}
		if ddl && recoveredDDL[have] {
			log.Warn("the replica completed this DDL in crash recovery and logged it under its own server_id; counting it as applied", "primary_gtid", gtid, "replica_gtid", have.String())
			return true, nil
		}
		return false, usage.Errorf("the replica's history departs from the primary's: it holds GTID %s where the primary has %s (a write made on the replica itself); remove that transaction's effects and its GTID (or rebuild the replica from a backup), then restart", have, gtid)
	}
}

// recoveredDDL finds, among the replica's newest GTIDs, those logged under
// its own server_id as DDL: what crash recovery logs when it completes a
// DDL that was running (atomic DDL, MariaDB 10.6+).
func (a *Applier) recoveredDDL(c *replay.Conn, applied binlog.GTIDSet) map[binlog.MariaDBGTID]bool {
	out := map[binlog.MariaDBGTID]bool{}
	if a.flavor != dbconn.MariaDB {
		return out
	}
	r, err := c.Query("SELECT @@server_id")
	if err != nil {
		return out
	}
	own, _ := r.GetUint(0, 0)
	want := map[binlog.MariaDBGTID]bool{}
	for _, g := range applied.Domains() {
		if uint64(g.Server) == own {
			want[g] = true
		}
	}
	if len(want) == 0 {
		return out
	}
	logs, err := c.Query("SHOW BINARY LOGS")
	if err != nil {
		return out
	}
	// The newest two files are enough: recovery logs at start-up.
	for i := max(0, logs.RowNumber()-2); i < logs.RowNumber(); i++ {
		name, _ := logs.GetString(i, 0)
		ev, err := c.Query("SHOW BINLOG EVENTS IN '" + name + "'")
		if err != nil {
			continue
		}
		for j := 0; j < ev.RowNumber(); j++ {
			typ, _ := ev.GetString(j, 2)
			info, _ := ev.GetString(j, 5)
			if typ != "Gtid" {
				continue
			}
			fields := strings.Fields(info)
			// "GTID 0-1-5" is a standalone group (DDL); "BEGIN GTID ..." is not.
			if len(fields) < 2 || fields[0] != "GTID" {
				continue
			}
			if g, ok := binlog.ParseMariaDBGTID(fields[1]); ok && want[g] {
				out[g] = true
			}
		}
	}
	return out
}

// due makes a delayed replica hold each transaction until it is
// replica.delay old on the primary, counting from the end of its commit
// second (binlog timestamps are whole seconds), so none is applied early.
func (a *Applier) due() func(replay.Txn) time.Time {
	d := a.opts.Delay
	if d <= 0 {
		return nil
	}
	return func(t replay.Txn) time.Time { return time.Unix(int64(t.Time)+1, 0).Add(d) }
}
