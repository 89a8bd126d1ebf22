package backup

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/storage"
)

// Retention (docs/archive-format.md §7.8). Prune keeps the newest
// Policy.KeepLast backups and every backup younger than KeepWithin, never
// the newest, and deletes the rest; then it deletes the segments that only
// deleted backups needed: the longest run at the start of the archive whose
// every segment ends inside the oldest kept backup's position (contained
// in every kept backup's, and every protected, position), never the newest
// segment. Order, each step complete before the next, so that a crash
// anywhere leaves an archive readers understand:
//
//  1. each deleted backup, oldest first: its manifest (the backup ceases
//     to exist), then its other objects;
//  2. the prune floor marker catalog/floor-<P>.json, P the first segment
//     kept: from then on readers ignore every segment below P;
//  3. catalog objects: those wholly below P deleted, the one straddling P
//     replaced by one covering only segments from P (written before the
//     old one is deleted);
//  4. the segments below P, oldest first: manifest, then segment object;
//  5. older floor markers.
//
// All of it under the backup lock, so no backup is taken and no other
// prune runs meanwhile.

// Policy is what retention keeps.
type Policy struct {
	// KeepLast: keep the newest this many backups (at least 1).
	KeepLast int
	// KeepWithin: keep also every backup whose snapshot is younger.
	KeepWithin time.Duration
	// Protect names positions (GTID sets) whose later history must stay
	// archived, e.g. the replica's applied position: a segment goes only
	// when each of them contains its end.
	Protect map[string]string
}

// Report says what a prune deleted (or, dry, would delete) and what it kept.
type Report struct {
	Store      string    `json:"store"`
	DryRun     bool      `json:"dry_run"`
	Now        time.Time `json:"now"`
	KeepLast   int       `json:"keep_last"`
	KeepWithin string    `json:"keep_within"`

	Kept           []KeptBackup    `json:"kept_backups"`
	DeletedBackups []PrunedBackup  `json:"deleted_backups"`
	DeletedSegs    []PrunedSegment `json:"deleted_segments"`
	// SegmentsKept describes the archive after the prune and why its first
	// segment stays.
	SegmentsKept *SegmentsKept `json:"segments_kept,omitempty"`
	// Catalog objects rewritten (old key → new key) and deleted.
	CatalogRewritten map[string]string `json:"catalog_rewritten,omitempty"`
	CatalogDeleted   []string          `json:"catalog_deleted,omitempty"`
	// Leftovers: objects of interrupted backups (or prunes) deleted.
	Leftovers []string `json:"leftovers,omitempty"`
	// Strays: segment objects below the first kept one that no index
	// listed (an interrupted prune's), deleted.
	Strays []string `json:"strays,omitempty"`
	// FreedBytes is the stored size of everything deleted.
	FreedBytes int64 `json:"freed_bytes"`
}

// KeptBackup is a backup retention keeps, with the rules that keep it.
type KeptBackup struct {
	ID           string          `json:"id"`
	SnapshotTime time.Time       `json:"snapshot_time"`
	Position     binlog.Position `json:"position"`
	StoredBytes  int64           `json:"stored_bytes"`
	Reasons      []string        `json:"reasons"`
}

// PrunedBackup is a backup retention deletes.
type PrunedBackup struct {
	ID           string          `json:"id"`
	SnapshotTime time.Time       `json:"snapshot_time"`
	Position     binlog.Position `json:"position"`
	StoredBytes  int64           `json:"stored_bytes"`
	Objects      int             `json:"objects"` // manifest included
	Why          string          `json:"why"`
}

// PrunedSegment is a segment retention deletes.
type PrunedSegment struct {
	Seq          uint64    `json:"seq"`
	FirstTime    time.Time `json:"first_time"`
	LastTime     time.Time `json:"last_time"`
	FirstGTID    string    `json:"first_gtid"`
	LastGTID     string    `json:"last_gtid"`
	Transactions int       `json:"transactions"`
	StoredBytes  int64     `json:"stored_bytes"`
}

