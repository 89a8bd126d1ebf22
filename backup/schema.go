package backup

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"

	"github.com/binvault/binvault/internal/dbconn"
)

// schemaInfo is everything read about the definitions at the snapshot.
type schemaInfo struct {
	defs     []Definition // in creation order (see orderDefinitions)
	dbs      []string
	tables   []*tableInfo // base tables and sequences, sorted by db, name
	warnings []string
}

type tableInfo struct {
	db, name   string
	typ        string // information_schema.TABLES.TABLE_TYPE
	engine     string // as the server spells it (InnoDB, MyISAM)
	dataLength int64
	tableRows  int64        // the server's estimate
	columns    []columnInfo // the columns dumped: every non-generated one
	pk         []string
	pkType     string // DATA_TYPE of a one-column primary key
	// history: a system-versioned table whose history rows are dumped
	// too (SELECT ... FOR SYSTEM_TIME ALL, with the period columns).
	history bool
}

type columnInfo struct {
	name     string
	dataType string
	kind     valueKind
}

func (t *tableInfo) label() string { return t.db + "." + t.name }

// consistentEngines take part in START TRANSACTION WITH CONSISTENT SNAPSHOT.
var consistentEngines = map[string]bool{"INNODB": true, "ROCKSDB": true}

// schemaOnlyEngines hold no data of their own to dump: it lives on
// another server or in other tables (dumping it would copy it twice), or
// there is none.
var schemaOnlyEngines = map[string]string{
	"FEDERATED":  "its rows live on another server",
	"CONNECT":    "its rows live in an external source",
	"SPIDER":     "its rows live on other servers",
	"MRG_MYISAM": "its rows live in the MyISAM tables it merges",
	"S3":         "its rows live in S3 objects the table names",
	"BLACKHOLE":  "",
}

