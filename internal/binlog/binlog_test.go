package binlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/binlog/binlogtest"
)

const realFile = "testdata/mariadb-10.11.binlog"

// smallFile is a format description and one transaction.
func smallFile() (raw []byte, sizes []int) {
	w := binlogtest.NewEventWriter(7)
	evs := [][]byte{w.FormatDescription(), w.GTID(0, 1, binlogtest.FlagsTrans), w.TableMap(18, "app", "t"), w.WriteRows(18, true, 20), w.XID(9)}
	for _, e := range evs {
		sizes = append(sizes, len(e))
	}
	return binlogtest.File(evs...), sizes
}

// newReader is a reader of the binlog file raw.
func newReader(t *testing.T, raw []byte) *Reader {
	t.Helper()
	r, err := NewReader(bytes.NewReader(raw), "mariadb")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// readAll reads events until an error; it checks the offsets on the way.
func readAll(t *testing.T, r *Reader) ([]Event, error) {
	t.Helper()
	var out []Event
	for {
		before := r.Offset()
		ev, err := r.Next()
		if err != nil {
			if r.Offset() != before {
				t.Errorf("offset moved from %d to %d on error %v", before, r.Offset(), err)
			}
			return out, err
		}
		if got := r.Offset() - before; got != int64(len(ev.Raw)) || int64(ev.Header.Size) != got {
			t.Errorf("offset advanced by %d for an event of %d bytes (header says %d)", got, len(ev.Raw), ev.Header.Size)
		}
		out = append(out, ev)
	}
}

func TestReaderOffsetsAndCleanEnd(t *testing.T) {
	raw, sizes := smallFile()
	r := newReader(t, raw)
	if r.Offset() != 4 {
		t.Fatalf("first event at offset %d, want 4", r.Offset())
	}
	evs, err := readAll(t, r)
	if err != io.EOF {
		t.Fatalf("end: %v, want io.EOF", err)
	}
	if len(evs) != len(sizes) {
		t.Fatalf("read %d events, want %d", len(evs), len(sizes))
	}
	off := int64(4)
	for i, ev := range evs {
		off += int64(sizes[i])
		if int64(ev.Header.LogPos) != off {
			t.Errorf("event %d (%s) ends at log pos %d, want %d", i, ev.Header.Type, ev.Header.LogPos, off)
		}
		if !VerifyCRC(ev.Raw) {
			t.Errorf("event %d: VerifyCRC false on a good event", i)
		}
	}
	if r.Offset() != int64(len(raw)) {
		t.Errorf("final offset %d, file is %d bytes", r.Offset(), len(raw))
	}
	if !r.Checksums {
		t.Error("Checksums false after a CRC32 format description")
	}
	if _, ok := evs[1].Parsed.(*replication.MariadbGTIDEvent); !ok {
		t.Errorf("event 1 parsed as %T", evs[1].Parsed)
	}
	// Raw is the reader's own copy: changing it changes nothing else.
	if &evs[1].Raw[0] == &raw[4+sizes[0]] {
		t.Error("Raw aliases the input")
	}
}

func TestReaderWithoutChecksums(t *testing.T) {
	w := binlogtest.NewEventWriter(7)
	w.NoCRC = true
	raw := binlogtest.File(w.FormatDescription(), w.GTID(0, 1, binlogtest.FlagsDDL), w.Query("app", "CREATE TABLE t (id INT)"))
	r := newReader(t, raw)
	evs, err := readAll(t, r)
	if err != io.EOF || len(evs) != 3 {
		t.Fatalf("%d events, %v", len(evs), err)
	}
	if r.Checksums {
		t.Error("Checksums true after a format description without checksums")
	}
	if q, ok := evs[2].Parsed.(*replication.QueryEvent); !ok || string(q.Query) != "CREATE TABLE t (id INT)" {
		t.Errorf("query parsed as %#v", evs[2].Parsed)
	}
}

func TestReaderBadMagic(t *testing.T) {
	raw, _ := smallFile()
	for name, in := range map[string][]byte{
		"empty":       nil,
		"short magic": {0xfe, 'b'},
	} {
		if _, err := NewReader(bytes.NewReader(in), "mariadb"); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: %v, want io.ErrUnexpectedEOF", name, err)
		}
	}
	bad := append([]byte{0xfe, 'b', 'i', 'N'}, raw[4:]...)
	if _, err := NewReader(bytes.NewReader(bad), "mariadb"); err == nil || !strings.Contains(err.Error(), "bad magic") {
		t.Errorf("bad magic: %v", err)
	}
}