// SegmentsKept is the archive that stays.
type SegmentsKept struct {
	Count int             `json:"count"`
	First uint64          `json:"first"`
	Last  uint64          `json:"last"`
	Start binlog.Position `json:"start"`
	// FromTime is the first kept transaction's commit time.
	FromTime time.Time `json:"from_time"`
	Why      string    `json:"why"`
}

// decision is what retention does with one backup.
type decision struct {
	m       *Manifest
	keep    bool
	reasons []string // why kept
	why     string   // why deleted
}

// maxClockSkew is how far in the future a backup's snapshot time may lie
// (clocks of the backup's host and prune's differ) before prune refuses.
const maxClockSkew = 10 * time.Minute

// selectBackups applies the policy to backups (any order) at now; the
// result is oldest first.
func selectBackups(ms []*Manifest, p Policy, now time.Time) []decision {
	ds := make([]decision, len(ms))
	for i, m := range ms {
		ds[i] = decision{m: m}
	}
	// Newest first by snapshot, ids breaking ties.
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i].m, ds[j].m
		if !a.SnapshotTime.Equal(b.SnapshotTime) {
			return a.SnapshotTime.After(b.SnapshotTime)
		}
		return a.ID > b.ID
	})
	for rank := range ds {
		d := &ds[rank]
		age := now.Sub(d.m.SnapshotTime)
		if rank == 0 {
			d.reasons = append(d.reasons, "the newest backup")
		}
		if rank < p.KeepLast {
			d.reasons = append(d.reasons, fmt.Sprintf("one of the newest %d (keep_last)", p.KeepLast))
		}
		if age < p.KeepWithin {
			d.reasons = append(d.reasons, fmt.Sprintf("younger than %s (keep_within): %s old", p.KeepWithin, age.Round(time.Second)))
		}
		d.keep = len(d.reasons) > 0
		if !d.keep {
			d.why = fmt.Sprintf("not one of the newest %d, and %s old", p.KeepLast, age.Round(time.Second))
			if p.KeepWithin > 0 {
				d.why += fmt.Sprintf(" (keep_within %s)", p.KeepWithin)
			}
		}
	}
	for i, j := 0, len(ds)-1; i < j; i, j = i+1, j-1 {
		ds[i], ds[j] = ds[j], ds[i]
	}
	return ds
}

