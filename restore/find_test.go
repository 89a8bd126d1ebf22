package restore

import "testing"

func TestDropsDatabase(t *testing.T) {
	for stmt, want := range map[string]bool{
		"DROP DATABASE app":            true,
		"drop  schema IF EXISTS `app`": true,
		"DROP\n\tDATABASE app":         true,
		"DROP TABLE app.t":             false,
		"CREATE DATABASE app":          false,
		"DROP":                         false,
		"/* x */ DROP DATABASE app":    false, // the server logs no leading comment; not guessed
	} {
		if got := dropsDatabase(stmt); got != want {
			t.Errorf("dropsDatabase(%q) = %v, want %v", stmt, got, want)
		}
	}
}
