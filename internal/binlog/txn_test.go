package binlog

import (
	"encoding/binary"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/binlog/binlogtest"
)

// decodeAll decodes events written by w (the first must be its format
// description).
func decodeAll(t *testing.T, raws ...[]byte) []Event {
	t.Helper()
	d := NewDecoder("mariadb")
	out := make([]Event, len(raws))
	for i, raw := range raws {
		ev, err := d.Decode(raw)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		out[i] = ev
	}
	return out
}

// feed runs events through g and returns their roles; it fails on an error.
func feed(t *testing.T, g *Grouper, evs []Event) []Role {
	t.Helper()
	var roles []Role
	for i, ev := range evs {
		r, err := g.Feed(ev)
		if err != nil {
			t.Fatalf("event %d (%s): %v", i, ev.Header.Type, err)
		}
		roles = append(roles, r)
	}
	return roles
}

func rolesEqual(a []Role, b ...Role) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestGrouperMariaDBTransactions(t *testing.T) {
	w := binlogtest.NewEventWriter(7)
	fde := w.FormatDescription()
	var evs [][]byte
	evs = append(evs, fde)
	// BEGIN ... XID (InnoDB), with a group commit id.
	evs = append(evs, w.GTID(0, 4, binlogtest.FlagsTrans|replication.BINLOG_MARIADB_FL_GROUP_COMMIT_ID), w.TableMap(18, "app", "t"), w.WriteRows(18, false, 10), w.TableMap(19, "app", "a"), w.WriteRows(19, true, 10))
	w.TS++
	evs = append(evs, w.XID(12))
	all := decodeAll(t, evs...)
	var g Grouper
	roles := feed(t, &g, all)
	if !rolesEqual(roles, Outside, Begin, Middle, Middle, Middle, Middle, End) {
		t.Fatalf("roles %v", roles)
	}
	if !g.Open() {
		t.Fatal("closed before Txn()")
	}
	txn := g.Txn()
	if g.Open() || g.Txn() != nil {
		t.Fatal("Txn() does not forget the group")
	}
	bytes := 0
	for _, e := range evs[1:] {
		bytes += len(e)
	}
	want := Txn{GTID: "0-7-4", CommitID: 1004, Flags: binlogtest.FlagsTrans | replication.BINLOG_MARIADB_FL_GROUP_COMMIT_ID, Time: w.TS, EndLogPos: all[6].Header.LogPos, Events: 6, Bytes: int64(bytes)}
	if txn.GTID != want.GTID || txn.CommitID != want.CommitID || txn.Flags != want.Flags || txn.Time != want.Time ||
		txn.EndLogPos != want.EndLogPos || txn.Events != want.Events || txn.Bytes != want.Bytes || txn.DDL || txn.Statement != "" {
		t.Errorf("txn %+v\nwant %+v", *txn, want)
	}
	if strings.Join(txn.Tables, ",") != "app.a,app.t" {
		t.Errorf("tables %v, want sorted app.a,app.t", txn.Tables)
	}

	// BEGIN ... COMMIT query (MyISAM: not transactional), then a ROLLBACK.
	for _, end := range []string{"COMMIT", " rollback "} {
		w := binlogtest.NewEventWriter(7)
		all := decodeAll(t, w.FormatDescription(), w.GTID(0, 6, replication.BINLOG_MARIADB_FL_ALLOW_PARALLEL), w.TableMap(22, "app", "m"), w.WriteRows(22, true, 5), w.Query("app", end))
		var g Grouper
		if roles := feed(t, &g, all); !rolesEqual(roles, Outside, Begin, Middle, Middle, End) {
			t.Errorf("%q: roles %v", end, roles)
		}
		if txn := g.Txn(); txn.GTID != "0-7-6" || txn.DDL || txn.Statement != "" || txn.Events != 4 {
			t.Errorf("%q: %+v", end, *txn)
		}
	}
}

