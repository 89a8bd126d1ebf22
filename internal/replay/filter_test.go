package replay

import "testing"

func TestFilterPatterns(t *testing.T) {
	f := NewFilter([]string{"app", "shop.orders", "log*.t?"}, []string{"app.secret*"})
	for _, c := range []struct {
		db, table string
		want      bool
	}{
		{"app", "users", true}, {"app", "secret_keys", false}, {"shop", "orders", true}, {"shop", "items", false},
		{"logs", "t1", true}, {"logs", "t10", false}, {"other", "x", false},
	} {
		if got := f.Table(c.db, c.table); got != c.want {
			t.Errorf("table(%s.%s) = %v, want %v", c.db, c.table, got, c.want)
		}
	}
	// Statements go by database: a database with included tables gets its DDL.
	for db, want := range map[string]bool{"app": true, "shop": true, "other": false, "logs": true} {
		if got := f.Database(db); got != want {
			t.Errorf("database(%s) = %v, want %v", db, got, want)
		}
	}
	if !NewFilter(nil, nil).Table("any", "thing") {
		t.Error("an empty filter must pass everything")
	}
}
