// Package binlog reads binlog files and streams as whole transactions.
// Everything that binvault stores (spool files, archive segments) is a real
// binlog file: the magic, a format description event, then events exactly
// as the primary wrote them. This package is the one place that knows how
// events group into transactions, and how GTID positions advance.
package binlog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/go-mysql-org/go-mysql/replication"
)

// Magic starts every binlog file.
var Magic = []byte{0xfe, 'b', 'i', 'n'}

const (
	// HeaderSize is the v4 event header length.
	HeaderSize = replication.EventHeaderSize
	// MaxEventSize bounds one event; larger sizes mean a damaged file.
	MaxEventSize = 1 << 30
	crcSize      = 4
)

// Header is the decoded fixed part of an event.
type Header struct {
	Timestamp uint32
	Type      replication.EventType
	ServerID  uint32
	Size      uint32
	LogPos    uint32
	Flags     uint16
}

// ParseHeader decodes the first HeaderSize bytes of an event.
func ParseHeader(b []byte) Header {
	return Header{
		Timestamp: binary.LittleEndian.Uint32(b[0:]),
		Type:      replication.EventType(b[4]),
		ServerID:  binary.LittleEndian.Uint32(b[5:]),
		Size:      binary.LittleEndian.Uint32(b[9:]),
		LogPos:    binary.LittleEndian.Uint32(b[13:]),
		Flags:     binary.LittleEndian.Uint16(b[17:]),
	}
}

// Event is one raw event (header, body, checksum) and, for the event types
// binvault looks into, its decoded form.
type Event struct {
	Header Header
	Raw    []byte
	// Parsed is a *replication.FormatDescriptionEvent, *MariadbGTIDEvent,
	// *GTIDEvent, *QueryEvent, *XIDEvent, *TableMapEvent, *RowsEvent
	// (header only), *RotateEvent ... or a *GenericEvent.
	Parsed replication.Event
}

// Decoder parses raw events. It keeps the format description it has seen,
// verifies CRC32 checksums, and decodes rows events only as far as their
// table id: binvault never needs row values, the server applies them.
type Decoder struct {
	p *replication.BinlogParser
}

// NewDecoder returns a decoder for one stream or file.
func NewDecoder(flavor string) *Decoder {
	p := replication.NewBinlogParser()
	p.SetFlavor(flavor)
	p.SetVerifyChecksum(true)
	p.SetRowsEventDecodeFunc(func(e *replication.RowsEvent, data []byte) error {
		_, err := e.DecodeHeader(data)
		return err
	})
	p.SetTableMapOptionalMetaDecodeFunc(func([]byte) error { return nil })
	return &Decoder{p: p}
}

// Decode parses one raw event; raw is kept, not copied. A malformed event
// is an error, never a panic.
func (d *Decoder) Decode(raw []byte) (ev Event, err error) {
	if len(raw) < HeaderSize {
		return Event{}, fmt.Errorf("event of %d bytes is shorter than its header", len(raw))
	}
	// go-mysql's decoders index into the body without checking its length,
	// and a table map or rows event before any format description
	// dereferences a nil format: damaged bytes would panic.
	defer func() {
		if r := recover(); r != nil {
			ev, err = Event{}, fmt.Errorf("malformed %s event of %d bytes: %v", replication.EventType(raw[4]), len(raw), r)
		}
	}()
	if ParseHeader(raw).Type == replication.MARIADB_GTID_LIST_EVENT && len(raw) >= HeaderSize+4 {
		// go-mysql sizes the list by its count field before reading it:
		// a damaged count would allocate up to 4 GiB.
		if count := binary.LittleEndian.Uint32(raw[HeaderSize:]) & (1<<28 - 1); int64(count)*16 > int64(len(raw)-HeaderSize-4) {
			return Event{}, fmt.Errorf("GTID list event of %d bytes claims %d GTIDs", len(raw), count)
		}
	}
	be, err := d.p.Parse(raw)
	if err != nil {
		return Event{}, err
	}
	return Event{Header: ParseHeader(raw), Raw: raw, Parsed: be.Event}, nil
}

