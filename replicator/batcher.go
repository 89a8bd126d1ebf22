package replicator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/usage"
)

// batcher turns source transactions into statements and sends many
// transactions per round trip. Each source transaction stays its own
// replica transaction, with its own GTID; the statement that ends it
// (COMMIT, or the DDL itself) tells, by its answer, that it is durable.
type batcher struct {
	a       *Applier
	c       *applyConn
	sess    *session
	applied binlog.GTIDSet

	refs  []stmtRef // one per statement in the pending packet
	txns  int       // transactions ended in the pending packet
	cur   *txnState
	grp   binlog.Grouper
	colls map[uint32][2]string // collation id → charset, collation (lazy)
}

type stmtRef struct {
	t    *txnState
	end  bool
	desc string
}

type tableMap struct {
	name     string
	raw      []byte
	included bool
}

type txnState struct {
	gtid       string
	time       uint32
	skip       bool
	standalone bool // no BEGIN: the first query ends it
	begun      bool
	tables     map[uint64]tableMap
	chunk      [][]byte
	chunkBytes int
	inChunk    map[uint64]bool
	desc       []string // what the pending BINLOG chunk holds, for error messages
}

func (b *batcher) run(ctx context.Context, f *feed) error {
	for {
		ev, err := f.next(ctx, false)
		if errors.Is(err, errWouldBlock) {
			if err := b.flush(); err != nil {
				return err
			}
			ev, err = f.next(ctx, true)
		}
		if err != nil {
			return err
		}
		if err := b.event(ctx, ev); err != nil {
			return err
		}
		stmts, size := b.c.pending()
		if b.txns >= b.a.opts.BatchTxns || size >= b.a.opts.BatchBytes || stmts >= 4096 {
			if err := b.flush(); err != nil {
				return err
			}
		}
	}
}

func (b *batcher) add(stmt []byte, desc string) {
	b.c.add(stmt)
	b.refs = append(b.refs, stmtRef{t: b.cur, desc: desc})
}

func (b *batcher) addString(stmt string) { b.add([]byte(stmt), shorten(stmt)) }

// end marks the last statement added as the one that completes b.cur.
func (b *batcher) end() {
	b.refs[len(b.refs)-1].end = true
	b.txns++
	b.cur = nil
}

func (b *batcher) event(ctx context.Context, ev binlog.Event) error {
	if ev.Header.Type == replication.FORMAT_DESCRIPTION_EVENT {
		if !bytes.Equal(b.sess.fde, ev.Raw) {
			// Each connection needs the format description before any row
			// event (else error 1609), and again when it changes.
			b.cur = nil
			b.add(binlogStatement([][]byte{ev.Raw}), "BINLOG (format description)")
			b.sess.fde = append([]byte(nil), ev.Raw...)
		}
		return nil
	}
	role, err := b.grp.Feed(ev)
	if err != nil {
		return err
	}
	switch role {
	case binlog.Outside:
		return nil
	case binlog.Begin:
		return b.begin(ctx, ev)
	}
	t := b.cur
	if t == nil || t.skip {
		if role == binlog.End {
			b.grp.Txn()
			b.cur = nil
		}
		return nil
	}
	if role == binlog.End {
		defer b.grp.Txn()
	}
	switch e := ev.Parsed.(type) {
	case *replication.TableMapEvent:
		id := e.TableID
		tm := tableMap{name: string(e.Schema) + "." + string(e.Table), raw: ev.Raw, included: b.a.filter.table(string(e.Schema), string(e.Table))}
		t.tables[id] = tm
		if tm.included {
			// In stream order: each statement's table maps precede its
			// rows, and the server forgets them at the statement's end.
			t.chunk = append(t.chunk, tm.raw)
			t.chunkBytes += len(tm.raw)
			t.inChunk[id] = true
			t.desc = append(t.desc, tm.name)
		}
		return nil
	case *replication.RowsEvent:
		tm, ok := t.tables[e.TableID]
		if !ok {
			return fmt.Errorf("transaction %s: rows event for table id %d without a table map", t.gtid, e.TableID)
		}
		if !tm.included {
			return nil
		}
		if !t.inChunk[e.TableID] {
			// A statement split across BINLOG statements: each piece needs
			// the table map of its rows, or the server skips them silently.
			t.chunk = append(t.chunk, tm.raw)
			t.chunkBytes += len(tm.raw)
			t.inChunk[e.TableID] = true
		}
		t.chunk = append(t.chunk, ev.Raw)
		t.chunkBytes += len(ev.Raw)
		if e.Flags&replication.RowsEventStmtEndFlag != 0 {
			clear(t.inChunk)
		}
		if t.chunkBytes >= b.a.opts.BatchBytes/2 {
			b.flushChunk()
		}
		return nil
	case *replication.XIDEvent:
		b.flushChunk()
		b.addString("COMMIT")
		b.end()
		return nil
	case *replication.QueryEvent:
		return b.query(ev, e, role)
	case *replication.IntVarEvent:
		s, err := intVarStatement(e)
		if err != nil {
			return err
		}
		b.addString(s)
		return nil
	}
	switch ev.Header.Type {
	case replication.RAND_EVENT:
		s, err := randStatement(ev.Raw[binlog.HeaderSize : len(ev.Raw)-4])
		if err != nil {
			return err
		}
		b.addString(s)
		return nil
	case replication.USER_VAR_EVENT:
		s, err := userVarStatement(ev.Raw[binlog.HeaderSize:len(ev.Raw)-4], b.collation)
		if err != nil {
			return err
		}
		b.addString(s)
		return nil
	case replication.MARIADB_ANNOTATE_ROWS_EVENT:
		return nil
	}
	return usage.Errorf("transaction %s holds a %s event, which binvault cannot replay yet; the archive keeps it, the replica stops here", t.gtid, ev.Header.Type)
}

