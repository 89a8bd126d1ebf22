package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/replicator"
	"github.com/binvault/binvault/storage"
)

// History is where served replicas read: the spool and the archive while
// binvault streams (Live), or the archive alone (Archived).
type History interface {
	// Open positions a feed on the first transaction after pos.
	Open(ctx context.Context, pos binlog.GTIDSet) (*replicator.Feed, error)
	// End is the position after the newest whole transaction a replica
	// can be sent, the commit time of that transaction, and whether there
	// is any.
	End() (binlog.Position, time.Time, bool)
	// Changed is closed when End moves.
	Changed() <-chan struct{}
	// Segments lists the segments held, oldest first.
	Segments(ctx context.Context) ([]archive.Segment, error)
	// Source is the primary the history came from (flavor, server_id).
	Source() archive.Source
	// Checksums reports whether the newest segment's events carry CRC32
	// (ok false while nothing is held).
	Checksums(ctx context.Context) (crc, ok bool, err error)
}

// Live serves from the spool, and from the archive what the spool has
// released.
type Live struct {
	Spool  *replicator.Spool
	Store  storage.Store
	Origin archive.Source
}

var _ History = (*Live)(nil)

func (l *Live) Open(ctx context.Context, pos binlog.GTIDSet) (*replicator.Feed, error) {
	return replicator.NewFeed(ctx, replicator.FeedOptions{Spool: l.Spool, Store: l.Store, Flavor: l.Origin.Flavor}, pos)
}

func (l *Live) End() (binlog.Position, time.Time, bool) {
	p, _, ok := l.Spool.End()
	return p, l.Spool.LastCommit(), ok
}

func (l *Live) Changed() <-chan struct{} { return l.Spool.Changed() }

func (l *Live) Segments(ctx context.Context) ([]archive.Segment, error) {
	spooled, _, _ := l.Spool.Snapshot()
	ix, err := archive.Load(ctx, l.Store, false)
	if err != nil {
		return nil, err
	}
	out := ix.Segments
	for _, s := range spooled {
		if len(out) == 0 || s.Seq > out[len(out)-1].Seq {
			out = append(out, s)
		}
	}
	return out, nil
}

func (l *Live) Checksums(context.Context) (bool, bool, error) {
	crc, ok := l.Spool.Checksums()
	return crc, ok, nil
}

func (l *Live) Source() archive.Source { return l.Origin }

// Archived serves from the archive alone and follows it: one watcher
// polls the store for new segments for all replicas (a LIST per poll, and
// a ranged GET of each new segment's header).
type Archived struct {
	store storage.Store
	every time.Duration
	log   *slog.Logger

	mu      sync.Mutex
	segs    []archive.Segment // from the first held to the newest
	err     error             // the last poll's error, nil once one works
	lastOK  time.Time         // when a poll (or the first read) last worked
	changed chan struct{}
}

var _ History = (*Archived)(nil)

// NewArchived reads the archive's index (which must hold at least its
// format) and returns a history that Follow keeps up to date.
func NewArchived(ctx context.Context, st storage.Store, every time.Duration, log *slog.Logger) (*Archived, error) {
	ix, err := archive.Load(ctx, st, false)
	if err != nil {
		return nil, err
	}
	return &Archived{store: st, every: every, log: log, segs: ix.Segments, lastOK: time.Now(), changed: make(chan struct{})}, nil
}

// Follow polls the store for new segments until ctx ends.
func (a *Archived) Follow(ctx context.Context) {
	t := time.NewTicker(a.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := a.poll(ctx)
		a.mu.Lock()
		if err != nil && a.err == nil {
			a.log.Warn("cannot read the archive's new segments; served replicas wait (heartbeats go on)", "err", err.Error())
		}
		a.err = err
		if err == nil {
			a.lastOK = time.Now()
		}
		if n > 0 {
			close(a.changed)
			a.changed = make(chan struct{})
		}
		a.mu.Unlock()
	}
}

