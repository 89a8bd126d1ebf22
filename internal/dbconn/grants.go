package dbconn

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
)

// Querier is what ReadGrants needs of a *sql.DB or *sql.Conn.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Grants is the set of global privileges (those granted ON *.*) of the
// current account and of its active roles, as SHOW GRANTS lists them.
// Privileges on one database, table, column or routine are not global and
// never count: a preflight asks whether the user can act on the whole
// server.
type Grants struct {
	// Account is CURRENT_USER(), user@host, for messages.
	Account string
	global  map[string]bool
}

// aliases maps the other spellings of a privilege to one name: MariaDB
// 10.5 renamed REPLICATION CLIENT to BINLOG MONITOR and accepts REPLICA
// for SLAVE; READ_ONLY ADMIN is also written READ ONLY ADMIN; MySQL
// writes its dynamic privileges with underscores.
var aliases = map[string]string{
	"ALL":                       "ALL PRIVILEGES",
	"BINLOG MONITOR":            "REPLICATION CLIENT",
	"REPLICATION REPLICA":       "REPLICATION SLAVE",
	"REPLICATION REPLICA ADMIN": "REPLICATION SLAVE ADMIN",
	"REPLICA MONITOR":           "SLAVE MONITOR",
	"READ ONLY ADMIN":           "READ_ONLY ADMIN",
}

// normPrivilege folds case, white space and aliases.
func normPrivilege(p string) string {
	p = strings.ToUpper(strings.Join(strings.Fields(p), " "))
	if a, ok := aliases[p]; ok {
		return a
	}
	return p
}

// ReadGrants reads the current account's global privileges.
func ReadGrants(ctx context.Context, q Querier) (Grants, error) {
	var account string
	if err := q.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&account); err != nil {
		return Grants{}, err
	}
	rows, err := q.QueryContext(ctx, "SHOW GRANTS")
	if err != nil {
		return Grants{}, err
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return Grants{}, err
		}
		lines = append(lines, line)
	}
	if err := rows.Err(); err != nil {
		return Grants{}, err
	}
	return ParseGrants(account, lines), nil
}

// ParseGrants reads SHOW GRANTS lines (MariaDB's and MySQL's syntax). Lines
// that grant roles, proxy rights or privileges below the global level, and
// lines it cannot read, add nothing.
func ParseGrants(account string, lines []string) Grants {
	g := Grants{Account: account, global: map[string]bool{}}
	for _, line := range lines {
		privs, level, ok := splitGrant(line)
		if !ok || level != "*.*" {
			continue
		}
		for _, p := range privs {
			g.global[normPrivilege(p)] = true
		}
	}
	return g
}

// splitGrant cuts "GRANT <privileges> ON [<object type>] <level> TO ..."
// into its privileges (column lists dropped) and its level, honouring
// quotes, backticks and parentheses, where " ON ", "," and " TO " may
// appear as data.
func splitGrant(line string) (privs []string, level string, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(line), "GRANT ")
	if !found {
		return nil, "", false
	}
	var cur strings.Builder
	depth := 0
	var quote byte
	i := 0
	for ; i < len(rest); i++ {
		c := rest[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
			if depth == 0 {
				cur.WriteByte(c)
			}
			continue
		case c == '`' || c == '\'' || c == '"':
			quote = c
			if depth == 0 {
				cur.WriteByte(c)
			}
			continue
		case c == '(':
			depth++
			continue
		case c == ')':
			depth--
			continue
		}
		if depth > 0 {
			continue
		}
		if c == ',' {
			privs = append(privs, cur.String())
			cur.Reset()
			continue
		}
		if strings.HasPrefix(rest[i:], " ON ") {
			privs = append(privs, cur.String())
			i += len(" ON ")
			break
		}
		cur.WriteByte(c)
	}
	if i >= len(rest) {
		return nil, "", false // no ON: a role grant
	}
	target := rest[i:]
	for _, kind := range []string{"TABLE ", "FUNCTION ", "PROCEDURE ", "PACKAGE BODY ", "PACKAGE "} {
		if t, ok := strings.CutPrefix(target, kind); ok {
			target = "routine " + t // never global
			break
		}
	}
	level, _, found = strings.Cut(target, " TO ")
	if !found {
		return nil, "", false
	}
	for j := range privs {
		privs[j] = strings.TrimSpace(privs[j])
	}
	return privs, strings.TrimSpace(level), true
}

// Has reports whether the account holds privilege p on *.*, by itself or
// through ALL PRIVILEGES (which covers everything but GRANT OPTION and
// PROXY).
func (g Grants) Has(p string) bool {
	p = normPrivilege(p)
	if g.global[p] {
		return true
	}
	return g.global["ALL PRIVILEGES"] && p != "GRANT OPTION" && p != "PROXY"
}

// HasAny reports whether the account holds one of privs.
func (g Grants) HasAny(privs ...string) bool {
	for _, p := range privs {
		if g.Has(p) {
			return true
		}
	}
	return false
}

// Missing returns those of privs the account lacks, in the order given.
func (g Grants) Missing(privs ...string) []string {
	var out []string
	for _, p := range privs {
		if !g.Has(p) {
			out = append(out, p)
		}
	}
	return out
}

// Global lists the global privileges held, sorted (for messages and tests).
func (g Grants) Global() []string {
	out := make([]string, 0, len(g.global))
	for p := range g.global {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// GrantStatement is the statement that gives the account privs on *.*,
// for error messages; host is used when the account is not known.
func (g Grants) GrantStatement(host string, privs ...string) string {
	return fmt.Sprintf("GRANT %s ON *.* TO %s", strings.Join(privs, ", "), g.quotedAccount(host))
}

func (g Grants) quotedAccount(host string) string {
	name, h, ok := strings.Cut(g.Account, "@")
	if !ok {
		h = host
	}
	return QuoteString(name) + "@" + QuoteString(h)
}
