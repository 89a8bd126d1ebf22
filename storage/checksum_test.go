package storage_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/binvault/binvault/storage"
)

func frame(t testing.TB, content []byte) []byte {
	t.Helper()
	b, err := io.ReadAll(storage.Frame(bytes.NewReader(content)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unframe(stored []byte, wrap func(io.Reader) io.Reader) ([]byte, error) {
	rc := storage.Unframe("k", io.NopCloser(wrap(bytes.NewReader(stored))))
	defer rc.Close()
	return io.ReadAll(rc)
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func TestTrailerRoundTrip(t *testing.T) {
	sum := sha256.Sum256([]byte("content"))
	tr := storage.EncodeTrailer(sum[:])
	if len(tr) != storage.TrailerSize || string(tr[:4]) != "\x5b\x2a\x4d\x18" || string(tr[8:16]) != "BVSHA256" {
		t.Fatalf("trailer % x", tr)
	}
	got, err := storage.DecodeTrailer(tr)
	if err != nil || got != hex.EncodeToString(sum[:]) {
		t.Fatalf("DecodeTrailer = %s, %v", got, err)
	}
	for i := 0; i < 16; i++ { // magic, frame size and tag are all checked
		bad := bytes.Clone(tr)
		bad[i] ^= 0x80
		if _, err := storage.DecodeTrailer(bad); err == nil {
			t.Errorf("DecodeTrailer accepted a flip in byte %d", i)
		}
	}
	if _, err := storage.DecodeTrailer(tr[:47]); err == nil {
		t.Error("DecodeTrailer accepted 47 bytes")
	}
}

// Sizes around the trailer and the reader's 64 KiB buffer, read through
// readers that return one byte, half the request, or data with io.EOF.
func TestFrameUnframeRoundTrip(t *testing.T) {
	readers := map[string]func(io.Reader) io.Reader{
		"plain":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+EOF": iotest.DataErrReader,
	}
	for _, n := range []int{0, 1, 47, 48, 49, 95, 96, 97, 64<<10 - 49, 64<<10 - 48, 64 << 10, 64<<10 + 1, 200 << 10} {
		content := pattern(n)
		for name, wrap := range readers {
			fr := storage.Frame(wrap(bytes.NewReader(content)))
			stored, err := io.ReadAll(wrap(fr))
			if err != nil || len(stored) != n+storage.TrailerSize || !fr.Done() {
				t.Fatalf("%d bytes, %s: framed %d bytes, %v, done %v", n, name, len(stored), err, fr.Done())
			}
			sum := sha256.Sum256(content)
			if info := fr.Info("k"); info.Size != int64(n) || info.SHA256 != hex.EncodeToString(sum[:]) {
				t.Fatalf("%d bytes, %s: Info = %+v", n, name, info)
			}
			got, err := unframe(stored, wrap)
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("%d bytes, %s: unframed %d bytes, %v", n, name, len(got), err)
			}
		}
	}
}

// Reading into a tiny buffer must work, and stay linear: 1 MiB read a byte
// at a time.
func TestUnframeTinyReads(t *testing.T) {
	content := pattern(1 << 20)
	rc := storage.Unframe("k", io.NopCloser(bytes.NewReader(frame(t, content))))
	var got []byte
	p := make([]byte, 1)
	for {
		n, err := rc.Read(p)
		got = append(got, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("read %d bytes, not the content", len(got))
	}
	if n, err := rc.Read(p); n != 0 || err != io.EOF {
		t.Fatalf("Read after EOF = %d, %v", n, err)
	}
}

func TestUnframeDetectsTruncation(t *testing.T) {
	stored := frame(t, pattern(300))
	for n := range len(stored) {
		_, err := unframe(stored[:n], iotest.HalfReader)
		var ce *storage.ChecksumError
		if !errors.As(err, &ce) || ce.Key != "k" {
			t.Fatalf("truncated to %d of %d bytes: %v, want a *ChecksumError", n, len(stored), err)
		}
	}
}

func TestUnframeDetectsEveryFlippedBit(t *testing.T) {
	stored := frame(t, pattern(100))
	for bit := range len(stored) * 8 {
		bad := bytes.Clone(stored)
		bad[bit/8] ^= 1 << (bit % 8)
		if _, err := unframe(bad, iotest.OneByteReader); !storage.IsChecksum(err) {
			t.Fatalf("bit %d flipped: %v, want a *ChecksumError", bit, err)
		}
	}
}

func TestUnframeReportsReadErrors(t *testing.T) {
	boom := errors.New("connection reset")
	stored := frame(t, pattern(1000))
	r := io.MultiReader(bytes.NewReader(stored[:500]), iotest.ErrReader(boom))
	_, err := io.ReadAll(storage.Unframe("seg/1", io.NopCloser(r)))
	if !errors.Is(err, boom) || storage.IsChecksum(err) || !strings.Contains(err.Error(), "seg/1") {
		t.Fatalf("got %v, want %v naming seg/1", err, boom)
	}
}

func TestChecksumErrorNamesKeyAndDigests(t *testing.T) {
	for _, e := range []*storage.ChecksumError{
		{Key: "seg/1", Want: "aa", Got: "bb"},
		{Key: "seg/1", Got: "bb", Reason: "checksum trailer missing or malformed"},
	} {
		msg := e.Error()
		if !strings.Contains(msg, "seg/1") || (e.Reason == "" && !strings.Contains(msg, "aa")) || (e.Reason != "" && !strings.Contains(msg, e.Reason)) {
			t.Errorf("%q", msg)
		}
	}
}

func TestValidateKey(t *testing.T) {
	for _, k := range []string{"a", "a/b", "segments/0-1-000042.zst", "a-b", "a.b", ".hidden", "x..y", "~"} {
		if err := storage.ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", "/", "/a", "a/", "a//b", ".", "..", "a/.", "a/..", "../a", "a b", "a\\b", "a\x7f", "\u00e9"} {
		if err := storage.ValidateKey(k); err == nil {
			t.Errorf("ValidateKey(%q) accepted it", k)
		}
	}
}

// FuzzUnframe: whatever a store hands back, Unframe never panics, and it
// returns content only when the bytes end in a trailer whose digest matches
// exactly the bytes before it; and Frame's output always reads back. The
// first input byte picks the read size.
func FuzzUnframe(f *testing.F) {
	valid := frame(f, []byte("a segment"))
	f.Add(byte(0), []byte{})
	f.Add(byte(1), valid)
	f.Add(byte(7), valid[:len(valid)-1])
	f.Add(byte(3), append(bytes.Clone(valid), 0))
	f.Add(byte(255), frame(f, nil))
	f.Add(byte(16), frame(f, pattern(70<<10)))
	f.Fuzz(func(t *testing.T, chunk byte, stored []byte) {
		chunked := func(r io.Reader) io.Reader { return &chunkReader{r, int(chunk) + 1} }
		// What Frame writes, Unframe reads back.
		if back, err := unframe(frame(t, stored), chunked); err != nil || !bytes.Equal(back, stored) {
			t.Fatalf("round trip of %d bytes: %v", len(stored), err)
		}
		got, err := unframe(stored, chunked)
		if err != nil {
			if !storage.IsChecksum(err) {
				t.Fatalf("error is not a *ChecksumError: %v", err)
			}
			return
		}
		n := len(stored) - storage.TrailerSize
		if n < 0 || !bytes.Equal(got, stored[:n]) {
			t.Fatalf("accepted %d stored bytes, returned %d bytes", len(stored), len(got))
		}
		want, derr := storage.DecodeTrailer(stored[n:])
		sum := sha256.Sum256(got)
		if derr != nil || want != hex.EncodeToString(sum[:]) {
			t.Fatalf("accepted a trailer that does not match: %v", derr)
		}
	})
}

type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }
