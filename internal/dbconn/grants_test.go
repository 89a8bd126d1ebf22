package dbconn

import (
	"reflect"
	"testing"
)

// Lines as MariaDB 10.11.19 printed them (SHOW GRANTS FOR ...), and as
// MySQL 8.0's reference manual shows them (SHOW GRANTS statement, roles).
var (
	mariadbRepl = []string{
		"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `probe1`@`%` IDENTIFIED BY PASSWORD '*B69027D44F6E5EDC07F1AEAD1477967B16F28227'",
		"GRANT ALL PRIVILEGES ON `db1`.* TO `probe1`@`%`",
		"GRANT SELECT (`id`, `v`), INSERT (`v`) ON `probedb`.`t` TO `probe1`@`%`",
		"GRANT EXECUTE ON PROCEDURE `mysql`.`addgeometrycolumn` TO `probe1`@`%`",
	}
	mariadbAdminAndRole = []string{
		"GRANT `probe_role` TO `probe2`@`%`",
		"GRANT SUPER, READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, BINLOG REPLAY, SLAVE MONITOR ON *.* TO `probe2`@`%` IDENTIFIED BY PASSWORD '*7446F64EFCFB1294A6DE20CAE7E49C2377A9AA25'",
		"GRANT RELOAD, SHOW VIEW ON *.* TO `probe_role`",
		"SET DEFAULT ROLE `probe_role` FOR `probe2`@`%`",
	}
	mariadbRoot = []string{
		"GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` IDENTIFIED VIA unix_socket OR mysql_native_password WITH GRANT OPTION",
		"GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION",
	}
	mysql8 = []string{
		"GRANT SELECT, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `u1`@`localhost`",
		"GRANT BACKUP_ADMIN,REPLICATION_SLAVE_ADMIN ON *.* TO `u1`@`localhost`",
		"GRANT SELECT, INSERT, UPDATE, DELETE ON `db1`.* TO `u1`@`localhost`",
		"GRANT `r1`@`%`,`r2`@`%` TO `u1`@`localhost`",
	}
	// A database whose name looks like the rest of a global grant must
	// not make the grant global.
	tricky = []string{
		"GRANT SELECT ON `x ON *.* TO`.* TO `u`@`%`",
		"GRANT INSERT (`a, b ON *.* TO`) ON `d`.`t` TO `u`@`%`",
	}
)

func TestGrantsReadGlobalPrivilegesOnly(t *testing.T) {
	g := ParseGrants("probe1@%", mariadbRepl)
	if want := []string{"REPLICATION CLIENT", "REPLICATION SLAVE"}; !reflect.DeepEqual(g.Global(), want) {
		t.Fatalf("global = %v, want %v", g.Global(), want)
	}
	for _, p := range []string{"REPLICATION SLAVE", "REPLICATION CLIENT", "BINLOG MONITOR", "replication  replica"} {
		if !g.Has(p) {
			t.Errorf("Has(%q) = false", p)
		}
	}
	// ALL PRIVILEGES on one database is not a global grant.
	for _, p := range []string{"SELECT", "INSERT", "RELOAD", "ALL PRIVILEGES", "EXECUTE"} {
		if g.Has(p) {
			t.Errorf("Has(%q) = true from a grant below *.*", p)
		}
	}
}

func TestGrantsDoNotConfuseSimilarNames(t *testing.T) {
	g := ParseGrants("probe2@%", mariadbAdminAndRole)
	// REPLICATION SLAVE ADMIN is not REPLICATION SLAVE (a substring match
	// said it was).
	if g.Has("REPLICATION SLAVE") {
		t.Error("REPLICATION SLAVE ADMIN satisfied REPLICATION SLAVE")
	}
	for _, p := range []string{"SUPER", "READ ONLY ADMIN", "READ_ONLY ADMIN", "REPLICATION SLAVE ADMIN", "REPLICATION REPLICA ADMIN", "BINLOG REPLAY", "REPLICA MONITOR",
		"RELOAD", "SHOW VIEW"} { // the last two from the active role
		if !g.Has(p) {
			t.Errorf("Has(%q) = false", p)
		}
	}
	if got := g.Missing("RELOAD", "SELECT", "SHOW VIEW", "EVENT"); !reflect.DeepEqual(got, []string{"SELECT", "EVENT"}) {
		t.Errorf("Missing = %v", got)
	}
}

func TestGrantsAllPrivileges(t *testing.T) {
	g := ParseGrants("root@localhost", mariadbRoot)
	for _, p := range []string{"SELECT", "REPLICATION SLAVE", "BINLOG REPLAY", "BACKUP_ADMIN"} {
		if !g.Has(p) {
			t.Errorf("ALL PRIVILEGES ON *.* lacks %q", p)
		}
	}
	if g.Has("PROXY") {
		t.Error("a PROXY grant on an account counted as global")
	}
}

func TestGrantsMySQL8(t *testing.T) {
	g := ParseGrants("u1@localhost", mysql8)
	want := []string{"BACKUP_ADMIN", "RELOAD", "REPLICATION CLIENT", "REPLICATION SLAVE", "REPLICATION_SLAVE_ADMIN", "SELECT"}
	if !reflect.DeepEqual(g.Global(), want) {
		t.Fatalf("global = %v, want %v", g.Global(), want)
	}
	if g.Has("UPDATE") {
		t.Error("a database-level UPDATE counted as global")
	}
}

func TestGrantsIgnoreLookalikesInNames(t *testing.T) {
	g := ParseGrants("u@%", tricky)
	if len(g.Global()) != 0 {
		t.Fatalf("global = %v from grants on a database and a column named like *.*", g.Global())
	}
}

func TestGrantStatementQuotesTheAccount(t *testing.T) {
	g := ParseGrants("o'brien@10.0.%", nil)
	want := `GRANT RELOAD, EVENT ON *.* TO 'o''brien'@'10.0.%'`
	if got := g.GrantStatement("", "RELOAD", "EVENT"); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestQuoteString(t *testing.T) {
	for in, want := range map[string]string{
		``:            `''`,
		`Europe/Oslo`: `'Europe/Oslo'`,
		`it's`:        `'it''s'`,
		`a\b`:         `'a\\b'`,
		`\'`:          `'\\'''`,
	} {
		if got := QuoteString(in); got != want {
			t.Errorf("QuoteString(%q) = %s, want %s", in, got, want)
		}
	}
}
