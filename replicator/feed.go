package replicator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/storage"
)

// Feed yields the events of consecutive segments, from the spool while it
// holds them and from the archive otherwise, so a consumer that fell
// behind the spool (which keeps only what is not archived yet) catches up
// from the store. Within the segment being written it follows the spool's
// committed end and never reads a partial transaction. Without a spool
// (binvault serve) it reads the archive alone and waits for new segments
// through FeedOptions.WaitArchived.
//
// Each segment starts with its format description event: a consumer that
// needs to know where one segment ends and the next begins watches for it
// and asks Segment.
type Feed struct {
	spool  *Spool // nil: the archive alone
	store  storage.Store
	flavor string
	wait   func(ctx context.Context, seq uint64, block bool) (archive.Segment, error)

	seq     uint64 // segment being read
	seg     archive.Segment
	inSpool bool
	r       *binlog.Reader
	closer  io.Closer
	tail    *tailReader
	ix      *archive.Index // loaded on first need
	moved   bool           // seq was reached by reading the one before to its end
	from    binlog.GTIDSet // the consumer's position at NewFeed
}

// FeedOptions say where a Feed reads.
type FeedOptions struct {
	Spool  *Spool // nil: read the archive alone
	Store  storage.Store
	Flavor string
	// Archived, with no spool, returns segment seq's manifest once it is
	// in the archive: with block set it waits until then, otherwise it
	// returns ErrWouldBlock (binvault serve polls the store for new
	// segments once for all its replicas).
	Archived func(ctx context.Context, seq uint64, block bool) (archive.Segment, error)
}

// HistoryError: the history between a consumer's position and the oldest
// segment binvault still holds is missing (pruned, or never archived).
type HistoryError struct {
	Position string          // the consumer's GTID position
	Oldest   archive.Segment // the oldest segment after it that binvault holds
	// LostInFork: the consumer holds transactions a failover lost, and
	// Oldest is the segment that records the fork.
	LostInFork bool
}

func (e *HistoryError) Error() string {
	if e.LostInFork {
		return fmt.Sprintf("the position %q holds transactions lost in a failover (%s; segment %d starts the new primary's history at %q): rebuild it from a backup taken after the failover", e.Position, e.Oldest.Fork.Lost, e.Oldest.Seq, e.Oldest.Start.GTIDSet)
	}
	return fmt.Sprintf("the position %q is not in the history binvault holds: the oldest segment after it (%d) starts at %q", e.Position, e.Oldest.Seq, e.Oldest.Start.GTIDSet)
}

// NewFeed positions a feed on the segment holding the first transaction
// after applied; it is a *HistoryError when history between applied and
// the oldest segment binvault still holds is missing.
func NewFeed(ctx context.Context, o FeedOptions, applied binlog.GTIDSet) (*Feed, error) {
	f := &Feed{spool: o.Spool, store: o.Store, flavor: o.Flavor, wait: o.Archived, from: applied.Clone()}
	// One view of the spool: deciding from a list taken now and a "next
	// segment" read later would skip what was written in between.
	var cands []archive.Segment
	var openSeq, next uint64
	if f.spool != nil {
		cands, openSeq, next = f.spool.Snapshot()
	}
	// A segment is only passed over when the replica stands, in every
	// domain at the segment's sequence number, on the same GTID: a replica
	// whose own write took a sequence number of the primary's domain is
	// caught transaction by transaction (skipper).
	contains := func(p binlog.Position) bool {
		set, err := binlog.ParseGTIDSet(o.Flavor, p.GTIDSet)
		return err == nil && applied.Contains(set) && applied.SameAtEqualSeq(set)
	}
	pick := func(segs []archive.Segment) (uint64, bool, error) {
		for _, s := range segs {
			if s.HoldsLost(applied) {
				return 0, false, &HistoryError{Position: applied.String(), Oldest: s, LostInFork: true}
			}
			// The segment being written is never passed over: what it
			// holds now may be applied, but it grows.
			if contains(s.End) && s.Txns > 0 && s.Seq != openSeq {
				continue
			}
			if !contains(s.Start) {
				return 0, false, &HistoryError{Position: applied.String(), Oldest: s}
			}
			return s.Seq, true, nil
		}
		return 0, false, nil
	}
	if len(cands) > 0 && contains(cands[0].Start) {
		seq, ok, err := pick(cands)
		if err != nil {
			return nil, err
		}
		if !ok {
			seq = next
		}
		f.seq = seq
		return f, nil
	}
	// Behind the spool: the archive has what is missing.
	ix, err := archive.Load(ctx, f.store, false)
	if err != nil {
		return nil, fmt.Errorf("read the archive: %w", err)
	}
	f.ix = ix
	seq, ok, err := pick(ix.Segments)
	if err != nil {
		return nil, err
	}
	if !ok {
		if len(cands) > 0 {
			// The archive ends where the spool begins; pick in the spool
			// (its first segment starts beyond applied: a gap).
			if seq, ok, err = pick(cands); err != nil {
				return nil, err
			}
		}
		if !ok {
			seq = next
			if f.spool == nil {
				seq = 1
				if last := ix.Last(); last != nil {
					seq = last.Seq + 1
				}
			}
		}
	}
	f.seq = seq
	return f, nil
}

