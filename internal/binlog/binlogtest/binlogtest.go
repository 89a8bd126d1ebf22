// Package binlogtest builds raw binlog events for tests, as a MariaDB 10.11
// primary writes them, and reads streams of events back.
//
// It does not import internal/binlog, whose own tests use it: it defines
// the few constants of the format it needs. internal/binlog's
// TestEventWriterMatchesRealServer checks them and the events against a
// real server's binlog file.
package binlogtest

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"
)

// HeaderSize is the v4 event header length (binlog.HeaderSize).
const HeaderSize = 19

// crcSize is the length of an event's CRC32 checksum.
const crcSize = 4

// Magic starts every binlog file (binlog.Magic).
var Magic = []byte{0xfe, 'b', 'i', 'n'}

// Flags of the common MariaDB GTID group shapes
// (replication.BINLOG_MARIADB_FL_*).
const (
	// FlagsTrans: a transaction on a transactional engine, BEGIN ... XID.
	FlagsTrans = replication.BINLOG_MARIADB_FL_TRANSACTIONAL | replication.BINLOG_MARIADB_FL_ALLOW_PARALLEL
	// FlagsDDL: a standalone DDL statement.
	FlagsDDL = replication.BINLOG_MARIADB_FL_STANDALONE | replication.BINLOG_MARIADB_FL_ALLOW_PARALLEL | replication.BINLOG_MARIADB_FL_DDL
)

// EventWriter builds raw events as a MariaDB 10.11 primary writes them (v4
// headers, CRC32 checksums, end_log_pos counted from the magic), for tests
// that need exact control over a stream. Each method returns one whole
// event and advances Pos.
type EventWriter struct {
	Server uint32 // the server id in every header
	TS     uint32 // the timestamp of the events written next
	Pos    uint32 // end_log_pos of the last event written
	NoCRC  bool   // binlog_checksum=NONE: no checksums after the format description
}

// NewEventWriter returns a writer for server at the start of a file
// (Pos just after the magic), at timestamp 1_700_000_000.
func NewEventWriter(server uint32) *EventWriter {
	return &EventWriter{Server: server, TS: 1_700_000_000, Pos: uint32(len(Magic))}
}

// Event frames body with a header carrying typ and flags and, unless
// NoCRC, a checksum.
func (w *EventWriter) Event(typ replication.EventType, flags uint16, body []byte) []byte {
	size := HeaderSize + len(body)
	if !w.NoCRC {
		size += crcSize
	}
	w.Pos += uint32(size)
	b := make([]byte, 0, size)
	b = binary.LittleEndian.AppendUint32(b, w.TS)
	b = append(b, byte(typ))
	b = binary.LittleEndian.AppendUint32(b, w.Server)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	b = binary.LittleEndian.AppendUint32(b, w.Pos)
	b = binary.LittleEndian.AppendUint16(b, flags)
	b = append(b, body...)
	if !w.NoCRC {
		b = binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	}
	return b
}

// PostHeaderLens is the post-header length of each event type (type-1)
// in a MariaDB 10.11.19 format description event.
var PostHeaderLens = func() []byte {
	l := make([]byte, 171)
	copy(l, []byte{56, 13, 0, 8, 0, 18, 0, 4, 4, 4, 4, 18, 0, 0, 228, 0, 4, 26, 8, 0, 0, 0, 8, 8, 8, 2, 0, 0, 0, 10, 10, 10, 0, 0, 0, 0, 0, 0, 10, 10, 10})
	copy(l[160:], []byte{4, 19, 4, 0, 13, 8, 8, 8, 10, 10, 10})
	return l
}()

// FormatDescription is a MariaDB 10.11.19 format description event. It
// announces CRC32 checksums, or none when NoCRC; it carries a checksum
// itself either way, as the server's does.
func (w *EventWriter) FormatDescription() []byte {
	body := binary.LittleEndian.AppendUint16(nil, 4)
	ver := make([]byte, 50)
	copy(ver, "10.11.19-MariaDB-log")
	body = append(body, ver...)
	body = binary.LittleEndian.AppendUint32(body, w.TS)
	body = append(body, HeaderSize)
	body = append(body, PostHeaderLens...)
	alg := byte(replication.BINLOG_CHECKSUM_ALG_CRC32)
	if w.NoCRC {
		alg = byte(replication.BINLOG_CHECKSUM_ALG_OFF)
	}
	body = append(body, alg)
	save := w.NoCRC
	w.NoCRC = false
	raw := w.Event(replication.FORMAT_DESCRIPTION_EVENT, 0, body)
	w.NoCRC = save
	return raw
}

