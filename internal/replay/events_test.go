package replay

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/binlog/binlogtest"
)

// stream is a source binlog being written (by binlogtest.EventWriter):
// raw events, decoded as the applier and restore decode them.
type stream struct {
	t   *testing.T
	w   *binlogtest.EventWriter
	dec *binlog.Decoder
	evs []binlog.Event
}

func newStream(t *testing.T) *stream {
	s := &stream{t: t, w: binlogtest.NewEventWriter(7), dec: binlog.NewDecoder("mariadb")}
	s.add(s.w.FormatDescription())
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
	s.w.TS++
	return s.add(s.w.GTID(0, seq, binlogtest.FlagsTrans), s.w.TableMap(18, "app", "t"), s.w.WriteRows(18, true, 10), s.w.XID(seq))
}

// ddl adds a standalone statement group 0-7-seq.
func (s *stream) ddl(seq uint64, db, q string) *stream {
	s.w.TS++
	return s.add(s.w.GTID(0, seq, binlogtest.FlagsDDL), s.w.Query(db, q))
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
