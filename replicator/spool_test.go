package replicator

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/binlog/binlogtest"
	"github.com/binvault/binvault/test/harness"
)

// primaryEvents returns the events of a real primary's binlog file: a
// format description, then transactions (the first GTIDs are 0-S-1..).
func primaryEvents(t *testing.T, txns int) []binlog.Event {
	t.Helper()
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	p.Exec(t, "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v VARCHAR(100))")
	for i := 0; i < txns-2; i++ { // two DDL transactions first
		p.Exec(t, fmt.Sprintf("INSERT INTO d.t VALUES (%d, 'row %d')", i, i))
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	return readBinlog(t, filepath.Join(p.Dir, "data", "mariadb-bin.000001"))
}

// readBinlog returns the events of the binlog file at path.
func readBinlog(t *testing.T, path string) []binlog.Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := binlog.NewReader(f, "mariadb")
	if err != nil {
		t.Fatal(err)
	}
	return binlogtest.ReadAll(t, r.Next)
}

func openTestSpool(t *testing.T, dir string, limits SpoolLimits) *Spool {
	t.Helper()
	s, err := OpenSpool(dir, "mariadb", limits, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// groupTxns groups evs into transactions: the GTID of each, the index
// after its last event, and whether evs end inside one. A grouping error
// fails t.
func groupTxns(t *testing.T, evs []binlog.Event) (gtids []string, ends []int, open bool) {
	t.Helper()
	var g binlog.Grouper
	for i, ev := range evs {
		role, err := g.Feed(ev)
		if err != nil {
			t.Fatal(err)
		}
		if role == binlog.End {
			gtids = append(gtids, g.Txn().GTID)
			ends = append(ends, i+1)
		}
	}
	return gtids, ends, g.Open()
}

// txnEnds returns the index after the last event of each transaction.
func txnEnds(t *testing.T, evs []binlog.Event) []int {
	t.Helper()
	_, ends, _ := groupTxns(t, evs)
	return ends
}

func TestSpoolRecoveryTruncatesTornTail(t *testing.T) {
	evs := primaryEvents(t, 12)
	ends := txnEnds(t, evs)
	if len(ends) != 12 {
		t.Fatalf("%d transactions in the primary's binlog, want 12", len(ends))
	}
	big := SpoolLimits{SegmentMaxBytes: 1 << 30, FlushInterval: time.Hour}
	for _, tc := range []struct {
		name string
		tear func(t *testing.T, s *Spool, path string)
	}{
		{"half a transaction", func(t *testing.T, s *Spool, path string) {
			// events of the 11th transaction, without its commit
			for _, ev := range evs[ends[9] : ends[10]-1] {
				if err := s.Append(ev); err != nil {
					t.Fatal(err)
				}
			}
			s.Close() // flushes the partial transaction to the file, as a crash after write(2) would leave it
		}},
		{"half an event", func(t *testing.T, s *Spool, path string) {
			s.Close()
			f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			f.Write(evs[ends[9]].Raw[:10])
			f.Close()
		}},
		{"garbage", func(t *testing.T, s *Spool, path string) {
			s.Close()
			f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte("this is not an event, and its size field is nonsense"))
			f.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestSpool(t, dir, big)
			if err := s.Start(binlog.Position{GTIDSet: ""}, 7); err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs[:ends[9]] { // 10 whole transactions
				if err := s.Append(ev); err != nil {
					t.Fatal(err)
				}
			}
			path := s.SegmentPath(7)
			whole := fileSize(t, path)
			want, _, _ := s.End()
			tc.tear(t, s, path)
			if fileSize(t, path) == whole {
				t.Fatal("the tear did not change the file")
			}

			s = openTestSpool(t, dir, big)
			got, next, ok := s.End()
			if !ok || got.GTIDSet != want.GTIDSet || next != 8 {
				t.Fatalf("after recovery End = %v, %d, %v; want %v, 8", got, next, ok, want)
			}
			if n := fileSize(t, path); n != whole {
				t.Fatalf("segment is %d bytes after recovery, want %d (the last whole transaction)", n, whole)
			}
			// The stream resends the torn transaction whole: the segment continues cleanly.
			for _, ev := range evs[ends[9]:] {
				if err := s.Append(ev); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			segs := s.Closed(0)
			if len(segs) != 1 || segs[0].Txns != 12 || segs[0].Seq != 7 {
				t.Fatalf("closed segments: %+v", segs)
			}
			if got, _, _ := groupTxns(t, readBinlog(t, path)); len(got) != 12 || got[11] != segs[0].LastGTID {
				t.Fatalf("segment holds %v", got)
			}
			s.Close()
		})
	}
}

// Flush at shutdown, or an abort, while the first transaction of a segment
// is still arriving: no empty segment is closed, and the segment written
// next (same number) is exactly what its recorded SHA-256 says.
func TestSpoolFlushDuringTheFirstTransactionOfASegment(t *testing.T) {
	evs := primaryEvents(t, 4)
	ends := txnEnds(t, evs)
	dir := t.TempDir()
	s := openTestSpool(t, dir, SpoolLimits{SegmentMaxBytes: 1 << 30, FlushInterval: time.Hour})
	if err := s.Start(binlog.Position{GTIDSet: ""}, 1); err != nil {
		t.Fatal(err)
	}
	partial := func() {
		for _, ev := range evs[:ends[0]-1] { // the first transaction without its end
			if err := s.Append(ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	partial()
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	partial()
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if segs := s.Closed(0); len(segs) != 0 {
		t.Fatalf("an empty segment was closed: %+v", segs)
	}
	s.Close()
	s = openTestSpool(t, dir, SpoolLimits{SegmentMaxBytes: 1 << 30, FlushInterval: time.Hour})
	defer s.Close()
	if _, next, ok := s.End(); !ok || next != 1 {
		t.Fatalf("after the flush the next segment is %d (%v), want 1", next, ok)
	}
	for _, ev := range evs[:ends[1]] {
		if err := s.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	segs := s.Closed(0)
	if len(segs) != 1 || segs[0].Seq != 1 || segs[0].Txns != 2 {
		t.Fatalf("closed segments: %+v", segs)
	}
	b, err := os.ReadFile(s.SegmentPath(segs[0].Seq))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != segs[0].SHA256 || int64(len(b)) != segs[0].Bytes {
		t.Fatalf("segment file of %d bytes does not match its manifest (%d bytes, SHA-256 %s)", len(b), segs[0].Bytes, segs[0].SHA256)
	}
}

func TestSpoolClosesSegmentsAtSizeAndReleasesArchivedOnes(t *testing.T) {
	evs := primaryEvents(t, 30)
	dir := t.TempDir()
	s := openTestSpool(t, dir, SpoolLimits{SegmentMaxBytes: 64 << 10, FlushInterval: time.Hour})
	s.Start(binlog.Position{}, 1)
	// Tiny limit: the size check happens after each commit, so each segment
	// gets at least one transaction and never a partial one.
	s.limits.SegmentMaxBytes = 1
	for _, ev := range evs {
		if err := s.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	segs := s.Closed(0)
	if len(segs) != 30 {
		t.Fatalf("%d segments, want one per transaction (30)", len(segs))
	}
	for i := 1; i < len(segs); i++ {
		if segs[i].Start.GTIDSet != segs[i-1].End.GTIDSet {
			t.Fatalf("segment %d starts at %s, %d ended at %s", segs[i].Seq, segs[i].Start.GTIDSet, segs[i-1].Seq, segs[i-1].End.GTIDSet)
		}
	}
	if err := s.Archived(20); err != nil {
		t.Fatal(err)
	}
	if n := len(s.Closed(0)); n != 10 {
		t.Fatalf("%d segments left after archiving 20 of 30", n)
	}
	if _, err := os.Stat(s.SegmentPath(20)); !os.IsNotExist(err) {
		t.Fatalf("segment 20's file still exists: %v", err)
	}
	s.Archived(30)
	end, next, _ := s.End()
	s.Close()
	// Everything released: a restart continues from the origin, not from scratch.
	s = openTestSpool(t, dir, SpoolLimits{SegmentMaxBytes: 1 << 20, FlushInterval: time.Hour})
	got, gotNext, ok := s.End()
	if !ok || got.GTIDSet != end.GTIDSet || gotNext != next {
		t.Fatalf("after releasing everything End = %v, %d, %v; want %v, %d", got, gotNext, ok, end, next)
	}
}

func TestSpoolClosesAtFlushIntervalAndRotation(t *testing.T) {
	evs := primaryEvents(t, 3)
	ends := txnEnds(t, evs)
	s := openTestSpool(t, t.TempDir(), SpoolLimits{SegmentMaxBytes: 1 << 30, FlushInterval: 50 * time.Millisecond})
	s.Start(binlog.Position{}, 1)
	for _, ev := range evs[:ends[0]] {
		s.Append(ev)
	}
	if len(s.Closed(0)) != 0 {
		t.Fatal("closed before the flush interval")
	}
	time.Sleep(60 * time.Millisecond)
	if err := s.Tick(); err != nil {
		t.Fatal(err)
	}
	if len(s.Closed(0)) != 1 {
		t.Fatal("not closed at the flush interval")
	}
	for _, ev := range evs[ends[0]:ends[1]] {
		s.Append(ev)
	}
	rot := &replication.RotateEvent{NextLogName: []byte("mariadb-bin.000002"), Position: 4}
	if err := s.Append(binlog.Event{Header: binlog.Header{Type: replication.ROTATE_EVENT}, Parsed: rot}); err != nil {
		t.Fatal(err)
	}
	if len(s.Closed(0)) != 2 {
		t.Fatal("a segment spans two primary binlog files")
	}
	s.Close()
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestSpoolClosesByRPODeadline(t *testing.T) {
	evs := primaryEvents(t, 6)
	ends := txnEnds(t, evs)
	s := openTestSpool(t, t.TempDir(), SpoolLimits{SegmentMaxBytes: 1 << 30, RPOTarget: 400 * time.Millisecond})
	defer s.Close()
	s.Start(binlog.Position{}, 1)
	upload := 150 * time.Millisecond
	s.SetUploadEstimate(func() time.Duration { return upload })
	appendTxns := func(from, to int) {
		start := 0
		if from > 0 {
			start = ends[from-1]
		}
		for _, ev := range evs[start:ends[to-1]] {
			if err := s.Append(ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !s.FlushDeadline().IsZero() {
		t.Fatal("a deadline without an open segment")
	}
	before := time.Now()
	appendTxns(0, 1) // DDL: the first transaction arrives
	after := time.Now()
	arrived, _, ok := s.OldestUnarchived()
	if !ok || arrived.Before(before) || arrived.After(after) {
		t.Fatalf("oldest unarchived arrived at %v, want between %v and %v", arrived, before, after)
	}
	// Closed early enough that the upload ends by the RPO target.
	if d, want := s.FlushDeadline().Sub(arrived), 400*time.Millisecond-upload-rpoSlack(400*time.Millisecond); d != want {
		t.Fatalf("deadline %v after the first arrival, want %v", d, want)
	}
	appendTxns(1, 2)
	if len(s.Closed(0)) != 0 {
		t.Fatal("closed before its deadline")
	}
	time.Sleep(time.Until(s.FlushDeadline()) + 10*time.Millisecond)
	appendTxns(2, 3) // the commit after the deadline closes the segment
	if c := s.Closed(0); len(c) != 1 || c[0].Txns != 3 {
		t.Fatalf("closed segments %+v, want one of 3 transactions", c)
	}
	if !s.FlushDeadline().IsZero() {
		t.Fatal("an idle spool has a deadline: it would make a segment of nothing")
	}
	// A store slower than half the target: closing at half the target,
	// not after every transaction.
	upload = 10 * time.Second
	appendTxns(3, 4)
	if err := s.Archived(1); err != nil {
		t.Fatal(err)
	}
	arrived, _, _ = s.OldestUnarchived()
	if d := s.FlushDeadline().Sub(arrived); d != 200*time.Millisecond {
		t.Fatalf("deadline %v after arrival with a slow store, want half the target (200ms)", d)
	}
	time.Sleep(time.Until(s.FlushDeadline()) + 10*time.Millisecond)
	if err := s.Tick(); err != nil { // idle stream: the source ticks at the deadline
		t.Fatal(err)
	}
	if c := s.Closed(1); len(c) != 1 || c[0].Txns != 1 {
		t.Fatalf("closed after segment 1: %+v, want one segment of 1 transaction", c)
	}
}

// With a sync hint, whole transactions wait for a later one's fsync:
// none of them is visible (End, Locate) before it, all are after it, and
// a broken stream drops them all so that the primary sends them again.
func TestSpoolSyncHintGroupsCommits(t *testing.T) {
	evs := primaryEvents(t, 10)
	ends := txnEnds(t, evs)
	s := openTestSpool(t, t.TempDir(), SpoolLimits{SegmentMaxBytes: 1 << 20, FlushInterval: time.Hour})
	s.Start(binlog.Position{}, 1)
	lastEnd := evs[ends[len(ends)-1]-1].Header.LogPos
	defer func() { s.Close() }()
	// Transactions 1..4 wait; the fifth syncs the five.
	s.SetSyncHint(func(end binlog.Position) bool { return end.Pos < evs[ends[4]-1].Header.LogPos })
	for i, ev := range evs[:ends[3]] {
		if err := s.Append(ev); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if end, _, _ := s.End(); end.GTIDSet != "" || s.txnCount() != 0 {
		t.Fatalf("before the grouping fsync: End %v, %d transactions visible", end, s.txnCount())
	}
	if _, _, durable, ok := s.Locate(1); !ok || durable != 0 {
		t.Fatalf("segment 1 readable up to %d before the fsync", durable)
	}
	for _, ev := range evs[ends[3]:ends[4]] {
		if err := s.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	gtids, _, _ := groupTxns(t, evs[:ends[4]])
	end, _, _ := s.End()
	if s.txnCount() != 5 || end.GTIDSet != gtids[4] || end.Pos != evs[ends[4]-1].Header.LogPos {
		t.Fatalf("after the fifth transaction: %d visible, End %v; want 5, %s at %d", s.txnCount(), end, gtids[4], evs[ends[4]-1].Header.LogPos)
	}
	// Transactions 6..8 wait, then the stream breaks: they are dropped,
	// and the spool still ends after the fifth.
	s.SetSyncHint(func(binlog.Position) bool { return true })
	for _, ev := range evs[ends[4]:ends[7]] {
		if err := s.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.End(); got.GTIDSet != end.GTIDSet || s.txnCount() != 5 {
		t.Fatalf("after Abort: End %v, %d visible; want %s, 5", got, s.txnCount(), end.GTIDSet)
	}
	// Sent again, then the segment closes (Flush): closing syncs them.
	for _, ev := range evs[ends[4]:] {
		if err := s.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	segs := s.Closed(0)
	if len(segs) != 1 || segs[0].Txns != len(ends) || segs[0].End.Pos != lastEnd {
		t.Fatalf("closed segments %+v: want one of %d transactions ending at %d", segs, len(ends), lastEnd)
	}
	b, err := os.ReadFile(s.SegmentPath(1))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != segs[0].SHA256 || int64(len(b)) != segs[0].Bytes {
		t.Fatalf("segment file (%d bytes) does not match its manifest (%d bytes, %s)", len(b), segs[0].Bytes, segs[0].SHA256)
	}
}