func (b *batcher) begin(ctx context.Context, ev binlog.Event) error {
	t := &txnState{time: ev.Header.Timestamp, tables: map[uint64]tableMap{}, inChunk: map[uint64]bool{}}
	b.cur = t
	var setGTID []string
	switch e := ev.Parsed.(type) {
	case *replication.MariadbGTIDEvent:
		t.gtid = fmt.Sprintf("%d-%d-%d", e.GTID.DomainID, ev.Header.ServerID, e.GTID.SequenceNumber)
		t.standalone = e.Flags&replication.BINLOG_MARIADB_FL_STANDALONE != 0
		// Domain and server in one SET, the sequence number in another:
		// in one statement the strict-mode check would use the old domain.
		setGTID = []string{
			fmt.Sprintf("SET @@session.gtid_domain_id=%d, @@session.server_id=%d", e.GTID.DomainID, ev.Header.ServerID),
			fmt.Sprintf("SET @@session.gtid_seq_no=%d", e.GTID.SequenceNumber),
		}
	case *replication.GTIDEvent:
		t.standalone = true
		if ev.Header.Type == replication.GTID_EVENT {
			t.gtid = mysqlGTIDString(e)
			setGTID = []string{fmt.Sprintf("SET @@SESSION.GTID_NEXT='%s'", t.gtid)}
		} else {
			setGTID = []string{"SET @@SESSION.GTID_NEXT='ANONYMOUS'"}
		}
	default:
		return fmt.Errorf("unexpected transaction start %s", ev.Header.Type)
	}
	if t.gtid != "" && b.applied.ContainsGTID(t.gtid) {
		t.skip = true
		return nil
	}
	if d := b.a.opts.Delay; d > 0 {
		// The event's timestamp is in whole seconds: count from the end
		// of that second, so that no transaction is applied before it is
		// d old.
		due := time.Unix(int64(t.time)+1, 0).Add(d)
		if wait := time.Until(due); wait > 0 {
			if err := b.flush(); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
	}
	for _, s := range setGTID {
		b.addString(s)
	}
	if !t.standalone {
		// The replica's binlog gets the primary's timestamps (a statement
		// group sets its own, with microseconds).
		b.addString(fmt.Sprintf("SET TIMESTAMP=%d", t.time))
	}
	if _, mariadb := ev.Parsed.(*replication.MariadbGTIDEvent); mariadb && !t.standalone {
		// MariaDB logs no BEGIN: its GTID event opens the group. Without
		// BEGIN each rows statement would commit alone, under its own GTID.
		t.begun = true
		b.addString("BEGIN")
	}
	return nil
}

func (b *batcher) query(ev binlog.Event, q *replication.QueryEvent, role binlog.Role) error {
	t := b.cur
	text := strings.TrimSpace(string(q.Query))
	switch strings.ToUpper(text) {
	case "BEGIN":
		if !t.begun {
			t.begun = true
			b.addString("BEGIN")
		}
		return nil
	case "COMMIT", "ROLLBACK":
		b.flushChunk()
		b.addString(strings.ToUpper(text))
		b.end()
		return nil
	}
	b.flushChunk()
	if !b.a.filter.database(string(q.Schema)) {
		if role == binlog.End {
			// Filtered out, yet the transaction must end here: a statement
			// that neither writes nor logs anything.
			b.addString("DO 0")
			b.end()
		}
		return nil
	}
	setup, err := b.sess.querySetup(replication.EventHeader{Timestamp: ev.Header.Timestamp, Flags: ev.Header.Flags}, q)
	if err != nil {
		return fmt.Errorf("transaction %s: %w", t.gtid, err)
	}
	for _, s := range setup {
		b.addString(s)
	}
	b.add(q.Query, shorten(text))
	if role == binlog.End {
		b.end()
	}
	return nil
}

// flushChunk turns the rows collected so far into one BINLOG statement. A
// chunk always carries the table maps of its rows (a rows event without
// its table map in the same statement is silently skipped by the server).
func (b *batcher) flushChunk() {
	t := b.cur
	if t == nil || len(t.chunk) == 0 {
		return
	}
	b.add(binlogStatement(t.chunk), "BINLOG (rows of "+strings.Join(t.desc, ", ")+")")
	t.chunk, t.chunkBytes, t.desc = t.chunk[:0], 0, t.desc[:0]
	clear(t.inChunk)
}

// flush sends the pending statements and records what committed.
func (b *batcher) flush() error {
	if len(b.refs) == 0 {
		return nil
	}
	start := time.Now()
	if b.a.opts.Log.Enabled(context.Background(), slog.LevelDebug) {
		var descs []string
		for _, r := range b.refs {
			d := r.desc
			if r.end {
				d += " [end]"
			}
			descs = append(descs, d)
		}
		b.a.opts.Log.Debug("replica batch", "statements", strings.Join(descs, " ; "))
	}
	n, err := b.c.flush(0)
	m := b.a.opts.Metrics
	committed := 0
	for i := 0; i < n; i++ {
		if r := b.refs[i]; r.end {
			b.markApplied(r.t)
			committed++
		}
	}
	refs := b.refs
	b.refs = b.refs[:0]
	b.txns = 0
	if err != nil {
		var se *stmtError
		if errors.As(err, &se) {
			r := refs[se.Index]
			// The failed statement is undone but its transaction stays
			// open; without ROLLBACK the next BEGIN would commit it.
			b.c.exec("ROLLBACK")
			gtid := "(none)"
			if r.t != nil {
				gtid = r.t.gtid
			}
			return &ApplyError{GTID: gtid, Statement: r.desc, Err: se.Err}
		}
		return err
	}
	if committed > 0 {
		m.ReplicaBatchTxns.Observe(float64(committed))
		m.ReplicaBatchSeconds.Observe(time.Since(start).Seconds())
	}
	return nil
}

func (b *batcher) markApplied(t *txnState) {
	if t == nil {
		return
	}
	if t.gtid != "" {
		b.applied.Add(t.gtid)
	}
	a := b.a
	a.mu.Lock()
	if t.gtid != "" {
		a.applied.Add(t.gtid)
	}
	a.lastTime = time.Unix(int64(t.time), 0)
	a.lastErr = ""
	a.mu.Unlock()
	a.opts.Metrics.ReplicaAppliedTxns.Inc()
}

// collation names a collation id, asking the replica once.
func (b *batcher) collation(id uint32) (string, string, bool) {
	if b.colls == nil {
		b.colls = map[uint32][2]string{}
		r, err := b.c.c.Execute("SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS")
		if err == nil {
			for i := range r.RowNumber() {
				cid, _ := r.GetInt(i, 0)
				cs, _ := r.GetString(i, 1)
				name, _ := r.GetString(i, 2)
				b.colls[uint32(cid)] = [2]string{cs, name}
			}
		}
	}
	c, ok := b.colls[id]
	return c[0], c[1], ok
}

func shorten(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

func mysqlGTIDString(e *replication.GTIDEvent) string {
	if len(e.SID) != 16 {
		return ""
	}
	u := fmt.Sprintf("%x", e.SID)
	return fmt.Sprintf("%s-%s-%s-%s-%s:%d", u[0:8], u[8:12], u[12:16], u[16:20], u[20:32], e.GNO)
}
