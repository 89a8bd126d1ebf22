package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/internal/usage"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const minimal = `
source:
  dsn: mysql://repl:${REPL_PASSWORD}@db1:3306
  server_id: 9001
`

func TestParseAppliesDefaultsAndExpandsEnv(t *testing.T) {
	cfg, err := Parse([]byte(minimal), "/etc/binvault.yaml", env(map[string]string{"REPL_PASSWORD": "s3cr3t-pw"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source.DSN != "mysql://repl:s3cr3t-pw@db1:3306" || cfg.Source.ServerID != 9001 {
		t.Fatalf("source = %+v", cfg.Source)
	}
	if cfg.Archive.SegmentMaxBytes != 64*MiB || cfg.Archive.FlushInterval != 0 || cfg.Archive.RPOTarget.D() != time.Second {
		t.Fatalf("archive defaults = %+v", cfg.Archive)
	}
	if cfg.Storage.URL != "file:///var/lib/binvault/archive" || cfg.HTTP.Listen != "127.0.0.1:9420" {
		t.Fatalf("defaults = %+v %+v", cfg.Storage, cfg.HTTP)
	}
	if cfg.Replica != nil {
		t.Fatal("replica set without a replica section")
	}
	if cfg.Source.SemiSync != "off" {
		t.Fatalf("source.semi_sync defaults to %q, want off", cfg.Source.SemiSync)
	}
}

func TestParseErrors(t *testing.T) {
	vars := env(map[string]string{"REPL_PASSWORD": "hunter2-secret", "API_KEY": "AKIAverysecret"})
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"misspelt key", minimal + "archive:\n  segment_max_byte: 1MiB\n",
			[]string{`:6: unknown key "archive.segment_max_byte"`, `did you mean "archive.segment_max_bytes"`}},
		{"unknown section", minimal + "replicas:\n  dsn: x\n", []string{`:5: unknown key "replicas"`, `did you mean "replica"`}},
		{"bad size", minimal + "archive:\n  segment_max_bytes: 64MB\n", []string{"archive.segment_max_bytes", "64MiB"}},
		{"small size", minimal + "archive:\n  segment_max_bytes: 1KiB\n", []string{"archive.segment_max_bytes", "out of range"}},
		{"bad duration", minimal + "archive:\n  flush_interval: 1 sec\n", []string{"archive.flush_interval", "not a duration"}},
		{"rpo target too small", minimal + "archive:\n  rpo_target: 10ms\n", []string{"archive.rpo_target", "out of range", "100ms"}},
		{"no close by time at all", minimal + "archive:\n  rpo_target: 0s\n", []string{"archive.rpo_target", "flush_interval", "set one of them"}},
		{"bad cron", minimal + "backup:\n  schedule: \"0 25 * * *\"\n", []string{"backup.schedule", "does not parse"}},
		{"unset env", "source:\n  dsn: mysql://u:${NOPE}@h\n  server_id: 1\n", []string{"source.dsn", "${NOPE}", "not set"}},
		{"missing dsn", "source:\n  server_id: 1\n", []string{"source.dsn: is required"}},
		{"missing server id", "source:\n  dsn: mysql://u@h\n", []string{"source.server_id: is required"}},
		{"bad scheme", "source:\n  dsn: postgres://u:${REPL_PASSWORD}@h\n  server_id: 1\n", []string{"source.dsn", "mysql://"}},
		{"bad storage", minimal + "storage:\n  url: ftp://x/y\n", []string{"storage.url", "s3://bucket/prefix"}},
		{"short bucket", minimal + "storage:\n  url: s3://ab\n", []string{"storage.url", "3 to 63"}},
		{"relative file url", minimal + "storage:\n  url: file://archive\n", []string{"storage.url", "absolute"}},
		{"parallel zero", minimal + "backup:\n  parallel: 0\n", []string{"backup.parallel", "out of range"}},
		{"chunk too small", minimal + "backup:\n  chunk_size: 64KiB\n", []string{"backup.chunk_size", "1MiB"}},
		{"chunk not a size", minimal + "backup:\n  chunk_size: big\n", []string{"backup.chunk_size"}},
		{"keep_last zero", minimal + "retention:\n  keep_last: 0\n", []string{"retention.keep_last"}},
		{"not a number", minimal + "retention:\n  keep_last: ${API_KEY}\n", []string{"retention.keep_last", "not a whole number"}},
		{"replica without dsn", minimal + "replica:\n  dsn: \"\"\n", []string{"replica.dsn: is required"}},
		{"list for scalar", minimal + "http:\n  listen: [a, b]\n", []string{"http.listen", "single value"}},
		{"bad yaml", "source: [\n", []string{"not valid YAML"}},
		{"duplicate key", minimal + "http:\n  listen: a:1\n  listen: b:2\n", []string{"listen"}},
		{"bad listen", minimal + "http:\n  listen: nope\n", []string{"http.listen", "host:port"}},
		{"serve without users", minimal + "serve:\n  listen: 127.0.0.1:3307\n", []string{"serve.users", "required"}},
		{"serve user without name", minimal + "serve:\n  listen: 127.0.0.1:3307\n  users:\n    - password_env: API_KEY\n", []string{"serve.users[0].name", "required"}},
		{"serve user with two passwords", minimal + "serve:\n  listen: 127.0.0.1:3307\n  users:\n    - name: r\n      password_env: API_KEY\n      password_file: /x\n", []string{"serve.users[0]", "exactly one"}},
		{"serve user without password", minimal + "serve:\n  listen: 127.0.0.1:3307\n  users:\n    - name: r\n", []string{"serve.users[0]", "exactly one"}},
		{"serve password env unset", minimal + "serve:\n  listen: 127.0.0.1:3307\n  users:\n    - name: r\n      password_env: NOPE_PW\n", []string{"serve.users[0].password_env", "NOPE_PW", "not set"}},
		{"serve password file missing", minimal + "serve:\n  listen: 127.0.0.1:3307\n  users:\n    - name: r\n      password_file: /nonexistent/pw\n", []string{"serve.users[0].password_file", "no such file"}},
		{"serve bad listen", minimal + "serve:\n  listen: 3307\n", []string{"serve.listen", "host:port"}},
		{"serve tls half", minimal + "serve:\n  listen: 127.0.0.1:3307\n  users:\n    - name: r\n      password_env: API_KEY\n  tls_cert: /x.pem\n", []string{"serve.tls_cert", "together"}},
		{"semi_sync unknown", minimal + "  semi_sync: on\n", []string{"source.semi_sync", `"on"`, "off, spool", "store"}},
		{"lag zero", minimal + "http:\n  max_replica_lag: 0s\n", []string{"http.max_replica_lag", "positive"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "binvault.yaml", vars)
			if err == nil {
				t.Fatal("no error")
			}
			if !usage.Is(err) {
				t.Errorf("error is not a usage error (exit 2): %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, secret := range []string{"hunter2-secret", "AKIAverysecret"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error leaks a secret: %q", err)
				}
			}
			if strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	// A literal password in a DSN, then a later error: the message must not carry it.
	y := "source:\n  dsn: mysql://repl:Literal-Pw-123@db1:3306\n  server_id: 1\nstorage:\n  url: s3://x\n"
	_, err := Parse([]byte(y), "c.yaml", env(nil))
	if err == nil || strings.Contains(err.Error(), "Literal-Pw-123") {
		t.Fatalf("err = %v", err)
	}
	// The password itself malformed in the URL: the DSN error must not echo it.
	y = "source:\n  dsn: \"mysql://repl:pa%zzword@db1:3306\"\n  server_id: 1\n"
	_, err = Parse([]byte(y), "c.yaml", env(nil))
	if err == nil || strings.Contains(err.Error(), "pa%zzword") {
		t.Fatalf("err = %v", err)
	}
}

func TestSize(t *testing.T) {
	for in, want := range map[string]Size{"64MiB": 64 * MiB, "512KiB": 512 * KiB, "1GiB": GiB, "100": 100, "7B": 7, "2 TiB": 2 * TiB} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "64MB", "-1", "1.5GiB", "MiB", "99999999999TiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	if s := (64 * MiB).String(); s != "64MiB" {
		t.Errorf("String = %s", s)
	}
}

func TestServeOnlyConfiguration(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := "storage:\n  url: file:///tmp\nserve:\n  listen: 127.0.0.1:3307\n  users:\n    - name: repl\n      password_file: pw\n"
	path := filepath.Join(dir, "binvault.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadServe(path)
	if err != nil {
		t.Fatalf("serve needs no source: %v", err)
	}
	if u := cfg.Serve.Users[0]; u.Password() != "s3cret-pw" || u.PasswordFile != pw {
		t.Fatalf("user %+v, password %q", u, u.Password())
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "source.dsn") {
		t.Fatalf("run's load without a source: %v", err)
	}
	if err := os.WriteFile(path, []byte("storage:\n  url: file:///tmp\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadServe(path); err == nil || !strings.Contains(err.Error(), "serve.listen") {
		t.Fatalf("serve without serve.listen: %v", err)
	}
}
