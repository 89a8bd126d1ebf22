package replicator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/storage/file"
)

// A segment from the archive is downloaded and checked whole before any
// of it is used: a forged one (its bytes not those its manifest vouches
// for) is refused, no reader is returned, and no file is left behind.
func TestFetchSegmentVerifiesBeforeUse(t *testing.T) {
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	content := bytes.Repeat([]byte("binlog bytes "), 10000)
	put := func(seq uint64, body []byte, manifest archive.Segment) archive.Segment {
		t.Helper()
		manifest.Format, manifest.Seq = archive.SegmentFormat, seq
		h, err := archive.EncodeHeader(manifest)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.Write(h)
		enc, _ := zstd.NewWriter(&buf)
		enc.Write(body)
		enc.Close()
		if _, err := st.Put(ctx, archive.SegmentKey(seq), &buf); err != nil {
			t.Fatal(err)
		}
		return manifest
	}
	sum := sha256.Sum256(content)
	good := put(1, content, archive.Segment{Bytes: int64(len(content)), SHA256: hex.EncodeToString(sum[:])})
	dir := t.TempDir()
	f, err := fetchSegment(ctx, st, good, dir)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, content) {
		t.Fatalf("fetched %d bytes, want the segment's %d", len(got), len(content))
	}

	// An attacker's segment under the real manifest's digest.
	forged := append([]byte("INJECTED "), content[9:]...)
	bad := put(2, forged, good)
	f, err = fetchSegment(ctx, st, bad, dir)
	if err == nil {
		f.Close()
		t.Fatal("a forged segment was handed out")
	}
	var de *archive.DamageError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want a DamageError", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("files left in %s: %v", dir, left)
	}
}
