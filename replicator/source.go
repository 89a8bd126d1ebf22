package replicator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/metrics"
	"github.com/binvault/binvault/internal/retry"
	"github.com/binvault/binvault/internal/usage"
)

// Defaults of the stream and the spool.
const (
	// DefaultHeartbeat is the primary's heartbeat period asked for; the link
	// is declared dead after three missed heartbeats.
	DefaultHeartbeat = 2 * time.Second
	// spoolWriteBuffer holds a segment's writes until a commit flushes them.
	spoolWriteBuffer = 256 << 10
)

// SourceOptions configure the binlog stream.
type SourceOptions struct {
	// DSN is the primary streamed from at start.
	DSN dbconn.DSN
	// Hosts are the servers that may be the primary (source.dsn's list,
	// DSN among them); with more than one, binvault follows the primary
	// among them (failover.go).
	Hosts []dbconn.DSN
	// FailoverWait is how long a lost primary has to come back writable
	// before binvault looks for another among Hosts.
	FailoverWait time.Duration
	// AcceptLost lets failover continue from the one writable candidate
	// that lacks archived transactions (they are lost); the archive
	// records the fork.
	AcceptLost bool
	ServerID   uint32
	// Label is what binvault reports as its host when it registers as a
	// replica (SHOW SLAVE HOSTS); it tells our own stale registrations
	// apart from another replica that uses the same server_id.
	Label string
	// Heartbeat is the primary's heartbeat period; the link is declared dead
	// after three missed heartbeats.
	Heartbeat time.Duration
	// SemiSync is source.semi_sync: off, spool or store.
	SemiSync string
	// Retry is the reconnect backoff (zero: retry.Default).
	Retry   retry.Policy
	Metrics *metrics.Metrics
	Log     *slog.Logger
}

// Source streams from the primary into a spool.
type Source struct {
	opts  SourceOptions
	spool *Spool
	info  dbconn.ServerInfo

	connected     atomic.Bool
	secondsBehind atomic.Int64
	lastErr       atomic.Value // string
	primary       atomic.Pointer[dbconn.DSN]
	// refusal is why no host could be followed at the last failover
	// attempt, logged once per change.
	refusal string
	// semi counts acknowledgements (nil when semi-sync is off); acks
	// answers the current connection's requests.
	semi *semiSyncStats
	acks atomic.Pointer[acker]
	// restart ends the current connection (the stream starts again).
	restart atomic.Pointer[context.CancelCauseFunc]
}

// Primary is the server streamed from now.
func (s *Source) Primary() dbconn.DSN { return *s.primary.Load() }

// multi reports whether source.dsn lists several hosts to follow.
func (s *Source) multi() bool { return len(s.opts.Hosts) > 1 }

// Connected reports whether the binlog stream is up.
func (s *Source) Connected() bool { return s.connected.Load() }

// SecondsBehind is the newest event's age when it arrived; 0 when caught up.
func (s *Source) SecondsBehind() int64 { return s.secondsBehind.Load() }

// LastError is why the stream last broke ("" before any break).
func (s *Source) LastError() string {
	v, _ := s.lastErr.Load().(string)
	return v
}

// Preflight connects to the primary over SQL and checks everything that
// would otherwise fail later or silently: binlog settings, privileges and a
// server_id collision. Problems the user must fix are usage errors.
func Preflight(ctx context.Context, o SourceOptions) (dbconn.ServerInfo, archive.Source, error) {
	db, err := dbconn.Open(ctx, "source", o.DSN)
	if err != nil {
		return dbconn.ServerInfo{}, archive.Source{}, err
	}
	defer db.Close()
	si, err := dbconn.Inspect(ctx, db)
	if err != nil {
		return si, archive.Source{}, dbconn.Explain("source", o.DSN, err)
	}
	if p := si.SourceProblems(); len(p) > 0 {
		return si, archive.Source{}, usage.Errorf("source %s: %s", o.DSN, p[0])
	}
	if si.Flavor == dbconn.MySQL && si.GTIDMode != "ON" {
		return si, archive.Source{}, usage.Errorf("source %s: gtid_mode is %s: binvault streams by GTID; set gtid_mode=ON and enforce_gtid_consistency=ON", o.DSN, si.GTIDMode)
	}
	if err := checkPrivileges(ctx, db, o); err != nil {
		return si, archive.Source{}, err
	}
	if o.SemiSync != "" && o.SemiSync != SemiSyncOff {
		problems, warnings := si.SemiSyncProblems(o.SemiSync)
		if len(problems) > 0 {
			return si, archive.Source{}, usage.Errorf("source %s: %s", o.DSN, problems[0])
		}
		for _, w := range warnings {
			o.Log.Warn("semi-sync: "+w, "primary", o.DSN.String())
		}
	}
	if si.ServerID == o.ServerID {
		return si, archive.Source{}, usage.Errorf("source.server_id %d is the primary's own server_id: choose an id no server or replica uses", o.ServerID)
	}
	if err := checkServerIDFree(ctx, db, o); err != nil {
		return si, archive.Source{}, err
	}
	var host string
	db.QueryRowContext(ctx, "SELECT @@hostname").Scan(&host)
	return si, archive.Source{Flavor: si.Flavor, Version: si.Version, ServerID: si.ServerID, Hostname: host, Port: o.DSN.Port}, nil
}

