// Package replay applies binlog transactions to a server exactly as the
// primary wrote them: row events through the server's own row applier
// (BINLOG statements), statements in their original session context, many
// transactions per round trip. The replica applier (package replicator)
// and point-in-time restore (package restore) both use it.
package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/binvault/binvault/internal/dbconn"
)

// Conn sends many statements per round trip: one COM_QUERY packet
// holding statements separated by ';', then exactly one OK or ERR per
// statement. The count matters: a BINLOG statement that applied rows
// answers OK without SERVER_MORE_RESULTS_EXISTS, yet the server goes on
// with the rest of the packet (FACTS.md), so the flag cannot be trusted.
// After an ERR the server runs nothing more of that packet.
type Conn struct {
	c   *client.Conn
	id  uint32
	buf []byte // packet: 4-byte header space, COM_QUERY, statements
	n   int    // statements in buf
}

// StmtError is a statement the server refused.
type StmtError struct {
	Index int // position in the packet
	Err   *mysql.MyError
}

func (e *StmtError) Error() string { return e.Err.Error() }

// Dial connects with multi-statement packets allowed.
func Dial(ctx context.Context, d dbconn.DSN) (*Conn, error) {
	addr := d.Addr()
	if d.Socket != "" {
		addr = d.Socket
	}
	opts := []client.Option{func(c *client.Conn) error {
		if err := c.SetCapability(mysql.CLIENT_MULTI_STATEMENTS); err != nil {
			return err
		}
		c.UnsetCapability(mysql.CLIENT_COMPRESS)
		return nil
	}}
	if d.TLSMode == "true" || d.TLSMode == "skip-verify" {
		tc, err := d.TLSConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, func(c *client.Conn) error { c.SetTLSConfig(tc); return nil })
	}
	c, err := client.ConnectWithContext(ctx, addr, d.User, d.Password, "", d.Timeout, opts...)
	if err != nil {
		return nil, err
	}
	return &Conn{c: c, id: c.GetConnectionID()}, nil
}

// ID is the server's connection id.
func (a *Conn) ID() uint32 { return a.id }

// Query runs one statement alone and returns its result.
func (a *Conn) Query(q string) (*mysql.Result, error) { return a.c.Execute(q) }

// Exec runs one statement alone and returns its error.
func (a *Conn) Exec(q string) error {
	_, err := a.c.Execute(q)
	return err
}

// add appends a statement to the pending packet.
func (a *Conn) add(stmt []byte) {
	if a.buf == nil {
		a.buf = append(make([]byte, 0, 64<<10), 0, 0, 0, 0, mysql.COM_QUERY)
	} else if a.n > 0 {
		a.buf = append(a.buf, ';')
	}
	a.buf = append(a.buf, stmt...)
	a.n++
}

func (a *Conn) addString(stmt string) { a.add([]byte(stmt)) }

// pending is the size of the packet being built.
func (a *Conn) pending() (stmts, bytes int) {
	if a.buf == nil {
		return 0, 0
	}
	return a.n, len(a.buf) - 5
}

// flush sends the pending statements and reads their answers. It returns
// how many succeeded; the error is a *stmtError for the first refused
// statement, or a connection error (then the outcome of the packet is
// unknown to us: the server may still be running it).
func (a *Conn) flush(timeout time.Duration) (int, error) {
	if timeout > 0 {
		a.c.SetDeadline(time.Now().Add(timeout))
		defer a.c.SetDeadline(time.Time{})
	}
	n, seq, err := a.send()
	if err != nil || n == 0 {
		return 0, err
	}
	return a.receive(n, seq)
}

// send writes the pending statements as one COM_QUERY packet without
// waiting for the answers; it returns how many statements the packet holds
// and the sequence number its first answer will carry. The server reads
// the next packet only once it has answered every statement of this one,
// so packets may be sent ahead and their answers read later, in order.
func (a *Conn) send() (n int, seq uint8, err error) {
	n = a.n
	if n == 0 {
		return 0, 0, nil
	}
	pkt := a.buf
	a.buf, a.n = a.buf[:5], 0
	a.c.ResetSequence()
	if err := a.c.WritePacket(pkt); err != nil {
		return 0, 0, fmt.Errorf("send: %w", err)
	}
	return n, a.c.Sequence, nil
}

// receive reads the n answers of the oldest packet sent and not yet
// answered, whose first answer carries sequence number seq.
func (a *Conn) receive(n int, seq uint8) (int, error) {
	a.c.Sequence = seq
	for i := 0; i < n; i++ {
		data, err := a.c.ReadPacket()
		if err != nil {
			return i, fmt.Errorf("read answer %d of %d: %w", i+1, n, err)
		}
		switch data[0] {
		case mysql.OK_HEADER:
		case mysql.ERR_HEADER:
			var me *mysql.MyError
			if err := a.c.HandleErrorPacket(data); !errors.As(err, &me) {
				return i, fmt.Errorf("unreadable error packet: %v", err)
			}
			return i, &StmtError{Index: i, Err: me}
		default:
			// A result set: never sent in a batch; drain it and give up.
			return i, fmt.Errorf("statement %d returned a result set", i+1)
		}
	}
	return n, nil
}

// Interrupt makes a Flush blocked on the network return at once; unlike
// Close it is safe while another goroutine uses the connection (it only
// moves the socket's deadline).
func (a *Conn) Interrupt() {
	if a.c != nil && a.c.Conn != nil && a.c.Conn.Conn != nil {
		a.c.Conn.Conn.SetDeadline(time.Unix(1, 0))
	}
}

// Close closes the connection.
func (a *Conn) Close() {
	if a.c != nil {
		a.c.Close()
	}
}