// prunableSegments returns how many segments at the start of segs (the
// index, in order) retention deletes, and why the next one stays. A
// segment goes when every kept backup's position, and every protected
// position, contains its end: replaying from any of them never reads it.
// The newest segment always stays (the daemon continues from it), and with
// no backup kept nothing goes.
func prunableSegments(segs []archive.Segment, kept []*Manifest, protect map[string]string) (int, string, error) {
	if len(kept) == 0 {
		return 0, "no backup in the store: every segment stays", nil
	}
	type holder struct {
		name, flavor string
		pos          binlog.GTIDSet
	}
	var hs []holder
	for _, m := range kept {
		pos, err := binlog.ParseGTIDSet(m.Source.Flavor, m.Position.GTIDSet)
		if err != nil {
			return 0, "", fmt.Errorf("backup %s: %w", m.ID, err)
		}
		hs = append(hs, holder{"backup " + m.ID, m.Source.Flavor, pos})
	}
	names := make([]string, 0, len(protect))
	for name := range protect {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, s := range segs {
		if i == len(segs)-1 {
			return i, fmt.Sprintf("segment %d is the newest: the archive continues from it", s.Seq), nil
		}
		for _, h := range hs {
			end, err := binlog.ParseGTIDSet(h.flavor, s.End.GTIDSet)
			if err != nil || s.Source.Flavor != h.flavor || !h.pos.Contains(end) {
				return i, fmt.Sprintf("segment %d holds transactions after the position of %s (%s): replaying it needs them", s.Seq, h.name, h.pos), nil
			}
		}
		for _, name := range names {
			set, err := binlog.ParseGTIDSet(s.Source.Flavor, protect[name])
			if err != nil {
				return 0, "", fmt.Errorf("%s position: %w", name, err)
			}
			end, err := binlog.ParseGTIDSet(s.Source.Flavor, s.End.GTIDSet)
			if err != nil || !set.Contains(end) {
				return i, fmt.Sprintf("segment %d holds transactions after the %s position %q, which still needs them", s.Seq, name, protect[name]), nil
			}
		}
	}
	return 0, "the archive holds no segments", nil
}

// Prune applies the retention policy to the store at now. With dryRun it
// only reports what it would delete, writing nothing (and taking no lock).
// Otherwise it takes the backup lock first: while a backup or another
// prune runs it returns a *LockedError and deletes nothing. On an error
// midway the report says what was deleted so far; what is left is
// consistent, and the next prune finishes the work.
func Prune(ctx context.Context, st storage.Store, p Policy, now time.Time, dryRun bool, log *slog.Logger) (rep *Report, err error) {
	if log == nil {
		log = slog.Default()
	}
	if p.KeepLast < 1 {
		return nil, fmt.Errorf("retention.keep_last is %d: keep at least 1 backup", p.KeepLast)
	}
	if p.KeepWithin < 0 {
		return nil, fmt.Errorf("retention.keep_within must not be negative")
	}
	rep = &Report{Store: st.String(), DryRun: dryRun, Now: now.UTC(), KeepLast: p.KeepLast, KeepWithin: p.KeepWithin.String(),
		Kept: []KeptBackup{}, DeletedBackups: []PrunedBackup{}, DeletedSegs: []PrunedSegment{}}
	if !dryRun {
		lock, err := acquireLockAs(ctx, st, lockPrune, "", log)
		if err != nil {
			return nil, err
		}
		var done func()
		ctx, done = lock.guard(ctx, log, &err)
		defer done()
	}

	ms, err := List(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	// The newest backups are kept and everything older may go: a manifest
	// dated in the future would make itself the one kept. Retention does
	// not guess which backup is genuine; it stops.
	for _, m := range ms {
		if m.SnapshotTime.After(now.Add(maxClockSkew)) {
			return nil, fmt.Errorf("backup %s claims a snapshot at %s, after now (%s): a forged manifest or a clock far off; prune deletes nothing while it is there: examine %s and remove that backup from the store if it is not one of yours",
				m.ID, m.SnapshotTime.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), ManifestKey(m.ID))
		}
	}
	ds := selectBackups(ms, p, now)
	var kept []*Manifest
	for _, d := range ds {
		m := d.m
		if d.keep {
			kept = append(kept, m)
			rep.Kept = append(rep.Kept, KeptBackup{ID: m.ID, SnapshotTime: m.SnapshotTime, Position: m.Position, StoredBytes: m.StoredBytes, Reasons: d.reasons})
		} else {
			rep.DeletedBackups = append(rep.DeletedBackups, PrunedBackup{ID: m.ID, SnapshotTime: m.SnapshotTime, Position: m.Position,
				StoredBytes: m.StoredBytes, Objects: len(m.Objects()) + 1, Why: d.why})
			rep.FreedBytes += m.StoredBytes
		}
	}
	ix, err := archive.Load(ctx, st, false)
	if err != nil {
		return nil, fmt.Errorf("read the archive: %w", err)
	}
	n, why, err := prunableSegments(ix.Segments, kept, p.Protect)
	if err != nil {
		return nil, err
	}
	for _, s := range ix.Segments[:n] {
		rep.DeletedSegs = append(rep.DeletedSegs, PrunedSegment{Seq: s.Seq, FirstTime: s.FirstTime, LastTime: s.LastTime,
			FirstGTID: s.FirstGTID, LastGTID: s.LastGTID, Transactions: s.Txns, StoredBytes: s.StoredBytes})
		rep.FreedBytes += s.StoredBytes
	}
	if rest := ix.Segments[n:]; len(rest) > 0 {
		rep.SegmentsKept = &SegmentsKept{Count: len(rest), First: rest[0].Seq, Last: rest[len(rest)-1].Seq, Start: rest[0].Start,
			FromTime: rest[0].FirstTime, Why: why}
	}
	if dryRun {
		return rep, nil
	}

	log = log.With("part", "prune")
	for _, d := range ds {
		if d.keep {
			continue
		}
		if err := deleteBackup(ctx, st, d.m); err != nil {
			return rep, err
		}
		log.Info("deleted backup", "backup", d.m.ID, "snapshot", d.m.SnapshotTime.UTC().Format(time.RFC3339), "why", d.why)
	}
	// Holding the lock, no backup is being written: objects without a
	// manifest are an interrupted backup's (or prune's).
	left, err := leftovers(ctx, st, "")
	if err != nil {
		return rep, err
	}
	for id, keys := range left {
		for _, k := range keys {
			if err := st.Delete(ctx, k); err != nil {
				return rep, fmt.Errorf("delete leftover %s: %w", k, err)
			}
		}
		rep.Leftovers = append(rep.Leftovers, id)
		log.Info("deleted the leftovers of an interrupted backup", "leftover", id, "objects", len(keys))
	}
	sort.Strings(rep.Leftovers)
	if err := pruneSegments(ctx, st, ix, n, now, rep, log); err != nil {
		return rep, err
	}
	return rep, nil
}

// deleteBackup deletes the manifest first, so the backup ceases to exist
// for every reader at once, then every other object under its prefix.
func deleteBackup(ctx context.Context, st storage.Store, m *Manifest) error {
	if err := st.Delete(ctx, ManifestKey(m.ID)); err != nil {
		return fmt.Errorf("delete backup %s: %w", m.ID, err)
	}
	for _, o := range m.Objects() {
		if err := st.Delete(ctx, o.Key); err != nil {
			return fmt.Errorf("delete backup %s: %w", m.ID, err)
		}
	}
	// Anything else under its prefix (objects never listed in a manifest).
	var rest []string
	if err := st.List(ctx, Prefix+m.ID+"/", func(oi storage.ObjectInfo) error { rest = append(rest, oi.Key); return nil }); err != nil {
		return fmt.Errorf("delete backup %s: %w", m.ID, err)
	}
	for _, k := range rest {
		if err := st.Delete(ctx, k); err != nil {
			return fmt.Errorf("delete backup %s: %w", m.ID, err)
		}
	}
	return nil
}

// pruneSegments deletes the first n segments of the index and records
// what went in rep; archive.Truncate keeps the order readers rely on.
func pruneSegments(ctx context.Context, st storage.Store, ix *archive.Index, n int, now time.Time, rep *Report, log *slog.Logger) error {
	tr, err := archive.Truncate(ctx, st, ix, n, now)
	rep.Strays = append(rep.Strays, tr.Strays...)
	rep.CatalogDeleted = append(rep.CatalogDeleted, tr.CatalogDeleted...)
	for k, v := range tr.CatalogRewritten {
		if rep.CatalogRewritten == nil {
			rep.CatalogRewritten = map[string]string{}
		}
		rep.CatalogRewritten[k] = v
	}
	if err != nil {
		return err
	}
	if n > 0 || len(tr.Strays) > 0 || len(tr.CatalogDeleted) > 0 {
		log.Info("deleted segments", "below", tr.Floor, "count", n, "strays", len(tr.Strays), "catalog_rewritten", len(tr.CatalogRewritten), "catalog_deleted", len(tr.CatalogDeleted))
	}
	return nil
}

// Summary is one line for logs.
func (r *Report) Summary() string {
	var b strings.Builder
	verb := "deleted"
	if r.DryRun {
		verb = "would delete"
	}
	fmt.Fprintf(&b, "%s %d backup(s) and %d segment(s), %d bytes; kept %d backup(s)", verb, len(r.DeletedBackups), len(r.DeletedSegs), r.FreedBytes, len(r.Kept))
	return b.String()
}
