package test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// storeRequests sums the daemon's store requests of every operation.
func storeRequests(t testing.TB, web string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, op := range []string{"put", "put_if_absent", "get", "stat", "list", "delete"} {
		out[op] = metric(t, web, fmt.Sprintf(`binvault_store_requests_total{operation=%q}`, op))
	}
	return out
}

// With only archive.rpo_target set (no flush interval), segments close by
// their deadline while transactions flow, and an idle primary costs no
// request at all.
func TestSegmentsCloseByDeadlineAndIdleCostsNothing(t *testing.T) {
	a := newArchiveSetup(t, "1s") // replaced below
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	web := "http://" + listen
	a.cfg = writeS3ConfigWith(t, a.s3, s3Config{dsn: "mysql://repl:repl-pw@" + a.primary.Addr(), prefix: "archive", listen: listen,
		extra: []string{"archive:\n  rpo_target: 400ms\n"}})
	a.spool = filepath.Join(filepath.Dir(a.cfg), "spool")
	d := startDaemon(t, a.env, "--config", a.cfg)
	a.waitConnected(t, d)
	a.primary.Exec(t, "CREATE DATABASE app; CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
	// Writes for 3 s: with no flush interval, only the deadline can close
	// segments, so the archive reaching the primary proves it does, and
	// more than one segment shows it closes again and again.
	stop := time.Now().Add(3 * time.Second)
	for time.Now().Before(stop) {
		a.primary.Exec(t, "INSERT INTO app.t (v) VALUES (1)")
		time.Sleep(20 * time.Millisecond)
	}
	a.waitArchived(t, 20*time.Second)
	segs := metric(t, web, "binvault_archive_segments_total")
	if segs < 3 {
		t.Fatalf("%v segments for 3 s of writes at rpo_target 400ms: not closed by deadline", segs)
	}
	if rpo := metric(t, web, "binvault_archive_rpo_seconds"); rpo != 0 {
		t.Fatalf("binvault_archive_rpo_seconds = %v with everything archived", rpo)
	}
	before := storeRequests(t, web)
	time.Sleep(3 * time.Second) // idle: well past several deadlines
	after := storeRequests(t, web)
	for op, n := range after {
		if n != before[op] {
			t.Errorf("idle for 3 s, the daemon made %v %s requests", n-before[op], op)
		}
	}
	if before["put_if_absent"] < segs {
		t.Errorf("%v create-if-absent PUTs for %v segments", before["put_if_absent"], segs)
	}
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, d.log)
	}
}
