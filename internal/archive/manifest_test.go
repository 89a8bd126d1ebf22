package archive

import (
	"strings"
	"testing"

	"github.com/binvault/binvault/internal/binlog"
)

func seg(seq uint64, start, end string) Segment {
	return Segment{Seq: seq, Source: Source{Flavor: "mariadb"}, Start: binlog.Position{GTIDSet: start}, End: binlog.Position{GTIDSet: end}}
}

// A recorded fork is history, not damage: Chain passes it, Follows does
// not (nothing replays across it); an unrecorded jump stays a problem.
func TestChainAcceptsARecordedForkOnly(t *testing.T) {
	a, b := seg(1, "0-1-10", "0-1-20"), seg(2, "0-2-18", "0-2-25")
	if p := Chain([]Segment{a, b}); len(p) != 1 || !strings.Contains(p[0], "starts at GTID") {
		t.Fatalf("an unrecorded jump: %q", p)
	}
	b.Fork = &Fork{After: binlog.Position{GTIDSet: "0-1-20"}, Lost: "0-1-19…0-1-20 (2 transactions)"}
	if p := Chain([]Segment{a, b}); len(p) != 0 {
		t.Fatalf("a recorded fork: %q", p)
	}
	if b.Follows(a) || !b.Forks(a) {
		t.Fatalf("Follows %v, Forks %v: want false, true", b.Follows(a), b.Forks(a))
	}
	b.Fork.After.GTIDSet = "0-1-19" // a fork from another end
	if p := Chain([]Segment{a, b}); len(p) != 1 {
		t.Fatalf("a fork that does not start at the previous end: %q", p)
	}
}