func TestReaderTruncated(t *testing.T) {
	raw, sizes := smallFile()
	start := int64(4 + sizes[0] + sizes[1]) // the table map
	for _, c := range []struct {
		name string
		cut  int64
	}{
		{"inside a header", start + 7},
		{"after the header", start + HeaderSize},
		{"inside the body", start + int64(sizes[2]) - 1},
	} {
		r := newReader(t, raw[:c.cut])
		evs, err := readAll(t, r)
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("%s: %v, want ErrTruncated", c.name, err)
			continue
		}
		if len(evs) != 2 || r.Offset() != start {
			t.Errorf("%s: %d whole events, offset %d; want 2 at %d", c.name, len(evs), r.Offset(), start)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("offset %d ", start)) {
			t.Errorf("%s: error does not name the offset %d: %v", c.name, start, err)
		}
	}
}

func TestReaderImpossibleSize(t *testing.T) {
	raw, sizes := smallFile()
	at := 4 + sizes[0]
	for _, size := range []uint32{0, HeaderSize - 1, MaxEventSize + 1, 1<<32 - 1} {
		bad := bytes.Clone(raw)
		binary.LittleEndian.PutUint32(bad[at+9:], size)
		r := newReader(t, bad)
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		evs, err := readAll(t, r)
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if err == nil || errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "impossible") {
			t.Errorf("size %d: %v, want an impossible-size error", size, err)
		}
		if len(evs) != 1 || r.Offset() != int64(at) {
			t.Errorf("size %d: %d events, offset %d", size, len(evs), r.Offset())
		}
		if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
			t.Errorf("size %d: reading allocated %d bytes", size, grown)
		}
	}
}

func TestReaderChecksumMismatch(t *testing.T) {
	raw, sizes := smallFile()
	for i := range sizes {
		at := 4
		for _, s := range sizes[:i] {
			at += s
		}
		bad := bytes.Clone(raw)
		if i == 0 {
			bad[at+HeaderSize+53] ^= 0x40 // the creation time: only the CRC notices
		} else {
			bad[at+sizes[i]-5] ^= 0x40 // the last body byte
		}
		r := newReader(t, bad)
		evs, err := readAll(t, r)
		if err == nil || err == io.EOF || !strings.Contains(err.Error(), "checksum") {
			t.Errorf("damaged event %d: %v, want a checksum error", i, err)
			continue
		}
		if len(evs) != i || r.Offset() != int64(at) {
			t.Errorf("damaged event %d: %d events before the error, offset %d, want %d at %d", i, len(evs), r.Offset(), i, at)
		}
		if i > 0 && VerifyCRC(bad[at:at+sizes[i]]) {
			t.Errorf("VerifyCRC accepts damaged event %d", i)
		}
	}
	if VerifyCRC(raw[4 : 4+HeaderSize+3]) {
		t.Error("VerifyCRC accepts an event shorter than header and checksum")
	}
}

