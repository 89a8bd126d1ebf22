package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// The checksum trailer is a zstd skippable frame, so that `zstd -d` on a
// stored segment yields the binlog file without further tooling:
//
//	offset size  field
//	0      4     magic 0x184D2A5B, little-endian (a zstd skippable frame)
//	4      4     frame size 40, little-endian
//	8      8     "BVSHA256"
//	16     32    SHA-256 of the content that precedes the trailer
const (
	TrailerSize    = 48
	trailerMagic   = 0x184D2A5B
	trailerPayload = TrailerSize - 8
	trailerTag     = "BVSHA256"
)

// EncodeTrailer returns the trailer for a content digest.
func EncodeTrailer(sum []byte) []byte {
	t := make([]byte, TrailerSize)
	binary.LittleEndian.PutUint32(t[0:4], trailerMagic)
	binary.LittleEndian.PutUint32(t[4:8], trailerPayload)
	copy(t[8:16], trailerTag)
	copy(t[16:48], sum)
	return t
}

// DecodeTrailer returns the hex digest recorded in a trailer.
func DecodeTrailer(t []byte) (string, error) {
	if len(t) != TrailerSize ||
		binary.LittleEndian.Uint32(t[0:4]) != trailerMagic ||
		binary.LittleEndian.Uint32(t[4:8]) != trailerPayload ||
		!bytes.Equal(t[8:16], []byte(trailerTag)) {
		return "", errors.New("checksum trailer missing or malformed")
	}
	return hex.EncodeToString(t[16:48]), nil
}

// FramingReader yields the content of r followed by its trailer. Backends
// upload what it yields; once it has returned io.EOF, Size and SHA256
// describe the content.
type FramingReader struct {
	r       io.Reader
	h       hash.Hash
	size    int64
	trailer []byte
	done    bool
}

// Frame wraps content for upload.
func Frame(r io.Reader) *FramingReader {
	return &FramingReader{r: r, h: sha256.New()}
}

func (f *FramingReader) Read(p []byte) (int, error) {
	if f.trailer == nil {
		n, err := f.r.Read(p)
		f.size += int64(n)
		f.h.Write(p[:n])
		if err == io.EOF {
			f.trailer = EncodeTrailer(f.h.Sum(nil))
			if n > 0 {
				return n, nil
			}
		} else {
			return n, err
		}
	}
	if len(f.trailer) == 0 {
		f.done = true
		return 0, io.EOF
	}
	n := copy(p, f.trailer)
	f.trailer = f.trailer[n:]
	return n, nil
}

// Done reports whether the whole content and trailer were read.
func (f *FramingReader) Done() bool { return f.done }

// Info describes the framed content; valid once Done.
func (f *FramingReader) Info(key string) ObjectInfo {
	return ObjectInfo{Key: key, Size: f.size, SHA256: hex.EncodeToString(f.h.Sum(nil))}
}

// verifyingReader returns the content of a framed object, holding back the
// last TrailerSize bytes until EOF, where it checks them against the digest.
type verifyingReader struct {
	key  string
	rc   io.ReadCloser
	h    hash.Hash
	buf  []byte
	r, w int // buf[r:w] is read but not yet released: possibly the trailer
	eof  bool
	err  error
}

// Unframe returns a reader of the content of a framed object that verifies
// its digest; the final Read returns a *ChecksumError on a mismatch.
func Unframe(key string, rc io.ReadCloser) io.ReadCloser {
	return &verifyingReader{key: key, rc: rc, h: sha256.New(), buf: make([]byte, 64<<10)}
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	for {
		// Release whatever is certainly content: all but the last TrailerSize bytes.
		if avail := v.w - v.r - TrailerSize; avail > 0 {
			n := copy(p, v.buf[v.r:v.r+avail])
			v.h.Write(p[:n])
			v.r += n
			return n, nil
		}
		if v.eof {
			v.err = v.finish(v.buf[v.r:v.w])
			return 0, v.err
		}
		// At most TrailerSize bytes are held back here, so moving them to
		// the front is cheap and a small p never makes reads quadratic.
		v.w = copy(v.buf, v.buf[v.r:v.w])
		v.r = 0
		n, err := v.rc.Read(v.buf[v.w:])
		v.w += n
		if err == io.EOF {
			v.eof = true
		} else if err != nil {
			v.err = fmt.Errorf("read %s: %w", v.key, err)
			return 0, v.err
		}
	}
}

func (v *verifyingReader) finish(tail []byte) error {
	got := hex.EncodeToString(v.h.Sum(nil))
	want, err := DecodeTrailer(tail)
	if err != nil {
		return &ChecksumError{Key: v.key, Got: got, Reason: err.Error()}
	}
	if want != got {
		return &ChecksumError{Key: v.key, Want: want, Got: got}
	}
	return io.EOF
}

func (v *verifyingReader) Close() error { return v.rc.Close() }

// ReadAll reads a whole object, verifying it.
func ReadAll(ctx context.Context, s Store, key string) ([]byte, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}
