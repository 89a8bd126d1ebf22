// Package archivertest holds a fake spool for tests of the archiver: closed
// segments that a test appends, as files in a directory, with manifests
// that chain as the real spool's do. It implements archiver.SegmentSource.
package archivertest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
)

// Spool is a fake archiver.SegmentSource. Like the real spool it hands out
// closed segments oldest first, and Archived(seq) releases every segment up
// to seq (its file is deleted). It records every Archived call. Safe for
// concurrent use.
type Spool struct {
	dir string

	mu       sync.Mutex
	appended []Seg             // every segment appended, by seq
	closed   []archive.Segment // not released
	released uint64
	calls    []uint64
	changed  chan struct{}
	onArch   func(seq uint64) error
}

// Seg is a segment as a test made it: its manifest and its binlog file.
type Seg struct {
	Manifest archive.Segment
	Content  []byte
}

// TxnsPerSegment is how many transactions Next puts in each segment's
// manifest: GTIDs 0-1-<n> advance by this much per segment.
const TxnsPerSegment = 2

// Epoch is the commit time of the first segment's transactions that Next
// makes; each segment's commit one second after the previous segment's.
var Epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// NewSpool returns an empty spool with its files in a temp directory of t.
func NewSpool(t testing.TB) *Spool {
	return &Spool{dir: t.TempDir(), changed: make(chan struct{})}
}

// OnArchived sets a function that Archived calls first, with the spool's
// lock not held: it may look at the store, or return an error, which
// Archived returns without releasing anything (a spool that cannot record
// the release).
func (s *Spool) OnArchived(fn func(seq uint64) error) {
	s.mu.Lock()
	s.onArch = fn
	s.mu.Unlock()
}

// Next returns the manifest of a segment holding content that continues
// the last one appended (or starts the chain at segment 1, GTID set "",
// when none was): the next seq, Start equal to the last End, and
// TxnsPerSegment transactions of MariaDB domain 0, server 1. It appends
// nothing: a test may change the manifest, then Append it.
func (s *Spool) Next(content []byte) archive.Segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var prev *archive.Segment
	if n := len(s.appended); n > 0 {
		prev = &s.appended[n-1].Manifest
	}
	return Follow(prev, content)
}

// Follow is the manifest of the segment holding content after prev (nil:
// the first segment of an archive), as Spool.Next makes it.
func Follow(prev *archive.Segment, content []byte) archive.Segment {
	seq, start, gtid := uint64(1), "", uint64(0)
	if prev != nil {
		seq, start = prev.Seq+1, prev.End.GTIDSet
		gtid = GTIDSeq(prev.End.GTIDSet)
	}
	sum := sha256.Sum256(content)
	at := Epoch.Add(time.Duration(seq-1) * time.Second)
	return archive.Segment{
		Format:    archive.FormatVersion,
		Seq:       seq,
		Source:    archive.Source{Flavor: "mariadb", Version: "10.11.0-MariaDB", ServerID: 1},
		Start:     binlog.Position{GTIDSet: start},
		End:       binlog.Position{GTIDSet: gtidSet(gtid + TxnsPerSegment)},
		FirstGTID: gtidSet(gtid + 1),
		LastGTID:  gtidSet(gtid + TxnsPerSegment),
		FirstTime: at,
		LastTime:  at,
		Txns:      TxnsPerSegment,
		Tables:    []string{"app.t"},
		Bytes:     int64(len(content)),
		SHA256:    hex.EncodeToString(sum[:]),
	}
}

func gtidSet(n uint64) string { return fmt.Sprintf("0-1-%d", n) }

// GTIDSeq is n of a GTID set "0-1-n" that Follow made (0 for "").
func GTIDSeq(set string) uint64 {
	var n uint64
	if set != "" {
		fmt.Sscanf(set, "0-1-%d", &n)
	}
	return n
}

// Add appends the segment holding content that continues the chain.
func (s *Spool) Add(content []byte) archive.Segment {
	seg := s.Next(content)
	s.Append(seg, content)
	return seg
}

// Append adds a closed segment as given, manifest and content unchecked
// (a test may append an inconsistent one on purpose), and signals Changed.
// Segments are kept in seq order whatever the order of appending.
func (s *Spool) Append(seg archive.Segment, content []byte) {
	if err := os.WriteFile(s.SegmentPath(seg.Seq), content, 0o600); err != nil {
		panic(fmt.Sprintf("archivertest: write segment %d: %v", seg.Seq, err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appended = insert(s.appended, Seg{Manifest: seg, Content: slices.Clone(content)}, func(x Seg) uint64 { return x.Manifest.Seq })
	s.closed = insert(s.closed, seg, func(x archive.Segment) uint64 { return x.Seq })
	close(s.changed)
	s.changed = make(chan struct{})
}

func insert[T any](list []T, x T, seq func(T) uint64) []T {
	i, _ := slices.BinarySearchFunc(list, seq(x), func(e T, n uint64) int {
		switch {
		case seq(e) < n:
			return -1
		case seq(e) > n:
			return 1
		}
		return 0
	})
	return slices.Insert(list, i, x)
}

// AppendAll appends segments another spool made (Appended), as a spool
// rebuilt with the same history would hold them.
func (s *Spool) AppendAll(segs []Seg) {
	for _, g := range segs {
		s.Append(g.Manifest, g.Content)
	}
}

// Appended is every segment appended so far, released or not, by seq.
func (s *Spool) Appended() []Seg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.appended)
}

// Content is the binlog file of an appended segment (nil if none).
func (s *Spool) Content(seq uint64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.appended {
		if g.Manifest.Seq == seq {
			return g.Content
		}
	}
	return nil
}

// Closed returns the segments not yet released after seq, oldest first.
func (s *Spool) Closed(after uint64) []archive.Segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []archive.Segment
	for _, m := range s.closed {
		if m.Seq > after {
			out = append(out, m)
		}
	}
	return out
}

// SegmentPath is the file of segment seq.
func (s *Spool) SegmentPath(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%016d.binlog", seq))
}

// Changed is closed when a segment is appended.
func (s *Spool) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Archived records the call and releases the segments up to seq, as the
// real spool does (after OnArchived, if set, returns nil).
func (s *Spool) Archived(seq uint64) error {
	s.mu.Lock()
	fn := s.onArch
	s.mu.Unlock()
	if fn != nil {
		if err := fn(seq); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, seq)
	s.released = max(s.released, seq)
	for len(s.closed) > 0 && s.closed[0].Seq <= s.released {
		if err := os.Remove(s.SegmentPath(s.closed[0].Seq)); err != nil && !os.IsNotExist(err) {
			return err
		}
		s.closed = s.closed[1:]
	}
	return nil
}

// ArchivedCalls is the seq of every Archived call that released, in order.
func (s *Spool) ArchivedCalls() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Released is the highest seq Archived has released (0: none).
func (s *Spool) Released() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.released
}

// WaitReleased waits until Archived has released seq, or ctx ends.
func (s *Spool) WaitReleased(ctx context.Context, seq uint64) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for s.Released() < seq {
		select {
		case <-ctx.Done():
			return fmt.Errorf("segment %d not released (released up to %d): %w", seq, s.Released(), ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}
