package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/replay"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
)

// storedSegments writes n small segments into a directory store. The
// prefetch only decompresses and verifies them (stored checksum, content
// digest), so their content need not be binlog events.
func storedSegments(t *testing.T, n int) (storage.Store, []archive.Segment) {
	t.Helper()
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var segs []archive.Segment
	for seq := uint64(1); seq <= uint64(n); seq++ {
		content := bytes.Repeat([]byte{byte(seq)}, 64<<10)
		sum := sha256.Sum256(content)
		if _, err := st.PutIfAbsent(context.Background(), archive.SegmentKey(seq), bytes.NewReader(enc.EncodeAll(content, nil))); err != nil {
			t.Fatal(err)
		}
		segs = append(segs, archive.Segment{Seq: seq, Bytes: int64(len(content)), SHA256: hex.EncodeToString(sum[:])})
	}
	return st, segs
}

// fetchers counts the goroutines prefetch started that still run.
func fetchers() int {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("restore.prefetch in goroutine"))
		}
		buf = make([]byte, 2*len(buf))
	}
}

func filesIn(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// A replay that returns early (the stop point, a refused transaction, a
// damaged segment) leaves no prefetch behind: no goroutine blocked on its
// channel, no file it fetched for nobody.
func TestFetchAheadEndsWithAnEarlyReturn(t *testing.T) {
	refused := errors.New("the target refused a transaction")
	for _, tc := range []struct {
		name    string
		damaged uint64 // a segment whose stored object is damaged
		fn      func(f fetchedSegment) error
		want    error
	}{
		{name: "stop point", fn: func(fetchedSegment) error { return replay.ErrStop }, want: replay.ErrStop},
		{name: "refused", fn: func(fetchedSegment) error { return refused }, want: refused},
		{name: "damaged segment", damaged: 2, fn: func(f fetchedSegment) error { return f.err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, segs := storedSegments(t, 10)
			if tc.damaged > 0 {
				segs[tc.damaged-1].SHA256 = "00"
			}
			dir := t.TempDir()
			before := fetchers()
			got := 0
			err := fetchAhead(context.Background(), st, segs, dir, 1, func(f fetchedSegment) error {
				got++
				if got == 1 && tc.damaged == 0 && fetchers() == before {
					t.Error("the prefetch goroutine does not show in the stacks: the check below checks nothing")
				}
				os.Remove(f.path) // as the replay does once it has read it
				return tc.fn(f)
			})
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("fetchAhead returned %v, want %v", err, tc.want)
			}
			var de *archive.DamageError
			if tc.damaged > 0 && !errors.As(err, &de) {
				t.Fatalf("fetchAhead returned %v, want the damage", err)
			}
			for deadline := time.Now().Add(time.Second); fetchers() > before; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the prefetch goroutine still runs a second after the replay returned (after %d of %d segments)", got, len(segs))
				}
			}
			if left := filesIn(t, dir); len(left) > 0 {
				t.Errorf("fetched segments left behind: %v", left)
			}
		})
	}
}

// Every segment reaches the replay, in order, whole.
func TestFetchAheadHandsOverEverySegmentInOrder(t *testing.T) {
	st, segs := storedSegments(t, 10)
	dir := t.TempDir()
	var seen []uint64
	err := fetchAhead(context.Background(), st, segs, dir, 3, func(f fetchedSegment) error {
		if f.err != nil {
			return f.err
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return err
		}
		if len(b) != int(f.seg.Bytes) || b[0] != byte(f.seg.Seq) {
			t.Errorf("segment %d: %d bytes of %d", f.seg.Seq, len(b), b[0])
		}
		os.Remove(f.path)
		seen = append(seen, f.seg.Seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(segs) {
		t.Fatalf("handed over %v", seen)
	}
	for i, s := range seen {
		if s != uint64(i+1) {
			t.Fatalf("handed over %v, out of order", seen)
		}
	}
}
