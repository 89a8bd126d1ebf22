package replay

import (
	"strings"
	"unicode"
)

// DDLTarget finds the object a DDL statement changes, for filtering by
// table rather than by the session's default database: "CREATE TABLE
// app.t" run while `other` is the default database is about app.t. It
// returns the database and table ("" for database-level statements), and
// false when the statement is not DDL it recognises (then the default
// database decides). For statements naming several tables (DROP TABLE a, b;
// RENAME TABLE a TO b) the first decides.
func DDLTarget(query, defaultDB string) (db, table string, ok bool) {
	t := &tokens{s: query}
	word := func() string { return strings.ToUpper(t.word()) }
	optional := func(words ...string) {
		for _, w := range words {
			save := t.pos
			if word() != w {
				t.pos = save
				return
			}
		}
	}
	skipAny := func(words ...string) {
		for {
			save := t.pos
			w := word()
			found := false
			for _, x := range words {
				if w == x {
					found = true
				}
			}
			if !found {
				t.pos = save
				return
			}
		}
	}
	name := func() (string, string, bool) { return t.qualified(defaultDB) }
	ifExists := func() {
		save := t.pos
		if word() != "IF" {
			t.pos = save
			return
		}
		save = t.pos
		if word() != "NOT" {
			t.pos = save
		}
		word() // EXISTS
	}
	// object reads what follows an object keyword, the same after CREATE,
	// ALTER and DROP; known is false for other keywords.
	object := func(kind string) (db, table string, ok, known bool) {
		switch kind {
		case "TABLE", "TABLES", "VIEW", "SEQUENCE":
			ifExists()
			db, table, ok = name()
		case "DATABASE", "SCHEMA":
			ifExists()
			db, ok = t.ident()
		case "INDEX":
			ifExists()
			t.ident()
			if word() == "ON" {
				db, table, ok = name()
			}
		case "PROCEDURE", "FUNCTION", "EVENT", "PACKAGE", "TRIGGER":
			ifExists()
			db, _, ok = name()
		default:
			return "", "", false, false
		}
		return db, table, ok, true
	}
	switch word() {
	case "CREATE":
		optional("OR", "REPLACE")
		skipAny("TEMPORARY", "UNIQUE", "FULLTEXT", "SPATIAL", "ONLINE", "OFFLINE")
		for i := 0; i < 64; i++ {
			t.skipSpace()
			if c := t.peek(); c == '`' || c == '\'' || c == '"' {
				t.skipQuoted(c)
				continue
			}
			save := t.pos
			switch w := word(); w {
			case "TRIGGER":
				// A trigger belongs to its table: BEFORE|AFTER INSERT|UPDATE|DELETE ON table.
				ifExists()
				name()
				for i := 0; i < 4; i++ {
					if word() == "ON" {
						return name()
					}
				}
				return "", "", false
			case "":
				return "", "", false
			default:
				if db, table, ok, known := object(w); known {
					return db, table, ok
				}
			}
			// ALGORITHM=..., DEFINER=..., SQL SECURITY ...: skip to the object keyword.
			if t.pos == save {
				return "", "", false
			}
		}
		return "", "", false
	case "ALTER":
		skipAny("ONLINE", "OFFLINE", "IGNORE")
		switch w := word(); w {
		case "TABLE", "VIEW", "SEQUENCE", "DATABASE", "SCHEMA":
			db, table, ok, _ := object(w)
			return db, table, ok
		}
	case "DROP":
		skipAny("TEMPORARY")
		if db, table, ok, known := object(word()); known {
			return db, table, ok
		}
	case "TRUNCATE":
		optional("TABLE")
		return name()
	case "RENAME":
		if w := word(); w == "TABLE" || w == "TABLES" {
			ifExists()
			return name()
		}
	}
	return "", "", false
}

// tokens is a minimal SQL scanner: words, quoted identifiers, comments.
type tokens struct {
	s   string
	pos int
}

func (t *tokens) skipSpace() {
	for t.pos < len(t.s) {
		c := t.s[t.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			t.pos++
		case strings.HasPrefix(t.s[t.pos:], "/*"):
			end := strings.Index(t.s[t.pos+2:], "*/")
			if end < 0 {
				t.pos = len(t.s)
				return
			}
			t.pos += end + 4
		case strings.HasPrefix(t.s[t.pos:], "-- ") || c == '#':
			end := strings.IndexByte(t.s[t.pos:], '\n')
			if end < 0 {
				t.pos = len(t.s)
				return
			}
			t.pos += end + 1
		default:
			return
		}
	}
}

// skipQuoted steps over a quoted string or identifier.
func (t *tokens) skipQuoted(q byte) {
	t.pos++
	for t.pos < len(t.s) {
		c := t.s[t.pos]
		t.pos++
		if c == '\\' && q != '`' {
			t.pos = min(t.pos+1, len(t.s))
			continue
		}
		if c == q {
			if t.peek() == q {
				t.pos++
				continue
			}
			return
		}
	}
}

func (t *tokens) peek() byte {
	if t.pos < len(t.s) {
		return t.s[t.pos]
	}
	return 0
}

