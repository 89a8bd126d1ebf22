package archiver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/metrics"
	"github.com/binvault/binvault/internal/retry"
	"github.com/binvault/binvault/storage"
)

const (
	// DefaultCatalogInterval: how often uploaded manifests are gathered
	// into a catalog object (one PUT each time).
	DefaultCatalogInterval = time.Minute
	// orphanGrace: a format-1 segment object without a manifest younger
	// than this may be another writer's upload in progress, not an orphan.
	orphanGrace = 2 * time.Minute
)

// SegmentSource is what the archiver needs of the spool.
type SegmentSource interface {
	// Closed returns closed segments after seq, oldest first.
	Closed(after uint64) []archive.Segment
	// SegmentPath is the local binlog file of a closed segment.
	SegmentPath(seq uint64) string
	// Changed is closed when something new is in the spool.
	Changed() <-chan struct{}
	// Archived tells the spool that seq is safely in the store.
	Archived(seq uint64) error
}

// Options tune the archiver.
type Options struct {
	// CatalogInterval is how often uploaded manifests are gathered into a
	// catalog object.
	CatalogInterval time.Duration
	// Uploaded, when set, is called after each segment is safely stored.
	Uploaded func(archive.Segment)
	// Retry is the backoff between failed store requests (zero:
	// retry.Default); tests shorten it.
	Retry   retry.Policy
	Metrics *metrics.Metrics
	Log     *slog.Logger
}

// Archiver uploads segments in order, exactly once each, and keeps the catalog.
type Archiver struct {
	store storage.Store
	src   SegmentSource
	opts  Options

	mu       sync.Mutex
	uploaded uint64            // newest seq in the store
	newest   *archive.Segment  // its manifest
	pending  []archive.Segment // uploaded, not yet in a catalog object
	floor    uint64            // segments below were pruned: never catalogued again
	lastCat  time.Time
	lastErr  string
	inited   atomic.Bool
	recent   []time.Duration // the last upload times
	estimate atomic.Int64    // UploadEstimate, nanoseconds
}

// ErrConflict: the store holds a different segment under our sequence
// number: another writer shares the storage prefix.
var ErrConflict = errors.New("archive conflict")

// New returns an archiver; Run reads the archive's state first.
func New(st storage.Store, src SegmentSource, o Options) *Archiver {
	if o.CatalogInterval == 0 {
		o.CatalogInterval = DefaultCatalogInterval
	}
	return &Archiver{store: st, src: src, opts: o, lastCat: time.Now()}
}

// init learns where the archive ends and which manifests no catalog
// object holds yet, retrying while the store is unreachable.
func (a *Archiver) init(ctx context.Context) error {
	b := a.opts.Retry.Start()
	for {
		ix, err := archive.Load(ctx, a.store, true)
		if err == nil {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.lastErr = ""
			a.floor = max(a.floor, ix.Floor)
			if last := ix.Last(); last != nil {
				a.uploaded, a.newest = last.Seq, last
				a.opts.Metrics.ArchiveNewestTxnTime.Set(float64(last.LastTime.Unix()))
			}
			for _, s := range ix.Segments {
				if s.Seq > ix.Catalogued {
					a.pending = append(a.pending, s)
				}
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ce *storage.ConfigError
		if errors.As(err, &ce) {
			return err
		}
		a.setLastError(err)
		if err := b.Wait(ctx, a.opts.Log, "cannot read the archive's state; retrying", "err", err.Error()); err != nil {
			return err
		}
	}
}

// setLastError records the outcome of the last store operation: nil once
// the store answers again, so /readyz and status stop reporting an outage
// that is over even when nothing is left to upload.
func (a *Archiver) setLastError(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		a.lastErr = ""
	} else {
		a.lastErr = err.Error()
	}
}

// Newest returns the newest archived segment's manifest (nil: none yet).
func (a *Archiver) Newest() *archive.Segment {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.newest
}

// LastError is the last upload error, "" once an upload succeeds again.
func (a *Archiver) LastError() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastErr
}

