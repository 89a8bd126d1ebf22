package binlog

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// GTIDSet is a flavor's executed position: for MariaDB one GTID per domain
// (gtid_binlog_pos style), for MySQL a set of UUID intervals. Every piece
// of binvault that looks inside a position does it through this type, never
// by splitting its text.
type GTIDSet struct {
	flavor string
	set    mysql.GTIDSet
}

// ParseGTIDSet reads a position in the flavor's syntax ("" is empty).
// Servers print long MySQL sets over several lines; newlines are ignored.
func ParseGTIDSet(flavor, s string) (GTIDSet, error) {
	set, err := mysql.ParseGTIDSet(flavor, strings.TrimSpace(strings.ReplaceAll(s, "\n", "")))
	if err != nil {
		return GTIDSet{}, fmt.Errorf("GTID set %q: %v", s, err)
	}
	return GTIDSet{flavor: flavor, set: set}, nil
}

// Add advances the set past one transaction's GTID.
func (s GTIDSet) Add(gtid string) error {
	if gtid == "" {
		return nil
	}
	return s.set.Update(gtid)
}

// Clone returns an independent copy. A GTIDSet shares its content with
// its copies: a set that one goroutine advances must be cloned (or
// rendered) under that goroutine's lock before another reads it.
func (s GTIDSet) Clone() GTIDSet {
	if s.set == nil {
		return s
	}
	return GTIDSet{flavor: s.flavor, set: s.set.Clone()}
}

// String renders the set in the server's own syntax, in a stable order.
func (s GTIDSet) String() string {
	if s.set == nil {
		return ""
	}
	return s.set.String()
}

// IsZero reports a set never parsed (not the same as an empty position).
func (s GTIDSet) IsZero() bool { return s.set == nil }

// Contains reports whether s includes all of o.
func (s GTIDSet) Contains(o GTIDSet) bool { return s.set.Contain(o.set) }

// Equal reports whether both sets are the same position.
func (s GTIDSet) Equal(o GTIDSet) bool { return s.set.Equal(o.set) }

// Raw is the go-mysql set, for BinlogSyncer.StartSyncGTID.
func (s GTIDSet) Raw() mysql.GTIDSet { return s.set }

// Flavor is "mariadb" or "mysql".
func (s GTIDSet) Flavor() string { return s.flavor }

// ContainsGTID reports whether the single transaction gtid is inside s
// (MariaDB: same domain with a sequence number at or below the domain's).
func (s GTIDSet) ContainsGTID(gtid string) bool {
	one, err := mysql.ParseGTIDSet(s.flavor, gtid)
	if err != nil {
		return false
	}
	return s.set.Contain(one)
}

// Domains returns, for a MariaDB set, the GTID each domain stands at,
// ordered by domain; nil for MySQL.
func (s GTIDSet) Domains() []MariaDBGTID {
	ms, ok := s.set.(*mysql.MariadbGTIDSet)
	if !ok || ms == nil {
		return nil
	}
	out := make([]MariaDBGTID, 0, len(ms.Sets))
	for _, g := range ms.Sets {
		out = append(out, MariaDBGTID{Domain: g.DomainID, Server: g.ServerID, Seq: g.SequenceNumber})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out
}

// At returns the GTID a MariaDB set stands at in domain d.
func (s GTIDSet) At(domain uint32) (MariaDBGTID, bool) {
	ms, ok := s.set.(*mysql.MariadbGTIDSet)
	if !ok || ms == nil {
		return MariaDBGTID{}, false
	}
	g, ok := ms.Sets[domain]
	if !ok || g == nil {
		return MariaDBGTID{}, false
	}
	return MariaDBGTID{Domain: g.DomainID, Server: g.ServerID, Seq: g.SequenceNumber}, true
}

// SeqsAhead sums, over the domains of a MariaDB set, how many sequence
// numbers s is ahead of o: the transactions o lacks while a domain's
// numbers have no holes. 0 for MySQL.
func (s GTIDSet) SeqsAhead(o GTIDSet) int64 {
	var n int64
	for _, g := range s.Domains() {
		have, _ := o.At(g.Domain)
		if g.Seq > have.Seq {
			n += int64(g.Seq - have.Seq)
		}
	}
	return n
}

// SameAtEqualSeq reports whether, in every MariaDB domain where s and o
// stand at the same sequence number, they name the same transaction (the
// same server). Two histories that took one sequence number for different
// transactions have departed from each other. Always true for MySQL.
func (s GTIDSet) SameAtEqualSeq(o GTIDSet) bool {
	for _, g := range o.Domains() {
		if have, ok := s.At(g.Domain); ok && have.Seq == g.Seq && have != g {
			return false
		}
	}
	return true
}

// SamePosition reports whether two positions in the flavor's syntax are
// the same set of transactions; text that does not parse is compared as
// text.
func SamePosition(flavor, a, b string) bool {
	if a == b {
		return true
	}
	sa, err1 := ParseGTIDSet(flavor, a)
	sb, err2 := ParseGTIDSet(flavor, b)
	return err1 == nil && err2 == nil && sa.Equal(sb)
}

// MariaDBGTID is one MariaDB transaction id: domain-server-sequence.
type MariaDBGTID struct {
	Domain uint32
	Server uint32
	Seq    uint64
}

func (g MariaDBGTID) String() string { return fmt.Sprintf("%d-%d-%d", g.Domain, g.Server, g.Seq) }

// ParseMariaDBGTID reads one domain-server-sequence.
func ParseMariaDBGTID(s string) (MariaDBGTID, bool) {
	parts := strings.Split(strings.TrimSpace(s), "-")
	if len(parts) != 3 {
		return MariaDBGTID{}, false
	}
	d, err1 := strconv.ParseUint(parts[0], 10, 32)
	srv, err2 := strconv.ParseUint(parts[1], 10, 32)
	seq, err3 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return MariaDBGTID{}, false
	}
	return MariaDBGTID{Domain: uint32(d), Server: uint32(srv), Seq: seq}, true
}

// ParseMariaDBGTIDList reads a comma-separated list of MariaDB GTIDs that
// may hold several per domain (@@gtid_binlog_state: the last GTID of each
// domain and server pair), which a GTIDSet cannot; unreadable items are
// left out.
func ParseMariaDBGTIDList(s string) []MariaDBGTID {
	var out []MariaDBGTID
	for _, item := range strings.Split(s, ",") {
		if g, ok := ParseMariaDBGTID(item); ok {
			out = append(out, g)
		}
	}
	return out
}
