package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/binvault/binvault/storage"
)

// floorMarker is the content of a floor marker (readers use its key only).
type floorMarker struct {
	Format int       `json:"format"`
	Floor  uint64    `json:"floor"`
	Time   time.Time `json:"time"`
}

// TruncateReport says what Truncate deleted and rewrote.
type TruncateReport struct {
	Floor            uint64
	Strays           []string          // segment objects below the floor that the index did not list
	CatalogDeleted   []string          // catalog objects deleted
	CatalogRewritten map[string]string // straddling catalog object -> its replacement
}

// Truncate deletes the first n segments of ix from the archive, in the
// order docs/archive-format.md §5.1 gives so that readers stay correct at
// every step: the floor marker, the catalog objects below it, the segments,
// the older markers. With n = 0 it still finishes what an interrupted
// truncation left below the current floor. The caller must be the only
// one truncating (retention holds the backup lock).
func Truncate(ctx context.Context, st storage.Store, ix *Index, n int, now time.Time) (TruncateReport, error) {
	rep := TruncateReport{Floor: ix.Floor}
	if n > 0 {
		rep.Floor = ix.Segments[n].Seq
		body, _ := json.Marshal(floorMarker{Format: FormatVersion, Floor: rep.Floor, Time: now.UTC()})
		if _, err := st.Put(ctx, FloorKey(rep.Floor), bytes.NewReader(body)); err != nil {
			return rep, fmt.Errorf("write the prune floor: %w", err)
		}
	}
	floor := rep.Floor
	if floor == 0 {
		return rep, nil // never pruned, nothing to prune
	}
	if err := pruneCatalog(ctx, st, floor, &rep); err != nil {
		return rep, err
	}
	for _, s := range ix.Segments[:n] {
		if err := DeleteSegment(ctx, st, s.Seq, s.Key); err != nil {
			return rep, err
		}
	}
	// Segment objects below the floor that the index did not list: an
	// interrupted prune's, or an orphan of an interrupted upload long ago.
	strays := map[uint64][]string{}
	var seqs []uint64
	errStop := errors.New("stop")
	err := st.List(ctx, SegmentsPrefix, func(oi storage.ObjectInfo) error {
		seq, _, ok := ParseSegmentsKey(oi.Key)
		if !ok {
			return nil
		}
		if seq >= floor {
			return errStop
		}
		if strays[seq] == nil {
			seqs = append(seqs, seq)
		}
		strays[seq] = append(strays[seq], oi.Key)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return rep, fmt.Errorf("list segments: %w", err)
	}
	for _, seq := range seqs {
		if err := DeleteSegment(ctx, st, seq, SegmentKey(seq)); err != nil {
			return rep, err
		}
		rep.Strays = append(rep.Strays, strays[seq]...)
	}
	cs, err := ReadCatalogState(ctx, st)
	if err != nil {
		return rep, err
	}
	for _, k := range cs.FloorKeys {
		if f, _ := ParseFloorKey(k); f < floor {
			if err := st.Delete(ctx, k); err != nil {
				return rep, fmt.Errorf("delete the old prune floor %s: %w", k, err)
			}
		}
	}
	return rep, nil
}

// DeleteSegment deletes a segment's manifest object (if the segment has
// one), then its segment object.
func DeleteSegment(ctx context.Context, st storage.Store, seq uint64, key string) error {
	if err := st.Delete(ctx, ManifestKey(seq)); err != nil {
		return fmt.Errorf("delete segment %d: %w", seq, err)
	}
	if key == "" {
		key = SegmentKey(seq)
	}
	if err := st.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete segment %d: %w", seq, err)
	}
	return nil
}

// pruneCatalog makes the catalog name no segment below floor: objects
// readers do not take (below the floor, merged, contained in another) are
// deleted first, which changes nothing for readers; then the taken ones
// wholly below the floor, oldest first; then the one straddling it is
// replaced (the replacement written first). A catalog writer running
// meanwhile (the daemon's merge) may write an object from what it read
// before: the listing is checked again, a few times.
func pruneCatalog(ctx context.Context, st storage.Store, floor uint64, rep *TruncateReport) error {
	del := func(key string) error {
		if err := st.Delete(ctx, key); err != nil {
			return fmt.Errorf("delete catalog object %s: %w", key, err)
		}
		rep.CatalogDeleted = append(rep.CatalogDeleted, key)
		return nil
	}
	for pass := 0; pass < 3; pass++ {
		cs, err := ReadCatalogState(ctx, st)
		if err != nil {
			return err
		}
		done := 0
		// The only truncation running, a contained object is no running
		// prune's replacement: an interrupted one's, or the leftover of a
		// rewrite.
		var others []CatalogRef
		for _, l := range [][]CatalogRef{cs.Pruned, cs.Redundant, cs.Contained} {
			others = append(others, l...)
		}
		sort.Slice(others, func(i, j int) bool { return others[i].First < others[j].First })
		for _, c := range others {
			if err := del(c.Key); err != nil {
				return err
			}
			done++
		}
		for _, c := range cs.Cover {
			switch {
			case c.Last < floor:
				if err := del(c.Key); err != nil {
					return err
				}
				done++
			case c.First < floor:
				cat, err := ReadCatalog(ctx, st, c.Key)
				if err != nil {
					return err
				}
				var keep []Segment
				for _, s := range cat.Segments {
					if s.Seq >= floor {
						keep = append(keep, s)
					}
				}
				key, err := WriteCatalog(ctx, st, c.Level, keep)
				if err != nil {
					return err
				}
				if err := st.Delete(ctx, c.Key); err != nil {
					return fmt.Errorf("delete catalog object %s: %w", c.Key, err)
				}
				if rep.CatalogRewritten == nil {
					rep.CatalogRewritten = map[string]string{}
				}
				rep.CatalogRewritten[c.Key] = key
				done++
			}
		}
		if done == 0 {
			return nil
		}
	}
	return nil
}
