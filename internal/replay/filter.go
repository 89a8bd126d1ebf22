package replay

import (
	"path/filepath"
	"strings"
)

// Filter decides which tables and databases the target receives: "db"
// or "db.table" patterns with the wildcards * and ?. The zero value
// passes everything.
type Filter struct{ include, exclude []string }

// NewFilter builds a filter; exclude wins over include.
func NewFilter(include, exclude []string) Filter { return Filter{include, exclude} }

// Table reports whether rows of db.table are applied.
func (f Filter) Table(db, table string) bool {
	return f.allows(db, table, true)
}

// Database reports whether a statement whose default database is db is applied.
func (f Filter) Database(db string) bool {
	return f.allows(db, "", false)
}

func (f Filter) allows(db, table string, hasTable bool) bool {
	match := func(p string) bool {
		pdb, ptable, qualified := strings.Cut(p, ".")
		if ok, _ := filepath.Match(pdb, db); !ok {
			return false
		}
		if !qualified {
			return true
		}
		if !hasTable {
			// A db.table pattern names a database for statements only when
			// it covers every table of it.
			return ptable == "*"
		}
		ok, _ := filepath.Match(ptable, table)
		return ok
	}
	for _, p := range f.exclude {
		if match(p) {
			return false
		}
	}
	if len(f.include) == 0 {
		return true
	}
	for _, p := range f.include {
		if match(p) {
			return true
		}
		// A statement in a database with included tables is applied: DDL
		// creating those tables must reach the replica.
		if !hasTable {
			if pdb, _, _ := strings.Cut(p, "."); pdb != "" {
				if ok, _ := filepath.Match(pdb, db); ok {
					return true
				}
			}
		}
	}
	return false
}