// The real server's file: every event reads, offsets are the server's
// end_log_pos, and every group closes.
func TestReaderRealFile(t *testing.T) {
	f, err := os.Open(realFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := NewReaderFull(f, "mariadb")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := readAll(t, r)
	if err != io.EOF {
		t.Fatal(err)
	}
	var g Grouper
	var gtids []string
	rows := 0
	off := int64(len(Magic))
	for _, ev := range evs {
		// readAll checked that the offset advances by each event's size.
		if off += int64(len(ev.Raw)); int64(ev.Header.LogPos) != off {
			t.Fatalf("%s ends at log pos %d, at file offset %d", ev.Header.Type, ev.Header.LogPos, off)
		}
		if re, ok := ev.Parsed.(*replication.RowsEvent); ok {
			rows += len(re.Rows)
		}
		role, err := g.Feed(ev)
		if err != nil {
			t.Fatal(err)
		}
		if role == End {
			gtids = append(gtids, g.Txn().GTID)
		}
	}
	if r.Offset() != off {
		t.Errorf("reader offset %d at the end, events add up to %d", r.Offset(), off)
	}
	if !r.Checksums {
		t.Error("Checksums false")
	}
	if got := strings.Join(gtids, " "); got != "0-7-1 0-7-2 0-7-3 0-7-4 0-7-5 0-7-6 0-7-7 0-7-8 0-7-9 0-7-10" {
		t.Errorf("groups %s", got)
	}
	// NewReaderFull decodes row images: 1, then 1 + 2 (an insert, an
	// update's before and after images), 1, 200, 1 (XA), 1 (delete).
	if rows != 1+3+1+200+1+1 {
		t.Errorf("%d rows decoded", rows)
	}
}

// TestEventWriterMatchesRealServer keeps the hand-built events of
// binlogtest.EventWriter honest: the server's own format description
// announces the post-header lengths the writer uses, and its events have
// the writer's shapes. binlogtest cannot import this package: its copies of
// the format's constants must be this package's.
func TestEventWriterMatchesRealServer(t *testing.T) {
	if binlogtest.HeaderSize != HeaderSize || !bytes.Equal(binlogtest.Magic, Magic) {
		t.Errorf("binlogtest has header size %d and magic %x, binlog %d and %x", binlogtest.HeaderSize, binlogtest.Magic, HeaderSize, Magic)
	}
	raw, err := os.ReadFile(realFile)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDecoder("mariadb")
	fdeSize := binary.LittleEndian.Uint32(raw[4+9:])
	ev, err := d.Decode(raw[4 : 4+fdeSize])
	if err != nil {
		t.Fatal(err)
	}
	real := ev.Parsed.(*replication.FormatDescriptionEvent)
	mine, err := NewDecoder("mariadb").Decode(binlogtest.NewEventWriter(7).FormatDescription())
	if err != nil {
		t.Fatal(err)
	}
	fake := mine.Parsed.(*replication.FormatDescriptionEvent)
	if !bytes.Equal(real.EventTypeHeaderLengths, fake.EventTypeHeaderLengths) || real.ChecksumAlgorithm != fake.ChecksumAlgorithm {
		t.Errorf("post-header lengths differ:\nserver %v\nwriter %v", real.EventTypeHeaderLengths, fake.EventTypeHeaderLengths)
	}
	// The server's DDL group (GTID event at 330, 42 bytes) has the size and
	// flags the writer gives one.
	w := binlogtest.NewEventWriter(7)
	if g := w.GTID(0, 1, binlogtest.FlagsDDL); !bytes.Equal(g[HeaderSize:len(g)-4], raw[330+HeaderSize:330+42-4]) {
		t.Errorf("GTID event body: writer %x, server %x", g[HeaderSize:len(g)-4], raw[330+HeaderSize:330+42-4])
	}
}

func TestDecoderShortEvent(t *testing.T) {
	if _, err := NewDecoder("mariadb").Decode(make([]byte, HeaderSize-1)); err == nil {
		t.Error("an event shorter than its header decoded")
	}
}

// A large event reads whole; a size field claiming more than the file
// holds costs what the file holds, not what it claims.
func TestReaderLargeAndLyingEvents(t *testing.T) {
	w := binlogtest.NewEventWriter(7)
	big := strings.Repeat("x", 3<<20+5)
	raw := binlogtest.File(w.FormatDescription(), w.GTID(0, 1, binlogtest.FlagsDDL), w.Query("d", "SELECT '"+big+"'"), w.XID(1))
	r := newReader(t, raw)
	evs, err := readAll(t, r)
	if err != io.EOF || len(evs) != 4 {
		t.Fatalf("%d events, %v", len(evs), err)
	}
	if q := evs[2].Parsed.(*replication.QueryEvent); len(q.Query) != len(big)+len("SELECT ''") {
		t.Errorf("query of %d bytes read back as %d", len(big)+9, len(q.Query))
	}
	// The same file, the query's size field now claiming 1 GiB.
	at := 4 + len(evs[0].Raw) + len(evs[1].Raw)
	binary.LittleEndian.PutUint32(raw[at+9:], MaxEventSize)
	r = newReader(t, raw)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	evs, err = readAll(t, r)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTruncated) || len(evs) != 2 {
		t.Fatalf("%d events, %v; want 2 then ErrTruncated", len(evs), err)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 4*uint64(len(raw))+(1<<20) {
		t.Errorf("a %d-byte file claiming a 1 GiB event made the reader allocate %d bytes", len(raw), grown)
	}
}

// A GTID list whose count is damaged is refused before go-mysql sizes a
// slice by it. Without checksums nothing else would notice.
func TestDecoderGTIDListCount(t *testing.T) {
	w := binlogtest.NewEventWriter(7)
	w.NoCRC = true
	fde := w.FormatDescription()
	list := w.Event(replication.MARIADB_GTID_LIST_EVENT, 0, binary.LittleEndian.AppendUint32(nil, 1<<28-1))
	d := NewDecoder("mariadb")
	if _, err := d.Decode(fde); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := d.Decode(list)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Error("a GTID list claiming 2^28 GTIDs in 4 bytes decoded")
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
		t.Errorf("decoding it allocated %d bytes", grown)
	}
	good := w.Event(replication.MARIADB_GTID_LIST_EVENT, 0, append(binary.LittleEndian.AppendUint32(nil, 1), make([]byte, 16)...))
	if ev, err := d.Decode(good); err != nil || len(ev.Parsed.(*replication.MariadbGTIDListEvent).GTIDs) != 1 {
		t.Errorf("a good GTID list: %v", err)
	}
}