func checkPrivileges(ctx context.Context, db *sql.DB, o SourceOptions) error {
	g, err := dbconn.ReadGrants(ctx, db)
	if err != nil {
		return dbconn.Explain("source", o.DSN, err)
	}
	user := o.DSN.User
	if !g.Has("REPLICATION SLAVE") {
		return usage.Errorf("source user %q lacks REPLICATION SLAVE: run %s on the primary", user, g.GrantStatement("<binvault host>", "REPLICATION SLAVE", "REPLICATION CLIENT"))
	}
	// SHOW MASTER STATUS and SHOW BINARY LOGS take SUPER as well.
	if !g.HasAny("REPLICATION CLIENT", "SUPER") {
		return usage.Errorf("source user %q lacks REPLICATION CLIENT (BINLOG MONITOR): run %s on the primary", user, g.GrantStatement("<binvault host>", "REPLICATION CLIENT"))
	}
	return nil
}

// checkServerIDFree refuses a server_id that another live replica uses; the
// primary would otherwise disconnect one of the two, again and again.
// SHOW SLAVE HOSTS needs REPLICATION MASTER ADMIN on MariaDB: without it
// the check is skipped and the dump-time error is the safety net.
func checkServerIDFree(ctx context.Context, db *sql.DB, o SourceOptions) error {
	rows, err := db.QueryContext(ctx, "SHOW SLAVE HOSTS")
	if err != nil {
		o.Log.Debug("cannot list the primary's replicas; skipping the server_id check", "err", err)
		return nil
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil
		}
		var id, host string
		for i, c := range cols {
			switch strings.ToLower(c) {
			case "server_id":
				id = vals[i].String
			case "host":
				host = vals[i].String
			}
		}
		if id == fmt.Sprint(o.ServerID) && host != o.Label {
			return usage.Errorf("source.server_id %d is already used by a replica of the primary (reported host %q): choose another source.server_id", o.ServerID, host)
		}
	}
	return nil
}

// CheckResumable reports, before streaming, a resume position the primary
// has purged: the binlog it needs is gone. (The dump would fail the same
// way, only later and less clearly.)
func CheckResumable(ctx context.Context, o SourceOptions, flavor string, pos binlog.Position) error {
	db, err := dbconn.Open(ctx, "source", o.DSN)
	if err != nil {
		return err
	}
	defer db.Close()
	var oldest string
	q := "SELECT BINLOG_GTID_POS(?, 4)"
	if flavor == dbconn.MySQL {
		q = "SELECT @@GLOBAL.gtid_purged"
	} else {
		rows, err := db.QueryContext(ctx, "SHOW BINARY LOGS")
		if err != nil {
			return dbconn.Explain("source", o.DSN, err)
		}
		var first string
		if rows.Next() {
			cols, _ := rows.Columns()
			vals := make([]any, len(cols))
			vals[0] = &first
			for i := 1; i < len(cols); i++ {
				vals[i] = new(sql.RawBytes)
			}
			rows.Scan(vals...)
		}
		rows.Close()
		if first == "" {
			return nil
		}
		oldest = first
	}
	var state sql.NullString
	var row *sql.Row
	if flavor == dbconn.MySQL {
		row = db.QueryRowContext(ctx, q)
	} else {
		row = db.QueryRowContext(ctx, q, oldest)
	}
	if err := row.Scan(&state); err != nil {
		return dbconn.Explain("source", o.DSN, err)
	}
	if !state.Valid || strings.TrimSpace(state.String) == "" {
		return nil
	}
	need, err := binlog.ParseGTIDSet(flavor, strings.ReplaceAll(state.String, "\n", ""))
	if err != nil {
		return nil // unknown syntax: let the dump decide
	}
	have, err := binlog.ParseGTIDSet(flavor, pos.GTIDSet)
	if err != nil {
		return usage.Wrap(err)
	}
	if !have.Contains(need) {
		return usage.Errorf("binlog purged past %q: the primary %s keeps binlogs only from %q on; take a new backup, then move the spool aside and start with --start-from gtid:<the backup's position>", pos.GTIDSet, o.DSN, need.String())
	}
	return nil
}

