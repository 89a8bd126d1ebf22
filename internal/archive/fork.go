package archive

import (
	"github.com/binvault/binvault/internal/binlog"
)

// MariaDB positions keep one GTID per domain, so a position tells which
// branch of a fork it stands on only through the server ids: the
// abandoned branch ends (Fork.After) on the old primary's GTIDs, the new
// one continues on the new primary's. These helpers read a position or a
// GTID against the fork recorded in s. MySQL GTID sets are exact: Contains
// alone decides there, and they report false.

// HoldsLost reports whether a server at pos holds transactions the fork
// in s lost: in some domain, a GTID of the abandoned end's server past
// where the new branch starts, up to that end.
func (s Segment) HoldsLost(pos binlog.GTIDSet) bool {
	return s.forkDomains(func(after, start binlog.MariaDBGTID) bool {
		a, _ := pos.At(after.Domain)
		return lostBranch(a, after, start)
	})
}

// OnNewBranch reports whether a server at pos stands on the branch the
// fork in s starts: at or past its start, holding none of what it lost.
func (s Segment) OnNewBranch(pos binlog.GTIDSet) bool {
	start, err := binlog.ParseGTIDSet(s.Source.Flavor, s.Start.GTIDSet)
	if err != nil || s.Fork == nil || s.Source.Flavor != "mariadb" {
		return false
	}
	return pos.Contains(start) && pos.SameAtEqualSeq(start) && !s.HoldsLost(pos)
}

// AfterFork reports whether GTID g belongs to the new branch of the fork
// in s: past the branch's start in its domain, and not one of the
// abandoned end's transactions.
func (s Segment) AfterFork(g binlog.MariaDBGTID) bool {
	return s.forkDomains(func(after, start binlog.MariaDBGTID) bool {
		return after.Domain == g.Domain && g.Seq > start.Seq && !lostBranch(g, after, start)
	})
}

func lostBranch(g, after, start binlog.MariaDBGTID) bool {
	return g.Server == after.Server && g.Seq > start.Seq && g.Seq <= after.Seq
}

// forkDomains calls f with the abandoned end's and the new start's GTIDs
// of each domain of the abandoned end, until f says true.
func (s Segment) forkDomains(f func(after, start binlog.MariaDBGTID) bool) bool {
	if s.Fork == nil || s.Source.Flavor != "mariadb" {
		return false
	}
	after, err1 := binlog.ParseGTIDSet(s.Source.Flavor, s.Fork.After.GTIDSet)
	start, err2 := binlog.ParseGTIDSet(s.Source.Flavor, s.Start.GTIDSet)
	if err1 != nil || err2 != nil {
		return false
	}
	for _, g := range after.Domains() {
		p, _ := start.At(g.Domain)
		if f(g, p) {
			return true
		}
	}
	return false
}
