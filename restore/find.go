package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/replay"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/storage"
)

// FindQuery selects archived transactions by the table they touch.
type FindQuery struct {
	DB, Table    string
	DDLOnly      bool // only statements (DDL) naming the table
	Since, Until *time.Time
}

// Found is one archived transaction that touched the table.
type Found struct {
	GTID      string    `json:"gtid"`
	Time      time.Time `json:"commit_time"`
	Segment   uint64    `json:"segment"`
	Kind      string    `json:"kind"` // "rows" or "ddl"
	Inserted  int       `json:"inserted,omitempty"`
	Updated   int       `json:"updated,omitempty"`
	Deleted   int       `json:"deleted,omitempty"`
	Statement string    `json:"statement,omitempty"`
}

// ParseTable splits "db.table".
func ParseTable(s string) (db, table string, err error) {
	db, table, ok := strings.Cut(s, ".")
	if !ok || db == "" || table == "" || strings.Contains(table, ".") {
		return "", "", usage.Errorf("--table %q: write db.table", s)
	}
	return db, table, nil
}

// Find lists the archived transactions that touched q's table, reading only
// the segments whose manifest names it (or holds DDL) in the time window.
func Find(ctx context.Context, st storage.Store, q FindQuery) ([]Found, int, error) {
	ix, err := archive.Load(ctx, st, false)
	if err != nil {
		return nil, 0, err
	}
	name := q.DB + "." + q.Table
	var out []Found
	read := 0
	for _, s := range ix.Segments {
		if q.Since != nil && s.LastTime.Before(q.Since.Truncate(time.Second)) {
			continue
		}
		if q.Until != nil && s.FirstTime.After(*q.Until) {
			continue
		}
		named := false
		for _, t := range s.Tables {
			if t == name {
				named = true
			}
		}
		if !(s.DDL || (named && !q.DDLOnly)) {
			continue
		}
		read++
		found, err := findIn(ctx, st, s, q)
		if err != nil {
			return nil, read, err
		}
		out = append(out, found...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Segment < out[j].Segment })
	return out, read, nil
}

func findIn(ctx context.Context, st storage.Store, s archive.Segment, q FindQuery) ([]Found, error) {
	rc, err := archive.OpenSegment(ctx, st, s)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	r, err := binlog.NewReaderFull(rc, s.Source.Flavor)
	if err != nil {
		return nil, fmt.Errorf("segment %d: %w", s.Seq, err)
	}
	var g binlog.Grouper
	var cur *Found
	tables := map[uint64]bool{}
	var out []Found
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("segment %d: %w", s.Seq, err)
		}
		role, err := g.Feed(ev)
		if err != nil {
			return nil, err
		}
		switch role {
		case binlog.Begin:
			cur = &Found{Segment: s.Seq}
			clear(tables)
		case binlog.Outside:
			continue
		}
		switch e := ev.Parsed.(type) {
		case *replication.TableMapEvent:
			tables[e.TableID] = string(e.Schema) == q.DB && string(e.Table) == q.Table
		case *replication.RowsEvent:
			if tables[e.TableID] && !q.DDLOnly {
				cur.Kind = "rows"
				switch ev.Header.Type {
				case replication.WRITE_ROWS_EVENTv0, replication.WRITE_ROWS_EVENTv1, replication.WRITE_ROWS_EVENTv2, replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1:
					cur.Inserted += len(e.Rows)
				case replication.UPDATE_ROWS_EVENTv0, replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2, replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1, replication.PARTIAL_UPDATE_ROWS_EVENT:
					cur.Updated += len(e.Rows) / 2 // before and after images
				default:
					cur.Deleted += len(e.Rows)
				}
			}
		case *replication.QueryEvent:
			text := strings.TrimSpace(string(e.Query))
			if db, table, ok := replay.DDLTarget(text, string(e.Schema)); ok && db == q.DB && (table == q.Table || table == "") {
				if table == q.Table || dropsDatabase(text) {
					cur.Kind = "ddl"
					cur.Statement = binlog.Shorten(text, 160)
				}
			}
		}
		if role == binlog.End {
			t := g.Txn()
			if cur.Kind != "" {
				cur.GTID = t.GTID
				cur.Time = time.Unix(int64(t.Time), 0).UTC()
				if inWindow(cur.Time, q) {
					out = append(out, *cur)
				}
			}
			cur = nil
		}
	}
}

func inWindow(t time.Time, q FindQuery) bool {
	if q.Since != nil && t.Before(q.Since.Truncate(time.Second)) {
		return false
	}
	if q.Until != nil && t.After(*q.Until) {
		return false
	}
	return true
}

// dropsDatabase reports a DROP DATABASE or DROP SCHEMA statement (which
// takes every table of the database with it), however it is spaced.
func dropsDatabase(stmt string) bool {
	w := strings.Fields(strings.ToUpper(stmt))
	return len(w) >= 2 && w[0] == "DROP" && (w[1] == "DATABASE" || w[1] == "SCHEMA")
}
