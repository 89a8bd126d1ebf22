package serve

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/server"

	"github.com/binvault/binvault/internal/binlog"
)

// session is one replica's connection. Before its dump a MariaDB replica's
// IO thread sends, in order (sql/slave.cc): SELECT UNIX_TIMESTAMP(), SHOW
// VARIABLES LIKE 'SERVER_ID', SET @master_heartbeat_period, SET
// @master_binlog_checksum= @@global.binlog_checksum and SELECT
// @master_binlog_checksum, SET @mariadb_slave_capability, SELECT
// @@GLOBAL.gtid_domain_id, SET @slave_connect_state (and strict mode,
// ignore duplicates, until), COM_REGISTER_SLAVE, with semi-sync on SHOW
// VARIABLES LIKE 'rpl_semi_sync_master_enabled', then COM_BINLOG_DUMP.
// mariadb-binlog --read-from-remote-server sends a subset.
type session struct {
	srv     *Server
	raw     net.Conn
	bc      *bufConn
	conn    *server.Conn
	remote  string
	started time.Time
	vars    map[string]string // user variables the replica set
	ctx     context.Context   // ends with the connection
	cancel  func()
	done    bool // the dump ended: the connection closes

	mu       sync.Mutex
	serverID uint32 // from COM_REGISTER_SLAVE or COM_BINLOG_DUMP
	host     string
	port     uint16
	regd     bool
	dumping  bool
	sent     binlog.GTIDSet
	sentTime time.Time // commit time of the newest transaction sent
	events   int64
	bytes    int64
	kickErr  error
}

func (ss *session) registered() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.regd
}

// kick disconnects the session; err, when set, is sent to the replica
// first (as a primary sends ER_SLAVE_SAME_ID).
func (ss *session) kick(err error) {
	ss.mu.Lock()
	ss.kickErr = err
	ss.mu.Unlock()
	if ss.cancel != nil {
		ss.cancel()
	}
	ss.raw.SetDeadline(time.Now()) // unblocks a read or write at once
}

func (ss *session) status(end string, endTime time.Time) ReplicaStatus {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := ReplicaStatus{ServerID: ss.serverID, Host: ss.host, Port: ss.port, Address: ss.remote, ConnectedAt: ss.started.UTC(),
		Dumping: ss.dumping, LastSentCommit: ss.sentTime, EventsSent: ss.events, BytesSent: ss.bytes}
	if ss.conn != nil {
		st.User = ss.conn.GetUser()
	}
	if !ss.sent.IsZero() {
		st.Position = ss.sent.String()
		if e, err := binlog.ParseGTIDSet(ss.sent.Flavor(), end); err == nil {
			st.LagTransactions = e.SeqsAhead(ss.sent)
		}
		if st.LagTransactions > 0 && !endTime.IsZero() && !ss.sentTime.IsZero() {
			st.LagSeconds = max(0, endTime.Sub(ss.sentTime).Seconds())
		}
	}
	// A replica that stopped reading (hung, frozen, its link cut without
	// a reset) is behind for as long as binvault's write to it has been
	// blocked, even when what it lacks was committed within one second of
	// what it was sent, or the primary has been idle since.
	if ss.dumping && ss.bc != nil {
		st.LagSeconds = max(st.LagSeconds, ss.bc.blocked().Seconds())
	}
	return st
}

// Handler: the replica's queries. Anything a replica sets is kept; what
// it asks is answered as a MariaDB primary would.

func (ss *session) UseDB(string) error { return nil }

func (ss *session) HandleQuery(query string) (*mysql.Result, error) {
	q := strings.ToLower(strings.Join(strings.Fields(strings.TrimRight(strings.TrimSpace(query), ";")), " "))
	h := ss.srv.o.History
	switch {
	case strings.HasPrefix(q, "set "):
		ss.set(query)
		return nil, nil
	case q == "select unix_timestamp()":
		return ss.row("UNIX_TIMESTAMP()", strconv.FormatInt(time.Now().Unix(), 10))
	case strings.HasPrefix(q, "show variables like "):
		name := strings.Trim(strings.TrimPrefix(q, "show variables like "), "'\"")
		if v, ok := ss.variable(name); ok {
			return table([]string{"Variable_name", "Value"}, [][]any{{name, v}})
		}
		// rpl_semi_sync_master_enabled included: an empty set tells a
		// semi-sync replica the primary has no semi-sync.
		return table([]string{"Variable_name", "Value"}, nil)
	case strings.HasPrefix(q, "select @@"):
		name := strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(q, "select @@"), "global."), "session.")
		name, _, _ = strings.Cut(name, " ")
		if v, ok := ss.variable(name); ok {
			return ss.row(strings.TrimPrefix(query, "SELECT "), v)
		}
	case strings.HasPrefix(q, "select @"):
		name := strings.TrimPrefix(q, "select @")
		v, ok := ss.vars[name]
		if !ok {
			return table([]string{"@" + name}, [][]any{{nil}})
		}
		return ss.row("@"+name, v)
	case q == "select version()":
		return ss.row("VERSION()", Version)
	}
	_ = h
	return nil, mysql.NewError(mysql.ER_NOT_SUPPORTED_YET, fmt.Sprintf("binvault serves replication only: %q is not supported", strings.Join(strings.Fields(query), " ")))
}