// NewSource prepares a stream into spool; info comes from Preflight.
func NewSource(o SourceOptions, info dbconn.ServerInfo, spool *Spool) *Source {
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if len(o.Hosts) == 0 {
		o.Hosts = []dbconn.DSN{o.DSN}
	}
	if len(o.Hosts) > 1 {
		// A lost primary is probed often enough that failover starts
		// within a few seconds of FailoverWait.
		p := o.Retry
		if p == (retry.Policy{}) {
			p = retry.Default
		}
		p.Max = max(time.Second, min(p.Max, o.FailoverWait/4))
		p.Initial = min(p.Initial, p.Max)
		o.Retry = p
	}
	s := &Source{opts: o, spool: spool, info: info}
	if o.SemiSync != "" && o.SemiSync != SemiSyncOff {
		s.semi = &semiSyncStats{mode: o.SemiSync, metrics: o.Metrics}
		o.Metrics.SemiSyncMode.WithLabelValues(o.SemiSync).Set(1)
		// A transaction whose acknowledgement waits behind a later one
		// already received shares that one's fsync.
		spool.SetSyncHint(func(end binlog.Position) bool {
			a := s.acks.Load()
			return a != nil && a.requestedAfter(binlogPos{file: end.File, pos: uint64(end.Pos)})
		})
	}
	d := o.DSN
	s.primary.Store(&d)
	return s
}

// Run streams until ctx ends (then it returns nil). Connection problems are
// retried with backoff for as long as it takes; problems only the user can
// fix (purged binlog, privileges, settings changed) end it with a usage
// error. With several hosts, a primary lost for FailoverWait is replaced
// by the host that is the primary now (failover), and problems of one
// host are no reason to stop.
func (s *Source) Run(ctx context.Context) error {
	m := s.opts.Metrics
	b := s.opts.Retry.Start()
	var lost time.Time // when the stream was lost; zero while it works
	if s.semi != nil {
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		go s.watchSemiSync(wctx)
	}
	for {
		s.connected.Store(false)
		err := s.stream(ctx)
		wasConnected := s.connected.Load()
		m.SourceConnected.Set(0)
		s.connected.Store(false)
		if err != nil {
			s.lastErr.Store(err.Error())
		}
		if ctx.Err() != nil {
			return nil
		}
		if usage.Is(err) && !s.multi() {
			return err
		}
		if aerr := s.spool.Abort(); aerr != nil {
			return fmt.Errorf("spool: %w", aerr)
		}
		// What arrived goes to the store now: the primary may be gone for
		// good, and its last transactions with it everywhere but here.
		if ferr := s.spool.Flush(); ferr != nil {
			return fmt.Errorf("spool: %w", ferr)
		}
		if wasConnected || lost.IsZero() {
			lost = time.Now()
		}
		if wasConnected {
			// The stream worked until now: the first retry comes quickly.
			b.Reset()
		}
		if s.multi() && time.Since(lost) >= s.opts.FailoverWait {
			switched, ferr := s.failover(ctx)
			if ferr != nil {
				return ferr
			}
			if switched {
				b.Reset()
				continue
			}
		}
		m.SourceReconnects.Inc()
		if b.Wait(ctx, s.opts.Log, "binlog stream interrupted; reconnecting", "primary", s.Primary().String(), "err", err.Error()) != nil {
			return nil
		}
	}
}