// Segment is the manifest of the segment the last event came from (of the
// spool's open segment: as far as it is committed).
func (f *Feed) Segment() archive.Segment {
	if f.inSpool && f.spool != nil {
		if m, ok := f.spool.Manifest(f.seq); ok {
			return m
		}
	}
	return f.seg
}

// ErrWouldBlock: no event is available right now.
var ErrWouldBlock = errors.New("no event ready")

// Next returns the next event. With wait false it returns ErrWouldBlock
// instead of waiting for the spool to commit more.
func (f *Feed) Next(ctx context.Context, wait bool) (binlog.Event, error) {
	for {
		if f.r == nil {
			if err := f.open(ctx, wait); err != nil {
				return binlog.Event{}, err
			}
			if f.seg.Fork != nil && (f.moved || f.seg.HoldsLost(f.from)) {
				// Read up to a fork (what came before is the branch the
				// failover abandoned: the consumer holds its end), or
				// started on that branch before the fork was written.
				pos := f.from.String()
				if f.moved {
					pos = f.seg.Fork.After.GTIDSet
				}
				f.closeSeg()
				return binlog.Event{}, &HistoryError{Position: pos, Oldest: f.seg, LostInFork: true}
			}
			f.moved = false
		}
		if f.tail != nil {
			f.tail.ctx, f.tail.wait = ctx, wait
		}
		ev, err := f.r.Next()
		if err == nil {
			return ev, nil
		}
		if errors.Is(err, ErrWouldBlock) {
			return binlog.Event{}, ErrWouldBlock
		}
		if err == io.EOF {
			f.closeSeg()
			f.seq++
			f.moved = true
			continue
		}
		if ctx.Err() != nil {
			return binlog.Event{}, ctx.Err()
		}
		return binlog.Event{}, fmt.Errorf("segment %d: %w", f.seq, err)
	}
}

// open starts reading segment f.seq from wherever it is.
func (f *Feed) open(ctx context.Context, wait bool) error {
	for {
		if f.spool == nil {
			return f.openArchived(ctx, wait)
		}
		path, closed, committed, ok := f.spool.Locate(f.seq)
		if ok {
			file, err := os.Open(path)
			if err == nil {
				var rd io.Reader = file
				if !closed {
					f.tail = &tailReader{f: file, spool: f.spool, seq: f.seq, limit: committed, ctx: ctx, wait: wait}
					rd = f.tail
				} else {
					rd = io.LimitReader(file, committed)
				}
				r, err := binlog.NewReader(rd, f.flavor)
				if err != nil {
					file.Close()
					if errors.Is(err, ErrWouldBlock) {
						return ErrWouldBlock
					}
					return fmt.Errorf("segment %d: %w", f.seq, err)
				}
				f.r, f.closer, f.inSpool = r, file, true
				f.seg, _ = f.spool.Manifest(f.seq)
				return nil
			}
			// Released between Locate and Open: it is in the archive now.
		}
		_, next, _ := f.spool.End()
		if f.seq >= next {
			// Not written yet.
			if !wait {
				return ErrWouldBlock
			}
			ch := f.spool.Changed()
			if _, n, _ := f.spool.End(); n > f.seq {
				continue
			}
			if _, _, _, ok := f.spool.Locate(f.seq); ok {
				continue
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-ch:
			}
			continue
		}
		// Older than the spool: read it from the archive.
		seg, err := f.archived(ctx, f.seq)
		if err != nil {
			return err
		}
		return f.openSegment(ctx, seg)
	}
}

