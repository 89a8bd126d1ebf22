package archiver_test

// The fast tests' harness: the archiver over a fake spool
// (archivertest.Spool) and a file store in a temp directory behind a
// fault-injecting wrapper (storagetest.Faults). The tests look at the
// archive only as readers do (archive.Load, OpenSegment, the catalog
// state), never at object keys, so they hold whatever layout the archive
// has.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/metrics"
	"github.com/binvault/binvault/internal/retry"
	"github.com/binvault/binvault/replicator/archiver"
	"github.com/binvault/binvault/replicator/archiver/archivertest"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
	"github.com/binvault/binvault/storage/storagetest"
)

var _ archiver.SegmentSource = (*archivertest.Spool)(nil)

// waitFor bounds every wait: the tests take milliseconds, a hang fails.
const waitFor = 10 * time.Second

// fastRetry keeps backoff in milliseconds.
var fastRetry = retry.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}

// newStore is a file store in a temp directory, on tmpfs where there is
// one: its fsyncs then cost nothing, and these tests are about the
// archiver, not the disk.
func newStore(t testing.TB) *file.Store {
	dir := t.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "binvault-archiver-test-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(shm) })
		dir = shm
	}
	s, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rig is one archiver at work.
type rig struct {
	t     testing.TB
	inner storage.Store // the store as it is, for checks
	store *storagetest.Faults
	spool *archivertest.Spool
	a     *archiver.Archiver
	// prunedBelow: segments below are gone from the store by retention,
	// so Archived may release them unread.
	prunedBelow uint64

	mu       sync.Mutex
	uploaded []uint64 // Options.Uploaded calls
	cancel   context.CancelFunc
	done     chan struct{}
	runErr   error
}

// newRig makes an archiver over spool and inner (wrapped in a fresh
// Faults); edit may change the options. Every Archived call is checked:
// each segment it releases must be readable from the store, whole.
func newRig(t testing.TB, inner storage.Store, spool *archivertest.Spool, edit func(*archiver.Options)) *rig {
	r := &rig{t: t, inner: inner, store: storagetest.NewFaults(inner), spool: spool}
	o := archiver.Options{
		CatalogInterval: time.Hour, // catalog objects only from Drain, unless a test asks
		Retry:           fastRetry,
		Metrics:         metrics.New(),
		Log:             slog.New(slog.DiscardHandler),
		Uploaded: func(seg archive.Segment) {
			r.mu.Lock()
			r.uploaded = append(r.uploaded, seg.Seq)
			r.mu.Unlock()
		},
	}
	if edit != nil {
		edit(&o)
	}
	r.a = archiver.New(r.store, spool, o)
	spool.OnArchived(r.checkRelease)
	return r
}

// checkRelease runs inside Archived(seq): every segment that call
// releases must already be in the store, whole, as the spool holds it.
func (r *rig) checkRelease(seq uint64) error {
	var ix *archive.Index
	for _, seg := range r.spool.Closed(0) {
		if seg.Seq > seq {
			break
		}
		if seg.Seq < r.prunedBelow {
			continue
		}
		if ix == nil {
			var err error
			if ix, err = archive.Load(context.Background(), r.inner, false); err != nil {
				r.t.Errorf("Archived(%d): cannot read the archive: %v", seq, err)
				return nil
			}
		}
		if err := readable(context.Background(), r.inner, ix, seg, r.spool.Content(seg.Seq)); err != nil {
			r.t.Errorf("Archived(%d) releases segment %d, which readers cannot read yet: %v", seq, seg.Seq, err)
		}
	}
	return nil
}

// start runs the archiver until stop.
func (r *rig) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() {
		defer close(r.done)
		err := r.a.Run(ctx)
		r.mu.Lock()
		r.runErr = err
		r.mu.Unlock()
	}()
	r.t.Cleanup(func() { r.stop() })
}

// stop ends Run and returns what it returned.
func (r *rig) stop() error {
	r.t.Helper()
	r.cancel()
	return r.ended()
}

// ended waits for Run to return by itself and returns its error.
func (r *rig) ended() error {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(waitFor):
		r.t.Fatalf("Run did not return within %v", waitFor)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runErr
}

// running reports whether Run is still going.
func (r *rig) running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// waitReleased waits until the spool has released seq; Run ending first,
// or the time running out, fails the test.
func (r *rig) waitReleased(seq uint64) {
	r.t.Helper()
	r.waitUntil(fmt.Sprintf("segment %d released", seq), func() bool { return r.spool.Released() >= seq })
}