// poll adds the segments archived since the last one known.
func (a *Archived) poll(ctx context.Context) (int, error) {
	a.mu.Lock()
	after := uint64(0)
	var last *archive.Segment
	if n := len(a.segs); n > 0 {
		last = &a.segs[n-1]
		after = last.Seq
	}
	a.mu.Unlock()
	start := ""
	if after > 0 {
		start = archive.ManifestKey(after) // sorts after both keys of segment after
	}
	var seqs []uint64
	err := storage.ListAfter(ctx, a.store, archive.SegmentsPrefix, start, func(oi storage.ObjectInfo) error {
		if seq, _, ok := archive.ParseSegmentsKey(oi.Key); ok && seq > after && (len(seqs) == 0 || seqs[len(seqs)-1] != seq) {
			seqs = append(seqs, seq)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	var add []archive.Segment
	for _, seq := range seqs {
		m, err := archive.ReadManifest(ctx, a.store, seq)
		if errors.Is(err, archive.ErrNoHeader) || errors.Is(err, storage.ErrNotFound) {
			break // an upload of the old format not finished: next poll
		}
		if err != nil {
			return 0, err
		}
		prev := last
		if n := len(add); n > 0 {
			prev = &add[n-1]
		}
		if prev != nil && !m.Follows(*prev) {
			return 0, fmt.Errorf("segment %d does not continue segment %d: the archive has a gap; replicas stop before it", m.Seq, prev.Seq)
		}
		add = append(add, *m)
	}
	a.mu.Lock()
	a.segs = append(a.segs, add...)
	a.mu.Unlock()
	return len(add), nil
}

func (a *Archived) Open(ctx context.Context, pos binlog.GTIDSet) (*replicator.Feed, error) {
	return replicator.NewFeed(ctx, replicator.FeedOptions{Store: a.store, Flavor: a.Source().Flavor, Archived: a.segment}, pos)
}

// segment is FeedOptions.Archived: segment seq once the watcher has seen it.
func (a *Archived) segment(ctx context.Context, seq uint64, block bool) (archive.Segment, error) {
	for {
		a.mu.Lock()
		ch := a.changed
		for i := len(a.segs) - 1; i >= 0; i-- {
			if a.segs[i].Seq == seq {
				s := a.segs[i]
				a.mu.Unlock()
				return s, nil
			}
			if a.segs[i].Seq < seq {
				break
			}
		}
		a.mu.Unlock()
		if !block {
			return archive.Segment{}, replicator.ErrWouldBlock
		}
		select {
		case <-ctx.Done():
			return archive.Segment{}, ctx.Err()
		case <-ch:
		}
	}
}

func (a *Archived) End() (binlog.Position, time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := len(a.segs); n > 0 {
		return a.segs[n-1].End, a.segs[n-1].LastTime, true
	}
	return binlog.Position{}, time.Time{}, false
}

func (a *Archived) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

func (a *Archived) Segments(context.Context) ([]archive.Segment, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]archive.Segment(nil), a.segs...), nil
}

// Checksums reads the newest segment's format description.
func (a *Archived) Checksums(ctx context.Context) (bool, bool, error) {
	a.mu.Lock()
	n := len(a.segs)
	var seg archive.Segment
	if n > 0 {
		seg = a.segs[n-1]
	}
	a.mu.Unlock()
	if n == 0 {
		return false, false, nil
	}
	rc, err := archive.OpenSegment(ctx, a.store, seg)
	if err != nil {
		return false, false, err
	}
	defer rc.Close()
	r, err := binlog.NewReader(rc, seg.Source.Flavor)
	if err != nil {
		return false, false, err
	}
	ev, err := r.Next()
	if err != nil {
		return false, false, err
	}
	return fdeChecksums(ev), true, nil
}

func (a *Archived) Source() archive.Source {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := len(a.segs); n > 0 {
		return a.segs[n-1].Source
	}
	return archive.Source{Flavor: "mariadb"}
}

// Err is the last poll's error, nil while the store answers. A poll that
// has not answered for max(10 s, 5 polls) is an error too: the SDK retries
// a request for tens of seconds before it fails, and meanwhile the
// replicas are sent nothing new.
func (a *Archived) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	if since := time.Since(a.lastOK); since > max(10*time.Second, 5*a.every) {
		return fmt.Errorf("the store has not answered a listing of new segments for %s", since.Round(time.Second))
	}
	return nil
}