func TestGrouperStandaloneEndsAtFirstQuery(t *testing.T) {
	w := binlogtest.NewEventWriter(9)
	all := decodeAll(t, w.FormatDescription(),
		w.GTID(3, 2, binlogtest.FlagsDDL), w.Query("shop", "CREATE TABLE\n  t (id INT)"),
		w.GTID(3, 3, binlogtest.FlagsDDL), w.Query("shop", "DROP TABLE u"))
	var g Grouper
	if roles := feed(t, &g, all[:3]); !rolesEqual(roles, Outside, Begin, End) {
		t.Fatalf("roles %v", roles)
	}
	txn := g.Txn()
	if txn.GTID != "3-9-2" || !txn.DDL || txn.Statement != "CREATE TABLE t (id INT)" || txn.DB != "shop" || txn.Events != 2 {
		t.Errorf("%+v", *txn)
	}
	// The next group opens cleanly after it.
	if roles := feed(t, &g, all[3:]); !rolesEqual(roles, Begin, End) {
		t.Fatalf("roles %v", roles)
	}
	if txn := g.Txn(); txn.GTID != "3-9-3" || txn.Statement != "DROP TABLE u" {
		t.Errorf("%+v", *txn)
	}
}

func TestGrouperXAPrepare(t *testing.T) {
	w := binlogtest.NewEventWriter(7)
	all := decodeAll(t, w.FormatDescription(),
		w.GTID(0, 8, binlogtest.FlagsTrans|64 /* FL_PREPARED_XA */), w.TableMap(18, "app", "t"), w.WriteRows(18, true, 5),
		w.Query("app", "XA END X'7831',X'',1"), w.XAPrepare())
	var g Grouper
	if roles := feed(t, &g, all); !rolesEqual(roles, Outside, Begin, Middle, Middle, Middle, End) {
		t.Fatalf("roles %v", roles)
	}
	if txn := g.Txn(); txn.GTID != "0-7-8" || txn.Events != 5 || txn.DDL {
		t.Errorf("%+v", *txn)
	}
}

func TestGrouperOutsideEvents(t *testing.T) {
	w := binlogtest.NewEventWriter(7)
	fde := w.FormatDescription()
	all := decodeAll(t, fde, w.Rotate("mariadb-bin.000002"),
		w.Event(replication.MARIADB_GTID_LIST_EVENT, 0, binary.LittleEndian.AppendUint32(nil, 0)),
		w.Event(replication.MARIADB_BINLOG_CHECKPOINT_EVENT, 0, append(binary.LittleEndian.AppendUint32(nil, 18), "mariadb-bin.000001"...)),
		w.TableMap(18, "app", "t"), w.WriteRows(18, true, 5), w.Query("app", "INSERT INTO t VALUES (1)"), w.XID(1))
	var g Grouper
	if roles := feed(t, &g, all[:4]); !rolesEqual(roles, Outside, Outside, Outside, Outside) {
		t.Fatalf("roles %v", roles)
	}
	for _, ev := range all[4:] {
		role, err := g.Feed(ev)
		if err == nil || role != Outside || !strings.Contains(err.Error(), "outside a GTID transaction") {
			t.Errorf("%s outside a transaction: %v, %v", ev.Header.Type, role, err)
		}
	}
	if g.Open() {
		t.Error("an event outside a transaction opened one")
	}
}

func TestGrouperGTIDInsideOpenTransaction(t *testing.T) {
	w := binlogtest.NewEventWriter(7)
	all := decodeAll(t, w.FormatDescription(), w.GTID(0, 4, binlogtest.FlagsTrans), w.TableMap(18, "app", "t"), w.GTID(0, 5, binlogtest.FlagsTrans), w.GTID(0, 6, binlogtest.FlagsDDL), w.Query("", "DROP DATABASE x"))
	var g Grouper
	feed(t, &g, all[:3])
	_, err := g.Feed(all[3])
	if err == nil || !strings.Contains(err.Error(), "0-7-5") || !strings.Contains(err.Error(), "0-7-4") {
		t.Fatalf("a GTID inside an open transaction: %v", err)
	}
	// After a torn tail or a reconnect, Reset drops the unfinished group.
	g.Reset()
	if g.Open() {
		t.Fatal("open after Reset")
	}
	if roles := feed(t, &g, all[4:]); !rolesEqual(roles, Begin, End) {
		t.Fatalf("roles %v", roles)
	}
	if txn := g.Txn(); txn.GTID != "0-7-6" || txn.Events != 2 {
		t.Errorf("%+v", *txn)
	}
}

