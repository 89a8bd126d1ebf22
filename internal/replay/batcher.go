package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/usage"
)

// Mode is how source transactions become target transactions.
type Mode int

const (
	// Replica keeps each source transaction its own target transaction,
	// logged under the source GTID: the target can serve replicas later,
	// and its GTID position is the checkpoint.
	Replica Mode = iota
	// Restore groups many source transactions into one target transaction
	// with the session's binlog off: far fewer commits (fsyncs), for a
	// server being rebuilt. The position is recorded by the Checkpoint
	// statement inside each group.
	Restore
)

// Txn is what the batcher tells about a source transaction.
type Txn struct {
	GTID string
	Time uint32 // commit time, Unix seconds
}

// Defaults, one block for every user of the batcher (the replica applier,
// restore): what an Options field left at zero means.
const (
	// DefaultReplicaBatchTxns source transactions per round trip to a
	// replica: across an 80 ms round trip, room for thousands per second.
	DefaultReplicaBatchTxns = 256
	// DefaultRestoreGroupTxns source transactions per target commit in a
	// restore; a round trip carries two groups.
	DefaultRestoreGroupTxns = 500
	// DefaultBatchBytes of statements per round trip.
	DefaultBatchBytes = 4 << 20
	// DefaultGroupBytes bounds one restore group's target transaction.
	DefaultGroupBytes = 64 << 20
	// maxPacketStatements bounds the answers one packet waits for.
	maxPacketStatements = 4096
)

// Options configure a Batcher.
type Options struct {
	Mode Mode
	// BatchTxns and BatchBytes bound one round trip.
	BatchTxns  int
	BatchBytes int
	// GroupTxns (Restore) is how many source transactions share one target
	// transaction; GroupBytes bounds its size.
	GroupTxns  int
	GroupBytes int
	Filter     Filter
	// Skip reports a transaction already applied (ddl: its GTID event marks
	// it as DDL); an error stops the replay (the target's history departs
	// from the source's).
	Skip func(gtid string, ddl bool) (bool, error)
	// Due, when set, tells when a transaction may be applied (a delayed
	// replica); the batcher sends what it holds, then sleeps until then.
	Due func(t Txn) time.Time
	// Stop (Restore) ends the replay before this transaction: ErrStop.
	Stop func(t Txn) bool
	// LogDDL (Restore, MariaDB) runs each standalone statement (DDL) with
	// the session's binlog on, under its source GTID: the target's binlog
	// then records, atomically with the DDL, whether it took effect, which
	// the checkpoint that follows it cannot (DDL commits on its own).
	LogDDL bool
	// Checkpoint (Restore) returns a statement recording that the group's
	// transactions are applied; it runs inside the group it describes.
	Checkpoint func(group []Txn) string
	// Rewrite (Replica), when set, may replace a statement's text before
	// it is sent (ok true).
	Rewrite func(query, defaultDB string) (string, bool)
	// Committed is called for each source transaction once durable.
	Committed func(t Txn)
	// Flushed is called after each round trip with the transactions it
	// committed and how long it took.
	Flushed func(txns int, d time.Duration)
	// InFlight (Replica) is how many packets may be sent before the answers
	// of the first are read: across a long round trip the replica then
	// works while answers travel. Each packet then starts with a guard that
	// fails unless the packet before it ran to its end, so nothing runs
	// after a refused transaction. 0 or 1: one packet at a time.
	InFlight int
	Log      *slog.Logger
}

// ErrStop: the replay reached the transaction Stop chose.
var ErrStop = errors.New("stop point reached")

// ApplyError is a transaction the target refused.
type ApplyError struct {
	GTID      string
	Statement string
	Err       *mysql.MyError
}

func (e *ApplyError) Error() string {
	return fmt.Sprintf("target refused transaction %s: error %d: %s (statement: %s)", e.GTID, e.Err.Code, e.Err.Message, e.Statement)
}

// Batcher turns source events into statements and sends many transactions
// per round trip. The statement that completes a transaction (its COMMIT,
// the DDL itself, or in Restore mode the group's COMMIT) tells by its
// answer that the transaction is durable.
type Batcher struct {
	c    conn
	o    Options
	sess *session

	refs  []stmtRef // one per statement in the pending packet
	txns  int       // transactions completed by the pending packet
	cur   *txnState
	grp   binlog.Grouper
	colls map[uint32][2]string

	// Restore mode: the open target transaction.
	group      []Txn
	groupOpen  bool
	groupBytes int

	// Packets sent whose answers are not read yet, oldest first.
	flight  []packet
	batchID int // the number of the last packet sent (InFlight > 1)
}

