package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
)

func testSegs(from, to uint64) []Segment {
	var out []Segment
	for i := from; i <= to; i++ {
		out = append(out, Segment{Format: FormatVersion, Seq: i, Source: Source{Flavor: "mariadb"},
			Start: binlog.Position{GTIDSet: fmt.Sprintf("0-1-%d", i-1)}, End: binlog.Position{GTIDSet: fmt.Sprintf("0-1-%d", i)}, Txns: 1})
	}
	return out
}

func testStore(t *testing.T) storage.Store {
	t.Helper()
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func writeCat(t *testing.T, st storage.Store, level int, from, to uint64) {
	t.Helper()
	if _, err := WriteCatalog(context.Background(), st, level, testSegs(from, to)); err != nil {
		t.Fatal(err)
	}
}

func keys(refs []CatalogRef) string {
	var b bytes.Buffer
	for _, r := range refs {
		fmt.Fprintf(&b, "[%d..%d L%d]", r.First, r.Last, r.Level)
	}
	return b.String()
}

func TestCatalogStateSortsObjectsOut(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	writeCat(t, st, 1, 1, 4)     // below the floor
	writeCat(t, st, 2, 1, 48)    // taken: straddles the floor
	writeCat(t, st, 1, 25, 30)   // merged into it: redundant
	writeCat(t, st, 2, 49, 96)   // taken
	writeCat(t, st, 1, 49, 50)   // same first, shorter: redundant
	writeCat(t, st, 2, 60, 96)   // same level, later first: a prune's replacement
	writeCat(t, st, 1, 97, 98)   // taken
	writeCat(t, st, 1, 97, 97)   // same level and first, shorter (written again longer): redundant
	writeCat(t, st, 1, 100, 100) // after a hole
	if _, err := st.Put(ctx, FloorKey(3), bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, FloorKey(5), bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	cs, err := ReadCatalogState(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ what, got, want string }{
		{"cover", keys(cs.Cover), "[1..48 L2][49..96 L2][97..98 L1]"},
		{"redundant", keys(cs.Redundant), "[25..30 L1][49..50 L1][97..97 L1]"},
		{"contained", keys(cs.Contained), "[60..96 L2]"},
		{"pruned", keys(cs.Pruned), "[1..4 L1]"},
		{"off", keys(cs.Off), "[100..100 L1]"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %s, want %s", c.what, c.got, c.want)
		}
	}
	if cs.Floor != 5 || len(cs.FloorKeys) != 2 {
		t.Errorf("floor %d from %v", cs.Floor, cs.FloorKeys)
	}
}

func TestLoadAndCompactHonourTheFloor(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	// 26 level-1 objects of 2 segments (1..52), tail manifests 53..54;
	// with the floor at 6, 24 of them are taken.
	for f := uint64(1); f <= 51; f += 2 {
		writeCat(t, st, 1, f, f+1)
	}
	for _, s := range testSegs(53, 54) {
		b, _ := json.Marshal(s)
		if _, err := st.Put(ctx, ManifestKey(s.Seq), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Put(ctx, FloorKey(6), bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		ix, err := Load(ctx, st, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(ix.Segments) != 49 || ix.Segments[0].Seq != 6 || ix.Last().Seq != 54 || len(Chain(ix.Segments)) > 0 {
			t.Fatalf("%s: index of %d segments from %d", when, len(ix.Segments), ix.Segments[0].Seq)
		}
	}
	check("before the merge")
	// A replacement left by a prune beside the object it replaces.
	writeCat(t, st, 1, 6, 6)
	if err := Compact(ctx, st); err != nil {
		t.Fatal(err)
	}
	cs, err := ReadCatalogState(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	// The merge leaves the segments below the floor out; the replacement
	// it was not allowed to delete is now inside a higher level: gone too.
	// The objects below the floor are a prune's to delete.
	if got := keys(cs.Cover) + " " + keys(cs.Redundant) + keys(cs.Contained) + " " + keys(cs.Pruned); got != "[6..52 L2]  [1..2 L1][3..4 L1]" {
		t.Fatalf("after the merge: %s", got)
	}
	check("after the merge")
}

// One empty object named catalog/floor-9999999999999999.json used to make
// every reader see an empty archive (and the next prune delete every
// segment): a floor above the newest segment is refused, naming it; a
// floor a prune could have written still hides what is below it.
func TestLoadRefusesAFloorNoPruneCouldWrite(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	writeCat(t, st, 1, 1, 10)
	if _, err := st.Put(ctx, FloorKey(5), bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	ix, err := Load(ctx, st, false)
	if err != nil || len(ix.Segments) != 6 || ix.Segments[0].Seq != 5 {
		t.Fatalf("a floor at 5 of 1..10: %v, %d segments", err, len(ix.Segments))
	}
	forged := FloorKey(9999999999999999)
	if _, err := st.Put(ctx, forged, bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	for _, tailOnly := range []bool{false, true} {
		_, err := Load(ctx, st, tailOnly)
		if !errors.Is(err, ErrImpossibleFloor) || !strings.Contains(err.Error(), forged) {
			t.Fatalf("tailOnly %v: err = %v, want an impossible floor naming %s", tailOnly, err, forged)
		}
	}
}
