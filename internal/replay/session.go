package replay

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/dbconn"
)

// Session options carried in a query event's flags2 (sql_priv.h); the
// values mysqlbinlog restores before replaying a statement.
const (
	optAutoIsNull              = 1 << 14
	optNoCheckConstraintChecks = 1 << 15
	optNotAutocommit           = 1 << 19
	optNoForeignKeyChecks      = 1 << 26
	optRelaxedUniqueChecks     = 1 << 27
)

// queryStatus is the session context a query event was executed in.
type queryStatus struct {
	flags2                    uint32
	flags2Set                 bool
	sqlMode                   uint64
	sqlModeSet                bool
	autoIncInc, autoIncOffset uint16
	autoIncSet                bool
	charset                   [6]byte // client, connection collation, server collation (2 bytes each)
	charsetSet                bool
	timeZone                  string
	lcTimeNames               uint16
	lcTimeSet                 bool
	collationDB               uint16
	collationDBSet            bool
	microseconds              uint32
	microsecondsSet           bool
}

// Status variable codes (log_event.h). Lengths are fixed per code; an
// unknown code ends parsing, as in the server, since its length is unknown.
const (
	qFlags2            = 0
	qSQLMode           = 1
	qCatalog           = 2
	qAutoIncrement     = 3
	qCharset           = 4
	qTimeZone          = 5
	qCatalogNZ         = 6
	qLCTimeNames       = 7
	qCharsetDatabase   = 8
	qTableMapForUpdate = 9
	qMasterDataWritten = 10
	qInvoker           = 11
	qUpdatedDBNames    = 12
	qMicroseconds      = 13
	qCommitTS          = 14
	qCommitTS2         = 15
	qExplicitDefTS     = 16
	qDDLLoggedWithXID  = 17
	qDefaultCollation  = 18
	qSQLRequirePK      = 19
	qDefaultTableEnc   = 20
	qHRNow             = 128 // MariaDB: microseconds of the statement's start
	qXID               = 129 // MariaDB
	qGTIDFlags3        = 130 // MariaDB 10.8+
	qCharacterSetColl  = 131 // MariaDB 10.9+
)

var errShortStatus = errors.New("query event status variables are truncated")

// cursor reads status variables; a read past the end sets short.
type cursor struct {
	b     []byte
	short bool
}

