package test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/binvault/binvault/test/harness"
)

func TestEveryCommandAnswersHelp(t *testing.T) {
	// Every command the binary lists, so a new one cannot be missed here,
	// and every command of the contract, so none can disappear.
	top := binvault(t, nil, "--help")
	listed := map[string]bool{}
	inList := false
	for _, line := range strings.Split(top.stdout, "\n") {
		switch {
		case strings.HasPrefix(line, "Available Commands:"):
			inList = true
		case inList && strings.TrimSpace(line) == "":
			inList = false
		case inList:
			listed[strings.Fields(line)[0]] = true
		}
	}
	for _, c := range []string{"run", "serve", "backup", "backups", "segments", "find", "restore", "promote", "verify", "status", "prune", "version"} {
		if !listed[c] {
			t.Errorf("binvault --help does not list %s:\n%s", c, top.stdout)
		}
	}
	for c := range listed {
		if c == "help" || c == "completion" {
			continue
		}
		r := binvault(t, nil, c, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("binvault %s --help: %s", c, r)
		}
	}
	r := binvault(t, nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "binvault ") || !strings.Contains(r.stdout, "go1.") || !strings.Contains(r.stdout, "commit") {
		t.Errorf("version: %s", r)
	}
}

func minimalConfig(t *testing.T, dsn, storeURL string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	body := fmt.Sprintf("source:\n  dsn: %s\n  server_id: 9001\nstorage:\n  url: %s\nspool:\n  dir: %s\nhttp:\n  listen: \"\"\n%s",
		dsn, storeURL, filepath.Join(dir, "spool"), strings.Join(extra, "\n"))
	return writeFile(t, filepath.Join(dir, "binvault.yaml"), body)
}

func TestBadConfigurationExits2NamingTheProblem(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, yaml string
		env        []string
		want       []string
	}{
		{"misspelt key", "source:\n  dsn: mysql://u:p@h\n  sever_id: 1\n", nil, []string{`unknown key "source.sever_id"`, `did you mean "source.server_id"`, ":3:"}},
		{"bad size", "source:\n  dsn: mysql://u:p@h\n  server_id: 1\narchive:\n  segment_max_bytes: lots\n", nil, []string{"archive.segment_max_bytes"}},
		{"unset variable", "source:\n  dsn: mysql://u:${NOT_SET_ANYWHERE}@h\n  server_id: 1\n", nil, []string{"NOT_SET_ANYWHERE", "not set"}},
		{"secret stays secret", "source:\n  dsn: mysql://u:${REPL_PASSWORD}@h\n  server_id: 1\nstorage:\n  url: ftp://x\n", []string{"REPL_PASSWORD=Sup3rSecret!"}, []string{"storage.url"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := writeFile(t, filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".yaml"), c.yaml)
			for _, cmd := range []string{"run", "status", "segments"} {
				r := binvault(t, c.env, cmd, "--config", cfg)
				if r.code != 2 {
					t.Errorf("%s: want exit 2: %s", cmd, r)
				}
				for _, w := range c.want {
					if !strings.Contains(r.stderr, w) {
						t.Errorf("%s: stderr lacks %q: %s", cmd, w, r)
					}
				}
				if strings.Contains(r.stderr+r.stdout, "Sup3rSecret") {
					t.Errorf("%s: output leaks the password: %s", cmd, r)
				}
				if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 0 {
					t.Errorf("%s: error is not one line: %s", cmd, r)
				}
			}
		})
	}
	r := binvault(t, nil, "status")
	if r.code != 2 || !strings.Contains(r.stderr, "--config") {
		t.Errorf("no config: %s", r)
	}
	r = binvault(t, nil, "status", "--config", filepath.Join(dir, "missing.yaml"))
	if r.code != 2 || !strings.Contains(r.stderr, "does not exist") {
		t.Errorf("missing config file: %s", r)
	}
	r = binvault(t, nil, "status", "--bogus-flag")
	if r.code != 2 {
		t.Errorf("unknown flag: %s", r)
	}
}

func TestStatusPreflight(t *testing.T) {
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	p.Exec(t, "SET sql_log_bin=0; CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'repl-pw'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO repl@'127.0.0.1'")
	s3 := harness.StartS3(t)
	s3Env := s3.Env()
	goodDSN := "mysql://repl:${REPL_PASSWORD}@" + p.Addr()
	env := append([]string{"REPL_PASSWORD=repl-pw"}, s3Env...)

	t.Run("ready", func(t *testing.T) {
		cfg := minimalConfig(t, goodDSN, "file://"+t.TempDir())
		r := binvault(t, env, "status", "--config", cfg)
		if r.code != 0 || !strings.Contains(r.stdout, "mariadb") || !strings.Contains(r.stdout, "binlog ROW/FULL") || !strings.Contains(r.stdout, "reachable") {
			t.Fatalf("%s", r)
		}
		r = binvault(t, env, "status", "--config", cfg, "--json")
		var doc map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 || doc["ok"] != true {
			t.Fatalf("--json: %v: %s", err, r)
		}
	})
	t.Run("s3 store", func(t *testing.T) {
		cfg := writeS3Config(t, goodDSN, s3, "status")
		r := binvault(t, env, "status", "--config", cfg)
		if r.code != 0 || !strings.Contains(r.stdout, "s3://") {
			t.Fatalf("%s", r)
		}
		bad := []string{"REPL_PASSWORD=repl-pw", "AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret-key"}
		r = binvault(t, bad, "status", "--config", cfg)
		if r.code != 2 || strings.Contains(r.stdout+r.stderr, "wrong-secret-key") {
			t.Fatalf("wrong S3 secret: want exit 2 without the secret: %s", r)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		cfg := minimalConfig(t, goodDSN, "file://"+t.TempDir())
		r := binvault(t, []string{"REPL_PASSWORD=nope-not-it"}, "status", "--config", cfg)
		if r.code != 2 || !strings.Contains(r.stdout, "access denied") || strings.Contains(r.stdout+r.stderr, "nope-not-it") {
			t.Fatalf("%s", r)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		port, _ := harness.FreePort()
		cfg := minimalConfig(t, fmt.Sprintf("mysql://repl:x@127.0.0.1:%d", port), "file://"+t.TempDir())
		r := binvault(t, nil, "status", "--config", cfg)
		if r.code != 1 || !strings.Contains(r.stdout, "connection refused") {
			t.Fatalf("%s", r)
		}
	})
	t.Run("statement format", func(t *testing.T) {
		st := harness.StartMariaDB(t, "statement", harness.MariaDBOptions{Extra: []string{"--binlog-format=STATEMENT"}})
		cfg := minimalConfig(t, st.DSN("", ""), "file://"+t.TempDir())
		r := binvault(t, nil, "status", "--config", cfg)
		if r.code != 2 || !strings.Contains(r.stdout, "binlog_format is STATEMENT: set binlog_format=ROW") {
			t.Fatalf("%s", r)
		}
	})
}

func writeS3Config(t *testing.T, dsn string, s3 *harness.S3, prefix string, extra ...string) string {
	t.Helper()
	return writeS3ConfigWith(t, s3, s3Config{dsn: dsn, prefix: prefix, extra: extra})
}
