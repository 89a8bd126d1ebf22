package archiver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/binlog/binlogtest"
	"github.com/binvault/binvault/replicator/archiver"
	"github.com/binvault/binvault/replicator/archiver/archivertest"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
	"github.com/binvault/binvault/storage/storagetest"
)

// Segments that close at irregular times — one, a burst, a pause — while
// the store answers slowly at random: each is uploaded after the one
// before, released only once readable (checkRelease), each once.
func TestUploadsInOrderAsSegmentsClose(t *testing.T) {
	spool := archivertest.NewSpool(t)
	r := newRig(t, newStore(t), spool, nil)
	r.store.Seed(1)
	r.store.Inject(storagetest.Rule{Action: storagetest.Delay, Delay: 3 * time.Millisecond, Prob: 0.5})
	r.start()

	rng := rand.New(rand.NewPCG(1, 1))
	for _, burst := range []int{1, 3, 1, 5, 2, 1} {
		addSegments(spool, burst, 1)
		time.Sleep(time.Duration(rng.IntN(8)) * time.Millisecond)
	}
	r.waitReleased(13)
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := r.a.Newest(); n == nil || n.Seq != 13 || n.End != spool.Appended()[12].Manifest.End {
		t.Errorf("Newest = %+v, want segment 13", n)
	}
	r.expectNoLastError("after a run without errors")
	r.expectOnce(seqs(1, 13), seqs(1, 13), spool.Appended())
}

// A spool that offers segment 3 after 1 has lost 2: the archiver must not
// upload 3 (the archive would have a gap) but stop with ErrConflict,
// harming nothing; once 2 is there, a new run uploads 2 and 3.
func TestGapInTheSpoolStopsTheArchiver(t *testing.T) {
	spool := newSpool(t, 1, 1)
	r := newRig(t, newStore(t), spool, nil)
	r.start()
	r.waitReleased(1)

	two := spool.Next(storagetest.Random(1000, 2))
	three := archivertest.Follow(&two, storagetest.Random(1000, 3))
	spool.Append(three, storagetest.Random(1000, 3))
	err := r.ended()
	if !errors.Is(err, archiver.ErrConflict) || !strings.Contains(err.Error(), "3") {
		t.Fatalf("Run with segment 3 after 1: %v, want ErrConflict naming segment 3", err)
	}
	if got := spool.ArchivedCalls(); !slices.Equal(got, []uint64{1}) {
		t.Errorf("Archived calls %v, want [1]", got)
	}
	checkArchive(t, r.inner, spool.Appended()[:1])

	spool.Append(two, storagetest.Random(1000, 2))
	r2 := newRig(t, r.inner, spool, nil)
	r2.runUntilReleased(3)
	if got := spool.ArchivedCalls(); !slices.Equal(got, seqs(1, 3)) {
		t.Errorf("Archived calls %v, want 1..3", got)
	}
	checkArchive(t, r.inner, spool.Appended())
}

// A store outage from the start (the archiver cannot even read where the
// archive ends) and another in the middle: nothing is released during
// either, LastError says why, and afterwards every segment is uploaded in
// order, once, and LastError is clear.
func TestStoreOutageLosesNothing(t *testing.T) {
	spool := newSpool(t, 3, 1)
	r := newRig(t, newStore(t), spool, nil)
	end := r.store.Outage()
	r.start()
	r.waitUntil("LastError to report the outage", func() bool { return r.a.LastError() != "" })
	addSegments(spool, 2, 1) // segments close during the outage
	r.waitUntil("several failed attempts", func() bool { return r.store.Faulted(storagetest.OpAny) >= 5 })
	if e := r.a.LastError(); !strings.Contains(e, storagetest.ErrInjected.Error()) {
		t.Errorf("LastError during the outage = %q, want the store's error", e)
	}
	if n := spool.Released(); n != 0 {
		t.Fatalf("released segment %d during an outage from the start", n)
	}
	end()
	r.waitReleased(5)
	r.expectNoLastError("once uploads succeed again")

	// An outage with segments in flight.
	end = r.store.Outage()
	addSegments(spool, 3, 1)
	r.waitUntil("LastError to report the second outage", func() bool { return r.a.LastError() != "" })
	if n := spool.Released(); n != 5 {
		t.Fatalf("released up to %d during the second outage, want 5", n)
	}
	time.Sleep(20 * time.Millisecond) // several retries
	end()
	r.waitReleased(8)
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	r.expectNoLastError("after the outage")
	r.expectOnce(seqs(1, 8), seqs(1, 8), spool.Appended())
	t.Logf("%d store calls, %d failed", r.store.Calls(storagetest.OpAny), r.store.Faulted(storagetest.OpAny))
}