// Damaged bytes the checksum cannot catch (no format description yet, or
// one that announces no checksums) are errors, not panics.
func TestDecoderMalformedIsAnError(t *testing.T) {
	w := binlogtest.NewEventWriter(7)
	if _, err := NewDecoder("mariadb").Decode(w.TableMap(1, "a", "b")); err == nil {
		t.Error("a table map before any format description decoded")
	}
	w.NoCRC = true
	d := NewDecoder("mariadb")
	if _, err := d.Decode(w.FormatDescription()); err != nil {
		t.Fatal(err)
	}
	for _, ev := range [][]byte{
		w.Event(replication.XID_EVENT, 0, []byte{1, 2}),
		w.Event(replication.QUERY_EVENT, 0, []byte{1, 2, 3}),
		w.Event(replication.MARIADB_GTID_EVENT, 0, []byte{1}),
		w.Event(replication.FORMAT_DESCRIPTION_EVENT, 0, []byte{4, 0}),
	} {
		if _, err := d.Decode(ev); err == nil {
			t.Errorf("a short %s decoded", ParseHeader(ev).Type)
		}
	}
}

// FuzzReader: whatever the bytes, the reader returns events or an error:
// no panic, no event beyond MaxEventSize or beyond the input, offsets that
// add up, and memory in proportion to the input.
func FuzzReader(f *testing.F) {
	raw, sizes := smallFile()
	f.Add(raw)
	f.Add(raw[:4+sizes[0]+HeaderSize+3])
	w := binlogtest.NewEventWriter(1)
	f.Add(binlogtest.File(w.FormatDescription(), w.GTID(0, 2, binlogtest.FlagsDDL), w.Query("d", "DROP TABLE t"), w.Rotate("mariadb-bin.000002")))
	f.Add(binlogtest.File(w.TableMap(1, "a", "b")))
	w.NoCRC = true
	f.Add(binlogtest.File(w.FormatDescription(), w.Event(replication.MARIADB_GTID_LIST_EVENT, 0, binary.LittleEndian.AppendUint32(nil, 1)), w.XID(3)))
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		defer func() {
			runtime.ReadMemStats(&after)
			// The reader's buffer, at most twice the input, a little per event.
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 2<<20+64*uint64(len(data)) {
				t.Fatalf("reading %d bytes allocated %d", len(data), grown)
			}
		}()
		r, err := NewReader(bytes.NewReader(data), "mariadb")
		if err != nil {
			return
		}
		for {
			before := r.Offset()
			ev, err := r.Next()
			if err != nil {
				return
			}
			if len(ev.Raw) > MaxEventSize || len(ev.Raw) < HeaderSize || r.Offset()-before != int64(len(ev.Raw)) || r.Offset() > int64(len(data)) {
				t.Fatalf("event of %d bytes at %d, offset now %d, input %d bytes", len(ev.Raw), before, r.Offset(), len(data))
			}
		}
	})
}