// readSchema reads every definition of the user databases, on the worker
// connections in parallel (commits and DDL are blocked meanwhile, so the
// time it takes is part of the lock time).
func readSchema(ctx context.Context, flavor string, conns []*sql.Conn) (*schemaInfo, error) {
	type namedRow struct{ db, name, extra string }
	var (
		dbs                         []string
		tableRows                   []*tableInfo
		views                       []namedRow
		columns                     = map[string][]columnInfo{}
		pks                         = map[string][]string{}
		colTypes                    = map[string]string{}
		routines, triggers, events  []namedRow
		periods                     = map[string][]columnInfo{}
		unknownTypes                []string
		routineSQL, triggerOrderSQL string
	)
	notSys := func(col string) string { return notSystemSchema(col) }
	routineSQL = "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE " + notSys("ROUTINE_SCHEMA") + " ORDER BY ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE"
	triggerOrderSQL = "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS WHERE " + notSys("TRIGGER_SCHEMA") +
		" ORDER BY EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER"
	list := []func(context.Context, *sql.Conn) error{
		func(ctx context.Context, c *sql.Conn) error {
			return queryRows(ctx, c, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE "+notSys("SCHEMA_NAME")+" ORDER BY SCHEMA_NAME", func(v []sql.NullString) {
				dbs = append(dbs, v[0].String)
			})
		},
		func(ctx context.Context, c *sql.Conn) error {
			return queryRows(ctx, c, "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, ENGINE, DATA_LENGTH, TABLE_ROWS FROM information_schema.TABLES WHERE "+notSys("TABLE_SCHEMA")+" ORDER BY TABLE_SCHEMA, TABLE_NAME", func(v []sql.NullString) {
				switch v[2].String {
				case "VIEW", "SYSTEM VIEW":
					if v[2].String == "VIEW" {
						views = append(views, namedRow{db: v[0].String, name: v[1].String})
					}
					return
				}
				var dl, tr int64
				fmt.Sscan(v[4].String, &dl)
				fmt.Sscan(v[5].String, &tr)
				tableRows = append(tableRows, &tableInfo{db: v[0].String, name: v[1].String, typ: v[2].String, engine: v[3].String, dataLength: dl, tableRows: tr})
			})
		},
		func(ctx context.Context, c *sql.Conn) error {
			return queryRows(ctx, c, "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, EXTRA, GENERATION_EXPRESSION FROM information_schema.COLUMNS WHERE "+notSys("TABLE_SCHEMA")+" ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION", func(v []sql.NullString) {
				key := v[0].String + "\x00" + v[1].String
				colTypes[key+"\x00"+v[2].String] = v[3].String
				extra := strings.ToUpper(v[4].String)
				if g := strings.ToUpper(v[5].String); g == "ROW START" || g == "ROW END" {
					// A system-versioned table's explicit period column.
					periods[key] = append(periods[key], columnInfo{name: v[2].String, dataType: strings.ToLower(v[3].String), kind: kindTemporal})
					return
				}
				if strings.Contains(extra, "VIRTUAL GENERATED") || strings.Contains(extra, "STORED GENERATED") || strings.Contains(extra, "PERSISTENT GENERATED") {
					return // computed by the server on load
				}
				k, known := kindOf(v[3].String)
				if !known {
					unknownTypes = append(unknownTypes, fmt.Sprintf("%s.%s.%s (%s)", v[0].String, v[1].String, v[2].String, v[3].String))
				}
				columns[key] = append(columns[key], columnInfo{name: v[2].String, dataType: strings.ToLower(v[3].String), kind: k})
			})
		},
		func(ctx context.Context, c *sql.Conn) error {
			return queryRows(ctx, c, "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE INDEX_NAME = 'PRIMARY' AND "+notSys("TABLE_SCHEMA")+" ORDER BY TABLE_SCHEMA, TABLE_NAME, SEQ_IN_INDEX", func(v []sql.NullString) {
				key := v[0].String + "\x00" + v[1].String
				pks[key] = append(pks[key], v[2].String)
			})
		},
		func(ctx context.Context, c *sql.Conn) error {
			return queryRows(ctx, c, routineSQL, func(v []sql.NullString) {
				routines = append(routines, namedRow{v[0].String, v[1].String, v[2].String})
			})
		},
		func(ctx context.Context, c *sql.Conn) error {
			return queryRows(ctx, c, triggerOrderSQL, func(v []sql.NullString) {
				triggers = append(triggers, namedRow{v[0].String, v[1].String, v[2].String})
			})
		},
		func(ctx context.Context, c *sql.Conn) error {
			return queryRows(ctx, c, "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS WHERE "+notSys("EVENT_SCHEMA")+" ORDER BY EVENT_SCHEMA, EVENT_NAME", func(v []sql.NullString) {
				events = append(events, namedRow{db: v[0].String, name: v[1].String})
			})
		},
	}
	if err := schemaJobs(ctx, conns, list); err != nil {
		return nil, fmt.Errorf("read the definitions: %w", err)
	}
	si := &schemaInfo{dbs: dbs}
	var trxVersioned []string
	for _, t := range tableRows {
		key := t.db + "\x00" + t.name
		t.columns = columns[key]
		t.pk = pks[key]
		if len(t.pk) == 1 {
			t.pkType = strings.ToLower(colTypes[key+"\x00"+t.pk[0]])
		}
		if t.typ == "SYSTEM VERSIONED" {
			p := periods[key]
			if len(p) == 0 {
				// Implicit period columns, reachable by these names.
				p = []columnInfo{{name: "ROW_START", dataType: "timestamp", kind: kindTemporal}, {name: "ROW_END", dataType: "timestamp", kind: kindTemporal}}
			}
			if p[0].dataType == "timestamp" {
				// History is restored with system_versioning_insert_history.
				t.history = true
				t.columns = append(t.columns, p...)
			} else {
				trxVersioned = append(trxVersioned, t.label())
			}
		}
		si.tables = append(si.tables, t)
	}

	// One slot per definition, filled in parallel.
	var defs []Definition
	var jobs []func(context.Context, *sql.Conn) error
	add := func(kind, db, name, query string) {
		i := len(defs)
		defs = append(defs, Definition{Kind: kind, Database: db, Name: name})
		jobs = append(jobs, func(ctx context.Context, c *sql.Conn) error {
			row, err := showCreate(ctx, c, query)
			if err != nil {
				return fmt.Errorf("%s: %w", query, err)
			}
			stmt := createText(row)
			if !stmt.Valid {
				return fmt.Errorf("%s returned no definition: does the user have the privileges on %s.%s?", query, db, name)
			}
			d := newDefinition(kind, db, name, []byte(stmt.String))
			if v, ok := row["sql_mode"]; ok {
				s := v.String
				d.SQLMode = &s
			}
			d.TimeZone = row["time_zone"].String
			d.CharacterSetClient = row["character_set_client"].String
			d.CollationConnection = row["collation_connection"].String
			d.DatabaseCollation = row["Database Collation"].String
			defs[i] = d
			return nil
		})
	}
	for _, db := range dbs {
		add(KindDatabase, "", db, "SHOW CREATE DATABASE "+dbconn.QuoteIdent(db))
	}
	var setvals []Definition
	for _, t := range si.tables {
		q := dbconn.QuoteIdent(t.db) + "." + dbconn.QuoteIdent(t.name)
		if t.typ == "SEQUENCE" {
			add(KindSequence, t.db, t.name, "SHOW CREATE SEQUENCE "+q)
			setvals = append(setvals, Definition{Kind: KindSetval, Database: t.db, Name: t.name})
			continue
		}
		add(KindTable, t.db, t.name, "SHOW CREATE TABLE "+q)
	}
	for _, r := range routines {
		add(KindRoutine, r.db, r.name, "SHOW CREATE "+r.extra+" "+dbconn.QuoteIdent(r.db)+"."+dbconn.QuoteIdent(r.name))
	}
	for _, v := range views {
		add(KindView, v.db, v.name, "SHOW CREATE VIEW "+dbconn.QuoteIdent(v.db)+"."+dbconn.QuoteIdent(v.name))
	}
	for _, t := range triggers {
		add(KindTrigger, t.db, t.name, "SHOW CREATE TRIGGER "+dbconn.QuoteIdent(t.db)+"."+dbconn.QuoteIdent(t.name))
	}
	for _, e := range events {
		add(KindEvent, e.db, e.name, "SHOW CREATE EVENT "+dbconn.QuoteIdent(e.db)+"."+dbconn.QuoteIdent(e.name))
	}
	// A sequence's next value is state, not definition: SETVAL restores it.
	for i := range setvals {
		sv := &setvals[i]
		jobs = append(jobs, func(ctx context.Context, c *sql.Conn) error {
			var next, round sql.NullString
			q := dbconn.QuoteIdent(sv.Database) + "." + dbconn.QuoteIdent(sv.Name)
			if err := c.QueryRowContext(ctx, "SELECT next_not_cached_value, cycle_count FROM "+q).Scan(&next, &round); err != nil {
				return fmt.Errorf("read sequence %s: %w", q, err)
			}
			sv.SQL = fmt.Sprintf("SELECT SETVAL(%s, %s, 0, %s)", q, next.String, round.String)
			return nil
		})
	}
	if err := schemaJobs(ctx, conns, jobs); err != nil {
		return nil, fmt.Errorf("read the definitions: %w", err)
	}
	si.defs = append(defs, setvals...)
	orderDefinitions(si.defs)

	if len(trxVersioned) > 0 {
		si.warnings = append(si.warnings, "system-versioned tables with transaction-id periods are backed up with their current rows only, without history: "+strings.Join(trxVersioned, ", "))
	}
	if len(unknownTypes) > 0 {
		si.warnings = append(si.warnings, "columns of types this binvault was not tested with, dumped as quoted strings: "+strings.Join(unknownTypes, ", "))
	}
	return si, nil
}

