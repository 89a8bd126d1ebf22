package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/test/harness"
)

// binlogCache holds the GTIDs of a server's binlog read so far, and where
// to read on: a long run reads each event once.
type binlogCache struct {
	file  string
	pos   int64
	gtids []string
}

// read returns every GTID in m's binlog, in order.
func (bc *binlogCache) read(ctx context.Context, m *harness.MariaDB) ([]string, error) {
	db, err := dial(ctx, m)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	files, err := binaryLogs(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	if bc.file != "" && (len(files) == 0 || files[0] > bc.file) {
		return nil, fmt.Errorf("%s: binlog %s, read up to %d, is gone (binlogs now %v)", m.Name, bc.file, bc.pos, files)
	}
	for _, f := range files {
		if f < bc.file {
			continue
		}
		from := int64(4)
		if f == bc.file {
			from = bc.pos
		}
		rows, err := db.QueryContext(ctx, fmt.Sprintf("SHOW BINLOG EVENTS IN '%s' FROM %d", f, from))
		if err != nil {
			return nil, fmt.Errorf("%s: SHOW BINLOG EVENTS IN '%s' FROM %d: %w", m.Name, f, from, err)
		}
		for rows.Next() {
			var logName, typ, info string
			var pos, serverID, endPos int64
			if err := rows.Scan(&logName, &pos, &typ, &serverID, &endPos, &info); err != nil {
				rows.Close()
				return nil, err
			}
			if typ == "Gtid" {
				// "BEGIN GTID 0-1-5" or "GTID 0-1-5" (DDL), maybe " cid=N"
				fields := strings.Fields(info)
				for i, fld := range fields {
					if fld == "GTID" && i+1 < len(fields) {
						bc.gtids = append(bc.gtids, fields[i+1])
					}
				}
			}
			bc.file, bc.pos = f, endPos
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
		if bc.file != f {
			bc.file, bc.pos = f, from
		}
	}
	return bc.gtids, nil
}

func binaryLogs(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var names []string
	for rows.Next() {
		var name string
		vals := []any{&name}
		for range cols[1:] {
			vals = append(vals, new(sql.RawBytes))
		}
		if err := rows.Scan(vals...); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	return names, rows.Err()
}

// archiveHistory is what the rounds learnt about the archive: the GTIDs
// of every segment read so far (segments never change once stored), and
// how many of them an earlier round proved equal to a primary's binlog.
type archiveHistory struct {
	segs     []segGTIDs
	verified int
}

type segGTIDs struct {
	seq   uint64
	sha   string
	gtids []string
}

// gtids reads the new segments and returns every archived GTID in order.
// The chain must be whole, and the segments read before unchanged.
func (h *archiveHistory) gtids(ctx context.Context, c *chaos) ([]string, error) {
	ix, err := archive.Load(ctx, c.store, false)
	if err != nil {
		return nil, fmt.Errorf("reading the archive's index: %w", err)
	}
	if p := archive.Chain(ix.Segments); len(p) > 0 {
		return nil, fmt.Errorf("the archive's chain is broken: %s", strings.Join(p, "; "))
	}
	if len(ix.Segments) < len(h.segs) {
		return nil, fmt.Errorf("the archive lists %d segments, %d were read before", len(ix.Segments), len(h.segs))
	}
	for i, seg := range ix.Segments {
		if i < len(h.segs) {
			if h.segs[i].seq != seg.Seq || h.segs[i].sha != seg.SHA256 {
				return nil, fmt.Errorf("segment %d (seq %d, sha256 %s) now reads seq %d, sha256 %s", i, h.segs[i].seq, h.segs[i].sha, seg.Seq, seg.SHA256)
			}
			continue
		}
		g, err := segmentGTIDs(ctx, c, seg)
		if err != nil {
			return nil, err
		}
		h.segs = append(h.segs, segGTIDs{seq: seg.Seq, sha: seg.SHA256, gtids: g})
	}
	var all []string
	for _, s := range h.segs {
		all = append(all, s.gtids...)
	}
	return all, nil
}

// segmentGTIDs reads one segment (its checksums verified on the way) and
// lists its transactions' GTIDs.
func segmentGTIDs(ctx context.Context, c *chaos, seg archive.Segment) ([]string, error) {
	rc, err := archive.OpenSegment(ctx, c.store, seg)
	if err != nil {
		return nil, fmt.Errorf("segment %d: %w", seg.Seq, err)
	}
	defer rc.Close()
	r, err := binlog.NewReader(rc, seg.Source.Flavor)
	if err != nil {
		return nil, fmt.Errorf("segment %d: %w", seg.Seq, err)
	}
	var g binlog.Grouper
	var out []string
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("segment %d: %w", seg.Seq, err)
		}
		role, err := g.Feed(ev)
		if err != nil {
			return nil, fmt.Errorf("segment %d: %w", seg.Seq, err)
		}
		if role == binlog.End {
			out = append(out, g.Txn().GTID)
		}
	}
	if len(out) != seg.Txns || (len(out) > 0 && (out[0] != seg.FirstGTID || out[len(out)-1] != seg.LastGTID)) {
		return nil, fmt.Errorf("segment %d holds %d transactions %s..%s, its manifest says %d %s..%s", seg.Seq, len(out), first(out), last(out), seg.Txns, seg.FirstGTID, seg.LastGTID)
	}
	return out, nil
}

// compareHistory checks the archive's GTIDs against the primary's binlog:
// no GTID twice; the primary's binlog, from its first transaction on,
// equals the archive's tail exactly; and what comes before that tail (the
// primary's binlog starts later when it was rebuilt from a dump) was
// proved against an earlier primary. It returns where the tail starts.
func compareHistory(archived, primary []string, verified int) (int, error) {
	index := make(map[string]int, len(archived))
	var doubled []string
	for i, g := range archived {
		if _, dup := index[g]; dup {
			doubled = append(doubled, g)
		}
		index[g] = i
	}
	if len(doubled) > 0 {
		return 0, fmt.Errorf("the archive holds %d GTIDs twice: %v", len(doubled), head(doubled))
	}
	if len(primary) == 0 {
		if verified == len(archived) {
			return len(archived), nil
		}
		return 0, fmt.Errorf("the primary's binlog is empty, the archive holds %d transactions not checked before", len(archived)-verified)
	}
	from, ok := index[primary[0]]
	if !ok {
		return 0, fmt.Errorf("the primary's first binlog transaction %s is not in the archive (archive: %d transactions, %s..%s)", primary[0], len(archived), first(archived), last(archived))
	}
	if from > verified {
		return 0, fmt.Errorf("archived transactions %d..%d (%s..%s) precede the primary's binlog and no earlier round checked them", verified, from-1, archived[verified], archived[from-1])
	}
	tail := archived[from:]
	for i := 0; i < min(len(tail), len(primary)); i++ {
		if tail[i] != primary[i] {
			return 0, fmt.Errorf("the archive departs from the primary's binlog at its transaction %d: archive %s, primary %s (%s)", i, tail[i], primary[i], gtidDiff(primary, tail))
		}
	}
	if len(tail) != len(primary) {
		return 0, fmt.Errorf("the archive holds %d transactions from %s on, the primary's binlog %d (%s)", len(tail), primary[0], len(primary), gtidDiff(primary, tail))
	}
	return from, nil
}

// gtidDiff counts what each side lacks.
func gtidDiff(want, got []string) string {
	in := func(s []string) map[string]bool {
		m := make(map[string]bool, len(s))
		for _, g := range s {
			m[g] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var missing, extra []string
	for _, x := range want {
		if !g[x] {
			missing = append(missing, x)
		}
	}
	for _, x := range got {
		if !w[x] {
			extra = append(extra, x)
		}
	}
	return fmt.Sprintf("missing from the archive %d %v, not in the primary's binlog %d %v", len(missing), head(missing), len(extra), head(extra))
}

func head(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

func first(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return s[0]
}

func last(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return s[len(s)-1]
}

// seqOf is a MariaDB GTID's sequence number (domain 0 only here, where
// gtid_strict_mode makes sequence numbers increase across failovers).
func seqOf(gtid string) int64 {
	var d, s, n int64
	fmt.Sscanf(gtid, "%d-%d-%d", &d, &s, &n)
	return n
}
