package replicator

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/metrics"
)

func TestBinlogPosOrdersFilesByNumber(t *testing.T) {
	cases := []struct {
		a, b binlogPos
		want int
	}{
		{binlogPos{"mariadb-bin.000001", 900}, binlogPos{"mariadb-bin.000002", 4}, -1},
		{binlogPos{"mariadb-bin.999999", 900}, binlogPos{"mariadb-bin.1000000", 4}, -1},
		{binlogPos{"mariadb-bin.000002", 4}, binlogPos{"mariadb-bin.000002", 4}, 0},
		{binlogPos{"mariadb-bin.000002", 500}, binlogPos{"mariadb-bin.000002", 499}, 1},
	}
	for _, c := range cases {
		if got := c.a.cmp(c.b); got != c.want {
			t.Errorf("%s cmp %s = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := c.b.cmp(c.a); got != -c.want {
			t.Errorf("%s cmp %s = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
}

// goMySQLAck is the packet go-mysql's replySemiSyncACK writes after
// ResetSequence: header with sequence 0, 0xEF, position, file name.
func goMySQLAck(p binlogPos) []byte {
	b := make([]byte, 4+1+8+len(p.file))
	n := len(b) - 4
	b[0], b[1], b[2], b[3] = byte(n), byte(n>>8), byte(n>>16), 0
	b[4] = semiSyncIndicator
	binary.LittleEndian.PutUint64(b[5:], p.pos)
	copy(b[13:], p.file)
	return b
}

// readPacket reads one packet from the primary's end of the pipe, or
// reports none within wait.
func readPacket(t *testing.T, c net.Conn, wait time.Duration) (seq byte, payload []byte, ok bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(wait))
	var h [4]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, nil, false
	}
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	payload = make([]byte, n)
	if _, err := io.ReadFull(c, payload); err != nil {
		t.Fatal(err)
	}
	return h[3], payload, true
}

func newTestAcker(t *testing.T, mode string) (*acker, net.Conn) {
	t.Helper()
	replica, primary := net.Pipe()
	t.Cleanup(func() { replica.Close(); primary.Close() })
	a := newAcker(mode, nil, 7, &semiSyncStats{mode: mode, metrics: metrics.New()}, slog.New(slog.DiscardHandler))
	a.gate = &ackGate{Conn: replica, acks: a}
	return a, primary
}

// The gate passes go-mysql's packets on but holds back its
// acknowledgements (sent on receipt), recording them as requests; binvault
// answers a request only once its transaction is durable, with one
// acknowledgement for every request up to the durable point.
func TestAckerAnswersOnlyWhatIsDurable(t *testing.T) {
	a, primary := newTestAcker(t, SemiSyncSpool)
	query := []byte{5, 0, 0, 0, 0x03, 'S', 'E', 'L', 'E'}
	go a.gate.Write(query)
	if seq, p, ok := readPacket(t, primary, time.Second); !ok || seq != 0 || !bytes.Equal(p, query[4:]) {
		t.Fatalf("an ordinary packet did not pass: %v %q", ok, p)
	}

	p1 := binlogPos{"mariadb-bin.000003", 1200}
	p2 := binlogPos{"mariadb-bin.000003", 1900}
	p3 := binlogPos{"mariadb-bin.000004", 400}
	for _, p := range []binlogPos{p1, p2, p3} {
		if n, err := a.gate.Write(goMySQLAck(p)); err != nil || n != 4+1+8+len(p.file) {
			t.Fatalf("gate.Write(ack) = %d, %v", n, err)
		}
	}
	if _, _, ok := readPacket(t, primary, 100*time.Millisecond); ok {
		t.Fatal("go-mysql's acknowledgement reached the primary")
	}
	if got := a.stats.pending.Load(); got != 3 {
		t.Fatalf("%d pending requests, want 3", got)
	}

	// Nothing durable yet: no answer.
	if err := a.answer(); err != nil {
		t.Fatal(err)
	}
	// Durable through p2 (the last transaction of file 3): one answer,
	// for p2, covering p1.
	// (Spool mode answers from the goroutine that made it durable.)
	done := make(chan struct{})
	go func() { a.madeDurable(binlogPos{"mariadb-bin.000003", 1900}); close(done) }()
	seq, payload, ok := readPacket(t, primary, time.Second)
	if !ok {
		t.Fatal("no acknowledgement once p2 was durable")
	}
	<-done
	if seq != 0 || payload[0] != semiSyncIndicator || binary.LittleEndian.Uint64(payload[1:9]) != p2.pos || string(payload[9:]) != p2.file {
		t.Fatalf("acknowledgement seq %d payload %x: want seq 0, 0xEF, %s", seq, payload, p2)
	}
	if _, _, ok := readPacket(t, primary, 100*time.Millisecond); ok {
		t.Fatal("a second acknowledgement was sent for p1")
	}
	if a.stats.acks.Load() != 1 || a.stats.txns.Load() != 2 || a.stats.pending.Load() != 1 {
		t.Fatalf("acks %d for %d requests, %d pending: want 1, 2, 1", a.stats.acks.Load(), a.stats.txns.Load(), a.stats.pending.Load())
	}

	// A durable point in the next file covers p3.
	done = make(chan struct{})
	go func() { a.madeDurable(binlogPos{"mariadb-bin.000004", 400}); close(done) }()
	if _, payload, ok = readPacket(t, primary, time.Second); !ok || string(payload[9:]) != p3.file {
		t.Fatalf("no acknowledgement for %s: %x", p3, payload)
	}
	<-done
	if a.err != nil {
		t.Fatal(a.err)
	}
}

// Store mode takes its durable point from the archiver, and only from
// segments of the primary streamed from now.
func TestAckerStoreModeTakesStoredSegmentsOfItsPrimary(t *testing.T) {
	a, primary := newTestAcker(t, SemiSyncStore)
	a.gate.Write(goMySQLAck(binlogPos{"mariadb-bin.000001", 800}))
	a.stored(8, binlog.Position{File: "mariadb-bin.000001", Pos: 900}) // another server's binlog
	a.madeDurable(binlogPos{})                                         // no file: ignored
	if err := a.answer(); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := readPacket(t, primary, 100*time.Millisecond); ok {
		t.Fatal("acknowledged on another server's segment")
	}
	a.stored(7, binlog.Position{File: "mariadb-bin.000001", Pos: 900})
	done := make(chan error, 1)
	go func() { done <- a.answer() }()
	if _, payload, ok := readPacket(t, primary, time.Second); !ok || binary.LittleEndian.Uint64(payload[1:9]) != 800 {
		t.Fatalf("no acknowledgement of 800 once its segment was stored: %x", payload)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
