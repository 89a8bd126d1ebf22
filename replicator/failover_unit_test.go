package replicator

import (
	"testing"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
)

func mariaSet(t *testing.T, s string) binlog.GTIDSet {
	t.Helper()
	g, err := binlog.ParseGTIDSet(dbconn.MariaDB, s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// A candidate is taken only when it holds binvault's history: its
// position covers binvault's and its binlog state shows the server of
// binvault's last GTID at that GTID or later. A candidate that wrote its
// own transactions at binvault's sequence numbers has the numbers but
// not the transactions.
func TestCandidateLacks(t *testing.T) {
	held := mariaSet(t, "0-1-1050,1-7-20")
	for _, c := range []struct {
		name, pos, state, want string
	}{
		{"has everything", "0-1-1050,1-7-20", "0-1-1050,1-7-20", ""},
		{"has more, written by itself after", "0-2-1060,1-7-20", "0-1-1050,0-2-1060,1-7-20", ""},
		{"behind in one domain", "0-1-1047,1-7-20", "0-1-1047,1-7-20", "0-1-1048…0-1-1050 (3 transactions)"},
		{"one behind", "0-1-1049,1-7-20", "0-1-1049,1-7-20", "0-1-1050 (1 transaction)"},
		{"its own writes took the numbers", "0-2-1052,1-7-20", "0-1-1047,0-2-1052,1-7-20", "0-1-1048…0-1-1050 (3 transactions)"},
		{"a domain missing", "0-1-1050", "0-1-1050", "1-7-1…1-7-20 (20 transactions)"},
	} {
		cand := candidate{info: dbconn.ServerInfo{Flavor: dbconn.MariaDB}, pos: mariaSet(t, c.pos), state: binlog.ParseMariaDBGTIDList(c.state)}
		if got := cand.lacks(held); got != c.want {
			t.Errorf("%s: lacks %q, want %q", c.name, got, c.want)
		}
	}
}

func TestNotPrimary(t *testing.T) {
	ok := dbconn.ServerInfo{Flavor: dbconn.MariaDB, LogBin: true, BinlogFormat: "ROW", BinlogRowImage: "FULL"}
	if why := (candidate{info: ok}).notPrimary(); why != "" {
		t.Fatalf("a writable primary: %q", why)
	}
	ro := ok
	ro.ReadOnly = true
	if why := (candidate{info: ro}).notPrimary(); why != "read_only=ON" {
		t.Fatalf("read_only: %q", why)
	}
	if why := (candidate{info: ok, replicating: "it replicates from db1:3306"}).notPrimary(); why != "it replicates from db1:3306" {
		t.Fatalf("replicating: %q", why)
	}
}

// After a fork that lost A's 0-1-1048…0-1-1050 and restarted at B's
// 0-2-1049, a consumer holding any of the lost transactions is on the
// abandoned branch; one at or past the new start on B's GTIDs is not.
func TestHoldsLost(t *testing.T) {
	fork := archive.Segment{Seq: 9, Source: archive.Source{Flavor: dbconn.MariaDB}, Start: binlog.Position{GTIDSet: "0-2-1049"},
		Fork: &archive.Fork{After: binlog.Position{GTIDSet: "0-1-1050"}, Lost: "0-1-1048…0-1-1050 (3 transactions)"}}
	for pos, want := range map[string]bool{
		"0-1-1050":       true, // all of the lost ones
		"0-1-1050,1-5-3": true,
		"0-2-1049":       false, // the new start
		"0-2-1060":       false, // past it, on B's history
		"0-1-1047":       false, // before the lost ones: Contains decides (a gap)
		"0-1-1049":       false, // at the new start's number, another server: SameAtEqualSeq decides
	} {
		if got := fork.HoldsLost(mariaSet(t, pos)); got != want {
			t.Errorf("%s: holdsLost %v, want %v", pos, got, want)
		}
	}
	if (archive.Segment{Source: fork.Source, Start: fork.Start}).HoldsLost(mariaSet(t, "0-1-1050")) {
		t.Error("a segment without a fork")
	}
}
