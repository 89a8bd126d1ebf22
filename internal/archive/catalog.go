package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/binvault/binvault/storage"
)

// A catalog object lists the manifests of a contiguous run of segments, so
// readers learn the whole archive from a handful of objects instead of
// fetching one manifest per segment. The archiver writes one for the
// segments of each minute or so (level 1) and merges CompactFanIn
// contiguous objects of one level into one of the next, deleting the
// merged ones afterwards. Readers take, among the objects they list, the
// fewest that cover the run; segments after the last catalogued one (the
// tail) are read from their own manifests.
type Catalog struct {
	Format   int       `json:"format"`
	Level    int       `json:"level"`
	First    uint64    `json:"first"`
	Last     uint64    `json:"last"`
	Segments []Segment `json:"segments"`
}

// CompactFanIn is how many catalog objects of one level make one of the next.
const CompactFanIn = 24

// CatalogKey names the catalog object of a level for segments first..last.
func CatalogKey(level int, first, last uint64) string {
	return fmt.Sprintf("%s%016d-%016d-L%d.json.zst", CatalogPrefix, first, last, level)
}

// ParseCatalogKey returns the range and level a catalog key covers.
func ParseCatalogKey(key string) (ref CatalogRef, ok bool) {
	name, found := strings.CutPrefix(key, CatalogPrefix)
	if !found {
		return ref, false
	}
	name, found = strings.CutSuffix(name, ".json.zst")
	parts := strings.Split(name, "-")
	if !found || len(parts) != 3 || len(parts[0]) != 16 || len(parts[1]) != 16 || !strings.HasPrefix(parts[2], "L") {
		return ref, false
	}
	f, err1 := strconv.ParseUint(parts[0], 10, 64)
	l, err2 := strconv.ParseUint(parts[1], 10, 64)
	lv, err3 := strconv.Atoi(parts[2][1:])
	if err1 != nil || err2 != nil || err3 != nil || l < f || lv < 1 {
		return ref, false
	}
	return CatalogRef{Key: key, First: f, Last: l, Level: lv}, true
}

// CatalogRef is a catalog object known by its key.
type CatalogRef struct {
	Key         string
	First, Last uint64
	Level       int
}

// FloorKey names the floor marker of a prune: every segment below seq is
// deleted or about to be (docs/archive-format.md §5.1). Its key carries the
// value, so readers learn the floor from the catalog/ listing they make
// anyway, without reading it.
func FloorKey(seq uint64) string { return fmt.Sprintf("%sfloor-%016d.json", CatalogPrefix, seq) }

// ParseFloorKey returns the floor a marker key names.
func ParseFloorKey(key string) (uint64, bool) {
	name, found := strings.CutPrefix(key, CatalogPrefix+"floor-")
	if !found {
		return 0, false
	}
	num, found := strings.CutSuffix(name, ".json")
	if !found || len(num) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(num, 10, 64)
	return n, err == nil
}

// CatalogState is one listing of catalog/, sorted out as readers do.
type CatalogState struct {
	// Cover: the objects readers take, in order, covering a contiguous run.
	Cover []CatalogRef
	// Redundant: objects inside a taken one that the writer may delete:
	// those of a lower level (merged, not yet deleted) or starting at the
	// same segment (a shorter level-1 object written again longer).
	Redundant []CatalogRef
	// Contained: objects inside a taken one of the same level starting
	// later: a prune's replacement for the taken object, which that prune
	// deletes next. Readers skip them; only a prune deletes them.
	Contained []CatalogRef
	// Pruned: objects wholly below the floor. Readers skip them; a prune
	// deletes them.
	Pruned []CatalogRef
	// Off: objects that do not join the run (after a hole). Readers skip
	// them and read those segments' manifests instead.
	Off []CatalogRef
	// Floor: segments below it are pruned (0: no prune yet); FloorKeys
	// are the markers found (the largest is the floor).
	Floor     uint64
	FloorKeys []string
}