// A store that fails a third of the requests and loses a tenth of the
// replies, at random (seeded): the archive still ends up whole, once.
func TestFlakyStore(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			spool := newSpool(t, 6, seed)
			r := newRig(t, newStore(t), spool, nil)
			r.store.Seed(seed)
			r.store.Inject(storagetest.Rule{Action: storagetest.Fail, Prob: 0.3})
			r.store.Inject(storagetest.Rule{Action: storagetest.LoseReply, Prob: 0.1})
			r.runUntilReleased(6)
			r.expectOnce(seqs(1, 6), seqs(1, 6), spool.Appended())
		})
	}
}

// Two binvaults with different histories on one storage prefix: the
// second finds segments 1..3 in the store with other content than its
// spool's, stops with ErrConflict, and neither writes nor releases.
func TestConflictingSpoolStopsAndWritesNothing(t *testing.T) {
	st := newStore(t)
	first, _ := archived(t, st, 3)

	for _, tc := range []struct {
		name string
		n    int // segments in the other spool, 1.. (same seqs and GTIDs, other content)
	}{{"same segments", 3}, {"more segments", 5}, {"fewer segments", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newRig(t, st, newSpool(t, tc.n, 2), nil)
			b.start()
			b.expectConflict(first.Appended())
		})
	}
}

// Two archivers with different spools start together on an empty store:
// one wins, the other stops with ErrConflict, and the archive is wholly
// the winner's — never a mix.
func TestRacingArchiversNeverMix(t *testing.T) {
	for round := range 5 {
		st := newStore(t)
		spools := []*archivertest.Spool{archivertest.NewSpool(t), archivertest.NewSpool(t)}
		var rigs []*rig
		for i, s := range spools {
			addSegments(s, 4, uint64(10*round+i+1))
			rigs = append(rigs, newRig(t, st, s, nil))
		}
		for _, r := range rigs {
			r.start()
		}
		// The winner releases all four; the loser stops.
		deadline := time.Now().Add(waitFor)
		for spools[0].Released() < 4 && spools[1].Released() < 4 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		winner := 0
		if spools[1].Released() == 4 {
			winner = 1
		}
		loser := 1 - winner
		if err := rigs[loser].ended(); !errors.Is(err, archiver.ErrConflict) {
			t.Fatalf("round %d: the loser's Run: %v, want ErrConflict", round, err)
		}
		if err := rigs[winner].stop(); err != nil {
			t.Fatalf("round %d: the winner's Run: %v", round, err)
		}
		if spools[winner].Released() != 4 {
			t.Fatalf("round %d: the winner released up to %d", round, spools[winner].Released())
		}
		if got := spools[loser].ArchivedCalls(); len(got) > 0 {
			t.Errorf("round %d: the loser released %v", round, got)
		}
		checkArchive(t, st, spools[winner].Appended())
	}
}

// A spool that does not continue the archive — its next segment starts
// elsewhere in the primary's history, or its number leaves a hole — is a
// conflict: nothing is written or released.
func TestSpoolNotContinuingTheArchiveIsAConflict(t *testing.T) {
	st := newStore(t)
	first, _ := archived(t, st, 3)
	end := first.Appended()[2].Manifest

	for _, tc := range []struct {
		name string
		edit func(*archive.Segment)
	}{
		{"other start position", func(s *archive.Segment) { s.Start.GTIDSet = "0-1-5" }},
		{"other domain", func(s *archive.Segment) { s.Start.GTIDSet = end.End.GTIDSet + ",1-1-7" }},
		{"hole in the numbers", func(s *archive.Segment) { s.Seq = 5 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := archivertest.NewSpool(t)
			content := storagetest.Random(5000, 9)
			seg := archivertest.Follow(&end, content)
			tc.edit(&seg)
			other.Append(seg, content)
			b := newRig(t, st, other, nil)
			b.start()
			b.expectConflict(first.Appended())
		})
	}
}

// After a restart the archiver continues at the archive's end and
// releases what the earlier run uploaded but had not released (the spool
// still holds it), without uploading it again — whether the archive's end
// is in catalog objects or only in the tail after them.
func TestRestartContinuesAndReleases(t *testing.T) {
	for _, catalogued := range []bool{false, true} {
		name := map[bool]string{false: "tail", true: "catalogued"}[catalogued]
		t.Run(name, func(t *testing.T) {
			b := restart(t, catalogued, nil)
			if n := b.a.Newest(); n == nil || n.Seq != 6 {
				t.Errorf("Newest = %+v, want segment 6", n)
			}
		})
	}
}