// Run uploads closed segments as they appear until ctx ends. It retries
// store errors forever; only ErrConflict ends it early.
func (a *Archiver) Run(ctx context.Context) error {
	if err := a.init(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	a.inited.Store(true)
	// Reading the store may fail for a while like any upload: retried, as
	// uploads are; only a conflict ends the archiver.
	for b := a.opts.Retry.Start(); ; {
		err := a.reconcile(ctx)
		a.setLastError(err)
		if err == nil {
			break
		}
		if errors.Is(err, ErrConflict) {
			return err
		}
		if b.Wait(ctx, a.opts.Log, "cannot check the segments an earlier run uploaded; retrying", "err", err.Error()) != nil {
			return nil
		}
	}
	tick := time.NewTicker(a.opts.CatalogInterval / 4)
	defer tick.Stop()
	for {
		changed := a.src.Changed()
		if err := a.uploadClosed(ctx, true); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(a.lastCat) >= a.opts.CatalogInterval {
			a.catalog(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}

// Drain uploads what is closed and writes the catalog, once, for shutdown.
func (a *Archiver) Drain(ctx context.Context) error {
	if !a.inited.Load() {
		return errors.New("the archive's state was never read: nothing uploaded")
	}
	if err := a.uploadClosed(ctx, false); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return a.catalog(ctx)
}

// reconcile releases spool segments that an earlier run uploaded but had
// no time to release, after checking the store holds the same content.
func (a *Archiver) reconcile(ctx context.Context) error {
	a.mu.Lock()
	floor := a.floor
	a.mu.Unlock()
	for _, seg := range a.src.Closed(0) {
		if seg.Seq > a.uploaded {
			break
		}
		have, err := archive.ReadManifest(ctx, a.store, seg.Seq)
		switch {
		case errors.Is(err, storage.ErrNotFound) && seg.Seq < floor:
			// Archived, then pruned by retention while we were down.
		case err != nil:
			return fmt.Errorf("check segment %d already archived: %w", seg.Seq, err)
		case have.SHA256 != seg.SHA256:
			return fmt.Errorf("%w: %s holds segment %d with other content than the spool's (is another binvault writing to this storage.url?)", ErrConflict, a.store, seg.Seq)
		}
		if err := a.src.Archived(seg.Seq); err != nil {
			return err
		}
	}
	return nil
}

func (a *Archiver) uploadClosed(ctx context.Context, retry bool) error {
	for _, seg := range a.src.Closed(a.uploaded) {
		b := a.opts.Retry.Start()
		for {
			err := a.upload(ctx, seg)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			a.opts.Metrics.ArchiveUploadErrors.Inc()
			a.setLastError(err)
			if errors.Is(err, ErrConflict) || !retry {
				return err
			}
			if b.Wait(ctx, a.opts.Log, "segment upload failed; retrying", "segment", seg.Seq, "err", err.Error()) != nil {
				return nil
			}
		}
	}
	return nil
}

// upload stores one segment, its manifest at its head (one object, one
// create-if-absent PUT), so a retry after a crash, or a second writer, can
// never replace what readers already trust.
func (a *Archiver) upload(ctx context.Context, seg archive.Segment) error {
	start := time.Now()
	if seg.Seq != a.uploaded+1 && a.uploaded != 0 {
		return fmt.Errorf("%w: next segment in the spool is %d but the archive ends at %d", ErrConflict, seg.Seq, a.uploaded)
	}
	if a.newest != nil && !seg.Follows(*a.newest) && !seg.Forks(*a.newest) {
		return fmt.Errorf("%w: segment %d starts at GTID %q but the archive ends at %q", ErrConflict, seg.Seq, seg.Start.GTIDSet, a.newest.End.GTIDSet)
	}
	seg.Format = archive.SegmentFormat
	key := archive.SegmentKey(seg.Seq)
	oi, err := a.putSegment(ctx, key, seg)
	if errors.Is(err, storage.ErrExists) {
		oi, err = a.resolveExisting(ctx, key, seg)
	}
	if err != nil {
		return err
	}
	took := time.Since(start)
	a.observeUpload(took)
	seg.Key, seg.StoredBytes, seg.StoredSHA256 = key, oi.Size, oi.SHA256
	if err := a.src.Archived(seg.Seq); err != nil {
		return err
	}
	m := a.opts.Metrics
	m.ArchiveSegments.Inc()
	m.ArchiveTransactions.Add(float64(seg.Txns))
	m.ArchiveBytes.Add(float64(oi.Size))
	m.ArchiveNewestTxnTime.Set(float64(seg.LastTime.Unix()))
	m.ArchiveUploadDuration.Observe(took.Seconds())
	a.mu.Lock()
	a.uploaded, a.newest, a.lastErr = seg.Seq, &seg, ""
	a.pending = append(a.pending, seg)
	a.mu.Unlock()
	if a.opts.Uploaded != nil {
		a.opts.Uploaded(seg)
	}
	a.opts.Log.Debug("segment archived", "segment", seg.Seq, "transactions", seg.Txns, "bytes", seg.Bytes, "stored_bytes", oi.Size, "last_gtid", seg.LastGTID, "took", took.String())
	return nil
}

// putSegment streams the manifest header and the spool file through zstd
// into the store, checking on the way that the file still has the digest
// recorded when it was closed.
func (a *Archiver) putSegment(ctx context.Context, key string, seg archive.Segment) (storage.ObjectInfo, error) {
	header, err := archive.EncodeHeader(seg)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	f, err := os.Open(a.src.SegmentPath(seg.Seq))
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	defer f.Close()
	pr, pw := io.Pipe()
	raw := sha256.New()
	go func() {
		_, err := pw.Write(header)
		if err == nil {
			enc, _ := zstd.NewWriter(pw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
			_, err = io.Copy(enc, io.TeeReader(f, raw))
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
		}
		if err == nil && hex.EncodeToString(raw.Sum(nil)) != seg.SHA256 {
			err = fmt.Errorf("spool file %s no longer matches its recorded SHA-256: local disk damage; move the spool aside and restart to re-stream from the archive's end", a.src.SegmentPath(seg.Seq))
		}
		pw.CloseWithError(err)
	}()
	oi, err := a.store.PutIfAbsent(ctx, key, pr)
	pr.CloseWithError(errors.New("upload ended"))
	return oi, err
}

// resolveExisting decides what an existing segment object means: our own
// earlier upload (the same binlog digest in its header: a retry whose
// first attempt succeeded unseen, or a crash before the spool released the
// segment), another writer's segment (a conflict), or a format-1 upload
// that a crash interrupted before its manifest (replaced).
func (a *Archiver) resolveExisting(ctx context.Context, key string, seg archive.Segment) (storage.ObjectInfo, error) {
	have, err := archive.ReadHeader(ctx, a.store, key)
	switch {
	case err == nil && have.SHA256 == seg.SHA256 && have.Seq == seg.Seq:
		return a.store.Stat(ctx, key)
	case err == nil:
		return storage.ObjectInfo{}, fmt.Errorf("%w: %s already holds segment %d with other content (is another binvault writing to this storage.url?)", ErrConflict, a.store, seg.Seq)
	case !errors.Is(err, archive.ErrNoHeader):
		return storage.ObjectInfo{}, fmt.Errorf("read existing %s: %w", key, err)
	}
	// Format 1: the manifest is an object of its own, written last.
	old, err := archive.ReadManifest(ctx, a.store, seg.Seq)
	switch {
	case err == nil && old.SHA256 == seg.SHA256:
		return a.store.Stat(ctx, key)
	case err == nil:
		return storage.ObjectInfo{}, fmt.Errorf("%w: %s already holds segment %d with other content (is another binvault writing to this storage.url?)", ErrConflict, a.store, seg.Seq)
	case !errors.Is(err, storage.ErrNotFound):
		return storage.ObjectInfo{}, fmt.Errorf("read existing manifest %d: %w", seg.Seq, err)
	}
	oi, err := a.store.Stat(ctx, key)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat existing %s: %w", key, err)
	}
	if !oi.ModTime.IsZero() && time.Since(oi.ModTime) < orphanGrace {
		return storage.ObjectInfo{}, fmt.Errorf("%w: %s holds a fresh, different segment %d without manifest: another binvault may be writing to this storage.url", ErrConflict, a.store, seg.Seq)
	}
	a.opts.Log.Warn("replacing an orphaned segment object left by an interrupted run", "key", key)
	if err := a.store.Delete(ctx, key); err != nil {
		return storage.ObjectInfo{}, err
	}
	return a.putSegment(ctx, key, seg)
}

// recentUploads is how many upload times the estimate looks at.
const recentUploads = 16

// observeUpload records how long a segment took to become durable.
func (a *Archiver) observeUpload(d time.Duration) {
	a.mu.Lock()
	a.recent = append(a.recent, d)
	if len(a.recent) > recentUploads {
		a.recent = a.recent[1:]
	}
	sorted := slices.Clone(a.recent)
	a.mu.Unlock()
	slices.Sort(sorted)
	// The third quartile: one slow request does not make every following
	// segment smaller, and most segments still meet their deadline.
	a.estimate.Store(int64(sorted[len(sorted)*3/4]))
}

// UploadEstimate is how long making a segment durable in the store takes
// lately (0 before the first upload); the spool closes segments that much
// ahead of their RPO deadline. It takes no lock.
func (a *Archiver) UploadEstimate() time.Duration { return time.Duration(a.estimate.Load()) }

// Pruned tells the archiver that retention deleted the segments below
// floor, so that it leaves them out of the catalog objects it writes
// (readers would ignore them anyway: docs/archive-format.md §5.1).
func (a *Archiver) Pruned(floor uint64) {
	a.mu.Lock()
	a.floor = max(a.floor, floor)
	a.mu.Unlock()
}

// catalog writes the pending manifests as a level-1 catalog object, then
// merges full runs of one level into the next.
func (a *Archiver) catalog(ctx context.Context) error {
	a.mu.Lock()
	pending := append([]archive.Segment(nil), a.pending...)
	floor := a.floor
	a.mu.Unlock()
	a.lastCat = time.Now()
	if len(pending) == 0 {
		return nil
	}
	write := pending
	for len(write) > 0 && write[0].Seq < floor {
		write = write[1:]
	}
	if len(write) > 0 { // else every one was pruned
		if _, err := archive.WriteCatalog(ctx, a.store, 1, write); err != nil {
			a.opts.Log.Warn("catalog write failed; will retry", "err", err.Error())
			return err
		}
	}
	a.mu.Lock()
	a.pending = a.pending[len(pending):]
	a.mu.Unlock()
	if err := archive.Compact(ctx, a.store); err != nil {
		a.opts.Log.Warn("catalog compaction failed; will retry", "err", err.Error())
	}
	return nil
}
