package backup

import (
	"fmt"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
)

// ChainStatus says whether the archive can roll a backup forward to the
// newest archived transaction: an unbroken run of segments (no missing
// number, each starting where the previous ended) that starts at or before
// the backup's position and ends at or after it.
type ChainStatus struct {
	Complete bool `json:"complete"`
	// Detail explains: the segments replay would use, or what breaks the chain.
	Detail string `json:"detail"`
	// FirstSegment and LastSegment bound the run replay would read (when complete).
	FirstSegment uint64 `json:"first_segment,omitempty"`
	LastSegment  uint64 `json:"last_segment,omitempty"`
}

// Chain checks the chain from a backup's position to the newest segment.
// segs is the archive's index in sequence order (archive.Load).
func Chain(m *Manifest, segs []archive.Segment) ChainStatus {
	if len(segs) == 0 {
		return ChainStatus{Detail: "the archive holds no segments"}
	}
	flavor := m.Source.Flavor
	pos, err := binlog.ParseGTIDSet(flavor, m.Position.GTIDSet)
	if err != nil {
		return ChainStatus{Detail: fmt.Sprintf("the backup's position: %v", err)}
	}
	// The unbroken run that ends with the newest segment.
	i := len(segs) - 1
	for i > 0 && segs[i].Follows(segs[i-1]) {
		i--
	}
	first, last := segs[i], segs[len(segs)-1]
	start, err := binlog.ParseGTIDSet(flavor, first.Start.GTIDSet)
	if err != nil {
		return ChainStatus{Detail: fmt.Sprintf("segment %d: %v", first.Seq, err)}
	}
	end, err := binlog.ParseGTIDSet(flavor, last.End.GTIDSet)
	if err != nil {
		return ChainStatus{Detail: fmt.Sprintf("segment %d: %v", last.Seq, err)}
	}
	switch {
	case !pos.Contains(start) && i > 0:
		return ChainStatus{Detail: fmt.Sprintf("gap before segment %d: the archive lacks history between segment %d and the backup's position onwards", first.Seq, segs[i-1].Seq)}
	case !pos.Contains(start):
		return ChainStatus{Detail: fmt.Sprintf("the archive starts at %q, after the backup's position", first.Start.GTIDSet)}
	case !end.Contains(pos):
		return ChainStatus{Detail: fmt.Sprintf("the archive ends at %q, before the backup's position (the daemon is behind or not running)", last.End.GTIDSet)}
	}
	if pos.Contains(end) {
		return ChainStatus{Complete: true, Detail: "the archive ends at the backup's position: nothing to replay yet"}
	}
	// The first segment replay needs is the first one not wholly inside
	// the backup.
	j := i
	for j < len(segs)-1 {
		e, err := binlog.ParseGTIDSet(flavor, segs[j].End.GTIDSet)
		if err != nil || !pos.Contains(e) {
			break
		}
		j++
	}
	return ChainStatus{Complete: true, FirstSegment: segs[j].Seq, LastSegment: last.Seq,
		Detail: fmt.Sprintf("segments %d to %d roll it forward to %q", segs[j].Seq, last.Seq, last.End.GTIDSet)}
}
