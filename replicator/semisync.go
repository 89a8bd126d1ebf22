package replicator

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/metrics"
)

// Semi-synchronous replication modes (source.semi_sync): when binvault
// acknowledges a transaction the primary waits for.
const (
	SemiSyncOff   = "off"
	SemiSyncSpool = "spool" // once fsync'd in the spool
	SemiSyncStore = "store" // once its segment is durable in the store
)

// How binvault acknowledges only what is durable.
//
// go-mysql's BinlogSyncer answers an event the primary flagged for
// acknowledgement right after handing it over, before it is durable
// anywhere. binvault leaves go-mysql as it is and puts a gate between its
// packet layer and the network: BinlogSyncerConfig.Option hands over the
// connection after the handshake (TLS included) and before the dump, and
// the gate takes the connection's place. Every packet passes except
// acknowledgements (payload 0xEF, position, file name), which the gate
// records as requests instead of sending. go-mysql still believes it
// answered and resets its sequence number as the primary does after a
// flagged event (net_clear, then pkt_nr++), so its reading stays in step.
//
// binvault's own acknowledgement goes out through the gate once the
// transaction is durable: sequence number 0 (the primary's ack receiver
// clears its sequence before each read), written from another goroutine
// than go-mysql's reader (TCP and TLS connections take one writer beside
// one reader). The primary treats acknowledgements as cumulative (a reply
// for a position releases every commit waiting at or before it), so one
// reply covers every request up to the durable point.

// semiSyncIndicator starts a semi-sync packet: the primary's header of a
// flagged event, and a replica's acknowledgement.
const semiSyncIndicator = 0xEF

// binlogPos is a place in one server's binlog.
type binlogPos struct {
	file string
	pos  uint64
}

func (p binlogPos) String() string { return fmt.Sprintf("%s:%d", p.file, p.pos) }

// cmp orders positions of one server's binlog: by the file's number (the
// digits after the last dot, which grow past six digits), then offset.
func (p binlogPos) cmp(q binlogPos) int {
	if p.file != q.file {
		a, b := fileIndex(p.file), fileIndex(q.file)
		switch {
		case a >= 0 && b >= 0 && a != b:
			if a < b {
				return -1
			}
			return 1
		case p.file < q.file:
			return -1
		default:
			return 1
		}
	}
	switch {
	case p.pos < q.pos:
		return -1
	case p.pos > q.pos:
		return 1
	}
	return 0
}

func fileIndex(name string) int64 {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return -1
	}
	n, err := strconv.ParseInt(name[i+1:], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// ackGate stands between go-mysql's packet layer and the connection.
type ackGate struct {
	net.Conn
	acks *acker
	mu   sync.Mutex // one writer at a time
}

// Write passes go-mysql's packets on, except its acknowledgements, which
// become requests (one packet per call: WritePacket writes header and
// payload at once).
func (g *ackGate) Write(b []byte) (int, error) {
	if len(b) >= 4+1+8 && b[4] == semiSyncIndicator {
		g.acks.request(binlogPos{file: string(b[13:]), pos: binary.LittleEndian.Uint64(b[5:13])})
		return len(b), nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.Conn.Write(b)
}

// ackPacket is a replica's acknowledgement of everything up to p.
func ackPacket(p binlogPos) []byte {
	n := 1 + 8 + len(p.file)
	b := make([]byte, 4+n)
	b[0], b[1], b[2], b[3] = byte(n), byte(n>>8), byte(n>>16), 0
	b[4] = semiSyncIndicator
	binary.LittleEndian.PutUint64(b[5:13], p.pos)
	copy(b[13:], p.file)
	return b
}

// send writes binvault's acknowledgement of everything up to p.
func (g *ackGate) send(p binlogPos) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := g.Conn.Write(ackPacket(p))
	return err
}

// acker answers one connection's acknowledgement requests once the
// requested transactions are durable.
type acker struct {
	mode    string
	gate    *ackGate
	stats   *semiSyncStats
	spool   *Spool
	server  uint32 // the primary's server_id: store positions name its binlog
	log     *slog.Logger
	sendMu  sync.Mutex // held by answer
	mu      sync.Mutex
	err     error        // an answer that failed (the connection did)
	pending []ackRequest // in stream order
	durable binlogPos
	hasDur  bool
	wake    chan struct{}
}

type ackRequest struct {
	at    binlogPos
	since time.Time
}

func newAcker(mode string, spool *Spool, server uint32, stats *semiSyncStats, log *slog.Logger) *acker {
	return &acker{mode: mode, spool: spool, server: server, stats: stats, log: log, wake: make(chan struct{}, 1)}
}

// install is BinlogSyncerConfig.Option: the gate takes the connection's place.
func (a *acker) install(c *client.Conn) error {
	a.gate = &ackGate{Conn: c.Conn.Conn, acks: a}
	c.Conn.Conn = a.gate
	return nil
}

func (a *acker) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *acker) request(p binlogPos) {
	a.mu.Lock()
	a.pending = append(a.pending, ackRequest{at: p, since: time.Now()})
	a.stats.setPending(len(a.pending))
	a.mu.Unlock()
	a.settle()
}

