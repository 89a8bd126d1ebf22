package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/storage"
)

// putV2 stores segment seq as the archiver does: header, then the zstd
// frames of content.
func putV2(t *testing.T, st storage.Store, seq uint64, content []byte) Segment {
	t.Helper()
	sum := sha256.Sum256(content)
	seg := Segment{Format: SegmentFormat, Seq: seq, Source: Source{Flavor: "mariadb"},
		Start: binlog.Position{GTIDSet: fmt.Sprintf("0-1-%d", seq-1)}, End: binlog.Position{GTIDSet: fmt.Sprintf("0-1-%d", seq)},
		FirstGTID: fmt.Sprintf("0-1-%d", seq), LastGTID: fmt.Sprintf("0-1-%d", seq), Txns: 1,
		FirstTime: time.Unix(1700000000, 0).UTC(), LastTime: time.Unix(1700000000, 0).UTC(),
		Tables: []string{"d.t"}, Bytes: int64(len(content)), SHA256: hex.EncodeToString(sum[:])}
	putObject(t, st, seg, content)
	return seg
}

// putObject stores the format-2 object of segment header.Seq: header's
// manifest at its head, then the zstd frames of content.
func putObject(t *testing.T, st storage.Store, header Segment, content []byte) {
	t.Helper()
	h, err := EncodeHeader(header)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.Write(h)
	enc, _ := zstd.NewWriter(&buf)
	enc.Write(content)
	enc.Close()
	if _, err := st.PutIfAbsent(context.Background(), SegmentKey(header.Seq), &buf); err != nil {
		t.Fatal(err)
	}
}

// putV1 stores segment seq as binvault did before format 2: the object,
// then (unless orphan) the manifest object.
func putV1(t *testing.T, st storage.Store, seq uint64, content []byte, orphan bool) {
	t.Helper()
	enc, _ := zstd.NewWriter(nil)
	body := enc.EncodeAll(content, nil)
	if _, err := st.PutIfAbsent(context.Background(), SegmentKey(seq), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if orphan {
		return
	}
	sum := sha256.Sum256(content)
	m := testSegs(seq, seq)[0]
	m.Format, m.Bytes, m.SHA256, m.Key = SegmentFormatOwnFile, int64(len(content)), hex.EncodeToString(sum[:]), SegmentKey(seq)
	b, _ := json.Marshal(m)
	if _, err := st.PutIfAbsent(context.Background(), ManifestKey(seq), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

func TestHeaderRoundTripAndZstdSkipsIt(t *testing.T) {
	st := testStore(t)
	content := bytes.Repeat([]byte("binlog bytes "), 1000)
	want := putV2(t, st, 7, content)
	got, err := ReadManifest(context.Background(), st, 7)
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != SegmentKey(7) || got.SHA256 != want.SHA256 || got.Tables[0] != "d.t" || !got.FirstTime.Equal(want.FirstTime) {
		t.Fatalf("manifest read back %+v, want %+v", got, want)
	}
	// A plain decoder passes over the header: the content is the binlog.
	rc, err := OpenSegment(context.Background(), st, *got)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(plain, content) {
		t.Fatalf("decompressed %d bytes (%v), want %d", len(plain), err, len(content))
	}
}

func TestHeaderDamageIsReported(t *testing.T) {
	h, _ := EncodeHeader(testSegs(3, 3)[0])
	bad := bytes.Clone(h)
	bad[len(bad)-2] ^= 0x20 // inside the JSON
	if _, err := DecodeHeader(bad); err == nil {
		t.Fatal("a header whose JSON does not match its SHA-256 was accepted")
	}
	if _, err := DecodeHeader(h[:len(h)-1]); err == nil {
		t.Fatal("a cut header was accepted")
	}
	huge := bytes.Clone(h)
	huge[4], huge[5], huge[6], huge[7] = 0xff, 0xff, 0xff, 0x7f
	if _, err := DecodeHeader(huge); err == nil {
		t.Fatal("a header claiming 2 GiB was accepted")
	}
	if _, err := DecodeHeader([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0}); !errors.Is(err, ErrNoHeader) {
		t.Fatalf("a zstd frame start: %v, want ErrNoHeader", err)
	}
}

// An archive written partly before format 2 reads as one: format-1
// segments through their manifest objects, format-2 through their
// headers, and a format-1 object whose manifest never came is not part
// of it.
func TestLoadReadsBothFormats(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	putV1(t, st, 1, []byte("one"), false)
	putV1(t, st, 2, []byte("two"), false)
	putV1(t, st, 3, []byte("three"), true) // interrupted format-1 upload
	putV2(t, st, 4, []byte("four"))
	putV2(t, st, 5, []byte("five"))
	ix, err := Load(ctx, st, false)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range ix.Segments {
		got = append(got, fmt.Sprintf("%d:f%d", s.Seq, s.Format))
	}
	if fmt.Sprint(got) != "[1:f1 2:f1 4:f2 5:f2]" {
		t.Fatalf("index %v", got)
	}
	if s := ix.Segments[3]; s.StoredBytes == 0 || s.Key != SegmentKey(5) {
		t.Fatalf("format-2 entry lacks what the listing knows: %+v", s)
	}
	if _, err := ReadManifest(ctx, st, 3); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("manifest of an orphan: %v, want ErrNotFound", err)
	}
	if m, err := ReadManifest(ctx, st, 2); err != nil || m.Format != SegmentFormatOwnFile {
		t.Fatalf("format-1 manifest: %+v, %v", m, err)
	}
}

func FuzzDecodeHeader(f *testing.F) {
	h, _ := EncodeHeader(testSegs(1, 1)[0])
	f.Add(h)
	f.Add(h[:20])
	f.Add([]byte{0x5a, 0x2a, 0x4d, 0x18, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeHeader(b)
		if err == nil && m == nil {
			t.Fatal("nil manifest without an error")
		}
	})
}

func TestFollowsComparesPositionsAsSets(t *testing.T) {
	a := Segment{Seq: 4, Source: Source{Flavor: "mariadb"}, End: binlog.Position{GTIDSet: "0-1-5,1-2-3"}}
	b := Segment{Seq: 5, Source: Source{Flavor: "mariadb"}, Start: binlog.Position{GTIDSet: "1-2-3,0-1-5"}}
	if !b.Follows(a) {
		t.Fatal("one position spelled in another domain order is a gap")
	}
	b.Start.GTIDSet = "0-1-5"
	if b.Follows(a) {
		t.Fatal("a missing domain is no gap")
	}
	b.Start.GTIDSet, b.Seq = "0-1-5,1-2-3", 6
	if b.Follows(a) {
		t.Fatal("a missing segment number is no gap")
	}
}