// packet is one packet sent: its statements, in order.
type packet struct {
	refs []stmtRef
	seq  uint8 // sequence number of its first answer
	sent time.Time
}

type stmtRef struct {
	t    *txnState
	ends []Txn // transactions this statement completes
	desc string
}

type tableMap struct {
	name     string
	raw      []byte
	included bool
}

type txnState struct {
	Txn
	skip       bool
	standalone bool     // no BEGIN: the first query ends it
	setGTID    []string // statements that log under the source GTID
	begun      bool
	tables     map[uint64]tableMap
	chunk      [][]byte
	chunkBytes int
	inChunk    map[uint64]bool
	desc       []string
}

// conn is what a Batcher needs of its connection: statements gathered
// into one packet, the packet sent with one answer read per statement, and
// statements run alone. *Conn is the real one; tests put a fake here.
type conn interface {
	add(stmt []byte)
	pending() (stmts, bytes int)
	send() (n int, seq uint8, err error)
	receive(n int, seq uint8) (int, error)
	Exec(q string) error
	Query(q string) (*mysql.Result, error)
}

// guardSQL fails (error 1644) unless the packet numbered prev set its
// mark, i.e. ran to its end; 0 is "no packet yet".
func guardSQL(prev int) string {
	want := "NULL"
	if prev > 0 {
		want = strconv.Itoa(prev)
	}
	return "IF @binvault_batch <=> " + want + " THEN DO 0; ELSE SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'binvault: an earlier packet on this connection failed; nothing of this one ran'; END IF"
}

// New prepares a batcher on c; the session starts fresh (the format
// description is sent before the first rows).
func New(c *Conn, o Options) *Batcher { return newBatcher(c, o) }

