package replay

import (
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/binlog"
)

// eventWriter builds raw events as a MariaDB 10.11 primary writes them
// (v4 headers, CRC32 checksums). A copy of internal/binlog's test helper,
// which checks it against a real server's file
// (TestEventWriterMatchesRealServer); test helpers cannot cross packages.
type eventWriter struct {
	server uint32
	ts     uint32
	pos    uint32
}

func newEventWriter(server uint32) *eventWriter {
	return &eventWriter{server: server, ts: 1_700_000_000, pos: uint32(len(binlog.Magic))}
}

func (w *eventWriter) event(typ replication.EventType, body []byte) []byte {
	size := binlog.HeaderSize + len(body) + 4
	w.pos += uint32(size)
	b := make([]byte, 0, size)
	b = binary.LittleEndian.AppendUint32(b, w.ts)
	b = append(b, byte(typ))
	b = binary.LittleEndian.AppendUint32(b, w.server)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	b = binary.LittleEndian.AppendUint32(b, w.pos)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = append(b, body...)
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
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
	body = append(body, binlog.HeaderSize)
	body = append(body, mariadbPostHeaderLens...)
	body = append(body, byte(replication.BINLOG_CHECKSUM_ALG_CRC32))
	return w.event(replication.FORMAT_DESCRIPTION_EVENT, body)
}

// MariaDB GTID flags of the common group shapes.
const (
	flTrans = replication.BINLOG_MARIADB_FL_TRANSACTIONAL | replication.BINLOG_MARIADB_FL_ALLOW_PARALLEL
	flDDL   = replication.BINLOG_MARIADB_FL_STANDALONE | replication.BINLOG_MARIADB_FL_ALLOW_PARALLEL | replication.BINLOG_MARIADB_FL_DDL
)

func (w *eventWriter) gtid(domain uint32, seq uint64, flags byte) []byte {
	body := binary.LittleEndian.AppendUint64(nil, seq)
	body = binary.LittleEndian.AppendUint32(body, domain)
	body = append(body, flags)
	body = append(body, make([]byte, 6)...)
	return w.event(replication.MARIADB_GTID_EVENT, body)
}

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
	return w.event(replication.QUERY_EVENT, body)
}

func (w *eventWriter) xid(x uint64) []byte {
	return w.event(replication.XID_EVENT, binary.LittleEndian.AppendUint64(nil, x))
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
	return w.event(replication.TABLE_MAP_EVENT, body)
}

// writeRows is a WRITE_ROWS_EVENT_V1 for table id with about payload
// bytes of row images.
func (w *eventWriter) writeRows(id uint64, stmtEnd bool, payload int) []byte {
	body := binary.LittleEndian.AppendUint64(nil, id)[:6]
	var flags uint16
	if stmtEnd {
		flags = replication.RowsEventStmtEndFlag
	}
	body = binary.LittleEndian.AppendUint16(body, flags)
	body = append(body, 1, 1) // one column, present
	for n := 0; n < payload; n += 5 {
		body = append(body, 0, 1, 0, 0, 0)
	}
	return w.event(replication.WRITE_ROWS_EVENTv1, body)
}

// stream is a source binlog being written: raw events, decoded as the
// applier and restore decode them.
type stream struct {
	t   *testing.T
	w   *eventWriter
	dec *binlog.Decoder
	evs []binlog.Event
}

func newStream(t *testing.T) *stream {
	s := &stream{t: t, w: newEventWriter(7), dec: binlog.NewDecoder("mariadb")}
	s.add(s.w.formatDescription())
	return s
}

func (s *stream) add(raws ...[]byte) *stream {
	s.t.Helper()
	for _, raw := range raws {
		ev, err := s.dec.Decode(raw)
		if err != nil {
			s.t.Fatal(err)
		}
		s.evs = append(s.evs, ev)
	}
	return s
}

// rows adds a transaction 0-7-seq writing one row to app.t.
func (s *stream) rows(seq uint64) *stream {
	s.w.ts++
	return s.add(s.w.gtid(0, seq, flTrans), s.w.tableMap(18, "app", "t"), s.w.writeRows(18, true, 10), s.w.xid(seq))
}

// ddl adds a standalone statement group 0-7-seq.
func (s *stream) ddl(seq uint64, db, q string) *stream {
	s.w.ts++
	return s.add(s.w.gtid(0, seq, flDDL), s.w.query(db, q))
}

// binlogEvents decodes a BINLOG '...' statement into its raw events.
func binlogEvents(t *testing.T, stmt string) [][]byte {
	t.Helper()
	b64, ok := strings.CutPrefix(stmt, "BINLOG '")
	if !ok || !strings.HasSuffix(b64, "'") {
		t.Fatalf("not a BINLOG statement: %.60s", stmt)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(b64, "'"))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for len(raw) > 0 {
		if len(raw) < binlog.HeaderSize {
			t.Fatalf("BINLOG statement ends inside a header")
		}
		size := int(binlog.ParseHeader(raw).Size)
		if size > len(raw) || size < binlog.HeaderSize {
			t.Fatalf("BINLOG statement holds an event of %d bytes with %d left", size, len(raw))
		}
		out = append(out, raw[:size])
		raw = raw[size:]
	}
	return out
}