// Drain, at shutdown after Run stopped, uploads the segments closed last
// and writes the catalog: readers then find every segment in catalog
// objects. It refuses to work before Run has read the archive's state, and
// during an outage it fails at once instead of retrying.
func TestDrainUploadsTheRestAndWritesTheCatalog(t *testing.T) {
	st := newStore(t)
	spool := newSpool(t, 2, 1)
	r := newRig(t, st, spool, nil)
	if err := r.a.Drain(context.Background()); err == nil {
		t.Error("Drain before Run read the archive's state succeeded")
	}
	if n := r.store.Calls(storagetest.OpAny); n > 0 || spool.Released() > 0 {
		t.Errorf("Drain before Run made %d store calls and released up to %d", n, spool.Released())
	}
	r.runUntilReleased(2)
	addSegments(spool, 2, 1) // closed by the spool's flush at shutdown
	if err := r.a.Drain(context.Background()); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if got := spool.ArchivedCalls(); !slices.Equal(got, seqs(1, 4)) {
		t.Errorf("Archived calls %v, want 1..4", got)
	}
	ix := checkArchive(t, st, spool.Appended())
	if ix.Catalogued != 4 || len(ix.CatalogKeys) == 0 {
		t.Errorf("after Drain the catalog covers up to %d (objects %q), want 4", ix.Catalogued, ix.CatalogKeys)
	}

	// An outage: Drain returns an error promptly, releases nothing.
	addSegments(spool, 1, 1)
	end := r.store.Outage()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	start := time.Now()
	if err := r.a.Drain(ctx); err == nil {
		t.Error("Drain during an outage succeeded")
	}
	if d := time.Since(start); d > waitFor/2 {
		t.Errorf("Drain during an outage took %v", d)
	}
	if n := spool.Released(); n != 4 {
		t.Errorf("released up to %d during the outage", n)
	}
	end()
	if err := r.a.Drain(ctx); err != nil {
		t.Fatalf("Drain after the outage: %v", err)
	}
	ix = checkArchive(t, st, spool.Appended())
	if ix.Catalogued != 5 {
		t.Errorf("the catalog covers up to %d, want 5", ix.Catalogued)
	}
}