func (r *rig) waitUntil(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if !r.running() {
			if cond() {
				return
			}
			r.t.Fatalf("waiting for %s: Run returned %v (released up to %d, last error %q)", what, r.ended(), r.spool.Released(), r.a.LastError())
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("waiting for %s: not within %v (released up to %d, last error %q)", what, waitFor, r.spool.Released(), r.a.LastError())
		}
		time.Sleep(time.Millisecond)
	}
}

// runUntilReleased starts r, waits until the spool has released seq, and
// stops r. An error from Run fails the test but lets it go on: a sweep's
// scenario still returns and has the store's calls logged.
func (r *rig) runUntilReleased(seq uint64) {
	r.t.Helper()
	r.start()
	r.waitReleased(seq)
	if err := r.stop(); err != nil {
		r.t.Errorf("Run: %v", err)
	}
}

// expectOnce checks the outcome of a run that went well in the end: the
// spool's Archived calls released exactly archived, and Options.Uploaded
// reported exactly uploaded, each once and in order; the archive holds
// exactly want, whole (checkArchive); and no object was replaced or
// deleted (noOverwrite).
func (r *rig) expectOnce(archived, uploaded []uint64, want []archivertest.Seg) {
	r.t.Helper()
	if got := r.spool.ArchivedCalls(); !slices.Equal(got, archived) {
		r.t.Errorf("Archived calls %v, want %v once each in order", got, archived)
	}
	if got := r.uploads(); !slices.Equal(got, uploaded) {
		r.t.Errorf("Uploaded calls %v, want %v once each in order", got, uploaded)
	}
	checkArchive(r.t, r.inner, want)
	noOverwrite(r.t, r.store)
}

// expectNoLastError checks that LastError is clear; when says at what
// point of the test.
func (r *rig) expectNoLastError(when string) {
	r.t.Helper()
	if e := r.a.LastError(); e != "" {
		r.t.Errorf("LastError = %q %s", e, when)
	}
}

// expectConflict checks that Run ended by itself with ErrConflict,
// having released nothing and written nothing: the archive still holds
// exactly want.
func (r *rig) expectConflict(want []archivertest.Seg) {
	r.t.Helper()
	if err := r.ended(); !errors.Is(err, archiver.ErrConflict) {
		r.t.Fatalf("Run: %v, want ErrConflict", err)
	}
	if got := r.spool.ArchivedCalls(); len(got) > 0 {
		r.t.Errorf("the conflicting spool released %v", got)
	}
	if n := r.store.Calls(storagetest.OpPutIfAbsent) + r.store.Calls(storagetest.OpPut) + r.store.Calls(storagetest.OpDelete); n > 0 {
		r.t.Errorf("the conflicting archiver made %d writes:\n%v", n, r.store.History())
	}
	checkArchive(r.t, r.inner, want)
}

// uploads is the seq of every Options.Uploaded call, in order.
func (r *rig) uploads() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.uploaded)
}

// newSpool is a fake spool holding n segments made by addSegments(seed).
func newSpool(t testing.TB, n int, seed uint64) *archivertest.Spool {
	s := archivertest.NewSpool(t)
	addSegments(s, n, seed)
	return s
}

// archived is an earlier run's work: the spool of n segments (seed 1)
// that an archiver uploaded to st and released, and its rig, stopped.
func archived(t testing.TB, st storage.Store, n int) (*archivertest.Spool, *rig) {
	t.Helper()
	spool := newSpool(t, n, 1)
	r := newRig(t, st, spool, nil)
	r.start()
	r.waitReleased(uint64(n))
	if err := r.stop(); err != nil {
		t.Fatalf("the earlier run: %v", err)
	}
	return spool, r
}

