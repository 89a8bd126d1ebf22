package restore

import (
	"testing"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
)

// An archive of A's history 0-1-1…0-1-20, of which B lacked 18…20, then B's
// (server 2) from 0-2-17 on, the fork recorded in segment 3.
func forkedArchive() []archive.Segment {
	src := archive.Source{Flavor: "mariadb"}
	at := func(s string) binlog.Position { return binlog.Position{GTIDSet: s} }
	forkTime := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	return []archive.Segment{
		{Seq: 1, Source: src, Start: at("0-1-0"), End: at("0-1-10")},
		{Seq: 2, Source: src, Start: at("0-1-10"), End: at("0-1-20")},
		{Seq: 3, Source: src, Start: at("0-2-17"), End: at("0-2-30"),
			Fork: &archive.Fork{After: at("0-1-20"), Lost: "0-1-18…0-1-20 (3 transactions)", Time: forkTime}},
		{Seq: 4, Source: src, Start: at("0-2-30"), End: at("0-2-40")},
	}
}

func TestBranchOfAForkedArchive(t *testing.T) {
	segs := forkedArchive()
	for pos, wantFrom := range map[string]int{
		"0-1-5":  0, // before the fork: A's branch
		"0-1-20": 0, // A's end, the lost transactions included
		"0-2-17": 2, // B's start
		"0-2-35": 2, // on B's branch
	} {
		set, _ := binlog.ParseGTIDSet("mariadb", pos)
		branch, from := branchOf(set, segs)
		if from != wantFrom || branch[0].Seq != segs[wantFrom].Seq {
			t.Errorf("%s: branch from %d (segment %d), want %d", pos, from, branch[0].Seq, wantFrom)
		}
	}
}

func TestForkBeyondTheTarget(t *testing.T) {
	segs := forkedArchive()
	after := segs[2].Fork.Time.Add(time.Minute)
	before := segs[2].Fork.Time.Add(-time.Minute)
	for _, c := range []struct {
		name string
		t    Target
		want int
	}{
		{"latest from A's branch", Target{Latest: true}, 2},
		{"a GTID of B's branch", Target{GTID: "0-2-25"}, 2},
		{"a GTID B lacked (A's branch)", Target{GTID: "0-1-19"}, -1},
		{"a GTID before the fork", Target{GTID: "0-1-12"}, -1},
		{"a time after the fork", Target{Time: &after}, 2},
		{"a time before the fork", Target{Time: &before}, -1},
	} {
		if got := forkBeyond(segs, 0, c.t); got != c.want {
			t.Errorf("%s: forkBeyond %d, want %d", c.name, got, c.want)
		}
	}
	if got := forkBeyond(segs, 2, Target{Latest: true}); got != -1 {
		t.Errorf("latest from B's branch: %d, want -1", got)
	}
}