// orderDefinitions sorts into creation order, stable within a kind:
// databases, tables and sequences, then after the data routines (views
// and triggers may call them), views, triggers (in their action order),
// events, and sequence values.
func orderDefinitions(defs []Definition) {
	rank := map[string]int{KindDatabase: 0, KindTable: 1, KindSequence: 1, KindRoutine: 2, KindView: 3, KindTrigger: 4, KindEvent: 5, KindSetval: 6}
	sort.SliceStable(defs, func(i, j int) bool { return rank[defs[i].Kind] < rank[defs[j].Kind] })
}

// createText picks the statement column of a SHOW CREATE result.
func createText(row map[string]sql.NullString) sql.NullString {
	for k, v := range row {
		if strings.HasPrefix(k, "Create ") || k == "SQL Original Statement" {
			return v
		}
	}
	return sql.NullString{}
}

// showCreate runs a SHOW CREATE statement and returns its one row by
// column name.
func showCreate(ctx context.Context, c *sql.Conn, query string) (map[string]sql.NullString, error) {
	rows, err := c.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("no row")
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	out := make(map[string]sql.NullString, len(cols))
	for i, c := range cols {
		out[c] = vals[i]
	}
	return out, rows.Err()
}

// queryRows runs a query and calls fn for each row, every column as a
// nullable string.
func queryRows(ctx context.Context, c *sql.Conn, query string, fn func([]sql.NullString)) error {
	rows, err := c.QueryContext(ctx, query)
	if err != nil {
		return fmt.Errorf("%s: %w", query, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		fn(vals)
	}
	return rows.Err()
}

// engineWarnings names the tables the snapshot does not cover, and those
// whose data is not dumped.
func engineWarnings(tables []*tableInfo) (inconsistent, schemaOnly []string) {
	for _, t := range tables {
		if t.typ == "SEQUENCE" {
			continue
		}
		if why, ok := schemaOnlyEngines[strings.ToUpper(t.engine)]; ok {
			if why != "" {
				schemaOnly = append(schemaOnly, fmt.Sprintf("%s (%s: %s)", t.label(), t.engine, why))
			}
			continue
		}
		if !consistentEngines[strings.ToUpper(t.engine)] {
			inconsistent = append(inconsistent, fmt.Sprintf("%s (%s)", t.label(), t.engine))
		}
	}
	return inconsistent, schemaOnly
}