func newBatcher(c conn, o Options) *Batcher {
	if o.GroupTxns <= 0 {
		o.GroupTxns = DefaultRestoreGroupTxns
	}
	if o.BatchTxns <= 0 {
		o.BatchTxns = DefaultReplicaBatchTxns
		if o.Mode == Restore {
			o.BatchTxns = 2 * o.GroupTxns
		}
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = DefaultBatchBytes
	}
	if o.GroupBytes <= 0 {
		o.GroupBytes = DefaultGroupBytes
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Batcher{c: c, o: o, sess: &session{}}
}

// full reports that the pending packet should be sent.
func (b *Batcher) full() bool {
	stmts, size := b.c.pending()
	return b.txns >= b.o.BatchTxns || size >= b.o.BatchBytes || stmts >= maxPacketStatements
}

func (b *Batcher) add(stmt []byte, desc string) *stmtRef {
	if b.o.InFlight > 1 && len(b.refs) == 0 {
		b.c.add([]byte(guardSQL(b.batchID)))
		b.refs = append(b.refs, stmtRef{desc: "guard: the connection's previous packet ran to its end"})
	}
	b.c.add(stmt)
	b.refs = append(b.refs, stmtRef{t: b.cur, desc: desc})
	return &b.refs[len(b.refs)-1]
}

func (b *Batcher) addString(stmt string) *stmtRef {
	return b.add([]byte(stmt), binlog.Shorten(stmt, 200))
}

// end records that the current transaction is complete once the statement
// just added succeeds (Replica), or joins the open group (Restore).
func (b *Batcher) end() error {
	t := b.cur
	b.cur = nil
	if b.o.Mode == Replica {
		r := &b.refs[len(b.refs)-1]
		r.ends = append(r.ends, t.Txn)
		b.txns++
		return nil
	}
	b.group = append(b.group, t.Txn)
	if len(b.group) >= b.o.GroupTxns || b.groupBytes >= b.o.GroupBytes {
		b.commitGroup()
	}
	return nil
}

// commitGroup ends the open target transaction (Restore mode).
func (b *Batcher) commitGroup() {
	if !b.groupOpen {
		return
	}
	if b.o.Checkpoint != nil {
		b.addString(b.o.Checkpoint(b.group))
	}
	r := b.addString("COMMIT")
	r.t = nil
	r.ends = append(r.ends, b.group...)
	b.txns += len(b.group)
	b.group, b.groupOpen, b.groupBytes = nil, false, 0
}

// Event takes the next event of the stream and sends the pending packet
// once it is full.
func (b *Batcher) Event(ctx context.Context, ev binlog.Event) error {
	if err := b.event(ctx, ev); err != nil {
		return err
	}
	if b.full() {
		return b.sendAhead()
	}
	return nil
}

func (b *Batcher) event(ctx context.Context, ev binlog.Event) error {
	if ev.Header.Type == replication.FORMAT_DESCRIPTION_EVENT {
		if !bytes.Equal(b.sess.fde, ev.Raw) {
			// Each connection needs the format description before any row
			// event (else error 1609), and again when it changes.
			cur := b.cur
			b.cur = nil
			b.add(binlogStatement([][]byte{ev.Raw}), "BINLOG (format description)")
			b.cur = cur
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
	b.groupBytes += len(ev.Raw)
	switch e := ev.Parsed.(type) {
	case *replication.TableMapEvent:
		id := e.TableID
		tm := tableMap{name: string(e.Schema) + "." + string(e.Table), raw: ev.Raw, included: b.o.Filter.Table(string(e.Schema), string(e.Table))}
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
			return fmt.Errorf("transaction %s: rows event for table id %d without a table map", t.GTID, e.TableID)
		}
		if !tm.included {
			if e.Flags&replication.RowsEventStmtEndFlag != 0 {
				// The statement's end travels on a filtered-out table's
				// rows: end the piece here, or the server never ends the
				// statement and skips the rows of the next one in the same
				// BINLOG statement, without an error.
				b.flushChunk()
			}
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
		if t.chunkBytes >= b.o.BatchBytes/2 {
			b.flushChunk()
		}
		return nil
	case *replication.XIDEvent:
		b.flushChunk()
		if b.o.Mode == Replica {
			b.addString("COMMIT")
		}
		return b.end()
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
	return usage.Errorf("transaction %s holds a %s event, which binvault cannot replay yet; the archive keeps it", t.GTID, ev.Header.Type)
}

func (b *Batcher) begin(ctx context.Context, ev binlog.Event) error {
	t := &txnState{Txn: Txn{Time: ev.Header.Timestamp}, tables: map[uint64]tableMap{}, inChunk: map[uint64]bool{}}
	var setGTID []string
	mariadb, ddl := false, false
	switch e := ev.Parsed.(type) {
	case *replication.MariadbGTIDEvent:
		mariadb = true
		ddl = e.Flags&replication.BINLOG_MARIADB_FL_DDL != 0
		t.GTID = fmt.Sprintf("%d-%d-%d", e.GTID.DomainID, ev.Header.ServerID, e.GTID.SequenceNumber)
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
			t.GTID = binlog.MySQLGTID(e)
			setGTID = []string{fmt.Sprintf("SET @@SESSION.GTID_NEXT='%s'", t.GTID)}
		} else {
			setGTID = []string{"SET @@SESSION.GTID_NEXT='ANONYMOUS'"}
		}
	default:
		return fmt.Errorf("unexpected transaction start %s", ev.Header.Type)
	}
	if t.GTID != "" && b.o.Skip != nil {
		skip, err := b.o.Skip(t.GTID, ddl)
		if err != nil {
			return err
		}
		if skip {
			t.skip = true
			b.cur = t
			return nil
		}
	}
	if b.o.Stop != nil && b.o.Stop(t.Txn) {
		return ErrStop
	}
	if b.o.Due != nil {
		if wait := time.Until(b.o.Due(t.Txn)); wait > 0 {
			if err := b.Flush(); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
	}
	t.setGTID = setGTID
	b.cur = t
	if b.o.Mode == Restore {
		if t.standalone && b.groupOpen {
			// DDL commits implicitly: close the group before it.
			b.commitGroup()
		}
		if !t.standalone && !b.groupOpen {
			b.addString("BEGIN")
			b.groupOpen = true
		}
		t.begun = !t.standalone
		return nil
	}
	for _, s := range setGTID {
		b.addString(s)
	}
	if !t.standalone {
		// The target's binlog gets the primary's timestamps (a statement
		// group sets its own, with microseconds).
		b.addString(fmt.Sprintf("SET TIMESTAMP=%d", t.Time))
	}
	if mariadb && !t.standalone {
		// MariaDB logs no BEGIN: its GTID event opens the group. Without
		// BEGIN each rows statement would commit alone, under its own GTID.
		t.begun = true
		b.addString("BEGIN")
	}
	return nil
}

func (b *Batcher) query(ev binlog.Event, q *replication.QueryEvent, role binlog.Role) error {
	t := b.cur
	text := strings.TrimSpace(string(q.Query))
	switch strings.ToUpper(text) {
	case "BEGIN":
		if !t.begun {
			t.begun = true
			if b.o.Mode == Replica {
				b.addString("BEGIN")
			} else if !b.groupOpen {
				b.addString("BEGIN")
				b.groupOpen = true
			}
		}
		return nil
	case "COMMIT":
		b.flushChunk()
		if b.o.Mode == Replica {
			b.addString("COMMIT")
		}
		return b.end()
	case "ROLLBACK":
		b.flushChunk()
		if b.o.Mode == Replica {
			b.addString("ROLLBACK")
		}
		// In a group, ROLLBACK would undo the other transactions too; what
		// such a transaction logged is non-transactional (InnoDB changes of
		// a rolled back transaction are never logged), so nothing to undo.
		return b.end()
	}
	b.flushChunk()
	if !b.allowed(text, string(q.Schema)) {
		if role == binlog.End {
			// Filtered out, yet the transaction must end here: a statement
			// that neither writes nor logs anything.
			b.addString("DO 0")
			return b.end()
		}
		return nil
	}
	// A filtered-out default database may not exist on the target: the
	// statement then runs without it (it names its tables, or it would
	// have been filtered out itself).
	useDB := b.o.Filter.Database(string(q.Schema))
	setup, err := b.sess.querySetup(replication.EventHeader{Timestamp: ev.Header.Timestamp, Flags: ev.Header.Flags}, q, useDB)
	if err != nil {
		return fmt.Errorf("transaction %s: %w", t.GTID, err)
	}
	for _, s := range setup {
		b.addString(s)
	}
	stmt := q.Query
	if b.o.Mode == Replica && b.o.Rewrite != nil {
		if r, ok := b.o.Rewrite(text, string(q.Schema)); ok {
			stmt, text = []byte(r), r
		}
	}
	logged := b.o.Mode == Restore && b.o.LogDDL && t.standalone && role == binlog.End && len(t.setGTID) > 0
	if logged {
		b.addString("SET @@session.sql_log_bin=1")
		for _, s := range t.setGTID {
			b.addString(s)
		}
	}
	b.add(stmt, binlog.Shorten(text, 200))
	if logged {
		b.addString("SET @@session.sql_log_bin=0")
	}
	if role == binlog.End {
		if b.o.Mode == Restore && t.standalone {
			// The DDL ran on its own; its checkpoint follows at once.
			b.group = append(b.group, t.Txn)
			if b.o.Checkpoint != nil {
				b.addString(b.o.Checkpoint(b.group))
			}
			r := &b.refs[len(b.refs)-1]
			r.ends = append(r.ends, b.group...)
			b.txns += len(b.group)
			b.group = nil
			b.cur = nil
			return nil
		}
		return b.end()
	}
	return nil
}

// allowed decides a statement by what it changes: the table a DDL names,
// else its default database.
func (b *Batcher) allowed(text, defaultDB string) bool {
	if db, table, ok := DDLTarget(text, defaultDB); ok {
		if table != "" {
			return b.o.Filter.Table(db, table)
		}
		return b.o.Filter.Database(db)
	}
	return b.o.Filter.Database(defaultDB)
}

// flushChunk turns the rows collected so far into one BINLOG statement. A
// chunk always carries the table maps of its rows (a rows event without
// its table map in the same statement is silently skipped by the server).
func (b *Batcher) flushChunk() {
	t := b.cur
	if t == nil || len(t.chunk) == 0 {
		return
	}
	b.add(binlogStatement(t.chunk), "BINLOG (rows of "+strings.Join(t.desc, ", ")+")")
	t.chunk, t.chunkBytes, t.desc = t.chunk[:0], 0, t.desc[:0]
	clear(t.inChunk)
}

// Finish closes the open group (Restore) and sends what is pending.
func (b *Batcher) Finish() error {
	if b.cur != nil && !b.cur.skip {
		return fmt.Errorf("the stream ended inside transaction %s", b.cur.GTID)
	}
	b.commitGroup()
	return b.Flush()
}

// Flush sends the pending statements and reports what committed.
func (b *Batcher) Flush() error {
	if err := b.send(); err != nil {
		return err
	}
	for len(b.flight) > 0 {
		if err := b.receive(); err != nil {
			return err
		}
	}
	return nil
}

// send sends the pending packet, then reads answers until at most
// InFlight-1 packets wait for theirs.
func (b *Batcher) sendAhead() error {
	if err := b.send(); err != nil {
		return err
	}
	for len(b.flight) >= max(1, b.o.InFlight) {
		if err := b.receive(); err != nil {
			return err
		}
	}
	return nil
}

// send sends the pending statements as one packet, without its answers.
func (b *Batcher) send() error {
	if len(b.refs) == 0 {
		return nil
	}
	if b.o.InFlight > 1 {
		b.batchID++
		b.c.add([]byte("SET @binvault_batch = " + strconv.Itoa(b.batchID)))
		b.refs = append(b.refs, stmtRef{desc: "mark: this packet ran to its end"})
	}
	if b.o.Log.Enabled(context.Background(), slog.LevelDebug) {
		var descs []string
		for _, r := range b.refs {
			d := r.desc
			if len(r.ends) > 0 {
				d += fmt.Sprintf(" [ends %d]", len(r.ends))
			}
			descs = append(descs, d)
		}
		b.o.Log.Debug("batch", "statements", strings.Join(descs, " ; "))
	}
	p := packet{refs: append([]stmtRef(nil), b.refs...), sent: time.Now()}
	b.refs = b.refs[:0]
	b.txns = 0
	n, seq, err := b.c.send()
	if err != nil {
		return err
	}
	if n != len(p.refs) {
		return fmt.Errorf("internal: packet of %d statements, %d described", n, len(p.refs))
	}
	p.seq = seq
	b.flight = append(b.flight, p)
	return nil
}

// receive reads the answers of the oldest packet in flight. A refused
// statement ends every packet behind it at its guard; their answers are
// read too, so the connection stays usable, and the transaction left open
// is rolled back.
func (b *Batcher) receive() error {
	p := b.flight[0]
	b.flight = b.flight[1:]
	n, err := b.c.receive(len(p.refs), p.seq)
	committed := b.committed(p.refs[:n])
	if err == nil {
		if b.o.Flushed != nil && committed > 0 {
			b.o.Flushed(committed, time.Since(p.sent))
		}
		return nil
	}
	var se *StmtError
	if !errors.As(err, &se) {
		return err
	}
	for len(b.flight) > 0 {
		q := b.flight[0]
		b.flight = b.flight[1:]
		m, qerr := b.c.receive(len(q.refs), q.seq)
		b.committed(q.refs[:m]) // none, as the guard fails first
		var qse *StmtError
		if qerr != nil && !errors.As(qerr, &qse) {
			return qerr
		}
	}
	r := p.refs[se.Index]
	// The failed statement is undone but its transaction stays open;
	// without ROLLBACK the next BEGIN would commit it.
	b.c.Exec("ROLLBACK")
	b.groupOpen, b.group = false, nil
	gtid := "(none)"
	switch {
	case r.t != nil:
		gtid = r.t.GTID
	case len(r.ends) > 0:
		gtid = r.ends[0].GTID + ".." + r.ends[len(r.ends)-1].GTID
	}
	return &ApplyError{GTID: gtid, Statement: r.desc, Err: se.Err}
}

// committed reports the transactions the answered statements completed.
func (b *Batcher) committed(refs []stmtRef) int {
	n := 0
	for _, r := range refs {
		for _, t := range r.ends {
			n++
			if b.o.Committed != nil {
				b.o.Committed(t)
			}
		}
	}
	return n
}

// collation names a collation id, asking the server once.
func (b *Batcher) collation(id uint32) (string, string, bool) {
	if b.colls == nil {
		b.colls = map[uint32][2]string{}
		r, err := b.c.Query("SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS")
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