// openArchived opens segment f.seq of an archive read without a spool,
// waiting for it to be archived when wait is set.
func (f *Feed) openArchived(ctx context.Context, wait bool) error {
	var seg archive.Segment
	if s, ok := f.indexed(f.seq); ok {
		seg = s
	} else if f.wait != nil {
		s, err := f.wait(ctx, f.seq, wait)
		if err != nil {
			return err
		}
		seg = s
	} else {
		s, err := f.archived(ctx, f.seq)
		if err != nil {
			return err
		}
		seg = s
	}
	return f.openSegment(ctx, seg)
}

func (f *Feed) openSegment(ctx context.Context, seg archive.Segment) error {
	dir := os.TempDir()
	if f.spool != nil {
		dir = f.spool.Dir()
	}
	file, err := fetchSegment(ctx, f.store, seg, dir)
	if err != nil {
		return fmt.Errorf("segment %d from the archive: %w", f.seq, err)
	}
	r, err := binlog.NewReader(file, f.flavor)
	if err != nil {
		file.Close()
		return fmt.Errorf("segment %d from the archive: %w", f.seq, err)
	}
	f.r, f.closer, f.seg, f.inSpool = r, file, seg, false
	return nil
}

// fetchSegment downloads segment seg whole into an unlinked temporary
// file in dir and returns it at its start once its content matched the
// manifest's size and digest (known only at the end): no event of a
// damaged or forged segment reaches a consumer, as in a restore.
func fetchSegment(ctx context.Context, st storage.Store, seg archive.Segment, dir string) (*os.File, error) {
	rc, err := archive.OpenSegment(ctx, st, seg)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	file, err := os.CreateTemp(dir, ".tmp-feed-*.binlog")
	if err != nil {
		return nil, err
	}
	// Unlinked at once: the open file stays readable, and a crash leaves
	// nothing behind.
	os.Remove(file.Name())
	if _, err := io.Copy(file, rc); err != nil {
		file.Close()
		return nil, err
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		file.Close()
		return nil, err
	}
	return file, nil
}

// indexed finds seq in the index loaded at start.
func (f *Feed) indexed(seq uint64) (archive.Segment, bool) {
	if f.ix == nil {
		return archive.Segment{}, false
	}
	for _, s := range f.ix.Segments {
		if s.Seq == seq {
			return s, true
		}
	}
	return archive.Segment{}, false
}

func (f *Feed) archived(ctx context.Context, seq uint64) (archive.Segment, error) {
	if s, ok := f.indexed(seq); ok {
		return s, nil
	}
	m, err := archive.ReadManifest(ctx, f.store, seq)
	if err != nil {
		return archive.Segment{}, fmt.Errorf("segment %d is neither in the spool nor readable from the archive: %w", seq, err)
	}
	return *m, nil
}

func (f *Feed) closeSeg() {
	if f.closer != nil {
		f.closer.Close()
	}
	f.r, f.closer, f.tail = nil, nil, nil
}

// Close releases the segment being read.
func (f *Feed) Close() { f.closeSeg() }

// tailReader reads the segment being written up to its committed end,
// waiting (or reporting ErrWouldBlock) for more, until it is closed.
type tailReader struct {
	f      *os.File
	spool  *Spool
	seq    uint64
	read   int64
	limit  int64
	closed bool
	ctx    context.Context
	wait   bool
}

func (t *tailReader) Read(p []byte) (int, error) {
	for {
		if t.read < t.limit {
			n := int64(len(p))
			if rem := t.limit - t.read; n > rem {
				n = rem
			}
			m, err := t.f.Read(p[:n])
			t.read += int64(m)
			if err == io.EOF && m > 0 {
				err = nil
			}
			return m, err
		}
		if t.closed {
			return 0, io.EOF
		}
		ch := t.spool.Changed()
		_, closed, committed, ok := t.spool.Locate(t.seq)
		if !ok {
			// Closed and released: the file we hold is complete.
			st, err := t.f.Stat()
			if err != nil {
				return 0, err
			}
			t.limit, t.closed = st.Size(), true
			continue
		}
		if committed > t.limit || closed {
			t.limit, t.closed = committed, closed
			continue
		}
		if !t.wait {
			return 0, ErrWouldBlock
		}
		select {
		case <-t.ctx.Done():
			return 0, t.ctx.Err()
		case <-ch:
		}
	}
}