// GTID is a MariaDB GTID event for domain-Server-seq; flags are
// BINLOG_MARIADB_FL_* (FlagsTrans, FlagsDDL, ...). With
// FL_GROUP_COMMIT_ID the commit id is seq+1000.
func (w *EventWriter) GTID(domain uint32, seq uint64, flags byte) []byte {
	body := binary.LittleEndian.AppendUint64(nil, seq)
	body = binary.LittleEndian.AppendUint32(body, domain)
	body = append(body, flags)
	if flags&replication.BINLOG_MARIADB_FL_GROUP_COMMIT_ID != 0 {
		body = binary.LittleEndian.AppendUint64(body, seq+1000)
	} else {
		body = append(body, make([]byte, 6)...)
	}
	return w.Event(replication.MARIADB_GTID_EVENT, 0, body)
}

// Query is a query event in database db without status variables
// (thread id 6).
func (w *EventWriter) Query(db, q string) []byte {
	body := binary.LittleEndian.AppendUint32(nil, 6) // thread id
	body = binary.LittleEndian.AppendUint32(body, 0) // exec time
	body = append(body, byte(len(db)))
	body = binary.LittleEndian.AppendUint16(body, 0) // error code
	body = binary.LittleEndian.AppendUint16(body, 0) // status vars length
	body = append(body, db...)
	body = append(body, 0)
	body = append(body, q...)
	return w.Event(replication.QUERY_EVENT, 0, body)
}

// XID is the commit of a transaction with xid x.
func (w *EventWriter) XID(x uint64) []byte {
	return w.Event(replication.XID_EVENT, 0, binary.LittleEndian.AppendUint64(nil, x))
}

// TableMap maps table id to db.table with one INT column.
func (w *EventWriter) TableMap(id uint64, db, table string) []byte {
	body := binary.LittleEndian.AppendUint64(nil, id)[:6]
	body = binary.LittleEndian.AppendUint16(body, 1)
	body = append(body, byte(len(db)))
	body = append(body, db...)
	body = append(body, 0, byte(len(table)))
	body = append(body, table...)
	body = append(body, 0)
	body = append(body, 1, 3) // one column, MYSQL_TYPE_LONG
	body = append(body, 0)    // no metadata
	body = append(body, 0)    // null bitmap
	return w.Event(replication.TABLE_MAP_EVENT, 0, body)
}

// WriteRows is a WRITE_ROWS_EVENT_V1 for table id whose row images take
// about payload bytes; stmtEnd sets the statement-end flag.
func (w *EventWriter) WriteRows(id uint64, stmtEnd bool, payload int) []byte {
	body := binary.LittleEndian.AppendUint64(nil, id)[:6]
	var flags uint16
	if stmtEnd {
		flags = replication.RowsEventStmtEndFlag
	}
	body = binary.LittleEndian.AppendUint16(body, flags)
	body = append(body, 1, 1) // one column, present
	for n := 0; n < payload; n += 5 {
		body = append(body, 0, 1, 0, 0, 0) // null bitmap, INT 1
	}
	return w.Event(replication.WRITE_ROWS_EVENTv1, 0, body)
}

// XAPrepare is MariaDB's XA_PREPARE_LOG_EVENT for xid 'x1'.
func (w *EventWriter) XAPrepare() []byte {
	body := []byte{0}                                // one phase: no
	body = binary.LittleEndian.AppendUint32(body, 1) // format id
	body = binary.LittleEndian.AppendUint32(body, 2) // gtrid length
	body = binary.LittleEndian.AppendUint32(body, 0) // bqual length
	body = append(body, 'x', '1')
	return w.Event(replication.XA_PREPARE_LOG_EVENT, 0, body)
}

// Rotate is a rotate event naming the next file.
func (w *EventWriter) Rotate(next string) []byte {
	return w.Event(replication.ROTATE_EVENT, 0, append(binary.LittleEndian.AppendUint64(nil, 4), next...))
}

// File joins events into a binlog file: the magic, then the events.
func File(events ...[]byte) []byte {
	out := append([]byte(nil), Magic...)
	for _, e := range events {
		out = append(out, e...)
	}
	return out
}

// ReadAll calls next (a binlog reader's Next) until it returns io.EOF
// itself (a clean end; not an error wrapping it) and returns what it
// returned before; any other error fails t.
func ReadAll[E any](t testing.TB, next func() (E, error)) []E {
	t.Helper()
	var out []E
	for {
		ev, err := next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("event %d: %v", len(out), err)
		}
		out = append(out, ev)
	}
}
