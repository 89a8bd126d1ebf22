package replay

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// With packets in flight, every packet starts with a guard naming the
// packet before it and ends with its own mark; all of them are sent before
// the first answer is read, and every transaction is reported once, in
// order.
func TestPipelinedPacketsChainTheirGuards(t *testing.T) {
	s := newStream(t)
	for i := uint64(1); i <= 6; i++ {
		s.rows(i)
	}
	f := newFakeConn()
	var flushed int
	committed, err := run(f, Options{Mode: Replica, BatchTxns: 2, InFlight: 3, Flushed: func(n int, _ time.Duration) { flushed += n }}, s.evs)
	if err != nil {
		t.Fatal(err)
	}
	if !sameStrings(committed, gtids(seqs(1, 6)...)) || flushed != 6 {
		t.Fatalf("committed %v, flushed %d", committed, flushed)
	}
	p := f.packets()
	if len(p) != 3 {
		t.Fatalf("%d packets, want 3", len(p))
	}
	for i, pkt := range p {
		prev := "NULL"
		if i > 0 {
			prev = fmt.Sprint(i)
		}
		if !strings.HasPrefix(pkt[0], "IF @binvault_batch <=> "+prev+" THEN") {
			t.Errorf("packet %d starts with %q, want the guard on %s", i+1, pkt[0], prev)
		}
		if last := pkt[len(pkt)-1]; last != fmt.Sprintf("SET @binvault_batch = %d", i+1) {
			t.Errorf("packet %d ends with %q, want its mark", i+1, last)
		}
	}
	if len(f.ran) != len(f.statements()) {
		t.Errorf("%d statements ran of %d sent", len(f.ran), len(f.statements()))
	}
}

// A statement refused in the first of three packets in flight: the
// packets behind it were already sent, yet nothing of them runs (their
// guards fail), only the transactions before the refusal are reported, the
// error names the refused statement, and ROLLBACK follows all the answers.
func TestPipelinedRefusalStopsThePacketsBehind(t *testing.T) {
	s := newStream(t)
	for i := uint64(1); i <= 6; i++ {
		s.rows(i)
	}
	const perTxn = 6
	// Packet 1: guard, FDE, transactions 1 and 2, mark.
	for k := 3; k <= 2+2*perTxn; k++ {
		f := newFakeConn()
		f.refuse[[2]int{1, k}] = 1062
		committed, err := run(f, Options{Mode: Replica, BatchTxns: 2, InFlight: 3}, s.evs)
		var ae *ApplyError
		if !errors.As(err, &ae) || ae.Err.Code != 1062 {
			t.Fatalf("k=%d: %v, want the refusal", k, err)
		}
		var want []int
		if 2+perTxn < k {
			want = []int{1}
		}
		if !sameStrings(committed, gtids(want...)) {
			t.Errorf("k=%d: committed %v, want %v", k, committed, gtids(want...))
		}
		if n := len(f.packets()); n != 3 {
			t.Errorf("k=%d: %d packets sent before the first answer was read, want 3", k, n)
		}
		for _, stmt := range f.ran {
			if strings.Contains(stmt, "gtid_seq_no=3") || strings.Contains(stmt, "gtid_seq_no=5") || stmt == "SET @binvault_batch = 1" {
				t.Errorf("k=%d: %q ran after the refusal", k, stmt)
			}
		}
		last := f.log[len(f.log)-1]
		if last.alone != "ROLLBACK" || len(f.log) != 4 {
			t.Errorf("k=%d: sent %v, want three packets then ROLLBACK", k, f.log)
		}
	}
}

// A connection lost in the middle of the second packet in flight: the
// first packet's transactions and the second's answered ones are reported,
// the error is the connection's.
func TestPipelinedConnectionLost(t *testing.T) {
	s := newStream(t)
	for i := uint64(1); i <= 6; i++ {
		s.rows(i)
	}
	f := newFakeConn()
	f.lose[2] = 1 + 6 + 1 // after the guard and transaction 3, before 4's first statement
	committed, err := run(f, Options{Mode: Replica, BatchTxns: 2, InFlight: 3}, s.evs)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%v, want the connection's error", err)
	}
	if !sameStrings(committed, gtids(1, 2, 3)) {
		t.Errorf("committed %v", committed)
	}
}
