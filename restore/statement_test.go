package restore

import (
	"strings"
	"testing"

	"github.com/binvault/binvault/backup"
)

// A data object runs only INSERTs into the table its manifest names,
// checked per statement: a prefix of "INSERT INTO " no longer lets a
// hostile object write mysql.global_priv or another table.
func TestCheckStatementAllowsOnlyTheObjectsTable(t *testing.T) {
	prefix := insertPrefix(backup.Table{Database: "app", Name: "users"})
	ok := "INSERT INTO `app`.`users` (`id`,`name`) VALUES (1,'a'),(2,'b');\n"
	if err := checkStatement("k", 1, []byte(ok), prefix); err != nil {
		t.Fatalf("the object's own INSERT: %v", err)
	}
	for _, bad := range []string{
		"INSERT INTO mysql.global_priv VALUES ('%','evil','{}');\n",
		"INSERT INTO `app`.`orders` (`id`) VALUES (1);\n",
		"INSERT INTO `app`.`users_x` (`id`) VALUES (1);\n",
		"insert into `app`.`users` (`id`) VALUES (1);\n",
		"GRANT ALL ON *.* TO evil;\n",
		"INSERT INTO `app`.`users` (`id`) VALUES (1)", // cut short
	} {
		err := checkStatement("backups/x/data/app.users.0001.sql.zst", 7, []byte(bad), prefix)
		if err == nil || !strings.Contains(err.Error(), "statement 7 is not an INSERT into `app`.`users`") || !strings.Contains(err.Error(), "app.users.0001") {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
	if err := checkStatement("k", 1, []byte(ok), nil); err == nil || !strings.Contains(err.Error(), "no table") {
		t.Errorf("an object no table names: %v", err)
	}
}