// ReadCatalogState lists catalog/ and sorts its objects out (§5): the
// fewest objects that cover the catalogued run (larger objects win over
// the ones they were merged from), and why each other one is skipped.
func ReadCatalogState(ctx context.Context, st storage.Store) (*CatalogState, error) {
	var all []CatalogRef
	s := &CatalogState{}
	err := st.List(ctx, CatalogPrefix, func(oi storage.ObjectInfo) error {
		if ref, ok := ParseCatalogKey(oi.Key); ok {
			all = append(all, ref)
		} else if f, ok := ParseFloorKey(oi.Key); ok {
			s.FloorKeys = append(s.FloorKeys, oi.Key)
			s.Floor = max(s.Floor, f)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list catalog: %w", err)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].First != all[j].First {
			return all[i].First < all[j].First
		}
		return all[i].Last > all[j].Last
	})
	next := uint64(0)
	for _, c := range all {
		switch {
		case c.Last < s.Floor:
			s.Pruned = append(s.Pruned, c)
		case len(s.Cover) > 0 && c.Last < next:
			// Inside the object taken last (sorting puts it before c).
			if in := s.Cover[len(s.Cover)-1]; c.Level < in.Level || c.First == in.First {
				s.Redundant = append(s.Redundant, c)
			} else {
				s.Contained = append(s.Contained, c)
			}
		case len(s.Cover) > 0 && c.First != next:
			// Objects that do not join the run (a hole): ignored; the
			// tail listing reads those segments' manifests instead.
			s.Off = append(s.Off, c)
		default:
			s.Cover = append(s.Cover, c)
			next = c.Last + 1
		}
	}
	return s, nil
}

// ReadCatalog fetches and decodes one catalog object.
func ReadCatalog(ctx context.Context, st storage.Store, key string) (*Catalog, error) {
	b, err := storage.ReadAll(ctx, st, key)
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	var c Catalog
	if err := json.NewDecoder(dec).Decode(&c); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", key, err)
	}
	if c.Format != FormatVersion {
		return nil, fmt.Errorf("catalog %s has format %d; this binvault reads format %d: upgrade binvault", key, c.Format, FormatVersion)
	}
	return &c, nil
}

// WriteCatalog stores a catalog object for segs (contiguous, ascending).
func WriteCatalog(ctx context.Context, st storage.Store, level int, segs []Segment) (string, error) {
	if len(segs) == 0 {
		return "", errors.New("empty catalog")
	}
	c := Catalog{Format: FormatVersion, Level: level, First: segs[0].Seq, Last: segs[len(segs)-1].Seq, Segments: segs}
	for i := 1; i < len(segs); i++ {
		if segs[i].Seq != segs[i-1].Seq+1 {
			return "", fmt.Errorf("catalog of non-contiguous segments %d and %d", segs[i-1].Seq, segs[i].Seq)
		}
	}
	var buf bytes.Buffer
	enc, _ := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	if err := json.NewEncoder(enc).Encode(c); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	key := CatalogKey(level, c.First, c.Last)
	if _, err := st.Put(ctx, key, &buf); err != nil {
		return "", fmt.Errorf("write catalog: %w", err)
	}
	return key, nil
}

// ReadManifest fetches segment seq's manifest: from the head of its
// object (format 2), or from its manifest object (format 1). A segment
// without either does not exist: an error wrapping storage.ErrNotFound.
func ReadManifest(ctx context.Context, st storage.Store, seq uint64) (*Segment, error) {
	key := SegmentKey(seq)
	m, err := ReadHeader(ctx, st, key)
	switch {
	case err == nil:
		return m, checkManifest(m, seq, key)
	case errors.Is(err, ErrNoHeader) || errors.Is(err, storage.ErrNotFound):
		return readManifestObject(ctx, st, seq)
	}
	return nil, err
}

// readManifestObject reads a format-1 manifest object.
func readManifestObject(ctx context.Context, st storage.Store, seq uint64) (*Segment, error) {
	b, err := storage.ReadAll(ctx, st, ManifestKey(seq))
	if err != nil {
		return nil, err
	}
	var m Segment
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", ManifestKey(seq), err)
	}
	return &m, checkManifest(&m, seq, ManifestKey(seq))
}

