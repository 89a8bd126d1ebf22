package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/storage"
)

// DamageError names an archive object that failed a check.
type DamageError struct {
	Key    string
	Reason string
}

func (e *DamageError) Error() string { return fmt.Sprintf("%s is damaged: %s", e.Key, e.Reason) }

// OpenSegment returns the segment's binlog file, decompressed. Reading it to
// the end verifies the stored object's checksum and the manifest's SHA-256
// of the binlog; a mismatch surfaces as a *DamageError from Read.
func OpenSegment(ctx context.Context, st storage.Store, seg Segment) (io.ReadCloser, error) {
	key := seg.Key
	if key == "" {
		key = SegmentKey(seg.Seq)
	}
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(rc, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		rc.Close()
		return nil, err
	}
	return &segmentReader{key: key, seg: seg, rc: rc, dec: dec, h: sha256.New()}, nil
}

type segmentReader struct {
	key string
	seg Segment
	rc  io.ReadCloser
	dec *zstd.Decoder
	h   hash.Hash
	n   int64
	err error
}

func (r *segmentReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.dec.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	switch {
	case err == io.EOF:
		if got := hex.EncodeToString(r.h.Sum(nil)); got != r.seg.SHA256 || r.n != r.seg.Bytes {
			r.err = &DamageError{Key: r.key, Reason: fmt.Sprintf("binlog content (%d bytes, SHA-256 %s) differs from the manifest (%d bytes, %s)", r.n, got, r.seg.Bytes, r.seg.SHA256)}
		} else {
			r.err = io.EOF
		}
	case err != nil:
		if storage.IsChecksum(err) {
			r.err = &DamageError{Key: r.key, Reason: err.Error()}
		} else if errors.Is(err, zstd.ErrMagicMismatch) || errors.Is(err, zstd.ErrBlockTooSmall) || isZstdErr(err) {
			r.err = &DamageError{Key: r.key, Reason: "not a valid zstd stream: " + err.Error()}
		} else {
			r.err = fmt.Errorf("read %s: %w", r.key, err)
		}
	}
	if r.err != nil && r.err != io.EOF && n > 0 {
		return n, nil
	}
	return n, r.err
}

func isZstdErr(err error) bool {
	for _, e := range []error{zstd.ErrReservedBlockType, zstd.ErrCompressedSizeTooBig, zstd.ErrWindowSizeExceeded, zstd.ErrWindowSizeTooSmall, zstd.ErrDecoderSizeExceeded, zstd.ErrUnknownDictionary, zstd.ErrFrameSizeExceeded, zstd.ErrFrameSizeMismatch, zstd.ErrCRCMismatch, zstd.ErrUnexpectedBlockSize} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (r *segmentReader) Close() error {
	r.dec.Close()
	return r.rc.Close()
}

// VerifySegment reads a whole segment: stored checksum, content digest,
// every event's CRC32, whole transactions only, and the manifest's counts
// and GTIDs. The returned error is a *DamageError for damage.
func VerifySegment(ctx context.Context, st storage.Store, seg Segment) error {
	rc, err := OpenSegment(ctx, st, seg)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return &DamageError{Key: SegmentKey(seg.Seq), Reason: "missing (its manifest exists)"}
		}
		return err
	}
	defer rc.Close()
	key := seg.Key
	if key == "" {
		key = SegmentKey(seg.Seq)
	}
	damaged := func(format string, args ...any) error {
		return &DamageError{Key: key, Reason: fmt.Sprintf(format, args...)}
	}
	r, err := binlog.NewReader(rc, seg.Source.Flavor)
	if err != nil {
		var de *DamageError
		if errors.As(err, &de) {
			return de
		}
		return damaged("%v", err)
	}
	var g binlog.Grouper
	txns := 0
	var first, last string
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			var de *DamageError
			if errors.As(err, &de) {
				return de
			}
			return damaged("%v", err)
		}
		role, err := g.Feed(ev)
		if err != nil {
			return damaged("%v", err)
		}
		if role == binlog.End {
			t := g.Txn()
			if txns == 0 {
				first = t.GTID
			}
			last = t.GTID
			txns++
		}
	}
	if g.Open() {
		return damaged("ends inside a transaction")
	}
	if txns != seg.Txns || first != seg.FirstGTID || last != seg.LastGTID {
		return damaged("holds %d transactions %s..%s, the manifest says %d, %s..%s", txns, first, last, seg.Txns, seg.FirstGTID, seg.LastGTID)
	}
	if seg.Format == SegmentFormat {
		// The header and the catalog's copy must agree (§5).
		h, err := ReadHeader(ctx, st, key)
		if err != nil {
			return err
		}
		a, _ := EncodeHeader(*h)
		b, _ := EncodeHeader(seg)
		if !bytes.Equal(a, b) {
			return damaged("the manifest at its head differs from the catalog's copy")
		}
	}
	return nil
}
