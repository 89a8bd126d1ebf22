package serve

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/server"

	"github.com/binvault/binvault/internal/metrics"
)

// Version is what binvault tells replicas it is. A MariaDB replica uses
// GTIDs only with a primary of version 10 or later (it reads the number
// before the first dot); below that it silently falls back to file
// positions.
const Version = "10.11.99-MariaDB-binvault"

// Defaults of the binlog server.
const (
	// writeBuffer holds events until the stream has nothing more to send
	// right now, so a replica catching up gets full TCP segments.
	writeBuffer = 64 << 10
	// handshakeTimeout bounds a connection's login.
	handshakeTimeout = 10 * time.Second
	// writeTimeout bounds one write to a replica: a replica that stops
	// reading for this long is disconnected (it reconnects by itself).
	writeTimeout = 2 * time.Minute
)

// User is an account replicas log in with.
type User struct {
	Name, Password string
}

// Options configure a Server.
type Options struct {
	Listen  string
	Users   []User
	TLS     *tls.Config // nil: plain connections only
	History History
	Metrics *metrics.Metrics
	Log     *slog.Logger
}

// Server speaks the primary's side of MariaDB replication to any number
// of replicas, each at its own position, from a History.
type Server struct {
	o    Options
	ln   net.Listener
	conf *server.Server
	auth *server.InMemoryAuthenticationHandler

	mu       sync.Mutex
	sessions map[uint32]*session // by connection id
	wg       sync.WaitGroup

	events, bytes atomic.Int64

	checksumMu sync.Mutex
	checksum   string // "CRC32" or "NONE": what the history's events carry
}

// checksumName is @@global.binlog_checksum as the replicas see it: what
// the history's events carry (CRC32 until a segment says otherwise).
func (s *Server) checksumName() string {
	s.checksumMu.Lock()
	defer s.checksumMu.Unlock()
	if s.checksum == "" {
		s.checksum = "CRC32"
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if crc, ok, err := s.o.History.Checksums(ctx); err == nil && ok && !crc {
			s.checksum = "NONE"
		}
	}
	return s.checksum
}

// resetChecksum forgets what the history's events carry, after a segment
// showed the primary changed it.
func (s *Server) resetChecksum() {
	s.checksumMu.Lock()
	s.checksum = ""
	s.checksumMu.Unlock()
}

// New listens on o.Listen; Run serves.
func New(o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("serve.listen %s: %w", o.Listen, err)
	}
	auth := server.NewInMemoryAuthenticationHandler(mysql.AUTH_NATIVE_PASSWORD)
	for _, u := range o.Users {
		if err := auth.AddUser(u.Name, u.Password); err != nil {
			ln.Close()
			return nil, fmt.Errorf("serve user %s: %w", u.Name, err)
		}
	}
	s := &Server{o: o, ln: ln, auth: auth, sessions: map[uint32]*session{},
		conf: server.NewServer(Version, mysql.DEFAULT_COLLATION_ID, mysql.AUTH_NATIVE_PASSWORD, nil, o.TLS)}
	if o.Metrics != nil {
		o.Metrics.RegisterServe(s.snapshot)
	}
	return s, nil
}

// Addr is the address replicas connect to.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run accepts replicas until ctx ends, then disconnects them all.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	s.o.Log.Info("serving replicas", "listen", s.Addr())
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.closeAll()
			return fmt.Errorf("accept replicas: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, c)
		}()
	}
	s.closeAll()
	return nil
}

func (s *Server) closeAll() {
	s.mu.Lock()
	for _, ss := range s.sessions {
		ss.kick(nil)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// handle runs one connection: login, the replica's setup queries, then its
// binlog dump.
func (s *Server) handle(ctx context.Context, raw net.Conn) {
	bc := &bufConn{Conn: raw, w: bufio.NewWriterSize(raw, writeBuffer)}
	raw.SetDeadline(time.Now().Add(handshakeTimeout))
	ss := &session{srv: s, raw: raw, bc: bc, remote: raw.RemoteAddr().String(), vars: map[string]string{}, started: time.Now()}
	c, err := s.conf.NewCustomizedConn(bc, s.auth, ss)
	if err != nil {
		s.o.Log.Info("replica login refused", "remote", ss.remote, "err", err.Error())
		raw.Close()
		return
	}
	raw.SetDeadline(time.Time{})
	ss.conn = c
	s.mu.Lock()
	s.sessions[c.ConnectionID()] = ss
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, c.ConnectionID())
		s.mu.Unlock()
		raw.Close()
	}()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ss.ctx, ss.cancel = sctx, cancel
	for sctx.Err() == nil {
		if err := c.HandleCommand(); err != nil {
			return
		}
		bc.Flush()
		if c.Closed() || ss.done {
			return
		}
	}
}