func checkManifest(m *Segment, seq uint64, key string) error {
	if m.Format != SegmentFormat && m.Format != SegmentFormatOwnFile {
		return fmt.Errorf("manifest %s has format %d; this binvault reads formats %d and %d: upgrade binvault", key, m.Format, SegmentFormatOwnFile, SegmentFormat)
	}
	if m.Seq != seq {
		return fmt.Errorf("manifest %s names segment %d", key, m.Seq)
	}
	return nil
}

// Index is what readers know of the archive: every segment's manifest, in
// order, and which of them the catalog covers.
type Index struct {
	Segments []Segment
	// Catalogued is the last seq covered by catalog objects (0: none).
	Catalogued uint64
	// Floor is the prune floor (§5.1): segments below it are not listed.
	Floor uint64
	// CatalogKeys are the catalog objects read, by level.
	CatalogKeys []string
	// Requests counts the store requests it took (LIST pages and GETs).
	Requests int
}

// Last returns the newest segment, or nil for an empty archive.
func (ix *Index) Last() *Segment {
	if len(ix.Segments) == 0 {
		return nil
	}
	return &ix.Segments[len(ix.Segments)-1]
}

// Load reads the catalog objects and the tail manifests. With tailOnly, it
// reads only the newest catalog object (for the archive's end position).
// An object listed but gone when read was deleted meanwhile by a merge or
// a prune (§5.1): Load starts over, a few times.
func Load(ctx context.Context, st storage.Store, tailOnly bool) (*Index, error) {
	for attempt := 1; ; attempt++ {
		ix, err := load(ctx, st, tailOnly)
		if err == nil || !errors.Is(err, storage.ErrNotFound) || attempt == 3 || ctx.Err() != nil {
			return ix, err
		}
	}
}

func load(ctx context.Context, st storage.Store, tailOnly bool) (*Index, error) {
	ix := &Index{}
	cs, err := ReadCatalogState(ctx, st)
	if err != nil {
		return nil, err
	}
	cover := cs.Cover
	ix.Floor = cs.Floor
	ix.Requests++
	if tailOnly && len(cover) > 0 {
		cover = cover[len(cover)-1:]
	}
	for _, c := range cover {
		cat, err := ReadCatalog(ctx, st, c.Key)
		if err != nil {
			return nil, err
		}
		ix.Requests++
		for _, s := range cat.Segments {
			// A catalog object may still name segments a prune deleted:
			// the floor says which (§5.1).
			if s.Seq >= ix.Floor {
				ix.Segments = append(ix.Segments, s)
			}
		}
		ix.CatalogKeys = append(ix.CatalogKeys, c.Key)
		ix.Catalogued = c.Last
	}
	after := ix.Catalogued
	if ix.Floor > 0 {
		after = max(after, ix.Floor-1)
	}
	tail, err := listTail(ctx, st, after)
	if err != nil {
		return nil, err
	}
	ix.Requests++
	for _, t := range tail {
		m, err := t.manifest(ctx, st)
		if errors.Is(err, ErrNoHeader) {
			continue // a format-1 upload interrupted before its manifest
		}
		if err != nil {
			return nil, err
		}
		ix.Requests++
		ix.Segments = append(ix.Segments, *m)
	}
	// A prune always keeps the newest segment, so a floor with no segment
	// at or above it was not written by a prune: trusting it would show an
	// empty archive and let the next prune delete every segment as below it.
	if ix.Floor > 0 && (len(ix.Segments) == 0 || ix.Segments[len(ix.Segments)-1].Seq < ix.Floor) {
		return nil, fmt.Errorf("%w: %s says every segment below %d is pruned, but the archive holds none at or after it (a prune always keeps the newest segment): the marker is forged or damaged; remove it once you have checked the archive", ErrImpossibleFloor, FloorKey(ix.Floor), ix.Floor)
	}
	return ix, nil
}

// ErrImpossibleFloor: a prune floor marker no prune could have written.
var ErrImpossibleFloor = errors.New("impossible prune floor")

