package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/binvault/binvault/storage"
)

// A format-2 segment object starts with its manifest, in a zstd skippable
// frame that decoders pass over (docs/archive-format.md §3.2):
//
//	offset size  field
//	0      4     magic 0x184D2A5A, little-endian
//	4      4     frame size: 40 + length of the JSON
//	8      8     "BVSEGMAN"
//	16     32    SHA-256 of the JSON
//	48     n     the manifest, JSON
//
// One object per segment makes a segment appear whole in one PUT: the
// archive's write cost is one request per segment, and a reader that lists
// a segment can always read what it holds. The SHA-256 lets a reader trust
// the manifest after reading only the head of the object (the object's own
// checksum trailer covers it too, on a full read).
const (
	headerMagic    = 0x184D2A5A
	headerTag      = "BVSEGMAN"
	headerFixed    = 48
	headerFirstGet = 64 << 10
	// MaxHeaderSize bounds a manifest: a segment naming every table of a
	// server with a hundred thousand tables stays well below it.
	MaxHeaderSize = 16 << 20
)

// ErrNoHeader: the object does not start with a manifest frame (a
// format-1 segment object, whose manifest is an object of its own).
var ErrNoHeader = errors.New("no segment header")

// EncodeHeader returns the frame carrying seg's manifest. The stored
// object's own fields (key, stored size and digest) are left out: they are
// not known until the object is written, and readers take them from the
// listing.
func EncodeHeader(seg Segment) ([]byte, error) {
	seg.Key, seg.StoredBytes, seg.StoredSHA256 = "", 0, ""
	body, err := json.Marshal(seg)
	if err != nil {
		return nil, err
	}
	if headerFixed+len(body) > MaxHeaderSize {
		return nil, fmt.Errorf("segment %d: manifest of %d bytes is larger than %d", seg.Seq, len(body), MaxHeaderSize)
	}
	sum := sha256.Sum256(body)
	b := make([]byte, headerFixed, headerFixed+len(body))
	binary.LittleEndian.PutUint32(b[0:], headerMagic)
	binary.LittleEndian.PutUint32(b[4:], uint32(headerFixed-8+len(body)))
	copy(b[8:], headerTag)
	copy(b[16:], sum[:])
	return append(b, body...), nil
}

// headerLen returns the whole frame's length from its first 8 bytes.
func headerLen(b []byte) (int, error) {
	if len(b) < 8 || binary.LittleEndian.Uint32(b) != headerMagic {
		return 0, ErrNoHeader
	}
	n := 8 + int(binary.LittleEndian.Uint32(b[4:]))
	if n < headerFixed || n > MaxHeaderSize {
		return 0, fmt.Errorf("segment header of %d bytes is impossible", n)
	}
	return n, nil
}

// DecodeHeader reads the manifest frame at the start of b, which must hold
// the whole frame.
func DecodeHeader(b []byte) (*Segment, error) {
	n, err := headerLen(b)
	if err != nil {
		return nil, err
	}
	if len(b) < n {
		return nil, fmt.Errorf("segment header cut short: %d of %d bytes", len(b), n)
	}
	if !bytes.Equal(b[8:16], []byte(headerTag)) {
		return nil, errors.New("segment header has a wrong tag")
	}
	body := b[headerFixed:n]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], b[16:48]) {
		return nil, errors.New("segment header's manifest does not match its SHA-256")
	}
	var m Segment
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("segment header: %w", err)
	}
	return &m, nil
}

// ReadHeader reads the manifest at the head of the segment object key
// with one ranged read (two for a very large manifest). It returns an error
// wrapping ErrNoHeader for a format-1 object and storage.ErrNotFound when
// there is no object; damage is a *DamageError.
func ReadHeader(ctx context.Context, st storage.Store, key string) (*Segment, error) {
	b, err := storage.ReadPrefix(ctx, st, key, headerFirstGet)
	if err != nil {
		return nil, err
	}
	n, err := headerLen(b)
	if errors.Is(err, ErrNoHeader) {
		return nil, fmt.Errorf("%s: %w", key, ErrNoHeader)
	}
	if err != nil {
		return nil, &DamageError{Key: key, Reason: err.Error()}
	}
	if n > len(b) {
		if b, err = storage.ReadPrefix(ctx, st, key, int64(n)); err != nil {
			return nil, err
		}
	}
	m, err := DecodeHeader(b)
	if err != nil {
		return nil, &DamageError{Key: key, Reason: err.Error()}
	}
	m.Key = key
	return m, nil
}