// failover looks for the primary among the hosts and, when it is another
// one than the lost primary, continues the spool from it. It reports
// whether the stream should start again at once.
func (s *Source) failover(ctx context.Context) (bool, error) {
	end, _, ok := s.spool.End()
	if !ok {
		return false, nil
	}
	held, err := binlog.ParseGTIDSet(s.info.Flavor, end.GTIDSet)
	if err != nil {
		return false, err
	}
	c, err := s.findPrimary(ctx, held)
	if err != nil {
		if msg := err.Error(); msg != s.refusal {
			s.refusal = msg
			s.opts.Log.Error("the primary is lost and no host can replace it yet; binvault keeps looking", "err", msg)
		}
		s.lastErr.Store(err.Error())
		return false, nil
	}
	s.refusal = ""
	old := s.Primary()
	if c.lost != "" {
		if err := s.spool.Fork(c.origin, binlog.Position{GTIDSet: c.pos.String()}, archive.Fork{After: end, Lost: c.lost, Time: time.Now().UTC()}); err != nil {
			return false, fmt.Errorf("spool: %w", err)
		}
		s.opts.Log.Error("FAILOVER LOSING ARCHIVED TRANSACTIONS (--accept-lost-transactions): the new primary lacks them; the archive records a fork and continues from the new primary's position; restores past this point need a backup taken after it, and replicas that applied the lost transactions must be rebuilt",
			"new_primary", c.dsn.String(), "lost", c.lost, "abandoned_end", end.GTIDSet, "continues_from", c.pos.String())
	} else if c.dsn.Addr() == old.Addr() && c.origin.ServerID == s.spool.Source().ServerID {
		return true, nil // the primary came back
	} else if err := s.spool.SwitchSource(c.origin); err != nil {
		return false, fmt.Errorf("spool: %w", err)
	}
	s.info = c.info
	d := c.dsn
	s.primary.Store(&d)
	s.opts.Metrics.SourceFailovers.Inc()
	s.opts.Log.Warn("failover: following the new primary", "old_primary", old.String(), "new_primary", d.String(), "server_id", c.origin.ServerID, "from", end.GTIDSet, "new_primary_at", c.pos.String())
	return true, nil
}

