package restore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/binvault/binvault/backup"
	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/storage"
)

// Target is the point a restore stops at; exactly one field is set.
type Target struct {
	// Time: every transaction committed at or before it (binlog times are
	// whole seconds: a transaction committed during second T is at T).
	Time *time.Time
	// GTID: up to and including this transaction.
	GTID string
	// StopBefore: up to, excluding, this transaction.
	StopBefore string
	// Latest: everything archived.
	Latest bool
}

func (t Target) String() string {
	switch {
	case t.Time != nil:
		return "time " + t.Time.UTC().Format(time.RFC3339)
	case t.GTID != "":
		return "gtid " + t.GTID
	case t.StopBefore != "":
		return "before gtid " + t.StopBefore
	}
	return "latest"
}

// Plan is what a restore will do, decided from the store alone.
type Plan struct {
	Target   Target
	Backup   *backup.Manifest
	Segments []archive.Segment
	// Transactions and StoredBytes of the segments (an upper bound when the
	// target stops inside the last one).
	Transactions int
	StoredBytes  int64
	BinlogBytes  int64
	// Coverage describes what the store can restore to, for messages.
	Coverage string
}

// MakePlan chooses the newest backup that the archive can roll forward to
// the target, and the segments that do it. A target the store cannot reach
// (before the oldest backup, after the newest archived transaction, in a
// gap) is a usage error whose message shows the coverage.
func MakePlan(ctx context.Context, st storage.Store, target Target) (*Plan, error) {
	backups, err := backup.List(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("list backups in %s: %w", st, err)
	}
	ix, err := archive.Load(ctx, st, false)
	if err != nil {
		return nil, fmt.Errorf("read the archive in %s: %w", st, err)
	}
	p := &Plan{Target: target, Coverage: describeCoverage(backups, ix.Segments)}
	fail := func(format string, args ...any) error {
		return usage.Errorf("%s: %s; the store holds: %s", target, fmt.Sprintf(format, args...), p.Coverage)
	}
	if len(backups) == 0 {
		return nil, fail("no backup to start from (take one with binvault backup)")
	}
	segs := ix.Segments
	var lastTime time.Time
	if n := len(segs); n > 0 {
		lastTime = segs[n-1].LastTime
	}
	// Candidate backups, newest first, that hold nothing after the target.
	var tried []string
	for i := len(backups) - 1; i >= 0; i-- {
		m := backups[i]
		flavor := m.Source.Flavor
		pos, err := binlog.ParseGTIDSet(flavor, m.Position.GTIDSet)
		if err != nil {
			return nil, fmt.Errorf("backup %s: %w", m.ID, err)
		}
		switch {
		case target.Time != nil:
			// Every transaction in the backup committed no later than its
			// snapshot, so at or before the snapshot's second.
			if m.SnapshotTime.Truncate(time.Second).After(*target.Time) {
				continue
			}
		case target.GTID != "":
			if pos.ContainsGTID(target.GTID) {
				if gtidEqualsPositionEnd(pos, target.GTID) {
					break // the backup ends exactly at it
				}
				continue
			}
		case target.StopBefore != "":
			if pos.ContainsGTID(target.StopBefore) {
				continue
			}
		}
		branch, from := branchOf(pos, segs)
		if g, ok := binlog.ParseMariaDBGTID(target.GTID + target.StopBefore); ok && from > 0 && !segs[from].AfterFork(g) && !pos.ContainsGTID(g.String()) {
			tried = append(tried, fmt.Sprintf("backup %s is of the new primary after the failover that lost transactions at segment %d, and the target is before it", m.ID, segs[from].Seq))
			continue
		}
		if k := forkBeyond(segs, from, target); k >= 0 {
			tried = append(tried, fmt.Sprintf("backup %s is from before the failover that lost transactions at segment %d, and the target is after it: take a backup of the new primary", m.ID, segs[k].Seq))
			continue
		}
		run, why := rollForward(flavor, pos, branch)
		if why != "" {
			tried = append(tried, fmt.Sprintf("backup %s: %s", m.ID, why))
			continue
		}
		p.Backup = m
		// Cut the run at the target.
		var out []archive.Segment
		for _, s := range run {
			if target.Time != nil && s.FirstTime.After(*target.Time) {
				break
			}
			out = append(out, s)
			if reaches(flavor, s, target) {
				break
			}
		}
		switch {
		case target.Time != nil:
			if runEnd := lastOf(run, m).LastTime; target.Time.After(runEnd) {
				if !target.Time.After(lastTime) {
					return nil, fail("falls in a gap: backup %s rolls forward only to %s", m.ID, fmtTime(runEnd))
				}
				return nil, fail("after the newest archived transaction (%s): what the primary did since is not in the archive", fmtTime(later(lastTime, runEnd)))
			}
		case target.GTID != "" || target.StopBefore != "":
			g := target.GTID + target.StopBefore
			end := m.Position.GTIDSet
			if len(run) > 0 {
				end = run[len(run)-1].End.GTIDSet
			}
			endSet, _ := binlog.ParseGTIDSet(flavor, end)
			if !endSet.ContainsGTID(g) {
				return nil, fail("GTID %s is not in the archive (it ends at %q)", g, end)
			}
		case target.Latest:
			if len(run) > 0 {
				out = run
			}
		}
		p.Segments = out
		for _, s := range out {
			p.Transactions += s.Txns
			p.StoredBytes += s.StoredBytes
			p.BinlogBytes += s.Bytes
		}
		return p, nil
	}
	if len(tried) > 0 {
		return nil, fail("no backup can be rolled forward to it (%s)", strings.Join(tried, "; "))
	}
	return nil, fail("before the oldest backup (snapshot %s)", fmtTime(backups[0].SnapshotTime))
}

