package archiver_test

import (
	"slices"
	"testing"
	"time"

	"github.com/binvault/binvault/replicator/archiver/archivertest"
	"github.com/binvault/binvault/storage/storagetest"
)

// LastError feeds `binvault status` and the state file: once the store
// answers again and the archiver has done what there was to do, it must
// not go on reporting an outage that ended — also when the outage hit
// only the start (reading the archive's state, checking what an earlier
// run left) and no new segment has closed since, as on an idle primary.
func TestLastErrorClearsOnceTheStoreIsBack(t *testing.T) {
	t.Run("restart with nothing new", func(t *testing.T) {
		st := newStore(t)
		first, _ := archived(t, st, 2)
		// Restarted after a crash before segment 2 was released; the
		// store is unreachable for a while at the start.
		spool := archivertest.NewSpool(t)
		spool.AppendAll(first.Appended()[1:])
		r := newRig(t, st, spool, nil)
		end := r.store.Outage()
		r.start()
		r.waitUntil("LastError to report the outage", func() bool { return r.a.LastError() != "" })
		end()
		r.waitReleased(2)
		if got := spool.ArchivedCalls(); !slices.Equal(got, []uint64{2}) {
			t.Errorf("Archived calls %v, want [2]", got)
		}
		expectClear(t, r)
	})
	t.Run("empty spool", func(t *testing.T) {
		r := newRig(t, newStore(t), archivertest.NewSpool(t), nil)
		end := r.store.Outage()
		r.start()
		r.waitUntil("LastError to report the outage", func() bool { return r.a.LastError() != "" })
		end()
		// The archiver reads the archive's state as soon as it answers.
		faulted := r.store.Faulted(storagetest.OpAny)
		r.waitUntil("a store call that succeeds", func() bool {
			return r.store.Calls(storagetest.OpAny) > faulted
		})
		expectClear(t, r)
	})
}

// expectClear waits a little for LastError to clear.
func expectClear(t *testing.T, r *rig) {
	t.Helper()
	deadline := time.Now().Add(500 * time.Millisecond)
	for r.a.LastError() != "" && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if e := r.a.LastError(); e != "" {
		t.Errorf("LastError = %q after the store came back and the archiver had nothing left to do (calls: %d, %d failed)",
			e, r.store.Calls(storagetest.OpAny), r.store.Faulted(storagetest.OpAny))
	}
}
