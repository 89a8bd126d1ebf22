package binlog

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/go-mysql-org/go-mysql/replication"
)

// Txn describes one source transaction (an event group): the events from
// its GTID event to its commit, as the primary wrote them.
type Txn struct {
	// GTID is "domain-server-seq" (MariaDB) or "uuid:gno" (MySQL).
	GTID string `json:"gtid"`
	// CommitID groups transactions the primary committed together
	// (MariaDB commit_id; MySQL last_committed). 0 when absent.
	CommitID uint64 `json:"commit_id,omitempty"`
	// SeqNumber is MySQL's logical clock sequence_number.
	SeqNumber int64 `json:"sequence_number,omitempty"`
	// Flags are MariaDB's GTID event flags (standalone, transactional, DDL ...).
	Flags byte `json:"flags,omitempty"`
	// Time is the commit timestamp, Unix seconds: the binlog's resolution.
	Time uint32 `json:"time"`
	// Tables are the db.table names the transaction's table maps name.
	Tables []string `json:"tables,omitempty"`
	// DDL is set when the group holds a statement that is not row data.
	DDL bool `json:"ddl,omitempty"`
	// Statement is the first query of a statement group (DDL), shortened.
	Statement string `json:"statement,omitempty"`
	// DB is the default database of that statement.
	DB string `json:"db,omitempty"`
	// EndLogPos is the primary's position after the transaction.
	EndLogPos uint32 `json:"end_log_pos"`
	// Events and Bytes count the group's raw events.
	Events int   `json:"events"`
	Bytes  int64 `json:"bytes"`
}

// Grouper turns a sequence of events into transactions. Events outside a
// group (format descriptions, rotations, GTID lists, heartbeats) are
// reported as such so the caller can skip them.
type Grouper struct {
	cur    *Txn
	tables map[string]struct{}
	// waitQuery is set for MariaDB standalone groups and MySQL groups whose
	// first statement is not BEGIN: the next query ends the group.
	standalone bool
	sawBegin   bool
}

// Role is what an event means to its transaction.
type Role int

const (
	// Outside: not part of any transaction (FDE, rotate, GTID list, heartbeat ...).
	Outside Role = iota
	// Begin: the GTID event opening a group.
	Begin
	// Middle: inside a group.
	Middle
	// End: the event closing a group; Txn() returns the finished group.
	End
)