// word reads a bare word; "" when the next token is not one.
func (t *tokens) word() string {
	t.skipSpace()
	start := t.pos
	for t.pos < len(t.s) {
		r := rune(t.s[t.pos])
		if r == '_' || r == '$' || unicode.IsLetter(r) || unicode.IsDigit(r) || r >= 0x80 {
			t.pos++
			continue
		}
		break
	}
	if t.pos == start && t.pos < len(t.s) && t.s[t.pos] != '`' && t.s[t.pos] != '.' {
		// An operator or punctuation (ALGORITHM=MERGE): step over it.
		t.pos++
		return t.s[start:t.pos]
	}
	return t.s[start:t.pos]
}

// qualified reads db.name or name (then in defaultDB).
func (t *tokens) qualified(defaultDB string) (db, name string, ok bool) {
	a, ok := t.ident()
	if !ok {
		return "", "", false
	}
	if t.peek() == '.' {
		t.pos++
		b, ok := t.ident()
		if !ok {
			return "", "", false
		}
		return a, b, true
	}
	return defaultDB, a, true
}

// ident reads a bare or backquoted identifier.
func (t *tokens) ident() (string, bool) {
	t.skipSpace()
	if t.peek() == '`' {
		var b strings.Builder
		t.pos++
		for t.pos < len(t.s) {
			c := t.s[t.pos]
			t.pos++
			if c == '`' {
				if t.peek() == '`' {
					b.WriteByte('`')
					t.pos++
					continue
				}
				return b.String(), true
			}
			b.WriteByte(c)
		}
		return "", false
	}
	w := t.word()
	if w == "" || !(unicode.IsLetter(rune(w[0])) || unicode.IsDigit(rune(w[0])) || w[0] == '_' || w[0] == '$' || w[0] >= 0x80) {
		return "", false
	}
	return w, true
}

// DisableEventOnReplica rewrites a CREATE EVENT or ALTER EVENT statement
// so that the event it leaves is SLAVESIDE_DISABLED, as native replication
// makes it: the replica keeps the event without running it (the primary's
// runs, and its writes replicate). ENABLE or DISABLE become DISABLE ON
// SLAVE; a CREATE without either gets it before its COMMENT or DO; an
// ALTER without either keeps the event's status and is left alone. ok is
// false when the statement is left as it was; db and name say which event
// it is about.
func DisableEventOnReplica(query, defaultDB string) (rewritten, db, name string, ok bool) {
	t := &tokens{s: query}
	// toEvent steps over OR REPLACE and DEFINER = ... up to EVENT.
	toEvent := func() bool {
		for i := 0; i < 16; i++ {
			t.skipSpace()
			if c := t.peek(); c == '`' || c == '\'' || c == '"' {
				t.skipQuoted(c)
				continue
			}
			switch strings.ToUpper(t.word()) {
			case "EVENT":
				return true
			case "", "TABLE", "VIEW", "DATABASE", "SCHEMA", "PROCEDURE", "FUNCTION", "TRIGGER", "INDEX", "SEQUENCE", "USER", "ROLE", "SERVER", "PACKAGE":
				return false
			}
		}
		return false
	}
	var create bool
	switch strings.ToUpper(t.word()) {
	case "CREATE":
		create = true
	case "ALTER":
	default:
		return query, "", "", false
	}
	if !toEvent() {
		return query, "", "", false
	}
	if create {
		save := t.pos
		if strings.ToUpper(t.word()) == "IF" {
			t.word() // NOT
			t.word() // EXISTS
		} else {
			t.pos = save
		}
	}
	if db, name, ok = t.qualified(defaultDB); !ok {
		return query, "", "", false
	}
	splice := func(from, to int) string {
		return query[:from] + "DISABLE ON SLAVE" + query[to:]
	}
	// The clauses before the body, at the top level: quoted text (a
	// COMMENT, a STARTS time) and parentheses are stepped over whole.
	depth := 0
	for t.pos < len(query) {
		t.skipSpace()
		start := t.pos
		switch c := t.peek(); c {
		case '`', '\'', '"':
			t.skipQuoted(c)
			continue
		case '(':
			depth++
			t.pos++
			continue
		case ')':
			depth--
			t.pos++
			continue
		}
		w := strings.ToUpper(t.word())
		if w == "" {
			break
		}
		if depth != 0 {
			continue
		}
		switch w {
		case "ENABLE":
			return splice(start, t.pos), db, name, true
		case "DISABLE":
			end := t.pos
			if strings.ToUpper(t.word()) == "ON" && strings.ToUpper(t.word()) == "SLAVE" {
				return query, db, name, false // already
			}
			return splice(start, end), db, name, true
		case "RENAME":
			if strings.ToUpper(t.word()) == "TO" {
				if d, n, ok := t.qualified(defaultDB); ok {
					db, name = d, n
				}
			}
		case "COMMENT", "DO":
			if !create {
				return query, db, name, false
			}
			return query[:start] + "DISABLE ON SLAVE " + query[start:], db, name, true
		}
	}
	return query, db, name, false
}