// tailEntry is one segment of the listing after the catalog.
type tailEntry struct {
	seq     uint64
	object  storage.ObjectInfo
	ownFile bool // a format-1 manifest object exists
}

// manifest reads the entry's manifest the cheapest way the listing allows.
func (t tailEntry) manifest(ctx context.Context, st storage.Store) (*Segment, error) {
	if t.ownFile {
		return readManifestObject(ctx, st, t.seq)
	}
	m, err := ReadHeader(ctx, st, t.object.Key)
	if err != nil {
		return nil, err
	}
	m.StoredBytes, m.StoredSHA256 = t.object.Size, t.object.SHA256
	return m, checkManifest(m, t.seq, t.object.Key)
}

// listTail lists the segments after seq after, in order.
func listTail(ctx context.Context, st storage.Store, after uint64) ([]tailEntry, error) {
	var out []tailEntry
	start := ""
	if after > 0 {
		start = ManifestKey(after) // sorts after both keys of segment after
	}
	err := storage.ListAfter(ctx, st, SegmentsPrefix, start, func(oi storage.ObjectInfo) error {
		seq, manifest, ok := ParseSegmentsKey(oi.Key)
		if !ok || seq <= after {
			return nil
		}
		if n := len(out); n == 0 || out[n-1].seq != seq {
			out = append(out, tailEntry{seq: seq})
		}
		e := &out[len(out)-1]
		if manifest {
			e.ownFile = true
		} else {
			e.object = oi
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	return out, nil
}

// Chain checks that segments follow each other without gap or overlap and
// returns one line per break.
func Chain(segs []Segment) []string {
	var problems []string
	for i := 1; i < len(segs); i++ {
		a, b := segs[i-1], segs[i]
		switch {
		case b.Seq != a.Seq+1:
			problems = append(problems, fmt.Sprintf("segments %d and %d are not consecutive: %d missing", a.Seq, b.Seq, b.Seq-a.Seq-1))
		case b.Forks(a):
			// A recorded fork (--accept-lost-transactions) is history, not damage.
		case !b.Follows(a):
			problems = append(problems, fmt.Sprintf("segment %d starts at GTID %q but segment %d ends at %q", b.Seq, b.Start.GTIDSet, a.Seq, a.End.GTIDSet))
		}
	}
	return problems
}

// Compact merges every run of CompactFanIn catalog objects of one level
// into one object of the next level, and deletes the redundant objects
// (CatalogState.Redundant; never a prune's replacement, which only the
// prune deletes, so the two never delete both of a pair). The merged
// object is written before the small ones are deleted, so readers always
// find the run covered; it leaves out the segments below the floor.
func Compact(ctx context.Context, st storage.Store) error {
	for {
		cs, err := ReadCatalogState(ctx, st)
		if err != nil {
			return err
		}
		for _, r := range cs.Redundant {
			if err := st.Delete(ctx, r.Key); err != nil {
				return err
			}
		}
		run := mergeableRun(cs.Cover)
		if run == nil {
			return nil
		}
		var segs []Segment
		for _, r := range run {
			c, err := ReadCatalog(ctx, st, r.Key)
			if err != nil {
				return err
			}
			for _, s := range c.Segments {
				if s.Seq >= cs.Floor { // never carry pruned segments along
					segs = append(segs, s)
				}
			}
		}
		if len(segs) == 0 {
			return nil // wholly pruned meanwhile: the prune deletes them
		}
		if _, err := WriteCatalog(ctx, st, run[0].Level+1, segs); err != nil {
			return err
		}
		for _, r := range run {
			if err := st.Delete(ctx, r.Key); err != nil {
				return err
			}
		}
	}
}

// mergeableRun finds CompactFanIn consecutive objects of the same level.
func mergeableRun(cover []CatalogRef) []CatalogRef {
	start := 0
	for i := 1; i <= len(cover); i++ {
		if i == len(cover) || cover[i].Level != cover[start].Level {
			start = i
			continue
		}
		if i-start+1 == CompactFanIn {
			return cover[start : i+1]
		}
	}
	return nil
}
