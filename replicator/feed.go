package replicator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/storage"
)

// feed yields the events of consecutive segments, from the spool while it
// holds them and from the archive otherwise, so a replica that fell behind
// the spool (which keeps only what is not archived yet) catches up from
// the store. Within the segment being written it follows the spool's
// committed end and never reads a partial transaction.
type feed struct {
	spool  *Spool
	store  storage.Store
	flavor string

	seq    uint64 // segment being read
	r      *binlog.Reader
	closer io.Closer
	tail   *tailReader
	ix     *archive.Index // loaded on first need
}

// newFeed positions a feed on the segment holding the first transaction
// after applied; it is an error when history between applied and the
// oldest segment binvault still holds is missing.
func newFeed(ctx context.Context, sp *Spool, st storage.Store, flavor string, applied binlog.GTIDSet) (*feed, error) {
	f := &feed{spool: sp, store: st, flavor: flavor}
	// One view of the spool: deciding from a list taken now and a "next
	// segment" read later would skip what was written in between.
	cands, openSeq, next := sp.Snapshot()
	// A segment is only passed over when the replica stands, in every
	// domain at the segment's sequence number, on the same GTID: a replica
	// whose own write took a sequence number of the primary's domain is
	// caught transaction by transaction (skipper).
	contains := func(p binlog.Position) bool {
		set, err := binlog.ParseGTIDSet(flavor, p.GTIDSet)
		return err == nil && applied.Contains(set) && applied.SameAtEqualSeq(set)
	}
	pick := func(segs []archive.Segment) (uint64, bool, error) {
		for _, s := range segs {
			// The segment being written is never passed over: what it
			// holds now may be applied, but it grows.
			if contains(s.End) && s.Txns > 0 && s.Seq != openSeq {
				continue
			}
			if !contains(s.Start) {
				return 0, false, usage.Errorf("the replica is at GTID %q but the oldest history binvault holds after it (segment %d) starts at %q: seed the replica from a backup (or restore) at a position binvault archived, then start again", applied.String(), s.Seq, s.Start.GTIDSet)
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
	ix, err := archive.Load(ctx, st, false)
	if err != nil {
		return nil, fmt.Errorf("read the archive to catch the replica up: %w", err)
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
		}
	}
	f.seq = seq
	return f, nil
}

// errWouldBlock: no event is available right now.
var errWouldBlock = errors.New("no event ready")

// next returns the next event. With wait false it returns errWouldBlock
// instead of waiting for the spool to commit more.
func (f *feed) next(ctx context.Context, wait bool) (binlog.Event, error) {
	for {
		if f.r == nil {
			if err := f.open(ctx, wait); err != nil {
				return binlog.Event{}, err
			}
		}
		if f.tail != nil {
			f.tail.ctx, f.tail.wait = ctx, wait
		}
		ev, err := f.r.Next()
		if err == nil {
			return ev, nil
		}
		if errors.Is(err, errWouldBlock) {
			return binlog.Event{}, errWouldBlock
		}
		if err == io.EOF {
			f.closeSeg()
			f.seq++
			continue
		}
		if ctx.Err() != nil {
			return binlog.Event{}, ctx.Err()
		}
		return binlog.Event{}, fmt.Errorf("segment %d: %w", f.seq, err)
	}
}

// open starts reading segment f.seq from wherever it is.
func (f *feed) open(ctx context.Context, wait bool) error {
	for {
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
					if errors.Is(err, errWouldBlock) {
						return errWouldBlock
					}
					return fmt.Errorf("segment %d: %w", f.seq, err)
				}
				f.r, f.closer = r, file
				return nil
			}
			// Released between Locate and Open: it is in the archive now.
		}
		_, next, _ := f.spool.End()
		if f.seq >= next {
			// Not written yet.
			if !wait {
				return errWouldBlock
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
		rc, err := archive.OpenSegment(ctx, f.store, seg)
		if err != nil {
			return fmt.Errorf("segment %d from the archive: %w", f.seq, err)
		}
		r, err := binlog.NewReader(rc, f.flavor)
		if err != nil {
			rc.Close()
			return fmt.Errorf("segment %d from the archive: %w", f.seq, err)
		}
		f.r, f.closer = r, rc
		return nil
	}
}

func (f *feed) archived(ctx context.Context, seq uint64) (archive.Segment, error) {
	find := func() (archive.Segment, bool) {
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
	if s, ok := find(); ok {
		return s, nil
	}
	m, err := archive.ReadManifest(ctx, f.store, seq)
	if err != nil {
		return archive.Segment{}, fmt.Errorf("segment %d is neither in the spool nor readable from the archive: %w", seq, err)
	}
	return *m, nil
}

func (f *feed) closeSeg() {
	if f.closer != nil {
		f.closer.Close()
	}
	f.r, f.closer, f.tail = nil, nil, nil
}

func (f *feed) close() { f.closeSeg() }

// tailReader reads the segment being written up to its committed end,
// waiting (or reporting errWouldBlock) for more, until it is closed.
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
			return 0, errWouldBlock
		}
		select {
		case <-t.ctx.Done():
			return 0, t.ctx.Err()
		case <-ch:
		}
	}
}