// register records a replica's COM_REGISTER_SLAVE. As a primary does, a
// newer registration of a server_id disconnects an older one with
// ER_SLAVE_SAME_ID.
func (s *Server) register(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, other := range s.sessions {
		if other != ss && other.registered() && other.serverID == ss.serverID {
			s.o.Log.Warn("a replica registered with the server_id of a connected one: disconnecting the older",
				"server_id", ss.serverID, "older", other.remote, "newer", ss.remote)
			other.kick(mysql.NewError(4052, "A slave with the same server_uuid/server_id as this slave has connected to the master"))
		}
	}
}

// ReplicaStatus describes one connected replica.
type ReplicaStatus struct {
	ServerID           uint32    `json:"server_id"`
	Host               string    `json:"host,omitempty"` // as the replica reports it (report_host)
	Port               uint16    `json:"port,omitempty"`
	User               string    `json:"user"`
	Address            string    `json:"address"`
	ConnectedAt        time.Time `json:"connected_at"`
	Dumping            bool      `json:"dumping"`
	Position           string    `json:"position"` // GTID position sent
	LastSentCommit     time.Time `json:"last_sent_commit_time,omitzero"`
	LagTransactions    int64     `json:"lag_transactions"`
	LagSeconds         float64   `json:"lag_seconds"`
	EventsSent         int64     `json:"events_sent"`
	BytesSent          int64     `json:"bytes_sent"`
	FromArchiveStarted bool      `json:"-"`
}

// Replicas lists the connected replicas, by server_id.
func (s *Server) Replicas() []ReplicaStatus {
	end, endTime, _ := s.o.History.End()
	s.mu.Lock()
	var out []ReplicaStatus
	for _, ss := range s.sessions {
		out = append(out, ss.status(end.GTIDSet, endTime))
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].ServerID != out[j].ServerID {
			return out[i].ServerID < out[j].ServerID
		}
		return out[i].Address < out[j].Address
	})
	return out
}

func (s *Server) snapshot() metrics.ServeSnapshot {
	snap := metrics.ServeSnapshot{Events: s.events.Load(), Bytes: s.bytes.Load()}
	for _, r := range s.Replicas() {
		snap.Replicas = append(snap.Replicas, metrics.ServedReplica{ServerID: r.ServerID, LagTransactions: r.LagTransactions, LagSeconds: r.LagSeconds})
	}
	return snap
}

// Sent counts the events and bytes sent to all replicas.
func (s *Server) Sent() (events, bytes int64) { return s.events.Load(), s.bytes.Load() }

// bufConn buffers writes until Flush, and flushes before every read so a
// request/answer exchange (login, queries) never waits on a held answer.
// While a dump streams, reads are the watcher's and do not flush.
type bufConn struct {
	net.Conn
	mu      sync.Mutex
	w       *bufio.Writer
	dumping atomic.Bool
	// writing is when the write in progress began (Unix ns; 0: none). A
	// replica that stops reading blocks it once the socket's buffers are
	// full: how long it has been blocked is a lag binvault can see.
	writing atomic.Int64
}

func (b *bufConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writing.Store(time.Now().UnixNano())
	defer b.writing.Store(0)
	return b.w.Write(p)
}

func (b *bufConn) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writing.Store(time.Now().UnixNano())
	defer b.writing.Store(0)
	return b.w.Flush()
}

// blocked is how long the write in progress has been waiting.
func (b *bufConn) blocked() time.Duration {
	if t := b.writing.Load(); t != 0 {
		return max(0, time.Since(time.Unix(0, t)))
	}
	return 0
}

func (b *bufConn) Read(p []byte) (int, error) {
	if !b.dumping.Load() {
		if err := b.Flush(); err != nil {
			return 0, err
		}
	}
	return b.Conn.Read(p)
}