// variable answers the server variables replicas and binlog clients read.
func (ss *session) variable(name string) (string, bool) {
	src := ss.srv.o.History.Source()
	switch name {
	case "server_id":
		return strconv.FormatUint(uint64(src.ServerID), 10), true
	case "gtid_domain_id":
		return "0", true
	case "binlog_checksum":
		return ss.srv.checksumName(), true
	case "version":
		return Version, true
	case "version_comment":
		return "binvault binlog server", true
	case "gtid_binlog_pos", "gtid_current_pos":
		p, _, _ := ss.srv.o.History.End()
		return p.GTIDSet, true
	case "log_bin":
		return "ON", true
	case "binlog_format":
		return "ROW", true
	}
	return "", false
}

// set keeps the user variables of "SET @a = v[, @b = w]". The checksum
// handshake sets @master_binlog_checksum to @@global.binlog_checksum.
func (ss *session) set(query string) {
	body := strings.TrimSpace(query)[4:]
	for _, part := range splitAssignments(body) {
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if !strings.HasPrefix(name, "@") || strings.HasPrefix(name, "@@") {
			continue // SET NAMES, session variables: nothing to keep
		}
		val = strings.TrimSpace(val)
		if strings.HasPrefix(strings.ToLower(val), "@@") {
			if v, ok := ss.variable(strings.TrimPrefix(strings.TrimPrefix(strings.ToLower(val), "@@"), "global.")); ok {
				val = v
			}
		}
		ss.vars[strings.TrimPrefix(name, "@")] = strings.Trim(val, "'\"")
	}
}

// splitAssignments splits on commas outside quotes (a GTID list in a
// quoted value holds commas).
func splitAssignments(s string) []string {
	var out []string
	var quote rune
	start := 0
	for i, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == ',':
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func (ss *session) row(name, value string) (*mysql.Result, error) {
	return table([]string{name}, [][]any{{value}})
}

func table(names []string, rows [][]any) (*mysql.Result, error) {
	rs, err := mysql.BuildSimpleTextResultset(names, rows)
	if err != nil {
		return nil, err
	}
	return mysql.NewResult(rs), nil
}

func (ss *session) HandleFieldList(string, string) ([]*mysql.Field, error) {
	return nil, mysql.NewError(mysql.ER_NOT_SUPPORTED_YET, "binvault serves replication only")
}

func (ss *session) HandleStmtPrepare(string) (int, int, any, error) {
	return 0, 0, nil, mysql.NewError(mysql.ER_NOT_SUPPORTED_YET, "binvault serves replication only")
}

func (ss *session) HandleStmtExecute(any, string, []any) (*mysql.Result, error) {
	return nil, mysql.NewError(mysql.ER_NOT_SUPPORTED_YET, "binvault serves replication only")
}

func (ss *session) HandleStmtClose(any) error { return nil }

// HandleOtherCommand takes the replication commands. go-mysql's server
// parses COM_BINLOG_DUMP only when the handler implements its replication
// interface, and then drops the dump's flags and server_id; taking the
// raw command here keeps them.
func (ss *session) HandleOtherCommand(cmd byte, data []byte) error {
	switch cmd {
	case mysql.COM_REGISTER_SLAVE:
		return ss.registerSlave(data)
	case mysql.COM_BINLOG_DUMP:
		return ss.dump(data)
	}
	return mysql.NewError(mysql.ER_UNKNOWN_COM_ERROR, fmt.Sprintf("binvault serves MariaDB replication: command %d is not supported", cmd))
}

// registerSlave reads COM_REGISTER_SLAVE: server_id, report_host,
// report_user, report_password, report_port, ...
func (ss *session) registerSlave(data []byte) error {
	if len(data) < 4 {
		return mysql.NewError(mysql.ER_MALFORMED_PACKET, "malformed COM_REGISTER_SLAVE")
	}
	id := binary.LittleEndian.Uint32(data)
	rest := data[4:]
	str := func() string {
		if len(rest) == 0 {
			return ""
		}
		n := int(rest[0])
		if 1+n > len(rest) {
			rest = nil
			return ""
		}
		s := string(rest[1 : 1+n])
		rest = rest[1+n:]
		return s
	}
	host := str()
	str() // user
	str() // password
	var port uint16
	if len(rest) >= 2 {
		port = binary.LittleEndian.Uint16(rest)
	}
	ss.mu.Lock()
	ss.serverID, ss.host, ss.port, ss.regd = id, host, port, true
	ss.mu.Unlock()
	ss.srv.register(ss)
	return nil
}
