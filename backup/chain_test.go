package backup

import (
	"strings"
	"testing"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
)

func seg(seq uint64, start, end string) archive.Segment {
	return archive.Segment{Seq: seq, Start: binlog.Position{GTIDSet: start}, End: binlog.Position{GTIDSet: end}}
}

func TestChain(t *testing.T) {
	m := func(pos string) *Manifest {
		return &Manifest{Source: archive.Source{Flavor: "mariadb"}, Position: binlog.Position{GTIDSet: pos}}
	}
	run := []archive.Segment{seg(1, "0-1-10", "0-1-20"), seg(2, "0-1-20", "0-1-30"), seg(3, "0-1-30", "0-1-40")}
	cases := []struct {
		name     string
		pos      string
		segs     []archive.Segment
		complete bool
		first    uint64
		detail   string
	}{
		{"inside the first", "0-1-15", run, true, 1, "segments 1 to 3"},
		{"on a boundary", "0-1-20", run, true, 2, "segments 2 to 3"},
		{"at the start", "0-1-10", run, true, 1, "segments 1 to 3"},
		{"at the end", "0-1-40", run, true, 0, "nothing to replay"},
		{"before the archive", "0-1-5", run, false, 0, "archive starts"},
		{"after the archive", "0-1-41", run, false, 0, "before the backup's position"},
		{"empty archive", "0-1-5", nil, false, 0, "no segments"},
		{"gap after the backup", "0-1-15", []archive.Segment{run[0], run[2]}, false, 0, "gap before segment 3"},
		{"gap before the backup", "0-1-35", []archive.Segment{run[0], run[2]}, true, 3, "segments 3 to 3"},
		{"position mismatch", "0-1-15", []archive.Segment{run[0], seg(2, "0-1-21", "0-1-30")}, false, 0, "gap before segment 2"},
		{"fresh server", "", []archive.Segment{seg(1, "", "0-1-3")}, true, 1, "segments 1 to 1"},
	}
	for _, c := range cases {
		got := Chain(m(c.pos), c.segs)
		if got.Complete != c.complete || got.FirstSegment != c.first || !strings.Contains(got.Detail, c.detail) {
			t.Errorf("%s: %+v, want complete=%v first=%d detail ~%q", c.name, got, c.complete, c.first, c.detail)
		}
	}
}
