package replicator

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/metrics"
	"github.com/binvault/binvault/internal/replay"
)

// A /metrics scrape reads TxnsBehind while the applier commits; a commit
// in a new GTID domain adds to the set's map. Formatting the set outside
// the applier's lock was a concurrent map access: this test fails under
// -race (and can crash without it) with that code.
func TestTxnsBehindWhileCommittingInNewDomains(t *testing.T) {
	sp, err := OpenSpool(t.TempDir(), dbconn.MariaDB, SpoolLimits{SegmentMaxBytes: 1 << 20, FlushInterval: time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if err := sp.Start(binlog.Position{GTIDSet: "0-1-500"}, 1); err != nil {
		t.Fatal(err)
	}
	a := NewApplier(ApplierOptions{Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler)}, dbconn.MariaDB, sp, nil)
	a.applied, _ = binlog.ParseGTIDSet(dbconn.MariaDB, "0-1-100")

	const domains = 300
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for d := 1; d <= domains; d++ {
			a.committed(replay.Txn{GTID: fmt.Sprintf("%d-1-1", d), Time: 1})
		}
	}()
	reads := 0
	for done := false; !done; reads++ {
		a.mu.Lock()
		_, done = a.applied.At(domains)
		a.mu.Unlock()
		a.TxnsBehind()
		a.Status()
	}
	wg.Wait()
	// The spool stands at 0-1-500, the replica at 0-1-100 (and domains the
	// spool does not have): 400 behind.
	if got := a.TxnsBehind(); got != 400 {
		t.Fatalf("TxnsBehind = %v, want 400", got)
	}
	t.Logf("%d concurrent reads", reads)
}