// settle answers at once what is answerable (in spool mode: the
// transaction may be durable already) and wakes the run loop for the
// rest, without a goroutine hop on the way to the primary.
func (a *acker) settle() {
	if a.mode == SemiSyncSpool {
		if err := a.answer(); err != nil {
			a.fail(err)
		}
	}
	a.poke()
}

func (a *acker) fail(err error) {
	a.mu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.mu.Unlock()
}

// requestedAfter reports whether a request for a transaction after p
// has arrived: that transaction is received and on its way to the spool.
func (a *acker) requestedAfter(p binlogPos) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := len(a.pending)
	return n > 0 && a.pending[n-1].at.cmp(p) > 0
}

// madeDurable records that the primary's binlog up to p is durable where
// the mode says.
func (a *acker) madeDurable(p binlogPos) {
	if p.file == "" {
		return
	}
	a.mu.Lock()
	if !a.hasDur || a.durable.cmp(p) < 0 {
		a.durable, a.hasDur = p, true
	}
	a.mu.Unlock()
	a.settle()
}

// stored is the archiver's report of a segment in the store.
func (a *acker) stored(src uint32, end binlog.Position) {
	if a.mode == SemiSyncStore && src == a.server {
		a.madeDurable(binlogPos{file: end.File, pos: uint64(end.Pos)})
	}
}

// run answers requests until ctx ends or the connection fails.
func (a *acker) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.wake:
		}
		a.mu.Lock()
		err := a.err
		a.mu.Unlock()
		if err != nil {
			return err
		}
		if err := a.answer(); err != nil {
			return err
		}
		if a.mode == SemiSyncStore {
			if err := a.closeForRequests(); err != nil {
				return err
			}
		}
	}
}

// answer acknowledges the newest request at or before the durable point.
func (a *acker) answer() error {
	// One answer at a time, so acknowledgements leave in order.
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	a.mu.Lock()
	n := 0
	for n < len(a.pending) && a.hasDur && a.pending[n].at.cmp(a.durable) <= 0 {
		n++
	}
	if n == 0 {
		a.mu.Unlock()
		return nil
	}
	done := append([]ackRequest(nil), a.pending[:n]...)
	a.pending = a.pending[n:]
	a.stats.setPending(len(a.pending))
	a.mu.Unlock()
	if err := a.gate.send(done[n-1].at); err != nil {
		return fmt.Errorf("semi-sync acknowledgement: %w", err)
	}
	a.stats.acknowledged(done)
	return nil
}

// closeForRequests closes the open segment when a request waits for a
// transaction it holds and no closed segment is still on its way to the
// store: the commit waits for one upload, and transactions arriving
// meanwhile go together in the next segment.
func (a *acker) closeForRequests() error {
	a.mu.Lock()
	var oldest binlogPos
	waiting := len(a.pending) > 0
	if waiting {
		oldest = a.pending[0].at
	}
	a.mu.Unlock()
	if !waiting || a.spool.Unarchived() {
		return nil
	}
	end, _, ok := a.spool.End()
	if !ok || end.File == "" || (binlogPos{file: end.File, pos: uint64(end.Pos)}).cmp(oldest) < 0 {
		return nil // the requested transaction is not whole in the spool yet
	}
	return a.spool.CloseNow()
}

// semiSyncStats are the acknowledgements across connections.
type semiSyncStats struct {
	mode    string
	metrics *metrics.Metrics
	acks    atomic.Int64 // acknowledgement packets sent
	txns    atomic.Int64 // requests they answered
	pending atomic.Int64
	last    atomic.Int64 // receipt to acknowledgement of the last request answered (ns)

	mu      sync.Mutex
	primary PrimarySemiSync
}

func (s *semiSyncStats) setPending(n int) {
	s.pending.Store(int64(n))
	s.metrics.SemiSyncPending.Set(float64(n))
}

func (s *semiSyncStats) acknowledged(done []ackRequest) {
	now := time.Now()
	s.acks.Add(1)
	s.txns.Add(int64(len(done)))
	m := s.metrics
	m.SemiSyncAcks.Inc()
	for _, r := range done {
		m.SemiSyncAckSeconds.Observe(now.Sub(r.since).Seconds())
	}
	s.last.Store(int64(now.Sub(done[len(done)-1].since)))
}