// ErrTruncated reports a file that ends inside an event: the torn tail of a
// write that a crash interrupted.
var ErrTruncated = errors.New("binlog ends inside an event")

// Reader reads events from a binlog file.
type Reader struct {
	r      *bufio.Reader
	dec    *Decoder
	offset int64
	hdr    [HeaderSize]byte
	// Checksums reports whether events carry a CRC32 (from the format description).
	Checksums bool
}

// NewReaderFull is NewReader with rows events decoded in full (row
// images), for tools that count or show rows.
func NewReaderFull(r io.Reader, flavor string) (*Reader, error) {
	rd, err := NewReader(r, flavor)
	if err != nil {
		return nil, err
	}
	p := replication.NewBinlogParser()
	p.SetFlavor(flavor)
	p.SetVerifyChecksum(true)
	rd.dec = &Decoder{p: p}
	return rd, nil
}

// NewReader checks the magic and returns a reader positioned on the first event.
func NewReader(r io.Reader, flavor string) (*Reader, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	var m [4]byte
	if _, err := io.ReadFull(br, m[:]); err != nil {
		return nil, fmt.Errorf("read binlog magic: %w", noEOF(err))
	}
	if string(m[:]) != string(Magic) {
		return nil, errors.New("not a binlog file (bad magic)")
	}
	return &Reader{r: br, dec: NewDecoder(flavor), offset: int64(len(Magic))}, nil
}

// Offset is the file offset of the next event.
func (r *Reader) Offset() int64 { return r.offset }

// Next returns the next event, io.EOF at a clean end, or an error wrapping
// ErrTruncated when the file ends inside an event. A checksum mismatch is an
// error naming the offset. The event's Raw is freshly allocated.
func (r *Reader) Next() (Event, error) {
	n, err := io.ReadFull(r.r, r.hdr[:])
	if err == io.EOF {
		return Event{}, io.EOF
	}
	if err == io.ErrUnexpectedEOF {
		return Event{}, fmt.Errorf("at offset %d (%d header bytes): %w", r.offset, n, ErrTruncated)
	}
	if err != nil {
		return Event{}, fmt.Errorf("at offset %d: %w", r.offset, err)
	}
	h := ParseHeader(r.hdr[:])
	if h.Size < HeaderSize || h.Size > MaxEventSize {
		return Event{}, fmt.Errorf("at offset %d: event size %d is impossible: damaged binlog", r.offset, h.Size)
	}
	raw, err := readEvent(r.r, r.hdr[:], int(h.Size))
	if err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			err = ErrTruncated
		}
		return Event{}, fmt.Errorf("at offset %d (event of %d bytes): %w", r.offset, h.Size, err)
	}
	ev, err := r.dec.Decode(raw)
	if err != nil {
		return Event{}, fmt.Errorf("at offset %d: %w", r.offset, err)
	}
	if fde, ok := ev.Parsed.(*replication.FormatDescriptionEvent); ok {
		r.Checksums = fde.ChecksumAlgorithm == replication.BINLOG_CHECKSUM_ALG_CRC32
	}
	r.offset += int64(h.Size)
	return ev, nil
}

// readEvent reads the rest of an event of size bytes whose header is hdr.
// Past the first MiB the buffer grows with the bytes that arrive, at most
// doubling: a damaged size field in a short file costs what the file
// holds, not the gigabyte it may claim.
func readEvent(r io.Reader, hdr []byte, size int) ([]byte, error) {
	raw := make([]byte, min(size, 1<<20))
	n := copy(raw, hdr)
	for {
		if _, err := io.ReadFull(r, raw[n:]); err != nil {
			return nil, err
		}
		n = len(raw)
		if n == size {
			return raw, nil
		}
		grown := make([]byte, min(size, 2*n))
		copy(grown, raw)
		raw = grown
	}
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// VerifyCRC checks an event's trailing CRC32 (for events read outside a Decoder).
func VerifyCRC(raw []byte) bool {
	if len(raw) < HeaderSize+crcSize {
		return false
	}
	body := raw[:len(raw)-crcSize]
	return crc32.ChecksumIEEE(body) == binary.LittleEndian.Uint32(raw[len(raw)-crcSize:])
}