func (c *cursor) take(n int) []byte {
	if n > len(c.b) {
		c.short, c.b = true, nil
		return make([]byte, n)
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v
}

// str reads a string with a one-byte length.
func (c *cursor) str() string { return string(c.take(int(c.take(1)[0]))) }

func parseStatusVars(b []byte) (queryStatus, error) {
	var s queryStatus
	c := &cursor{b: b}
	u16 := func() uint16 { return binary.LittleEndian.Uint16(c.take(2)) }
	for len(c.b) > 0 && !c.short {
		switch code := c.take(1)[0]; code {
		case qFlags2:
			s.flags2, s.flags2Set = binary.LittleEndian.Uint32(c.take(4)), true
		case qSQLMode:
			s.sqlMode, s.sqlModeSet = binary.LittleEndian.Uint64(c.take(8)), true
		case qCatalog:
			c.str()
			c.take(1) // trailing NUL
		case qAutoIncrement:
			s.autoIncInc, s.autoIncOffset, s.autoIncSet = u16(), u16(), true
		case qCharset:
			copy(s.charset[:], c.take(6))
			s.charsetSet = true
		case qTimeZone:
			s.timeZone = c.str()
		case qCatalogNZ:
			c.str()
		case qLCTimeNames:
			s.lcTimeNames, s.lcTimeSet = u16(), true
		case qCharsetDatabase:
			s.collationDB, s.collationDBSet = u16(), true
		case qTableMapForUpdate, qDDLLoggedWithXID, qXID:
			c.take(8)
		case qMasterDataWritten:
			c.take(4)
		case qInvoker:
			c.str() // user
			c.str() // host
		case qUpdatedDBNames:
			count := int(c.take(1)[0])
			if count == 254 { // OVER_MAX_DBS_IN_EVENT_MTS: no names follow
				break
			}
			for i := 0; i < count && !c.short; i++ {
				end := bytes.IndexByte(c.b, 0)
				if end < 0 {
					return s, errShortStatus
				}
				c.take(end + 1)
			}
		case qMicroseconds, qHRNow:
			v := c.take(3)
			s.microseconds, s.microsecondsSet = uint32(v[0])|uint32(v[1])<<8|uint32(v[2])<<16, true
		case qExplicitDefTS, qSQLRequirePK, qDefaultTableEnc, qGTIDFlags3:
			c.take(1)
		case qDefaultCollation:
			c.take(2)
		default:
			// Unknown (or the never-written commit timestamps): the server
			// stops here as well; what follows cannot be skipped safely.
			return s, nil
		}
	}
	if c.short {
		return s, errShortStatus
	}
	return s, nil
}

// session is what a connection's session was last set to, so that each
// query event sends only what differs, as mysqlbinlog does. It lives as
// long as the connection: temporary tables and user variables of
// statement-logged transactions survive from one batch to the next.
type session struct {
	flags2       uint32
	flags2Set    bool
	sqlMode      uint64
	sqlModeSet   bool
	autoInc      [2]uint16
	charset      [6]byte
	charsetSet   bool
	timeZone     string
	lcTimeNames  uint16
	collationDB  uint16
	db           string
	pseudoThread uint32
	pseudoSet    bool
	fde          []byte
}

// querySetup returns the statements that put the session in the context of
// a query event, updating s.
func (s *session) querySetup(h replication.EventHeader, q *replication.QueryEvent, useDB bool) ([]string, error) {
	st, err := parseStatusVars(q.StatusVars)
	if err != nil {
		return nil, err
	}
	var out []string
	if !s.pseudoSet || s.pseudoThread != q.SlaveProxyID {
		out = append(out, fmt.Sprintf("SET @@session.pseudo_thread_id=%d", q.SlaveProxyID))
		s.pseudoThread, s.pseudoSet = q.SlaveProxyID, true
	}
	if st.flags2Set && (!s.flags2Set || s.flags2 != st.flags2) {
		f := st.flags2
		out = append(out, fmt.Sprintf("SET @@session.foreign_key_checks=%d, @@session.sql_auto_is_null=%d, @@session.unique_checks=%d, @@session.autocommit=%d, @@session.check_constraint_checks=%d",
			b2i(f&optNoForeignKeyChecks == 0), b2i(f&optAutoIsNull != 0), b2i(f&optRelaxedUniqueChecks == 0), b2i(f&optNotAutocommit == 0), b2i(f&optNoCheckConstraintChecks == 0)))
		s.flags2, s.flags2Set = f, true
	}
	if st.sqlModeSet && (!s.sqlModeSet || s.sqlMode != st.sqlMode) {
		out = append(out, "SET @@session.sql_mode="+strconv.FormatUint(st.sqlMode, 10))
		s.sqlMode, s.sqlModeSet = st.sqlMode, true
	}
	if st.autoIncSet && s.autoInc != [2]uint16{st.autoIncInc, st.autoIncOffset} {
		out = append(out, fmt.Sprintf("SET @@session.auto_increment_increment=%d, @@session.auto_increment_offset=%d", st.autoIncInc, st.autoIncOffset))
		s.autoInc = [2]uint16{st.autoIncInc, st.autoIncOffset}
	}
	if st.charsetSet && (!s.charsetSet || s.charset != st.charset) {
		c := st.charset
		out = append(out, fmt.Sprintf("SET @@session.character_set_client=%d, @@session.collation_connection=%d, @@session.collation_server=%d",
			binary.LittleEndian.Uint16(c[0:]), binary.LittleEndian.Uint16(c[2:]), binary.LittleEndian.Uint16(c[4:])))
		s.charset, s.charsetSet = c, true
	}
	if st.timeZone != "" && st.timeZone != s.timeZone {
		out = append(out, "SET @@session.time_zone="+dbconn.QuoteString(st.timeZone))
		s.timeZone = st.timeZone
	}
	if st.lcTimeSet && st.lcTimeNames != s.lcTimeNames {
		out = append(out, fmt.Sprintf("SET @@session.lc_time_names=%d", st.lcTimeNames))
		s.lcTimeNames = st.lcTimeNames
	}
	if st.collationDBSet && st.collationDB != s.collationDB {
		if st.collationDB == 0 {
			out = append(out, "SET @@session.collation_database=DEFAULT")
		} else {
			out = append(out, fmt.Sprintf("SET @@session.collation_database=%d", st.collationDB))
		}
		s.collationDB = st.collationDB
	}
	ts := strconv.FormatUint(uint64(h.Timestamp), 10)
	if st.microsecondsSet {
		ts += fmt.Sprintf(".%06d", st.microseconds)
	}
	out = append(out, "SET TIMESTAMP="+ts)
	// CREATE/DROP DATABASE carry the database they change, with
	// LOG_EVENT_SUPPRESS_USE_F: it must not become the default database
	// (it may not exist yet, or any more).
	if db := string(q.Schema); useDB && db != "" && db != s.db && h.Flags&replication.LOG_EVENT_SUPPRESS_USE_F == 0 {
		out = append(out, "USE "+dbconn.QuoteIdent(db))
		s.db = db
	}
	return out, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// binlogStatement renders raw events as one BINLOG statement.
func binlogStatement(events [][]byte) []byte {
	n := 0
	for _, e := range events {
		n += len(e)
	}
	raw := make([]byte, 0, n)
	for _, e := range events {
		raw = append(raw, e...)
	}
	out := make([]byte, 0, base64.StdEncoding.EncodedLen(n)+10)
	out = append(out, "BINLOG '"...)
	out = base64.StdEncoding.AppendEncode(out, raw)
	return append(out, '\'')
}

// intVarStatement renders an INTVAR event (LAST_INSERT_ID / INSERT_ID).
func intVarStatement(e *replication.IntVarEvent) (string, error) {
	switch e.Type {
	case replication.LAST_INSERT_ID:
		return fmt.Sprintf("SET LAST_INSERT_ID=%d", e.Value), nil
	case replication.INSERT_ID:
		return fmt.Sprintf("SET INSERT_ID=%d", e.Value), nil
	}
	return "", fmt.Errorf("unknown INTVAR type %d", e.Type)
}

// randStatement renders a RAND event's seeds.
func randStatement(body []byte) (string, error) {
	if len(body) < 16 {
		return "", errors.New("RAND event too short")
	}
	return fmt.Sprintf("SET @@RAND_SEED1=%d, @@RAND_SEED2=%d", binary.LittleEndian.Uint64(body), binary.LittleEndian.Uint64(body[8:])), nil
}

// userVarStatement renders a USER_VAR event: the value of a user variable
// that a statement-logged query reads. collation names a collation id.
func userVarStatement(body []byte, collation func(uint32) (charset, name string, ok bool)) (string, error) {
	bad := errors.New("USER_VAR event is malformed")
	if len(body) < 5 {
		return "", bad
	}
	nlen := int(binary.LittleEndian.Uint32(body))
	if len(body) < 4+nlen+1 {
		return "", bad
	}
	name := dbconn.QuoteIdent(string(body[4 : 4+nlen]))
	p := body[4+nlen:]
	if p[0] != 0 {
		return "SET @" + name + ":=NULL", nil
	}
	if len(p) < 10 {
		return "", bad
	}
	typ, coll, vlen := p[1], binary.LittleEndian.Uint32(p[2:]), int(binary.LittleEndian.Uint32(p[6:]))
	if len(p) < 10+vlen {
		return "", bad
	}
	v := p[10 : 10+vlen]
	unsigned := len(p) > 10+vlen && p[10+vlen]&1 != 0
	switch typ {
	case 0: // STRING_RESULT
		cs, cname, ok := collation(coll)
		if !ok {
			return "", fmt.Errorf("user variable @%s has unknown collation id %d", name, coll)
		}
		return fmt.Sprintf("SET @%s:=_%s X'%x' COLLATE %s", name, cs, v, dbconn.QuoteIdent(cname)), nil
	case 1: // REAL_RESULT
		if vlen != 8 {
			return "", bad
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(v))
		return "SET @" + name + ":=" + strconv.FormatFloat(f, 'g', 17, 64), nil
	case 2: // INT_RESULT
		if vlen != 8 {
			return "", bad
		}
		u := binary.LittleEndian.Uint64(v)
		if unsigned {
			return "SET @" + name + ":=" + strconv.FormatUint(u, 10), nil
		}
		return "SET @" + name + ":=" + strconv.FormatInt(int64(u), 10), nil
	}
	return "", fmt.Errorf("user variable @%s has a value type (%d) binvault cannot replay yet", name, typ)
}