// The GTID comes from the event's bytes and header; a parsed event that
// disagrees with them (go-mysql before v1.15 overwrote sequence numbers)
// is refused, never archived under a wrong GTID.
func TestGrouperGTIDFromRawBytes(t *testing.T) {
	w := binlogtest.NewEventWriter(7)
	all := decodeAll(t, w.FormatDescription(), w.GTID(2, 1234567890123, binlogtest.FlagsDDL))
	gev := all[1]
	parsed := gev.Parsed.(*replication.MariadbGTIDEvent)

	// The server id is the header's, whatever the parsed event says.
	parsed.GTID.ServerID = 99
	var g Grouper
	if role, err := g.Feed(gev); err != nil || role != Begin || g.cur.GTID != "2-7-1234567890123" {
		t.Fatalf("role %v, err %v, gtid %q", role, err, g.cur.GTID)
	}
	for name, damage := range map[string]func(*replication.MariadbGTIDEvent){
		"sequence": func(e *replication.MariadbGTIDEvent) { e.GTID.SequenceNumber = 6 },
		"domain":   func(e *replication.MariadbGTIDEvent) { e.GTID.DomainID = 0 },
	} {
		e := *parsed
		damage(&e)
		ev := gev
		ev.Parsed = &e
		var g Grouper
		_, err := g.Feed(ev)
		if err == nil || !strings.Contains(err.Error(), "disagrees") || !strings.Contains(err.Error(), "2-7-1234567890123") {
			t.Errorf("%s disagreement: %v", name, err)
		}
		if g.Open() {
			t.Errorf("%s disagreement opened a group", name)
		}
	}
	short := gev
	short.Raw = gev.Raw[:HeaderSize+11]
	if _, err := (&Grouper{}).Feed(short); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("short GTID event: %v", err)
	}
}

func TestMySQLGTID(t *testing.T) {
	sid := []byte{0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62}
	if got := MySQLGTID(&replication.GTIDEvent{SID: sid, GNO: 23}); got != "3e11fa47-71ca-11e1-9e33-c80aa9429562:23" {
		t.Errorf("MySQLGTID = %q", got)
	}
	if got := MySQLGTID(&replication.GTIDEvent{SID: sid[:15], GNO: 23}); got != "" {
		t.Errorf("a 15-byte SID gave %q", got)
	}
}

func TestShorten(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"  CREATE\tTABLE\n\n  t (id INT)  ", 200, "CREATE TABLE t (id INT)"},
		{"abcdef", 6, "abcdef"},
		{"abcdef", 3, "abc…"},
		{"a  b  c", 3, "a b…"},
		{"ééé", 4, "éé…"}, // 6 bytes: cut after two whole characters
		{"ééé", 3, "é…"},  // byte 3 is inside the second é
		{"日本語", 5, "日…"},
		{"x", 0, "…"},
	} {
		if got := Shorten(c.in, c.n); got != c.want {
			t.Errorf("Shorten(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
	// Whatever the cut, the result is valid UTF-8 and a prefix of the folded text.
	s := "Zürich — 東京 ünïcödé\tand\nmore"
	folded := strings.Join(strings.Fields(s), " ")
	for n := 0; n <= len(folded); n++ {
		got := Shorten(s, n)
		body := strings.TrimSuffix(got, "…")
		if !utf8.ValidString(got) || !strings.HasPrefix(folded, body) || len(body) > n {
			t.Errorf("Shorten(%q, %d) = %q", s, n, got)
		}
	}
}