// After retention pruned segments 1 and 2 (archive.Truncate, as prune
// does) and told the archiver (Pruned(3)), the catalog objects it writes
// leave them out: readers take an object starting at 3, and every object
// readers take names only segments from 3 on.
func TestPrunedSegmentsStayOutOfTheCatalog(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	spool := newSpool(t, 4, 1)
	r := newRig(t, st, spool, nil)
	r.start()
	r.waitReleased(4)

	ix, err := archive.Load(ctx, st, false)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := archive.Truncate(ctx, st, ix, 2, time.Now())
	if err != nil || rep.Floor != 3 {
		t.Fatalf("Truncate: %+v, %v", rep, err)
	}
	r.a.Pruned(rep.Floor)
	r.prunedBelow = rep.Floor
	addSegments(spool, 2, 1)
	r.waitReleased(6)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.a.Drain(ctx); err != nil {
		t.Fatal(err)
	}

	cs, err := archive.ReadCatalogState(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Floor != 3 || len(cs.Cover) == 0 || cs.Cover[0].First != 3 || cs.Cover[len(cs.Cover)-1].Last != 6 {
		t.Fatalf("catalog state: floor %d, cover %+v; want floor 3 and objects covering 3..6", cs.Floor, cs.Cover)
	}
	for _, c := range append(cs.Cover, cs.Pruned...) {
		cat, err := archive.ReadCatalog(ctx, st, c.Key)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range cat.Segments {
			if s.Seq < 3 {
				t.Errorf("catalog object %s names pruned segment %d", c.Key, s.Seq)
			}
		}
	}
	got := checkArchive(t, st, spool.Appended()[2:])
	if got.Catalogued != 6 {
		t.Errorf("the catalog covers up to %d, want 6", got.Catalogued)
	}
}

// Catalog objects written while Run goes on (a short CatalogInterval)
// cover every uploaded segment, with uploads and catalog writes
// interleaved, and Drain finishes the job.
func TestCatalogWhileRunning(t *testing.T) {
	st := newStore(t)
	spool := archivertest.NewSpool(t)
	r := newRig(t, st, spool, func(o *archiver.Options) { o.CatalogInterval = 4 * time.Millisecond })
	r.start()
	for range 6 {
		addSegments(spool, 2, 1)
		time.Sleep(3 * time.Millisecond)
	}
	r.waitReleased(12)
	r.waitUntil("a catalog object", func() bool { return r.store.Calls(storagetest.OpPut) > 0 })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.a.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	ix := checkArchive(t, st, spool.Appended())
	if ix.Catalogued != 12 {
		t.Errorf("the catalog covers up to %d, want 12", ix.Catalogued)
	}
	if got := spool.ArchivedCalls(); !slices.Equal(got, seqs(1, 12)) {
		t.Errorf("Archived calls %v", got)
	}
}

// Archived failing (the spool cannot record the release) is retried: the
// segment is neither lost nor uploaded twice.
func TestReleaseFailureIsRetried(t *testing.T) {
	spool := newSpool(t, 3, 1)
	r := newRig(t, newStore(t), spool, nil)
	var mu sync.Mutex
	fails := 2
	spool.OnArchived(func(seq uint64) error {
		if err := r.checkRelease(seq); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if seq == 2 && fails > 0 {
			fails--
			return errors.New("spool disk full")
		}
		return nil
	})
	r.runUntilReleased(3)
	r.expectOnce(seqs(1, 3), seqs(1, 3), spool.Appended())
}

// A spool file that no longer has the digest its manifest recorded (local
// disk damage) is never uploaded: the store stays without any object,
// nothing is released, LastError says what is wrong; once the file is
// right again, the segment goes up.
func TestDamagedSpoolFileIsNeverUploaded(t *testing.T) {
	st := newStore(t)
	spool := archivertest.NewSpool(t)
	seg := addSegments(spool, 1, 1)[0]
	good := spool.Content(1)
	bad := slices.Clone(good)
	bad[len(bad)/2] ^= 0x40
	if err := os.WriteFile(spool.SegmentPath(1), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, st, spool, nil)
	r.start()
	r.waitUntil("LastError to name the damage", func() bool { return strings.Contains(r.a.LastError(), "no longer matches") })
	r.waitUntil("a few attempts", func() bool { return r.store.Calls(storagetest.OpPutIfAbsent) >= 3 })
	if n := spool.Released(); n != 0 {
		t.Fatalf("released segment %d from a damaged file", n)
	}
	var objects []string
	if err := st.List(context.Background(), "", func(oi storage.ObjectInfo) error { objects = append(objects, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(objects) > 0 {
		t.Fatalf("the store holds %q after uploads of a damaged file", objects)
	}
	if err := os.WriteFile(spool.SegmentPath(1), good, 0o600); err != nil {
		t.Fatal(err)
	}
	r.waitReleased(1)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	checkArchive(t, st, []archivertest.Seg{{Manifest: seg, Content: good}})
}

// A store that cannot work as configured (here a directory that does not
// exist) ends Run at once with the *storage.ConfigError, which the daemon
// maps to exit code 2, instead of retrying forever.
func TestMisconfiguredStoreEndsRun(t *testing.T) {
	st, err := file.New(filepath.Join(t.TempDir(), "not-mounted"))
	if err != nil {
		t.Fatal(err)
	}
	spool := newSpool(t, 1, 1)
	r := newRig(t, st, spool, nil)
	r.start()
	err = r.ended()
	var ce *storage.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("Run over a missing directory: %v, want a *storage.ConfigError", err)
	}
	if n := spool.Released(); n != 0 {
		t.Errorf("released up to %d", n)
	}
}

// A segment holding a real binlog file (a MariaDB 10.11 binlog of every
// transaction shape) comes back from the archive as that binlog: every
// event's checksum, whole transactions, the manifest's GTIDs and counts
// (archive.VerifySegment).
func TestArchivedSegmentIsTheBinlog(t *testing.T) {
	content, err := os.ReadFile(filepath.Join("..", "..", "internal", "binlog", "testdata", "mariadb-10.11.binlog"))
	if err != nil {
		t.Fatal(err)
	}
	spool := archivertest.NewSpool(t)
	seg := spool.Next(content)
	seg.Txns, seg.FirstGTID, seg.LastGTID = 0, "", ""
	rd, err := binlog.NewReader(bytes.NewReader(content), "mariadb")
	if err != nil {
		t.Fatal(err)
	}
	var g binlog.Grouper
	for _, ev := range binlogtest.ReadAll(t, rd.Next) {
		if role, err := g.Feed(ev); err != nil {
			t.Fatal(err)
		} else if role == binlog.End {
			gtid := g.Txn().GTID
			if seg.Txns++; seg.FirstGTID == "" {
				seg.FirstGTID = gtid
			}
			seg.LastGTID = gtid
		}
	}
	if seg.Txns < 5 {
		t.Fatalf("the test binlog holds %d transactions", seg.Txns)
	}
	seg.Start.GTIDSet, seg.End.GTIDSet = "", seg.LastGTID
	spool.Append(seg, content)

	st := newStore(t)
	newRig(t, st, spool, nil).runUntilReleased(1)
	ix := checkArchive(t, st, spool.Appended())
	if err := archive.VerifySegment(context.Background(), st, ix.Segments[0]); err != nil {
		t.Errorf("VerifySegment: %v", err)
	}
}