// PrimarySemiSync is what the primary says of its semi-synchronous
// replication (SHOW GLOBAL STATUS), read every second.
type PrimarySemiSync struct {
	Checked time.Time `json:"checked"`
	// Enabled: rpl_semi_sync_master_enabled.
	Enabled bool `json:"enabled"`
	// Active: Rpl_semi_sync_master_status; OFF while the primary commits
	// without waiting (fallen back after rpl_semi_sync_master_timeout).
	Active  bool  `json:"active"`
	Clients int64 `json:"clients"`
	// Fallbacks and UnackedCommits count what the primary reported
	// since binvault watches it (Rpl_semi_sync_master_no_times and
	// Rpl_semi_sync_master_no_tx).
	Fallbacks      int64     `json:"fallbacks"`
	UnackedCommits int64     `json:"unacknowledged_commits"`
	LastFallback   time.Time `json:"last_fallback,omitempty"`
	Error          string    `json:"error,omitempty"`
}

// SemiSyncStatus is binvault's side of semi-synchronous replication.
type SemiSyncStatus struct {
	Mode string `json:"mode"`
	// Acks is how many acknowledgements binvault sent; Transactions how
	// many of the primary's requests they answered.
	Acks         int64 `json:"acks"`
	Transactions int64 `json:"transactions"`
	// Pending requests wait for their transaction to be durable.
	Pending int64 `json:"pending"`
	// LastAckSeconds is the last answered request's wait, from receipt.
	LastAckSeconds float64         `json:"last_ack_seconds"`
	Primary        PrimarySemiSync `json:"primary"`
}

// SemiSync reports the acknowledgements and the primary's view; the zero
// value (Mode "") when semi-sync is off.
func (s *Source) SemiSync() SemiSyncStatus {
	st := s.semi
	if st == nil {
		return SemiSyncStatus{}
	}
	st.mu.Lock()
	p := st.primary
	st.mu.Unlock()
	return SemiSyncStatus{Mode: st.mode, Acks: st.acks.Load(), Transactions: st.txns.Load(), Pending: st.pending.Load(),
		LastAckSeconds: time.Duration(st.last.Load()).Seconds(), Primary: p}
}

// Stored tells the source that the archiver stored seg (semi-sync store
// mode acknowledges then).
func (s *Source) Stored(seg binlog.Position, src uint32) {
	if a := s.acks.Load(); a != nil {
		a.stored(src, seg)
	}
}

// SemiSyncProblem is why the primary does not wait for binvault now ("":
// it does, or semi-sync is off, or nothing is known yet).
func (s *Source) SemiSyncProblem() string {
	st := s.SemiSync()
	p := st.Primary
	switch {
	case st.Mode == "" || p.Checked.IsZero() || p.Error != "" || !s.Connected():
		return ""
	case !p.Enabled:
		return "semi-sync: the primary has rpl_semi_sync_master_enabled=OFF, so commits do not wait for binvault: SET GLOBAL rpl_semi_sync_master_enabled=ON on it"
	case p.Clients == 0:
		return "semi-sync: the primary counts no semi-sync replica, so commits do not wait for binvault (binvault connects again to register)"
	case !p.Active:
		return "semi-sync: the primary fell back to asynchronous replication (Rpl_semi_sync_master_status=OFF): commits do not wait for binvault until it has caught up"
	}
	return ""
}

