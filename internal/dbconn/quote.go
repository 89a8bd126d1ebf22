package dbconn

import "strings"

// QuoteIdent quotes an identifier with backticks.
func QuoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// QuoteString quotes s as an SQL string literal: a quote is doubled and a
// backslash escaped, which the server reads back as s under the default
// sql_mode (backslash escapes on).
func QuoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}
