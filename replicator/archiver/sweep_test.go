package archiver_test

// Sweeps: a scenario runs once without faults to count its store calls,
// then once per call with a fault at exactly that call. They hold whatever
// requests the archive's layout takes, and find the one call whose fault
// the archiver mishandles.

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/binvault/binvault/replicator/archiver/archivertest"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/storagetest"
)

var sweptOps = []storagetest.Op{storagetest.OpPutIfAbsent, storagetest.OpPut, storagetest.OpGet,
	storagetest.OpStat, storagetest.OpList, storagetest.OpDelete}

// sweep runs scenario clean, then for every operation and every n up to
// the clean run's count of it, with inject(f, op, n) in place.
func sweep(t *testing.T, scenario func(t *testing.T, inject func(*storagetest.Faults)) *storagetest.Faults,
	inject func(f *storagetest.Faults, op storagetest.Op, n int)) {
	clean := scenario(t, nil)
	if t.Failed() {
		t.Fatal("the scenario fails without faults")
	}
	runs := 0
	for _, op := range sweptOps {
		for n := 1; n <= clean.Calls(op); n++ {
			runs++
			t.Run(fmt.Sprintf("%s#%d", op, n), func(t *testing.T) {
				f := scenario(t, func(f *storagetest.Faults) { inject(f, op, n) })
				if f.Faulted(storagetest.OpAny) == 0 && t.Failed() {
					t.Log("(the fault was never reached)")
				}
				if t.Failed() {
					t.Logf("store calls:\n%v", f.History())
				}
			})
		}
	}
	t.Logf("%d runs", runs)
}

// A reply lost after the store did the work, at any one call of a fresh
// archive's uploads: the retry recognises the archiver's own object and
// goes on — no ErrConflict, no segment twice, nothing replaced.
func TestLostReplyAtAnyCall(t *testing.T) {
	scenario := func(t *testing.T, inject func(*storagetest.Faults)) *storagetest.Faults {
		spool := newSpool(t, 3, 1)
		r := newRig(t, newStore(t), spool, nil)
		if inject != nil {
			inject(r.store)
		}
		r.runUntilReleased(3)
		r.expectNoLastError("after every segment was uploaded")
		r.expectOnce(seqs(1, 3), seqs(1, 3), spool.Appended())
		return r.store
	}
	sweep(t, scenario, func(f *storagetest.Faults, op storagetest.Op, n int) { f.LoseReplyNth(op, "", n) })
}

// restartScenario is restart as a sweep's scenario.
func restartScenario(catalogued bool) func(t *testing.T, inject func(*storagetest.Faults)) *storagetest.Faults {
	return func(t *testing.T, inject func(*storagetest.Faults)) *storagetest.Faults {
		return restart(t, catalogued, inject).store
	}
}

// A restart with one store request failing — any one, including those
// that read the archive's state and check what the earlier run left: the
// archiver retries (Run ends only on ErrConflict) and the outcome is as
// without the fault.
func TestRestartWithAFaultAtAnyCall(t *testing.T) {
	for _, catalogued := range []bool{false, true} {
		t.Run(map[bool]string{false: "tail", true: "catalogued"}[catalogued], func(t *testing.T) {
			sweep(t, restartScenario(catalogued), func(f *storagetest.Faults, op storagetest.Op, n int) { f.FailNth(op, "", n) })
		})
	}
}

// A crash at any store call: the first run dies right after call n (its
// reply lost, every later call failing), and a new run over the spool as
// the crash left it, plus one new segment, completes the archive — each
// segment once, the chain whole, everything released, the catalog written
// by its Drain.
func TestCrashAtAnyCall(t *testing.T) {
	const segs = 3
	// life: the first run's whole life, Run and Drain; a crash ends it.
	firstRun := func(t *testing.T, st storage.Store, spool *archivertest.Spool, crashAt int) (*storagetest.Faults, bool) {
		r := newRig(t, st, spool, nil)
		life, crash := context.WithCancel(context.Background())
		defer crash()
		if crashAt > 0 {
			r.store.Inject(storagetest.Rule{Nth: crashAt, Count: 1, Action: storagetest.LoseReply, Then: crash})
			r.store.Inject(storagetest.Rule{Nth: crashAt + 1, Action: storagetest.Fail})
		}
		r.start()
		go func() { <-life.Done(); r.cancel() }()
		r.waitUntil("all released or a crash", func() bool { return spool.Released() == segs || life.Err() != nil })
		r.stop()
		if life.Err() == nil {
			r.a.Drain(life)
		}
		return r.store, life.Err() != nil
	}
	clean, _ := firstRun(t, newStore(t), newSpool(t, segs, 1), 0)
	total := clean.Calls(storagetest.OpAny)
	for n := 1; n <= total; n++ {
		t.Run(fmt.Sprintf("call#%d", n), func(t *testing.T) {
			st := newStore(t)
			spool := newSpool(t, segs, 1)
			f, crashed := firstRun(t, st, spool, n)
			if !crashed {
				t.Fatalf("no crash at call %d of %d", n, f.Calls(storagetest.OpAny))
			}
			// The spool as the crash left it: what it had not released,
			// and one more segment, closed after the restart.
			after := archivertest.NewSpool(t)
			all := spool.Appended()
			for _, g := range all {
				if g.Manifest.Seq > spool.Released() {
					after.Append(g.Manifest, g.Content)
				}
			}
			content := storagetest.Random(3000, 77)
			after.Append(archivertest.Follow(&all[len(all)-1].Manifest, content), content)
			all = append(all, after.Appended()[len(after.Appended())-1])

			r := newRig(t, st, after, nil)
			r.runUntilReleased(segs + 1)
			if err := r.a.Drain(context.Background()); err != nil {
				t.Errorf("Drain after the crash: %v", err)
			}
			released := append(spool.ArchivedCalls(), after.ArchivedCalls()...)
			if !slices.Equal(released, seqs(1, segs+1)) {
				t.Errorf("Archived calls across both runs %v, want 1..%d once each", released, segs+1)
			}
			ix := checkArchive(t, st, all)
			if ix.Catalogued != segs+1 {
				t.Errorf("the catalog covers up to %d, want %d", ix.Catalogued, segs+1)
			}
			if t.Failed() {
				t.Logf("first run's calls:\n%v", f.History())
				t.Logf("second run's calls:\n%v", r.store.History())
			}
		})
	}
	t.Logf("%d crash points", total)
}