// watchSemiSync reads the primary's semi-sync status every second.
func (s *Source) watchSemiSync(ctx context.Context) {
	var (
		w      *primaryWatch
		addr   string
		tick   = time.NewTicker(time.Second)
		logged string
		// unregistered counts readings in a row where the primary waits
		// for semi-sync replicas but counts none while binvault streams.
		unregistered int
	)
	defer tick.Stop()
	defer func() {
		if w != nil {
			w.close()
		}
	}()
	for {
		d := s.Primary()
		if w == nil || addr != d.Addr() {
			if w != nil {
				w.close()
			}
			w, addr = newPrimaryWatch(d), d.Addr()
		}
		p, err := w.read(ctx)
		st := s.semi
		st.mu.Lock()
		prev := st.primary
		if err != nil {
			prev.Error = err.Error()
			prev.Checked = time.Now()
			st.primary = prev
		} else {
			p.Fallbacks += prev.Fallbacks
			p.UnackedCommits += prev.UnackedCommits
			p.LastFallback = prev.LastFallback
			if w.fellBack > 0 {
				p.LastFallback = time.Now().UTC()
			}
			st.primary = p
		}
		st.mu.Unlock()
		if err == nil {
			m := s.opts.Metrics
			m.SemiSyncPrimaryActive.Set(b2f(p.Active && p.Enabled))
			m.SemiSyncPrimaryClients.Set(float64(p.Clients))
			m.SemiSyncFallbacks.Add(float64(w.fellBack))
			m.SemiSyncUnacked.Add(float64(w.unacked))
			if w.fellBack > 0 {
				s.opts.Log.Warn("semi-sync: the primary switched to asynchronous commits (Rpl_semi_sync_master_no_times grew): a commit waited longer than rpl_semi_sync_master_timeout for an acknowledgement, or semi-sync was turned off", "primary", d.String(), "times", w.fellBack, "active_now", p.Active)
			}
		}
		// A primary that had semi-sync off when binvault connected never
		// counted binvault as a semi-sync replica (go-mysql registers only
		// then): once it has semi-sync on, connect again.
		if err == nil && p.Enabled && p.Clients == 0 && s.Connected() {
			unregistered++
		} else {
			unregistered = 0
		}
		if unregistered == 3 {
			if r := s.restart.Load(); r != nil {
				s.opts.Log.Warn("semi-sync: the primary does not count binvault as a semi-sync replica (it had semi-sync off when binvault connected); connecting again", "primary", d.String())
				(*r)(errReregister)
			}
			unregistered = 0
		}
		if msg := s.SemiSyncProblem(); msg != logged {
			if msg != "" {
				s.opts.Log.Warn(msg, "primary", d.String())
			} else if logged != "" {
				s.opts.Log.Info("semi-sync: the primary waits for binvault's acknowledgements again", "primary", d.String())
			}
			logged = msg
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var errReregister = errors.New("connecting again to register as a semi-sync replica")

var errNoSemiSyncStatus = errors.New("the primary reports no semi-sync status (Rpl_semi_sync_master_status)")

// primaryWatch reads one primary's semi-sync status over SQL (no
// privilege needed), keeping its counters' last values to report what
// changed.
type primaryWatch struct {
	dsn               dbconn.DSN
	db                *sql.DB
	seen              bool
	noTimes, noTx     int64
	fellBack, unacked int64 // since the read before
}

func newPrimaryWatch(d dbconn.DSN) *primaryWatch { return &primaryWatch{dsn: d} }

func (w *primaryWatch) close() {
	if w.db != nil {
		w.db.Close()
	}
}

func (w *primaryWatch) read(ctx context.Context) (PrimarySemiSync, error) {
	w.fellBack, w.unacked = 0, 0
	if w.db == nil {
		db, err := dbconn.Open(ctx, "source", w.dsn)
		if err != nil {
			return PrimarySemiSync{}, err
		}
		w.db = db
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	vals := map[string]string{}
	for _, q := range []string{
		// MySQL 8.0.26 renamed master to source in these names.
		"SHOW GLOBAL VARIABLES WHERE Variable_name IN ('rpl_semi_sync_master_enabled','rpl_semi_sync_source_enabled')",
		"SHOW GLOBAL STATUS WHERE Variable_name LIKE 'Rpl_semi_sync_master_%' OR Variable_name LIKE 'Rpl_semi_sync_source_%'",
	} {
		rows, err := w.db.QueryContext(qctx, q)
		if err != nil {
			return PrimarySemiSync{}, err
		}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				rows.Close()
				return PrimarySemiSync{}, err
			}
			vals[strings.Replace(strings.ToLower(k), "source", "master", 1)] = v
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return PrimarySemiSync{}, err
		}
	}
	status, ok := vals["rpl_semi_sync_master_status"]
	if !ok {
		return PrimarySemiSync{}, errNoSemiSyncStatus
	}
	num := func(k string) int64 {
		n, _ := strconv.ParseInt(vals[k], 10, 64)
		return n
	}
	p := PrimarySemiSync{Checked: time.Now().UTC(), Enabled: vals["rpl_semi_sync_master_enabled"] == "ON", Active: status == "ON",
		Clients: num("rpl_semi_sync_master_clients")}
	noTimes, noTx := num("rpl_semi_sync_master_no_times"), num("rpl_semi_sync_master_no_tx")
	if w.seen {
		// Counters only grow, except across a restart of the primary.
		w.fellBack, w.unacked = max(0, noTimes-w.noTimes), max(0, noTx-w.noTx)
	}
	w.seen, w.noTimes, w.noTx = true, noTimes, noTx
	p.Fallbacks, p.UnackedCommits = w.fellBack, w.unacked
	return p, nil
}