// stream runs one connection: from the spool's end to an error.
func (s *Source) stream(ctx context.Context) error {
	o := s.opts
	o.DSN = s.Primary()
	if s.multi() {
		// With several hosts, only the writable primary is streamed from:
		// a lost primary that comes back demoted (read_only, replicating)
		// is passed over, and failover finds the new one.
		pctx, cancel := context.WithTimeout(ctx, o.DSN.Timeout+5*time.Second)
		c, err := s.probe(pctx, o.DSN)
		cancel()
		if err != nil {
			return err
		}
		if why := c.notPrimary(); why != "" {
			return &errNotPrimary{host: o.DSN, reason: why}
		}
	}
	pos, _, ok := s.spool.End()
	if !ok {
		return errors.New("spool has no start position")
	}
	set, err := binlog.ParseGTIDSet(s.info.Flavor, pos.GTIDSet)
	if err != nil {
		return usage.Wrap(err)
	}
	tlsCfg, err := o.DSN.TLSConfig()
	if err != nil {
		return err
	}
	if o.DSN.TLSMode == "preferred" {
		tlsCfg = nil // go-mysql has no "preferred": stay plain, as the SQL driver does without server TLS
	}
	var acks *acker
	if s.semi != nil {
		acks = newAcker(s.semi.mode, s.spool, s.info.ServerID, s.semi, o.Log)
	}
	cfg := replication.BinlogSyncerConfig{
		ServerID:                       o.ServerID,
		Flavor:                         s.info.Flavor,
		Host:                           o.DSN.Host,
		Port:                           uint16(o.DSN.Port),
		User:                           o.DSN.User,
		Password:                       o.DSN.Password,
		Localhost:                      o.Label,
		TLSConfig:                      tlsCfg,
		HeartbeatPeriod:                o.Heartbeat,
		ReadTimeout:                    3*o.Heartbeat + 5*time.Second,
		DisableRetrySync:               true,
		VerifyChecksum:                 true,
		DiscardGTIDSet:                 true,
		EventCacheCount:                1024,
		Logger:                         slog.New(slog.DiscardHandler),
		RowsEventDecodeFunc:            func(e *replication.RowsEvent, data []byte) error { _, err := e.DecodeHeader(data); return err },
		TableMapOptionalMetaDecodeFunc: func([]byte) error { return nil },
	}
	if acks != nil {
		cfg.SemiSyncEnabled, cfg.Option = true, acks.install
	}
	syncer := replication.NewBinlogSyncer(cfg)
	defer syncer.Close()
	streamer, err := syncer.StartSyncGTID(set.Raw())
	if err != nil {
		return s.explain(err, pos)
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ctx = sctx
	s.restart.Store(&cancel)
	defer s.restart.Store(nil)
	if acks != nil {
		s.acks.Store(acks)
		defer s.acks.Store(nil)
		go func() {
			if err := acks.run(sctx); err != nil {
				cancel(err)
			}
		}()
	}
	o.Log.Info("streaming from the primary", "primary", o.DSN.String(), "from", pos.String())
	m := o.Metrics
	m.SourceConnected.Set(1)
	s.connected.Store(true)
	for {
		ev, err := s.next(ctx, streamer)
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				err = cause // the acknowledgements failed, or a restart was asked for
			}
			return s.explain(err, pos)
		}
		if ev == nil {
			continue // flush deadline: the open segment was closed
		}
		m.SourceEvents.Inc()
		m.SourceBytes.Add(float64(len(ev.RawData)))
		h := ev.Header
		if h.EventType == replication.HEARTBEAT_EVENT || h.EventType == replication.HEARTBEAT_LOG_EVENT_V2 {
			m.SourceSecondsBehind.Set(0)
			s.secondsBehind.Store(0)
			continue
		}
		if h.Timestamp != 0 && h.Flags&replication.LOG_EVENT_ARTIFICIAL_F == 0 {
			behind := max(0, time.Now().Unix()-int64(h.Timestamp))
			m.SourceSecondsBehind.Set(float64(behind))
			s.secondsBehind.Store(behind)
		}
		bev := binlog.Event{Header: binlog.ParseHeader(ev.RawData), Raw: ev.RawData, Parsed: ev.Event}
		before := s.spool.txnCount()
		if err := s.spool.Append(bev); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if n := s.spool.txnCount() - before; n > 0 {
			m.SourceTransactions.Add(float64(n))
			if acks != nil {
				if acks.mode == SemiSyncSpool {
					end, _, _ := s.spool.End()
					acks.madeDurable(binlogPos{file: end.File, pos: uint64(end.Pos)})
				} else {
					acks.poke() // a request may wait for this transaction's segment
				}
			}
		}
	}
}

// next waits for an event, but no later than the open segment's flush
// deadline, when it closes the segment and returns nil.
func (s *Source) next(ctx context.Context, st *replication.BinlogStreamer) (*replication.BinlogEvent, error) {
	deadline := s.spool.FlushDeadline()
	if deadline.IsZero() {
		return st.GetEvent(ctx)
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	ev, err := st.GetEvent(dctx)
	cancel()
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, s.spool.Tick()
	}
	return ev, err
}

// explain turns stream errors into messages; the ones only the user can fix
// become usage errors so the daemon stops instead of retrying forever.
func (s *Source) explain(err error, pos binlog.Position) error {
	code, msg, isServer := dbconn.ServerError(err)
	d := s.Primary()
	switch {
	case dbconn.IsBinlogPurged(err):
		return usage.Errorf("binlog purged past %s: the primary %s no longer holds the binlog binvault must resume from; take a new backup, then move the spool aside and start with --start-from gtid:<the backup's position> (primary said: %s)", pos.GTIDSet, d, msg)
	case dbconn.IsServerIDTaken(err):
		// Without this case the daemon and the other replica kick each
		// other off the primary forever. A stale dump thread of our own
		// (after a crash) is the dropped one, never us, so this always
		// means another consumer.
		return usage.Errorf("source.server_id %d is used by another replica of %s: choose another source.server_id (primary said: %s)", s.opts.ServerID, d, msg)
	case dbconn.IsAccessDenied(err):
		return usage.Errorf("source %s: access denied for user %q: check the user and password in source.dsn", d, d.User)
	case dbconn.IsMissingPrivilege(err):
		return usage.Errorf("source user %q lacks a privilege the binlog dump needs: GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '%s'@'<binvault host>' (primary said: %s)", d.User, d.User, msg)
	case isServer:
		return fmt.Errorf("primary %s: error %d: %s", d, code, msg)
	}
	return fmt.Errorf("primary %s: %w", d, err)
}
