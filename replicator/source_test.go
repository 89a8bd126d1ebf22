package replicator

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/metrics"
	"github.com/binvault/binvault/test/harness"
)

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func sourceOpts(t testing.TB, m *harness.MariaDB) SourceOptions {
	d, err := dbconn.Parse(m.DSN("", ""))
	if err != nil {
		t.Fatal(err)
	}
	return SourceOptions{DSN: d, ServerID: 9001, Label: "binvault-test", Heartbeat: time.Second, Metrics: metrics.New(), Log: testLog(t)}
}

// go-mysql v1.13 and v1.14 overwrote the sequence number of buffered
// MariaDB GTID events: MariadbGTIDSet.AddSet kept a pointer to the first
// event of each domain and server not in the start set, so a consumer that
// held it while reading on saw 0-S-6 where the server sent 0-S-1. This
// compares parsed numbers with the raw bytes and keeps the pinned version
// (go.mod) honest.
func TestBufferedGTIDEventsKeepTheirSequenceNumbers(t *testing.T) {
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	p.Exec(t, "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY)")
	for i := 0; i < 20; i++ {
		p.Exec(t, fmt.Sprintf("INSERT INTO d.t VALUES (%d)", i))
	}
	o := sourceOpts(t, p)
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{ServerID: 9001, Flavor: "mariadb", Host: "127.0.0.1",
		Port: uint16(p.Port), User: "root", Password: p.RootPassword, Logger: o.Log, VerifyChecksum: true})
	defer syncer.Close()
	set, _ := binlog.ParseGTIDSet("mariadb", "")
	st, err := syncer.StartSyncGTID(set.Raw())
	if err != nil {
		t.Fatal(err)
	}
	var buffered []*replication.BinlogEvent
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(buffered) < 22 {
		ev, err := st.GetEvent(ctx)
		if err != nil {
			t.Fatalf("after %d GTID events: %v", len(buffered), err)
		}
		if _, ok := ev.Event.(*replication.MariadbGTIDEvent); ok {
			buffered = append(buffered, ev)
		}
	}
	for i, ev := range buffered {
		g := ev.Event.(*replication.MariadbGTIDEvent)
		raw := binary.LittleEndian.Uint64(ev.RawData[19:27])
		if g.GTID.SequenceNumber != raw || raw != uint64(i+1) {
			t.Errorf("GTID event %d: parsed seq %d, raw seq %d, want %d", i, g.GTID.SequenceNumber, raw, i+1)
		}
	}
}

func TestSourceSpoolsWholeTransactionsIntoReadableSegments(t *testing.T) {
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	o := sourceOpts(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	info, src, err := Preflight(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	spool, err := OpenSpool(t.TempDir(), info.Flavor, SpoolLimits{SegmentMaxBytes: 1 << 20, FlushInterval: 200 * time.Millisecond}, o.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	spool.SetSource(src)
	if err := spool.Start(binlog.Position{GTIDSet: info.GTIDPosition}, 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- NewSource(o, info, spool).Run(ctx) }()

	p.Exec(t, "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v LONGBLOB)")
	p.Exec(t, "BEGIN; INSERT INTO d.t VALUES (1, 'a'); INSERT INTO d.t VALUES (2, REPEAT('x', 2000000)); COMMIT")
	for i := 3; i < 50; i++ {
		p.Exec(t, fmt.Sprintf("INSERT INTO d.t VALUES (%d, 'v')", i))
	}
	want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	var segs []archive.Segment
	deadline := time.Now().Add(15 * time.Second)
	for {
		segs = spool.Closed(0)
		if len(segs) > 0 && segs[len(segs)-1].End.GTIDSet == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool did not reach %s; segments: %+v", want, segs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	txns := 0
	for i, s := range segs {
		txns += s.Txns
		if i > 0 && s.Start.GTIDSet != segs[i-1].End.GTIDSet {
			t.Errorf("segment %d starts at %s, previous ended at %s", s.Seq, s.Start.GTIDSet, segs[i-1].End.GTIDSet)
		}
		if s.Seq != uint64(i+1) {
			t.Errorf("segment %d has seq %d", i, s.Seq)
		}
		out, err := exec.Command("mariadb-binlog", spool.SegmentPath(s.Seq)).CombinedOutput()
		if err != nil {
			t.Fatalf("mariadb-binlog on segment %d: %v\n%s", s.Seq, err, out)
		}
		if !strings.Contains(string(out), "GTID "+s.LastGTID) {
			t.Errorf("mariadb-binlog output of segment %d lacks its last GTID %s", s.Seq, s.LastGTID)
		}
	}
	if txns != 50 {
		t.Errorf("segments hold %d transactions, the primary committed 50", txns)
	}
	// Each segment reads back as whole transactions with the recorded GTIDs.
	var gtids []string
	for _, s := range segs {
		got, _, open := groupTxns(t, readBinlog(t, spool.SegmentPath(s.Seq)))
		gtids = append(gtids, got...)
		if open {
			t.Errorf("segment %d ends inside a transaction", s.Seq)
		}
	}
	for i, g := range gtids {
		if want := fmt.Sprintf("0-%d-%d", p.ServerID, i+1); g != want {
			t.Fatalf("transaction %d has GTID %s, want %s", i, g, want)
		}
	}
}