// branchOf keeps, of segs, the branch a server at pos stands on: from the
// last recorded fork whose new branch pos has reached (the segments
// before it hold the abandoned branch, which must not replay onto it).
// from is the index the branch starts at.
func branchOf(pos binlog.GTIDSet, segs []archive.Segment) ([]archive.Segment, int) {
	from := 0
	for i := 1; i < len(segs); i++ {
		if segs[i].Forks(segs[i-1]) && segs[i].OnNewBranch(pos) {
			from = i
		}
	}
	return segs[from:], from
}

// forkBeyond is the index of a recorded fork after from that the target
// lies past (-1: none): a backup on the branch before it cannot reach the
// target. --latest lies past every fork.
func forkBeyond(segs []archive.Segment, from int, t Target) int {
	for i := from + 1; i < len(segs); i++ {
		if !segs[i].Forks(segs[i-1]) {
			continue
		}
		switch {
		case t.Latest:
			return i
		case t.Time != nil:
			if t.Time.After(segs[i].Fork.Time) {
				return i
			}
		default:
			if g, ok := binlog.ParseMariaDBGTID(t.GTID + t.StopBefore); ok && segs[i].AfterFork(g) {
				return i
			}
		}
	}
	return -1
}

// rollForward returns the unbroken run of segments from the first one not
// wholly inside pos to the end of its run, or why there is none.
func rollForward(flavor string, pos binlog.GTIDSet, segs []archive.Segment) ([]archive.Segment, string) {
	start := -1
	for i, s := range segs {
		end, err := binlog.ParseGTIDSet(flavor, s.End.GTIDSet)
		if err != nil {
			return nil, fmt.Sprintf("segment %d: %v", s.Seq, err)
		}
		if !pos.Contains(end) {
			start = i
			break
		}
	}
	if start < 0 {
		return nil, "" // the backup is at (or past) the archive's end
	}
	first, err := binlog.ParseGTIDSet(flavor, segs[start].Start.GTIDSet)
	if err != nil {
		return nil, err.Error()
	}
	if !pos.Contains(first) {
		return nil, fmt.Sprintf("the archive lacks the history between its position and segment %d (which starts at %q)", segs[start].Seq, segs[start].Start.GTIDSet)
	}
	run := []archive.Segment{segs[start]}
	for i := start + 1; i < len(segs); i++ {
		if !segs[i].Follows(segs[i-1]) {
			break
		}
		run = append(run, segs[i])
	}
	return run, ""
}

// reaches reports whether segment s holds (or passes) the target, so no
// later segment is needed.
func reaches(flavor string, s archive.Segment, t Target) bool {
	g := t.GTID + t.StopBefore
	if g == "" {
		return false
	}
	end, err := binlog.ParseGTIDSet(flavor, s.End.GTIDSet)
	return err == nil && end.ContainsGTID(g)
}

// gtidEqualsPositionEnd reports whether gtid is the last transaction of
// its domain in pos (MariaDB), or pos holds exactly that one transaction
// beyond nothing else of its server (MySQL, as the text compared before).
func gtidEqualsPositionEnd(pos binlog.GTIDSet, gtid string) bool {
	if g, ok := binlog.ParseMariaDBGTID(gtid); ok && pos.Flavor() == dbconn.MariaDB {
		have, found := pos.At(g.Domain)
		return found && have == g
	}
	one, err := binlog.ParseGTIDSet(pos.Flavor(), gtid)
	return err == nil && pos.Equal(one)
}

func lastOf(run []archive.Segment, m *backup.Manifest) archive.Segment {
	if len(run) == 0 {
		return archive.Segment{LastTime: m.SnapshotTime}
	}
	return run[len(run)-1]
}

// describeCoverage renders the backups and the archive's unbroken runs.
func describeCoverage(backups []*backup.Manifest, segs []archive.Segment) string {
	var parts []string
	if len(backups) == 0 {
		parts = append(parts, "no backups")
	} else {
		parts = append(parts, fmt.Sprintf("%d backup(s) from %s to %s", len(backups), fmtTime(backups[0].SnapshotTime), fmtTime(backups[len(backups)-1].SnapshotTime)))
	}
	if len(segs) == 0 {
		parts = append(parts, "no archived transactions")
		return strings.Join(parts, ", ")
	}
	var b strings.Builder
	b.WriteString("archived ")
	start := 0
	for i := 1; i <= len(segs); i++ {
		if i == len(segs) || !segs[i].Follows(segs[i-1]) {
			first, last := segs[start], segs[i-1]
			fmt.Fprintf(&b, "transactions from %s to %s (GTID %q to %q)", fmtTime(first.FirstTime), fmtTime(last.LastTime), first.Start.GTIDSet, last.End.GTIDSet)
			switch {
			case i == len(segs):
			case segs[i].Forks(segs[i-1]):
				fmt.Fprintf(&b, " and, after a failover that lost %s (segment %d starts a new history: a point after it needs a backup taken after it), ", segs[i].Fork.Lost, segs[i].Seq)
			default:
				b.WriteString(" and, after a gap, ")
			}
			start = i
		}
	}
	parts = append(parts, b.String())
	return strings.Join(parts, "; ")
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "(none)"
	}
	return t.UTC().Format(time.RFC3339)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
