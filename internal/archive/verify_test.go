package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/binlog/binlogtest"
)

// binlogSegment is segment 1 holding a real binlog file, as a MariaDB
// primary (server 1) writes one: the magic, a format description, then
// three whole transactions 0-1-1..0-1-3 writing to d.t. It returns the
// manifest that describes the file and the file.
func binlogSegment() (Segment, []byte) {
	w := binlogtest.NewEventWriter(1)
	evs := [][]byte{w.FormatDescription()}
	for seq := uint64(1); seq <= 3; seq++ {
		w.TS++
		evs = append(evs, w.GTID(0, seq, binlogtest.FlagsTrans), w.TableMap(18, "d", "t"), w.WriteRows(18, true, 10), w.XID(seq))
	}
	content := binlogtest.File(evs...)
	sum := sha256.Sum256(content)
	return Segment{Format: SegmentFormat, Seq: 1, Source: Source{Flavor: "mariadb", Version: "10.11.19-MariaDB-log", ServerID: 1},
		End: binlog.Position{GTIDSet: "0-1-3"}, FirstGTID: "0-1-1", LastGTID: "0-1-3", Txns: 3,
		FirstTime: time.Unix(1_700_000_001, 0).UTC(), LastTime: time.Unix(1_700_000_003, 0).UTC(),
		Tables: []string{"d.t"}, Bytes: int64(len(content)), SHA256: hex.EncodeToString(sum[:]),
		Key: SegmentKey(1)}, content
}

// verifyCatalogued stores content as segment 1's object with header's
// manifest at its head, and catalog as the catalog's copy of the
// manifest; it verifies the segment as the catalog lists it.
func verifyCatalogued(t *testing.T, header, catalog Segment, content []byte) error {
	t.Helper()
	ctx := context.Background()
	st := testStore(t)
	putObject(t, st, header, content)
	if _, err := WriteCatalog(ctx, st, 1, []Segment{catalog}); err != nil {
		t.Fatal(err)
	}
	ix, err := Load(ctx, st, false)
	if err != nil {
		t.Fatal(err)
	}
	if ix.Catalogued != 1 || len(ix.Segments) != 1 {
		t.Fatalf("the archive lists %d segments, catalogued up to %d; want segment 1 from the catalog", len(ix.Segments), ix.Catalogued)
	}
	return VerifySegment(ctx, st, ix.Segments[0])
}

// VerifySegment on a format-2 segment holding a valid binlog: it passes
// when the catalog's copy of the manifest is the one at the object's
// head, and reports damage when the two differ — also where the binlog
// itself agrees with the catalog's copy, so only the comparison of the
// two manifests can notice.
func TestVerifySegmentComparesHeaderWithCatalog(t *testing.T) {
	seg, content := binlogSegment()
	if err := verifyCatalogued(t, seg, seg, content); err != nil {
		t.Fatalf("VerifySegment with the catalog's copy equal to the header: %v", err)
	}

	for _, tc := range []struct {
		name            string
		header, catalog func(*Segment)
	}{
		// The binlog's last transaction is 0-1-3, as the catalog says.
		{"header's last GTID", func(s *Segment) { s.LastGTID, s.End.GTIDSet = "0-1-2", "0-1-2" }, nil},
		{"catalog's table list", nil, func(s *Segment) { s.Tables = []string{"d.t", "d.u"} }},
		{"header's table list", func(s *Segment) { s.Tables = nil }, nil},
		{"catalog's end position", nil, func(s *Segment) { s.End.GTIDSet = "0-1-3,1-1-1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			header, catalog := seg, seg // the edits replace fields, shared slices included
			if tc.header != nil {
				tc.header(&header)
			}
			if tc.catalog != nil {
				tc.catalog(&catalog)
			}
			err := verifyCatalogued(t, header, catalog, content)
			var de *DamageError
			if !errors.As(err, &de) {
				t.Fatalf("VerifySegment: %v, want a *DamageError", err)
			}
			if de.Key != SegmentKey(1) || !strings.Contains(de.Reason, "differs from the catalog's copy") {
				t.Errorf("VerifySegment: %v, want the header named as differing from the catalog's copy", err)
			}
		})
	}
}
