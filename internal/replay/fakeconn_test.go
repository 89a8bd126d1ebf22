package replay

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// fakeConn stands in for *Conn: it records every statement of every packet
// and every statement run alone, in the order sent, and answers as told.
// Like the server, it runs nothing of a packet after a refused statement
// (FACTS.md), and a lost connection answers nothing more.
type fakeConn struct {
	pkt  []string
	log  []sent
	nPkt int
	// refuse[{n, k}] = code: refuse the k-th statement (1-based) of the
	// n-th packet (1-based) with that error code.
	refuse map[[2]int]uint16
	// lose[n] = k: the connection drops after k answers of packet n.
	lose map[int]int
	dead bool
	// Pipelining: packets sent, not yet answered; the server's
	// @binvault_batch; every statement that ran.
	queue []queued
	batch string
	ran   []string
}

type queued struct {
	n     int
	stmts []string
}

// sent is one packet, or one statement run alone (Exec, Query).
type sent struct {
	packet []string
	alone  string
}

func (s sent) String() string {
	if s.packet == nil {
		return "alone: " + s.alone
	}
	return fmt.Sprintf("packet of %d", len(s.packet))
}

var errConnLost = fmt.Errorf("read answer: %w", io.ErrUnexpectedEOF)

func newFakeConn() *fakeConn {
	return &fakeConn{refuse: map[[2]int]uint16{}, lose: map[int]int{}, batch: "NULL"}
}

func (f *fakeConn) add(stmt []byte) { f.pkt = append(f.pkt, string(stmt)) }

func (f *fakeConn) pending() (int, int) {
	if len(f.pkt) == 0 {
		return 0, 0
	}
	n := len(f.pkt) - 1 // the separators
	for _, s := range f.pkt {
		n += len(s)
	}
	return len(f.pkt), n
}

// send records the packet; its answers come from receive, in order.
func (f *fakeConn) send() (int, uint8, error) {
	if len(f.pkt) == 0 {
		return 0, 0, nil
	}
	pkt := f.pkt
	f.pkt = nil
	f.nPkt++
	f.log = append(f.log, sent{packet: pkt})
	f.queue = append(f.queue, queued{n: f.nPkt, stmts: pkt})
	return len(pkt), 1, nil
}

// receive "runs" the oldest packet sent: statement by statement, as told
// by refuse and lose, and honouring the pipelining guard and mark the way
// the server's IF ... SIGNAL and SET do.
func (f *fakeConn) receive(n int, seq uint8) (int, error) {
	p := f.queue[0]
	f.queue = f.queue[1:]
	if f.dead {
		return 0, errConnLost
	}
	for i, stmt := range p.stmts {
		if k, ok := f.lose[p.n]; ok && k == i {
			f.dead = true
			return i, errConnLost
		}
		if code, ok := f.refuse[[2]int{p.n, i + 1}]; ok {
			return i, &StmtError{Index: i, Err: &mysql.MyError{Code: code, Message: "refused by the test"}}
		}
		if want, ok := strings.CutPrefix(stmt, "IF @binvault_batch <=> "); ok {
			want, _, _ = strings.Cut(want, " ")
			if want != f.batch {
				return i, &StmtError{Index: i, Err: &mysql.MyError{Code: 1644, Message: "binvault: an earlier packet on this connection failed"}}
			}
		}
		if v, ok := strings.CutPrefix(stmt, "SET @binvault_batch = "); ok {
			f.batch = v
		}
		f.ran = append(f.ran, stmt)
	}
	return len(p.stmts), nil
}

func (f *fakeConn) Exec(q string) error {
	f.log = append(f.log, sent{alone: q})
	if f.dead {
		return errConnLost
	}
	return nil
}

func (f *fakeConn) Query(q string) (*mysql.Result, error) {
	f.log = append(f.log, sent{alone: q})
	return nil, errors.New("the fake connection has no result sets")
}

// packets returns the statements of every packet sent, in order.
func (f *fakeConn) packets() [][]string {
	var out [][]string
	for _, s := range f.log {
		if s.packet != nil {
			out = append(out, s.packet)
		}
	}
	return out
}

// statements returns every statement of every packet, in order.
func (f *fakeConn) statements() []string {
	var out []string
	for _, p := range f.packets() {
		out = append(out, p...)
	}
	return out
}

// short renders statements for messages: BINLOG statements by their size.
func short(stmts []string) string {
	out := make([]string, len(stmts))
	for i, s := range stmts {
		if strings.HasPrefix(s, "BINLOG '") {
			s = fmt.Sprintf("BINLOG(%d)", len(s))
		}
		out[i] = s
	}
	return strings.Join(out, " ; ")
}
