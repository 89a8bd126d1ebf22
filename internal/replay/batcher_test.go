package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/binlog/binlogtest"
)

// run feeds evs to a batcher on f and finishes it; it returns the GTIDs
// reported committed, in order, and the first error.
func run(f *fakeConn, o Options, evs []binlog.Event) ([]string, error) {
	var committed []string
	next := o.Committed
	o.Committed = func(t Txn) {
		committed = append(committed, t.GTID)
		if next != nil {
			next(t)
		}
	}
	b := newBatcher(f, o)
	for _, ev := range evs {
		if err := b.Event(context.Background(), ev); err != nil {
			return committed, err
		}
	}
	return committed, b.Finish()
}

func gtids(seqs ...int) []string {
	var out []string
	for _, s := range seqs {
		out = append(out, fmt.Sprintf("0-7-%d", s))
	}
	return out
}

func seqs(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func sameStrings(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

// rowsOf is the BINLOG statement a transaction of stream.rows sends: its
// table map and rows event, checksums included (FACTS pitfalls 3, 4).
func rowsOf(s *stream, seq uint64) string {
	for i, ev := range s.evs {
		if g, ok := ev.Parsed.(*replication.MariadbGTIDEvent); ok && g.GTID.SequenceNumber == seq {
			return string(binlogStatement([][]byte{s.evs[i+1].Raw, s.evs[i+2].Raw}))
		}
	}
	panic("no transaction " + fmt.Sprint(seq))
}

func fdeOf(s *stream) string { return string(binlogStatement([][]byte{s.evs[0].Raw})) }

// replicaTxn is what Replica mode sends for a transaction of stream.rows.
func replicaTxn(s *stream, seq uint64, ts uint32) []string {
	return []string{
		"SET @@session.gtid_domain_id=0, @@session.server_id=7",
		fmt.Sprintf("SET @@session.gtid_seq_no=%d", seq),
		fmt.Sprintf("SET TIMESTAMP=%d", ts),
		"BEGIN",
		rowsOf(s, seq),
		"COMMIT",
	}
}

// Replica mode keeps each source transaction its own target transaction,
// logged under its source GTID: the format description once per
// connection, domain and server in one SET and the sequence number in
// another (pitfall 6), BEGIN ... COMMIT around the rows (pitfall 5), a
// statement group with its session context.
func TestReplicaStatements(t *testing.T) {
	s := newStream(t).rows(1).rows(2).ddl(3, "app", "CREATE TABLE u (i INT)")
	s.add(s.evs[0].Raw) // the same format description again: not sent again
	s.rows(4)
	f := newFakeConn()
	var flushed []int
	committed, err := run(f, Options{Mode: Replica, Flushed: func(n int, _ time.Duration) { flushed = append(flushed, n) }}, s.evs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{fdeOf(s)}
	want = append(want, replicaTxn(s, 1, 1_700_000_001)...)
	want = append(want, replicaTxn(s, 2, 1_700_000_002)...)
	want = append(want,
		"SET @@session.gtid_domain_id=0, @@session.server_id=7",
		"SET @@session.gtid_seq_no=3",
		"SET @@session.pseudo_thread_id=6",
		"SET TIMESTAMP=1700000003",
		"USE `app`",
		"CREATE TABLE u (i INT)")
	want = append(want, replicaTxn(s, 4, 1_700_000_004)...)
	if got := f.statements(); !sameStrings(got, want) {
		t.Errorf("statements\n got %s\nwant %s", short(got), short(want))
	}
	if len(f.log) != 1 {
		t.Errorf("sent %v, want one packet", f.log)
	}
	if !sameStrings(committed, gtids(1, 2, 3, 4)) || !reflect.DeepEqual(flushed, []int{4}) {
		t.Errorf("committed %v, flushed %v", committed, flushed)
	}
}

// Replica mode, one packet of five transactions, the k-th statement
// refused: exactly the transactions whose COMMIT came before k are
// reported committed, the error names the failing transaction and
// statement, and ROLLBACK is the next thing sent (pitfall 7).
func TestReplicaRefusedStatement(t *testing.T) {
	s := newStream(t)
	for i := uint64(1); i <= 5; i++ {
		s.rows(i)
	}
	const perTxn = 6 // SET domain, SET seq_no, SET TIMESTAMP, BEGIN, BINLOG, COMMIT
	total := 1 + 5*perTxn
	for k := 1; k <= total; k++ {
		f := newFakeConn()
		f.refuse[[2]int{1, k}] = 1062
		committed, err := run(f, Options{Mode: Replica, Flushed: func(int, time.Duration) { t.Errorf("k=%d: Flushed after a failure", k) }}, s.evs)
		var ae *ApplyError
		if !errors.As(err, &ae) {
			t.Fatalf("k=%d: %v, want an *ApplyError", k, err)
		}
		var want []int
		for i := 1; i <= 5; i++ {
			if 1+i*perTxn < k { // its COMMIT succeeded
				want = append(want, i)
			}
		}
		if !sameStrings(committed, gtids(want...)) {
			t.Errorf("k=%d: committed %v, want %v", k, committed, gtids(want...))
		}
		stmts := f.packets()[0]
		if len(stmts) != total {
			t.Fatalf("k=%d: packet of %d statements, want %d: %s", k, len(stmts), total, short(stmts))
		}
		wantGTID, wantStmt := "(none)", "BINLOG (format description)"
		if k > 1 {
			wantGTID = fmt.Sprintf("0-7-%d", (k-2)/perTxn+1)
			wantStmt = stmts[k-1]
			if strings.HasPrefix(wantStmt, "BINLOG") {
				wantStmt = "BINLOG (rows of app.t)"
			}
		}
		if ae.GTID != wantGTID || ae.Statement != wantStmt || ae.Err.Code != 1062 {
			t.Errorf("k=%d: error names %s / %q / %d, want %s / %q / 1062", k, ae.GTID, ae.Statement, ae.Err.Code, wantGTID, wantStmt)
		}
		if len(f.log) != 2 || f.log[1].alone != "ROLLBACK" {
			t.Errorf("k=%d: after the failed packet sent %v, want ROLLBACK alone", k, f.log)
		}
	}
}

// The same across packets: a refusal in the second packet reports the
// first packet's transactions and those of the second before it.
func TestReplicaRefusedInLaterPacket(t *testing.T) {
	s := newStream(t)
	for i := uint64(1); i <= 5; i++ {
		s.rows(i)
	}
	f := newFakeConn()
	f.refuse[[2]int{2, 9}] = 1146 // transaction 4's SET TIMESTAMP
	committed, err := run(f, Options{Mode: Replica, BatchTxns: 2}, s.evs)
	var ae *ApplyError
	if !errors.As(err, &ae) || ae.GTID != "0-7-4" || ae.Statement != "SET TIMESTAMP=1700000004" || ae.Err.Code != 1146 {
		t.Fatalf("error %v", err)
	}
	if !sameStrings(committed, gtids(1, 2, 3)) {
		t.Errorf("committed %v", committed)
	}
	p := f.packets()
	if len(p) != 2 || len(p[0]) != 13 || len(p[1]) != 12 || len(f.log) != 3 || f.log[2].alone != "ROLLBACK" {
		t.Errorf("sent %v (packets of %d and %d statements)", f.log, len(p[0]), len(p[1]))
	}
}

// A connection lost after k answers: the transactions whose COMMIT was
// answered are reported, nothing after; the error is the connection's (the
// outcome of the rest is unknown: the server may still run it, pitfall 8),
// and nothing more is sent on the broken connection.
func TestReplicaConnectionLost(t *testing.T) {
	s := newStream(t)
	for i := uint64(1); i <= 5; i++ {
		s.rows(i)
	}
	const perTxn = 6
	total := 1 + 5*perTxn
	for k := 0; k < total; k++ {
		f := newFakeConn()
		f.lose[1] = k
		committed, err := run(f, Options{Mode: Replica}, s.evs)
		var ae *ApplyError
		if !errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ae) {
			t.Fatalf("k=%d: %v, want the connection's error", k, err)
		}
		var want []int
		for i := 1; i <= 5; i++ {
			if 1+i*perTxn <= k {
				want = append(want, i)
			}
		}
		if !sameStrings(committed, gtids(want...)) {
			t.Errorf("k=%d: committed %v, want %v", k, committed, gtids(want...))
		}
		if len(f.log) != 1 {
			t.Errorf("k=%d: sent %v after the connection broke", k, f.log[1:])
		}
	}
}

func restoreOptions(groups *[][]string) Options {
	return Options{
		Mode:      Restore,
		GroupTxns: 3,
		Checkpoint: func(g []Txn) string {
			var ids []string
			for _, t := range g {
				ids = append(ids, t.GTID)
			}
			*groups = append(*groups, ids)
			return "CHECKPOINT " + strings.Join(ids, ",")
		},
	}
}

// Restore mode: GroupTxns source transactions share one target
// transaction; the checkpoint travels inside its group, just before
// COMMIT; a round trip carries two groups.
func TestRestoreGroups(t *testing.T) {
	s := newStream(t)
	for i := uint64(1); i <= 7; i++ {
		s.rows(i)
	}
	f := newFakeConn()
	var groups [][]string
	committed, err := run(f, restoreOptions(&groups), s.evs)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{fdeOf(s), "BEGIN", rowsOf(s, 1), rowsOf(s, 2), rowsOf(s, 3), "CHECKPOINT 0-7-1,0-7-2,0-7-3", "COMMIT",
			"BEGIN", rowsOf(s, 4), rowsOf(s, 5), rowsOf(s, 6), "CHECKPOINT 0-7-4,0-7-5,0-7-6", "COMMIT"},
		{"BEGIN", rowsOf(s, 7), "CHECKPOINT 0-7-7", "COMMIT"},
	}
	got := f.packets()
	if len(got) != len(want) {
		t.Fatalf("%d packets, want %d", len(got), len(want))
	}
	for i := range want {
		if !sameStrings(got[i], want[i]) {
			t.Errorf("packet %d\n got %s\nwant %s", i+1, short(got[i]), short(want[i]))
		}
	}
	if !sameStrings(committed, gtids(seqs(1, 7)...)) {
		t.Errorf("committed %v", committed)
	}
	if !reflect.DeepEqual(groups, [][]string{gtids(1, 2, 3), gtids(4, 5, 6), gtids(7)}) {
		t.Errorf("checkpointed groups %v", groups)
	}
}

// Restore mode, the k-th statement of the first packet refused: a group
// commits whole or not at all.
func TestRestoreRefusedInsideGroup(t *testing.T) {
	s := newStream(t)
	for i := uint64(1); i <= 7; i++ {
		s.rows(i)
	}
	// FDE, BEGIN, rows 1-3, CHECKPOINT, COMMIT (7), BEGIN, rows 4-6, CHECKPOINT, COMMIT (13)
	for k := 1; k <= 13; k++ {
		f := newFakeConn()
		f.refuse[[2]int{1, k}] = 1205
		var groups [][]string
		committed, err := run(f, restoreOptions(&groups), s.evs)
		var ae *ApplyError
		if !errors.As(err, &ae) || ae.Err.Code != 1205 {
			t.Fatalf("k=%d: %v", k, err)
		}
		var want []string
		if k > 7 {
			want = gtids(1, 2, 3)
		}
		if !sameStrings(committed, want) {
			t.Errorf("k=%d: committed %v, want %v", k, committed, want)
		}
		wantGTID := map[int]string{3: "0-7-1", 4: "0-7-2", 5: "0-7-3", 7: "0-7-1..0-7-3", 9: "0-7-4", 10: "0-7-5", 11: "0-7-6", 13: "0-7-4..0-7-6"}[k]
		if wantGTID != "" && ae.GTID != wantGTID {
			t.Errorf("k=%d: error names %s, want %s", k, ae.GTID, wantGTID)
		}
		if len(f.log) != 2 || f.log[1].alone != "ROLLBACK" {
			t.Errorf("k=%d: after the failed packet sent %v, want ROLLBACK alone", k, f.log)
		}
	}
	// Lost after the first group's COMMIT was answered: that group only.
	f := newFakeConn()
	f.lose[1] = 7
	var groups [][]string
	committed, err := run(f, restoreOptions(&groups), s.evs)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !sameStrings(committed, gtids(1, 2, 3)) {
		t.Errorf("lost after 7 answers: committed %v, %v", committed, err)
	}
}

// Restore mode: a statement group (DDL commits implicitly) closes the
// open group first and is checkpointed alone right after it; with LogDDL
// it runs with the binlog on under its source GTID.
func TestRestoreDDLClosesGroup(t *testing.T) {
	s := newStream(t).rows(1).rows(2).ddl(3, "app", "CREATE TABLE u (i INT)").rows(4)
	for _, logDDL := range []bool{false, true} {
		f := newFakeConn()
		var groups [][]string
		o := restoreOptions(&groups)
		o.GroupTxns, o.LogDDL = 10, logDDL
		committed, err := run(f, o, s.evs)
		if err != nil {
			t.Fatal(err)
		}
		ddl := []string{"CREATE TABLE u (i INT)"}
		if logDDL {
			ddl = []string{"SET @@session.sql_log_bin=1", "SET @@session.gtid_domain_id=0, @@session.server_id=7", "SET @@session.gtid_seq_no=3", "CREATE TABLE u (i INT)", "SET @@session.sql_log_bin=0"}
		}
		want := []string{fdeOf(s), "BEGIN", rowsOf(s, 1), rowsOf(s, 2), "CHECKPOINT 0-7-1,0-7-2", "COMMIT",
			"SET @@session.pseudo_thread_id=6", "SET TIMESTAMP=1700000003", "USE `app`"}
		want = append(want, ddl...)
		want = append(want, "CHECKPOINT 0-7-3", "BEGIN", rowsOf(s, 4), "CHECKPOINT 0-7-4", "COMMIT")
		if got := f.statements(); !sameStrings(got, want) {
			t.Errorf("LogDDL %v:\n got %s\nwant %s", logDDL, short(got), short(want))
		}
		if !sameStrings(committed, gtids(1, 2, 3, 4)) {
			t.Errorf("LogDDL %v: committed %v", logDDL, committed)
		}
	}
	// The DDL refused: the group before it is in, the DDL and what follows are not.
	f := newFakeConn()
	f.refuse[[2]int{1, 10}] = 1050
	var groups [][]string
	o := restoreOptions(&groups)
	o.GroupTxns = 10
	committed, err := run(f, o, s.evs)
	var ae *ApplyError
	if !errors.As(err, &ae) || ae.GTID != "0-7-3" || ae.Statement != "CREATE TABLE u (i INT)" || !sameStrings(committed, gtids(1, 2)) {
		t.Errorf("DDL refused: committed %v, error %v", committed, err)
	}
}

// A statement whose rows are split across BINLOG statements carries the
// table maps of its rows in every piece (pitfall 3): the server silently
// skips rows whose table map came in an earlier statement.
func TestTableMapsRepeatedInEveryPiece(t *testing.T) {
	s := newStream(t)
	w := s.w
	s.add(w.GTID(0, 1, binlogtest.FlagsTrans),
		// One statement, many rows events of one table.
		w.TableMap(18, "app", "t"), w.WriteRows(18, false, 600), w.WriteRows(18, false, 600), w.WriteRows(18, true, 600),
		// One statement on two tables (a trigger), split between them.
		w.TableMap(18, "app", "t"), w.TableMap(19, "app", "u"), w.WriteRows(18, false, 600), w.WriteRows(19, false, 600), w.WriteRows(19, true, 600),
		w.XID(1))
	for _, mode := range []Mode{Replica, Restore} {
		f := newFakeConn()
		if _, err := run(f, Options{Mode: mode, BatchBytes: 1200}, s.evs); err != nil {
			t.Fatal(err)
		}
		checkPieces(t, f, s.evs, 5)
	}
}

// checkPieces checks every BINLOG statement f received: each rows event is
// preceded in its own statement by its table's map, byte-identical to the
// one it follows in the source, and the rows events of all pieces are the
// source's, in order, none lost or doubled; there are at least minPieces
// pieces of rows.
func checkPieces(t *testing.T, f *fakeConn, src []binlog.Event, minPieces int) {
	t.Helper()
	maps := map[uint64][]byte{}
	var srcRows, srcMaps [][]byte // each rows event, and the table map it follows in the source
	for _, ev := range src {
		switch e := ev.Parsed.(type) {
		case *replication.TableMapEvent:
			maps[e.TableID] = ev.Raw
		case *replication.RowsEvent:
			srcRows = append(srcRows, ev.Raw)
			srcMaps = append(srcMaps, maps[e.TableID])
		}
	}
	var sentRows, sentMaps [][]byte
	pieces := 0
	for _, stmt := range f.statements() {
		if !strings.HasPrefix(stmt, "BINLOG '") {
			continue
		}
		evs := binlogEvents(t, stmt)
		if binlog.ParseHeader(evs[0]).Type == replication.FORMAT_DESCRIPTION_EVENT {
			continue
		}
		pieces++
		mapped := map[uint64][]byte{}
		for _, raw := range evs {
			switch binlog.ParseHeader(raw).Type {
			case replication.TABLE_MAP_EVENT:
				mapped[tableID(raw)] = raw
			case replication.WRITE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv1:
				id := tableID(raw)
				if mapped[id] == nil {
					t.Errorf("piece %d: rows of table %d without its table map in the same statement", pieces, id)
				}
				sentRows = append(sentRows, raw)
				sentMaps = append(sentMaps, mapped[id])
			default:
				t.Errorf("piece %d holds a %s event", pieces, binlog.ParseHeader(raw).Type)
			}
		}
	}
	if len(sentRows) != len(srcRows) {
		t.Fatalf("sent %d rows events, the source has %d", len(sentRows), len(srcRows))
	}
	for i := range srcRows {
		if !bytes.Equal(sentRows[i], srcRows[i]) {
			t.Errorf("rows event %d differs from the source's", i)
		}
		if !bytes.Equal(sentMaps[i], srcMaps[i]) {
			t.Errorf("rows event %d travels with a table map other than the source's", i)
		}
	}
	if pieces < minPieces {
		t.Errorf("%d pieces of rows, want at least %d (the split did not happen)", pieces, minPieces)
	}
}

// tableID reads the 6-byte table id that starts a table map or rows event body.
func tableID(raw []byte) uint64 {
	b := raw[binlog.HeaderSize : binlog.HeaderSize+6]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 | uint64(b[4])<<32 | uint64(b[5])<<40
}

// A real MariaDB 10.11 binlog through a Replica batcher: DDL, InnoDB and
// MyISAM transactions, a 200-row insert whose four rows events are split
// across BINLOG statements; the XA transaction (which the batcher cannot
// replay yet) is skipped.
func TestReplicaRealFile(t *testing.T) {
	file, err := os.Open("../binlog/testdata/mariadb-10.11.binlog")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	r, err := binlog.NewReader(file, "mariadb")
	if err != nil {
		t.Fatal(err)
	}
	evs := binlogtest.ReadAll(t, r.Next)
	var skipped []string
	o := Options{Mode: Replica, BatchBytes: 16 << 10, Skip: func(g string, ddl bool) (bool, error) {
		if ddl != (g == "0-7-1" || g == "0-7-2" || g == "0-7-3") {
			t.Errorf("Skip(%s) told ddl=%v", g, ddl)
		}
		if g == "0-7-8" || g == "0-7-9" {
			skipped = append(skipped, g)
			return true, nil
		}
		return false, nil
	}}
	f := newFakeConn()
	committed, err := run(f, o, evs)
	if err != nil {
		t.Fatal(err)
	}
	if !sameStrings(committed, gtids(1, 2, 3, 4, 5, 6, 7, 10)) || !sameStrings(skipped, gtids(8, 9)) {
		t.Errorf("committed %v, skipped %v", committed, skipped)
	}
	// Pieces of rows: one per transaction (0-7-5's two statements share
	// one), and four for the big insert's four 8 KiB rows events.
	checkPieces(t, f, withoutGroups(t, evs, "0-7-8", "0-7-9"), 4+4)
	stmts := f.statements()
	for _, want := range []string{"CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB", "SET @@session.gtid_seq_no=10"} {
		if !containsString(stmts, want) {
			t.Errorf("no statement %q", want)
		}
	}
	for _, s := range stmts {
		if strings.Contains(s, "XA ") || s == "SET @@session.gtid_seq_no=8" || s == "SET @@session.gtid_seq_no=9" {
			t.Errorf("a skipped transaction sent %q", s)
		}
	}
}

// withoutGroups drops the named transactions' events.
func withoutGroups(t *testing.T, evs []binlog.Event, drop ...string) []binlog.Event {
	var out []binlog.Event
	var g binlog.Grouper
	dropping := false
	for _, ev := range evs {
		role, err := g.Feed(ev)
		if err != nil {
			t.Fatal(err)
		}
		if role == binlog.Begin {
			e := ev.Parsed.(*replication.MariadbGTIDEvent)
			dropping = containsString(drop, fmt.Sprintf("%d-%d-%d", e.GTID.DomainID, ev.Header.ServerID, e.GTID.SequenceNumber))
		}
		if !dropping {
			out = append(out, ev)
		}
		if role == binlog.End {
			g.Txn()
			dropping = false
		}
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Skip: a transaction already applied sends nothing and is not reported
// committed; Skip learns whether the group is DDL; its error stops the
// replay before anything of that transaction is queued.
func TestSkip(t *testing.T) {
	s := newStream(t).rows(1).ddl(2, "app", "CREATE TABLE u (i INT)").rows(3).ddl(4, "app", "DROP TABLE u")
	type call struct {
		gtid string
		ddl  bool
	}
	var calls []call
	f := newFakeConn()
	committed, err := run(f, Options{Mode: Replica, Skip: func(g string, ddl bool) (bool, error) {
		calls = append(calls, call{g, ddl})
		return g == "0-7-1" || g == "0-7-2", nil
	}}, s.evs)
	if err != nil {
		t.Fatal(err)
	}
	if want := []call{{"0-7-1", false}, {"0-7-2", true}, {"0-7-3", false}, {"0-7-4", true}}; !reflect.DeepEqual(calls, want) {
		t.Errorf("Skip calls %v, want %v", calls, want)
	}
	if !sameStrings(committed, gtids(3, 4)) {
		t.Errorf("committed %v", committed)
	}
	want := append([]string{fdeOf(s)}, replicaTxn(s, 3, 1_700_000_003)...)
	want = append(want, "SET @@session.gtid_domain_id=0, @@session.server_id=7", "SET @@session.gtid_seq_no=4",
		"SET @@session.pseudo_thread_id=6", "SET TIMESTAMP=1700000004", "USE `app`", "DROP TABLE u")
	if got := f.statements(); !sameStrings(got, want) {
		t.Errorf("statements\n got %s\nwant %s", short(got), short(want))
	}

	departed := errors.New("histories depart")
	f = newFakeConn()
	b := newBatcher(f, Options{Mode: Replica, Skip: func(g string, _ bool) (bool, error) {
		if g == "0-7-3" {
			return false, departed
		}
		return false, nil
	}})
	for _, ev := range s.evs {
		if err = b.Event(context.Background(), ev); err != nil {
			break
		}
	}
	if !errors.Is(err, departed) {
		t.Fatalf("Skip's error: got %v", err)
	}
	// Transactions 1 and 2 are queued, nothing of 3.
	if !containsString(f.pkt, "SET @@session.gtid_seq_no=2") || containsString(f.pkt, "SET @@session.gtid_seq_no=3") || f.pkt[len(f.pkt)-1] != "CREATE TABLE u (i INT)" {
		t.Errorf("queued %s", short(f.pkt))
	}
}

// Stop (Restore) ends the replay before the transaction it chooses: ErrStop,
// nothing of that transaction queued, the open group still committed by
// Finish. Stop sees each transaction's GTID and commit time.
func TestStop(t *testing.T) {
	s := newStream(t)
	for i := uint64(1); i <= 5; i++ {
		s.rows(i)
	}
	var seen []Txn
	var groups [][]string
	o := restoreOptions(&groups)
	o.GroupTxns = 10
	o.Stop = func(t Txn) bool {
		seen = append(seen, t)
		return t.GTID == "0-7-3"
	}
	var committed []string
	o.Committed = func(t Txn) { committed = append(committed, t.GTID) }
	f := newFakeConn()
	b := newBatcher(f, o)
	var stopErr error
	for _, ev := range s.evs {
		if stopErr = b.Event(context.Background(), ev); stopErr != nil {
			break
		}
	}
	if stopErr != ErrStop {
		t.Fatalf("got %v, want ErrStop", stopErr)
	}
	if err := b.Finish(); err != nil {
		t.Fatal(err)
	}
	if want := []Txn{{"0-7-1", 1_700_000_001}, {"0-7-2", 1_700_000_002}, {"0-7-3", 1_700_000_003}}; !reflect.DeepEqual(seen, want) {
		t.Errorf("Stop saw %v, want %v", seen, want)
	}
	if !sameStrings(committed, gtids(1, 2)) || !reflect.DeepEqual(groups, [][]string{gtids(1, 2)}) {
		t.Errorf("committed %v, checkpointed %v", committed, groups)
	}
	want := []string{fdeOf(s), "BEGIN", rowsOf(s, 1), rowsOf(s, 2), "CHECKPOINT 0-7-1,0-7-2", "COMMIT"}
	if got := f.statements(); !sameStrings(got, want) {
		t.Errorf("statements\n got %s\nwant %s", short(got), short(want))
	}
}

// Filter: rows of excluded tables are left out of the BINLOG statements
// (their table maps too); a transaction left with nothing still commits
// (Replica: under its GTID); a statement group whose DDL is filtered out
// still ends, with a statement that does nothing.
func TestFilter(t *testing.T) {
	s := newStream(t)
	w := s.w
	w.TS++
	s.add(w.GTID(0, 1, binlogtest.FlagsTrans), w.TableMap(18, "app", "t"), w.TableMap(20, "app", "secret"),
		w.WriteRows(18, false, 10), w.WriteRows(20, true, 10), w.XID(1))
	keptMap, keptRows := s.evs[2].Raw, s.evs[4].Raw
	w.TS++
	s.add(w.GTID(0, 2, binlogtest.FlagsTrans), w.TableMap(30, "other", "x"), w.WriteRows(30, true, 10), w.XID(2))
	s.ddl(3, "other", "CREATE TABLE x2 (i INT)")
	s.ddl(4, "app", "DROP TABLE app.secret")
	s.ddl(5, "other", "CREATE TABLE app.v (i INT)")
	f, committed := replicaFiltered(t, s)
	if !sameStrings(committed, gtids(1, 2, 3, 4, 5)) {
		t.Errorf("committed %v", committed)
	}
	gtid := func(seq int) []string {
		return []string{"SET @@session.gtid_domain_id=0, @@session.server_id=7", fmt.Sprintf("SET @@session.gtid_seq_no=%d", seq)}
	}
	var want []string
	want = append(want, fdeOf(s))
	want = append(want, gtid(1)...)
	want = append(want, "SET TIMESTAMP=1700000001", "BEGIN", string(binlogStatement([][]byte{keptMap, keptRows})), "COMMIT")
	want = append(want, gtid(2)...)
	want = append(want, "SET TIMESTAMP=1700000002", "BEGIN", "COMMIT")
	want = append(want, gtid(3)...)
	want = append(want, "DO 0")
	want = append(want, gtid(4)...)
	want = append(want, "DO 0")
	want = append(want, gtid(5)...)
	// The default database is filtered out, so no USE: the statement names its table.
	want = append(want, "SET @@session.pseudo_thread_id=6", "SET TIMESTAMP=1700000005", "CREATE TABLE app.v (i INT)")
	if got := f.statements(); !sameStrings(got, want) {
		t.Errorf("statements\n got %s\nwant %s", short(got), short(want))
	}
}

// replicaFiltered runs s through a Replica batcher that replays database
// app but not table app.secret; it returns the connection and the GTIDs
// reported committed.
func replicaFiltered(t *testing.T, s *stream) (*fakeConn, []string) {
	t.Helper()
	f := newFakeConn()
	committed, err := run(f, Options{Mode: Replica, Filter: NewFilter([]string{"app"}, []string{"app.secret"})}, s.evs)
	if err != nil {
		t.Fatal(err)
	}
	return f, committed
}

// A statement whose end flag travels on an excluded table's rows (a
// trigger on an included table writing to an excluded one) must still end
// before the next statement's rows, or the server silently skips them.
func TestFilterStatementEndOnAnExcludedTable(t *testing.T) {
	s := newStream(t)
	w := s.w
	w.TS++
	s.add(w.GTID(0, 1, binlogtest.FlagsTrans), w.TableMap(18, "app", "t"), w.TableMap(20, "app", "secret"),
		w.WriteRows(18, false, 10), w.WriteRows(20, true, 10),
		w.TableMap(22, "app", "z"), w.WriteRows(22, true, 10), w.XID(1))
	tMap, tRows, zMap, zRows := s.evs[2].Raw, s.evs[4].Raw, s.evs[6].Raw, s.evs[7].Raw
	f, committed := replicaFiltered(t, s)
	if !sameStrings(committed, gtids(1)) {
		t.Errorf("committed %v", committed)
	}
	want := []string{fdeOf(s), "SET @@session.gtid_domain_id=0, @@session.server_id=7", "SET @@session.gtid_seq_no=1",
		"SET TIMESTAMP=1700000001", "BEGIN",
		string(binlogStatement([][]byte{tMap, tRows})), string(binlogStatement([][]byte{zMap, zRows})), "COMMIT"}
	if got := f.statements(); !sameStrings(got, want) {
		t.Errorf("statements\n got %s\nwant %s", short(got), short(want))
	}
}
