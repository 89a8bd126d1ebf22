package archive

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/binvault/binvault/internal/binlog"
)

// Formats. A catalog object and a floor marker have format 1. A segment's
// manifest has format 2 when it travels at the head of the segment object
// (header.go: one object, one PUT per segment) and format 1 when it is a
// separate object written after the segment (archives written before);
// readers take both.
const (
	FormatVersion        = 1 // catalog objects, floor markers
	SegmentFormat        = 2 // manifests binvault writes now
	SegmentFormatOwnFile = 1 // manifests as objects of their own
)

// Key prefixes.
const (
	SegmentsPrefix = "segments/"
	CatalogPrefix  = "catalog/"
)

// SegmentKey is the object holding segment seq: a zstd-compressed binlog file.
func SegmentKey(seq uint64) string { return fmt.Sprintf("%s%016d.binlog.zst", SegmentsPrefix, seq) }

// ManifestKey is a format-1 segment's manifest object, written after the
// segment; format-2 segments carry their manifest inside (header.go).
func ManifestKey(seq uint64) string { return fmt.Sprintf("%s%016d.json", SegmentsPrefix, seq) }

// ParseSegmentsKey returns the seq of a segments/ key and whether it is a manifest.
func ParseSegmentsKey(key string) (seq uint64, manifest bool, ok bool) {
	name, found := strings.CutPrefix(key, SegmentsPrefix)
	if !found {
		return 0, false, false
	}
	num, rest, _ := strings.Cut(name, ".")
	if len(num) != 16 {
		return 0, false, false
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, false, false
	}
	switch rest {
	case "json":
		return n, true, true
	case "binlog.zst":
		return n, false, true
	}
	return 0, false, false
}

// Source identifies the primary a segment came from.
type Source struct {
	Flavor   string `json:"flavor"`
	Version  string `json:"version"`
	ServerID uint32 `json:"server_id"`
	Hostname string `json:"hostname,omitempty"`
	Port     int    `json:"port,omitempty"`
}

// Follows reports whether s continues prev without gap or overlap: the
// next number, starting at the position prev ends at (compared as GTID
// sets, so two spellings of one position agree).
func (s Segment) Follows(prev Segment) bool {
	return s.Seq == prev.Seq+1 && binlog.SamePosition(s.Source.Flavor, s.Start.GTIDSet, prev.End.GTIDSet)
}

// Forks reports whether s is the first segment after a recorded fork that
// prev's history ends at: the next number, and a Fork whose After is
// where prev ends. The history does not continue across it (Follows is
// false): nothing replays from one side into the other.
func (s Segment) Forks(prev Segment) bool {
	return s.Fork != nil && s.Seq == prev.Seq+1 && binlog.SamePosition(s.Source.Flavor, s.Fork.After.GTIDSet, prev.End.GTIDSet)
}

// Fork records, in the first segment after it, that binvault continued
// from a new primary lacking transactions it had archived (binvault run
// --accept-lost-transactions): the history before After has a branch that
// ends there, and the segment starts a new one at its Start.
type Fork struct {
	// After is where the abandoned history ends (the previous segment's End).
	After binlog.Position `json:"after"`
	// Lost names the archived transactions the new primary lacks.
	Lost string    `json:"lost"`
	Time time.Time `json:"time"`
}

// Segment is the manifest of one segment: what it holds and where it sits
// in the chain. Segment seq starts where seq-1 ended: Start equals the
// previous segment's End.
type Segment struct {
	Format int    `json:"format"`
	Seq    uint64 `json:"seq"`
	Source Source `json:"source"`

	Start     binlog.Position `json:"start"`
	End       binlog.Position `json:"end"`
	FirstGTID string          `json:"first_gtid"`
	LastGTID  string          `json:"last_gtid"`
	FirstTime time.Time       `json:"first_time"`
	LastTime  time.Time       `json:"last_time"`
	Txns      int             `json:"transactions"`
	Tables    []string        `json:"tables,omitempty"`
	DDL       bool            `json:"ddl"`

	// The binlog file before compression.
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	// Fork is set on the first segment after a failover that lost
	// archived transactions.
	Fork *Fork `json:"fork,omitempty"`

	// The stored object (see storage's checksum trailer).
	Key          string `json:"key,omitempty"`
	StoredBytes  int64  `json:"stored_bytes,omitempty"`
	StoredSHA256 string `json:"stored_sha256,omitempty"`
}