// restart: an earlier run uploaded segments 1..4 (catalogued: and wrote
// a catalog object) and released 1 and 2 (a crash before it released 3
// and 4); the spool after the restart holds 3 and 4 and two new ones. The
// new archiver, with inject in place (nil: none), must release 3..6 in
// order, upload only 5 and 6 (3 and 4 are in the store) and end without
// LastError. It returns the new archiver's rig, stopped.
func restart(t *testing.T, catalogued bool, inject func(*storagetest.Faults)) *rig {
	t.Helper()
	st := newStore(t)
	first, a := archived(t, st, 4)
	if catalogued {
		if err := a.a.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	spool := archivertest.NewSpool(t)
	spool.AppendAll(first.Appended()[2:])
	addSegments(spool, 2, 1)
	b := newRig(t, st, spool, nil)
	if inject != nil {
		inject(b.store)
	}
	b.runUntilReleased(6)
	b.expectNoLastError("after every segment was uploaded")
	b.expectOnce(seqs(3, 6), seqs(5, 6), append(first.Appended(), spool.Appended()[2:]...))
	return b
}

// addSegments appends n segments of random content, continuing the
// spool's chain; the content depends on seed (below 4096) and the seq.
func addSegments(s *archivertest.Spool, n int, seed uint64) []archive.Segment {
	var out []archive.Segment
	for i := range n {
		next := s.Next(nil).Seq
		// Sizes from 100 bytes to 20 KiB; every fifth segment is larger
		// than a zstd block (128 KiB).
		size := int64(100 + (int(next)*7919+i*104729)%(20<<10))
		if next%5 == 0 {
			size += 200 << 10
		}
		out = append(out, s.Add(storagetest.Random(size, seed<<12|next)))
	}
	return out
}

// seqs returns first..last.
func seqs(first, last uint64) []uint64 {
	var s []uint64
	for q := first; q <= last; q++ {
		s = append(s, q)
	}
	return s
}

// readable checks that ix lists seg as the spool made it and that its
// object yields the spool's content, with every check a reader makes.
func readable(ctx context.Context, st storage.Store, ix *archive.Index, seg archive.Segment, content []byte) error {
	i := slices.IndexFunc(ix.Segments, func(s archive.Segment) bool { return s.Seq == seg.Seq })
	if i < 0 {
		return errors.New("not in the archive's index")
	}
	got := ix.Segments[i]
	if d := manifestDiff(got, seg); d != "" {
		return fmt.Errorf("the archive's manifest differs from the spool's: %s", d)
	}
	rc, err := archive.OpenSegment(ctx, st, got)
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	if !bytes.Equal(b, content) {
		return fmt.Errorf("holds %d bytes (SHA-256 %s), the spool's file %d (%s)", len(b), storagetest.SHA256(b), len(content), storagetest.SHA256(content))
	}
	return nil
}

// manifestDiff compares what the spool decided about a segment (not the
// format or the stored object's fields, which the archiver sets).
func manifestDiff(got, want archive.Segment) string {
	var d []string
	chk := func(name string, g, w any) {
		if fmt.Sprint(g) != fmt.Sprint(w) {
			d = append(d, fmt.Sprintf("%s %v, want %v", name, g, w))
		}
	}
	chk("seq", got.Seq, want.Seq)
	chk("source", got.Source, want.Source)
	chk("start", got.Start, want.Start)
	chk("end", got.End, want.End)
	chk("first_gtid", got.FirstGTID, want.FirstGTID)
	chk("last_gtid", got.LastGTID, want.LastGTID)
	chk("txns", got.Txns, want.Txns)
	chk("tables", got.Tables, want.Tables)
	chk("bytes", got.Bytes, want.Bytes)
	chk("sha256", got.SHA256, want.SHA256)
	if !got.FirstTime.Equal(want.FirstTime) || !got.LastTime.Equal(want.LastTime) {
		d = append(d, fmt.Sprintf("times %v..%v, want %v..%v", got.FirstTime, got.LastTime, want.FirstTime, want.LastTime))
	}
	if len(d) == 0 {
		return ""
	}
	return fmt.Sprint(d)
}

// checkArchive reads the archive as a reader does and checks it holds
// exactly want, in order, each readable and whole, as one chain.
func checkArchive(t testing.TB, st storage.Store, want []archivertest.Seg) *archive.Index {
	t.Helper()
	ctx := context.Background()
	ix, err := archive.Load(ctx, st, false)
	if err != nil {
		t.Fatalf("read the archive: %v", err)
	}
	var got, exp []uint64
	for _, s := range ix.Segments {
		got = append(got, s.Seq)
	}
	for _, s := range want {
		exp = append(exp, s.Manifest.Seq)
	}
	if !slices.Equal(got, exp) {
		t.Fatalf("the archive lists segments %v, want %v", got, exp)
	}
	if p := archive.Chain(ix.Segments); len(p) > 0 {
		t.Errorf("the archive's chain is broken: %q", p)
	}
	for _, s := range want {
		if err := readable(ctx, st, ix, s.Manifest, s.Content); err != nil {
			t.Errorf("segment %d: %v", s.Manifest.Seq, err)
		}
	}
	return ix
}

// noOverwrite checks that the archiver only ever created objects: no Put
// (which replaces) and no Delete. Holds while it writes no catalog.
func noOverwrite(t testing.TB, f *storagetest.Faults) {
	t.Helper()
	if n, d := f.Calls(storagetest.OpPut), f.Calls(storagetest.OpDelete); n+d > 0 {
		t.Errorf("the archiver replaced or deleted objects: %d Put, %d Delete calls:\n%v", n, d, f.History())
	}
}
