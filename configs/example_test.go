// Package configs holds the example configuration; its test keeps the file
// loadable and in step with the code's defaults.
package configs

import (
	"os"
	"reflect"
	"regexp"
	"testing"

	"github.com/binvault/binvault/internal/config"
)

func TestExampleLoads(t *testing.T) {
	t.Setenv("REPL_PASSWORD", "example-password")
	cfg, err := config.Load("binvault.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	got := *cfg
	// The fields the example must set because they have no default.
	got.Source, got.Path = want.Source, want.Path
	if !reflect.DeepEqual(stripUnexported(got), stripUnexported(want)) {
		t.Errorf("example differs from config.Default():\nexample %+v\ndefault %+v", got, want)
	}
}

// Every key the decoder knows appears in the example, commented or not.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("binvault.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range config.Keys() {
		leaf := key[len(key)-len(lastElem(key)):]
		if !regexp.MustCompile(`(?m)^[ #]*` + regexp.QuoteMeta(leaf) + `:`).Match(data) {
			t.Errorf("key %s is not documented in binvault.example.yaml", key)
		}
	}
}

func lastElem(key string) string {
	for i := len(key) - 1; i >= 0; i-- {
		if key[i] == '.' {
			return key[i+1:]
		}
	}
	return key
}

func stripUnexported(c config.Config) config.Config {
	return config.Config{Source: c.Source, Replica: c.Replica, Storage: c.Storage, Spool: c.Spool,
		Archive: c.Archive, Backup: c.Backup, Retention: c.Retention, HTTP: c.HTTP, Path: c.Path}
}
