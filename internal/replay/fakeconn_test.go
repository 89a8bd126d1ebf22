package replay

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

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
	return &fakeConn{refuse: map[[2]int]uint16{}, lose: map[int]int{}}
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

func (f *fakeConn) flush(time.Duration) (int, error) {
	if len(f.pkt) == 0 {
		return 0, nil
	}
	pkt := f.pkt
	f.pkt = nil
	f.nPkt++
	f.log = append(f.log, sent{packet: pkt})
	if f.dead {
		return 0, errConnLost
	}
	for i := range pkt {
		if k, ok := f.lose[f.nPkt]; ok && k == i {
			f.dead = true
			return i, errConnLost
		}
		if code, ok := f.refuse[[2]int{f.nPkt, i + 1}]; ok {
			return i, &StmtError{Index: i, Err: &mysql.MyError{Code: code, Message: "refused by the test"}}
		}
	}
	return len(pkt), nil
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
