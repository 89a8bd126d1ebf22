package binlog

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/go-mysql-org/go-mysql/replication"
)

// eventWriter builds raw events as a MariaDB 10.11 primary writes them
// (v4 headers, CRC32 checksums, end_log_pos counted from the magic), for
// tests that need exact control over a stream. testdata holds a real
// server's file; TestEventWriterMatchesRealServer keeps the two in step.
// internal/replay has a copy (test helpers cannot cross packages).
type eventWriter struct {
	server uint32
	ts     uint32
	pos    uint32 // end_log_pos of the last event written
	noCRC  bool   // binlog_checksum=NONE
}

func newEventWriter(server uint32) *eventWriter {
	return &eventWriter{server: server, ts: 1_700_000_000, pos: uint32(len(Magic))}
}

// event frames body with a header and, unless noCRC, a checksum.
func (w *eventWriter) event(typ replication.EventType, flags uint16, body []byte) []byte {
	size := HeaderSize + len(body)
	if !w.noCRC {
		size += crcSize
	}
	w.pos += uint32(size)
	b := make([]byte, 0, size)
	b = binary.LittleEndian.AppendUint32(b, w.ts)
	b = append(b, byte(typ))
	b = binary.LittleEndian.AppendUint32(b, w.server)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	b = binary.LittleEndian.AppendUint32(b, w.pos)
	b = binary.LittleEndian.AppendUint16(b, flags)
	b = append(b, body...)
	if !w.noCRC {
		b = binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	}
	return b
}

// mariadbPostHeaderLens is the post-header length of each event type
// (type-1) in a MariaDB 10.11.19 format description event.
var mariadbPostHeaderLens = func() []byte {
	l := make([]byte, 171)
	copy(l, []byte{56, 13, 0, 8, 0, 18, 0, 4, 4, 4, 4, 18, 0, 0, 228, 0, 4, 26, 8, 0, 0, 0, 8, 8, 8, 2, 0, 0, 0, 10, 10, 10, 0, 0, 0, 0, 0, 0, 10, 10, 10})
	copy(l[160:], []byte{4, 19, 4, 0, 13, 8, 8, 8, 10, 10, 10})
	return l
}()

func (w *eventWriter) formatDescription() []byte {
	body := binary.LittleEndian.AppendUint16(nil, 4)
	ver := make([]byte, 50)
	copy(ver, "10.11.19-MariaDB-log")
	body = append(body, ver...)
	body = binary.LittleEndian.AppendUint32(body, w.ts)
	body = append(body, HeaderSize)
	body = append(body, mariadbPostHeaderLens...)
	alg := byte(replication.BINLOG_CHECKSUM_ALG_CRC32)
	if w.noCRC {
		alg = byte(replication.BINLOG_CHECKSUM_ALG_OFF)
	}
	body = append(body, alg)
	// The format description carries a checksum whatever it announces
	// for the events that follow.
	save := w.noCRC
	w.noCRC = false
	raw := w.event(replication.FORMAT_DESCRIPTION_EVENT, 0, body)
	w.noCRC = save
	return raw
}

// gtid is a MariaDB GTID event; flags are BINLOG_MARIADB_FL_*.
func (w *eventWriter) gtid(domain uint32, seq uint64, flags byte) []byte {
	body := binary.LittleEndian.AppendUint64(nil, seq)
	body = binary.LittleEndian.AppendUint32(body, domain)
	body = append(body, flags)
	if flags&replication.BINLOG_MARIADB_FL_GROUP_COMMIT_ID != 0 {
		body = binary.LittleEndian.AppendUint64(body, seq+1000)
	} else {
		body = append(body, make([]byte, 6)...)
	}
	return w.event(replication.MARIADB_GTID_EVENT, 0, body)
}

// Flags of the common MariaDB group shapes.
const (
	flTrans = replication.BINLOG_MARIADB_FL_TRANSACTIONAL | replication.BINLOG_MARIADB_FL_ALLOW_PARALLEL
	flDDL   = replication.BINLOG_MARIADB_FL_STANDALONE | replication.BINLOG_MARIADB_FL_ALLOW_PARALLEL | replication.BINLOG_MARIADB_FL_DDL
)

// query is a query event without status variables.
func (w *eventWriter) query(db, q string) []byte {
	body := binary.LittleEndian.AppendUint32(nil, 6) // thread id
	body = binary.LittleEndian.AppendUint32(body, 0) // exec time
	body = append(body, byte(len(db)))
	body = binary.LittleEndian.AppendUint16(body, 0) // error code
	body = binary.LittleEndian.AppendUint16(body, 0) // status vars length
	body = append(body, db...)
	body = append(body, 0)
	body = append(body, q...)
	return w.event(replication.QUERY_EVENT, 0, body)
}

func (w *eventWriter) xid(x uint64) []byte {
	return w.event(replication.XID_EVENT, 0, binary.LittleEndian.AppendUint64(nil, x))
}

// tableMap maps id to db.table with one INT column.
func (w *eventWriter) tableMap(id uint64, db, table string) []byte {
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
	return w.event(replication.TABLE_MAP_EVENT, 0, body)
}

// writeRows is a WRITE_ROWS_EVENT_V1 for table id whose row images take
// about payload bytes (never decoded by binvault: the server applies them).
func (w *eventWriter) writeRows(id uint64, stmtEnd bool, payload int) []byte {
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
	return w.event(replication.WRITE_ROWS_EVENTv1, 0, body)
}

// xaPrepare is MariaDB's XA_PREPARE_LOG_EVENT for xid 'x1'.
func (w *eventWriter) xaPrepare() []byte {
	body := []byte{0}                                // one phase: no
	body = binary.LittleEndian.AppendUint32(body, 1) // format id
	body = binary.LittleEndian.AppendUint32(body, 2) // gtrid length
	body = binary.LittleEndian.AppendUint32(body, 0) // bqual length
	body = append(body, 'x', '1')
	return w.event(replication.XA_PREPARE_LOG_EVENT, 0, body)
}

func (w *eventWriter) rotate(next string) []byte {
	return w.event(replication.ROTATE_EVENT, 0, append(binary.LittleEndian.AppendUint64(nil, 4), next...))
}

// file joins events into a binlog file.
func file(events ...[]byte) []byte {
	out := append([]byte(nil), Magic...)
	for _, e := range events {
		out = append(out, e...)
	}
	return out
}