// Feed classifies ev and updates the open group. An event inside a group
// with no opening GTID event is an error: binvault only handles GTID streams.
func (g *Grouper) Feed(ev Event) (Role, error) {
	switch e := ev.Parsed.(type) {
	case *replication.MariadbGTIDEvent:
		if g.cur != nil {
			return Outside, fmt.Errorf("GTID %s starts inside the unfinished transaction %s", e.GTID.String(), g.cur.GTID)
		}
		// The GTID comes from the raw bytes, not the parsed event: go-mysql
		// before v1.15 overwrote the parsed sequence numbers of buffered
		// events (replicator's TestBufferedGTIDEventsKeepTheirSequenceNumbers),
		// and the archive must never carry a wrong GTID.
		if len(ev.Raw) < HeaderSize+12 {
			return Outside, fmt.Errorf("GTID event of %d bytes is too short", len(ev.Raw))
		}
		seq := binary.LittleEndian.Uint64(ev.Raw[HeaderSize:])
		domain := binary.LittleEndian.Uint32(ev.Raw[HeaderSize+8:])
		if seq != e.GTID.SequenceNumber || domain != e.GTID.DomainID {
			return Outside, fmt.Errorf("parsed GTID %s disagrees with the event bytes (%d-%d-%d)", e.GTID.String(), domain, ev.Header.ServerID, seq)
		}
		g.open(ev, fmt.Sprintf("%d-%d-%d", domain, ev.Header.ServerID, seq))
		g.cur.Flags = e.Flags
		g.cur.CommitID = e.CommitID
		g.cur.DDL = e.Flags&replication.BINLOG_MARIADB_FL_DDL != 0
		g.standalone = e.Flags&replication.BINLOG_MARIADB_FL_STANDALONE != 0
		// MariaDB writes no BEGIN: the GTID event opens the transaction,
		// so a query inside a transactional group (XA END, a statement
		// logged in STATEMENT format) is not DDL; the event's DDL flag says
		// what is.
		g.sawBegin = !g.standalone
		return Begin, nil
	case *replication.GTIDEvent:
		if g.cur != nil {
			return Outside, fmt.Errorf("GTID event starts inside the unfinished transaction %s", g.cur.GTID)
		}
		gtid := ""
		if ev.Header.Type == replication.GTID_EVENT {
			gtid = MySQLGTID(e)
		}
		g.open(ev, gtid)
		g.cur.CommitID = uint64(e.LastCommitted)
		g.cur.SeqNumber = e.SequenceNumber
		g.standalone = true // until a BEGIN says otherwise
		return Begin, nil
	}
	if g.cur == nil {
		switch ev.Header.Type {
		case replication.FORMAT_DESCRIPTION_EVENT, replication.ROTATE_EVENT, replication.HEARTBEAT_EVENT,
			replication.MARIADB_GTID_LIST_EVENT, replication.MARIADB_BINLOG_CHECKPOINT_EVENT,
			replication.PREVIOUS_GTIDS_EVENT, replication.STOP_EVENT, replication.MARIADB_START_ENCRYPTION_EVENT,
			replication.HEARTBEAT_LOG_EVENT_V2, replication.IGNORABLE_EVENT, replication.MARIADB_ANNOTATE_ROWS_EVENT:
			return Outside, nil
		}
		return Outside, fmt.Errorf("%s event outside a GTID transaction (log pos %d): binvault needs GTIDs on", ev.Header.Type, ev.Header.LogPos)
	}
	g.cur.Events++
	g.cur.Bytes += int64(len(ev.Raw))
	g.cur.EndLogPos = ev.Header.LogPos
	g.cur.Time = ev.Header.Timestamp
	switch e := ev.Parsed.(type) {
	case *replication.TableMapEvent:
		g.tables[string(e.Schema)+"."+string(e.Table)] = struct{}{}
	case *replication.XIDEvent:
		return End, nil
	case *replication.QueryEvent:
		q := strings.TrimSpace(string(e.Query))
		upper := strings.ToUpper(q)
		switch {
		case upper == "BEGIN" || strings.HasPrefix(upper, "XA START"):
			g.standalone = false
			g.sawBegin = true
			return Middle, nil
		case upper == "COMMIT" || upper == "ROLLBACK":
			return End, nil
		}
		if g.cur.Statement == "" {
			g.cur.Statement = Shorten(q, 200)
			g.cur.DB = string(e.Schema)
		}
		if !g.sawBegin {
			g.cur.DDL = true
		}
		if g.standalone {
			return End, nil
		}
	case *replication.GenericEvent:
		if ev.Header.Type == replication.XA_PREPARE_LOG_EVENT {
			return End, nil
		}
	case *replication.TransactionPayloadEvent:
		// MySQL binlog_transaction_compression: the whole group in one event.
		return End, nil
	}
	return Middle, nil
}

func (g *Grouper) open(ev Event, gtid string) {
	g.cur = &Txn{GTID: gtid, Time: ev.Header.Timestamp, EndLogPos: ev.Header.LogPos, Events: 1, Bytes: int64(len(ev.Raw))}
	g.tables = map[string]struct{}{}
	g.standalone, g.sawBegin = false, false
}

// Txn returns the transaction that the last End event closed, and forgets it.
func (g *Grouper) Txn() *Txn {
	t := g.cur
	g.cur = nil
	if t != nil {
		for k := range g.tables {
			t.Tables = append(t.Tables, k)
		}
		sort.Strings(t.Tables)
	}
	return t
}

// Open reports whether a group has begun and not ended.
func (g *Grouper) Open() bool { return g.cur != nil }

// Reset drops an unfinished group (after a torn tail or a reconnect).
func (g *Grouper) Reset() { g.cur = nil }

// MySQLGTID renders a MySQL GTID event's transaction id, uuid:gno ("" for
// an anonymous transaction).
func MySQLGTID(e *replication.GTIDEvent) string {
	u := hex.EncodeToString(e.SID)
	if len(u) != 32 {
		return ""
	}
	return fmt.Sprintf("%s-%s-%s-%s-%s:%d", u[0:8], u[8:12], u[12:16], u[16:20], u[20:32], e.GNO)
}

// Shorten folds a statement's white space and cuts it to about n bytes
// (at a character boundary), for manifests, logs and error messages.
func Shorten(stmt string, n int) string {
	s := strings.Join(strings.Fields(stmt), " ")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Position is a point in the primary's history: the GTID set executed up
// to it and, where known, the primary's binlog file and offset there.
type Position struct {
	GTIDSet string `json:"gtid_set"`
	File    string `json:"file,omitempty"`
	Pos     uint32 `json:"pos,omitempty"`
}

func (p Position) String() string {
	if p.File == "" {
		return fmt.Sprintf("gtid %q", p.GTIDSet)
	}
	return fmt.Sprintf("gtid %q (%s:%d)", p.GTIDSet, p.File, p.Pos)
}
