package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/binvault/binvault/internal/dbconn"
)

// Config is the whole file. Field tags are the YAML keys; the decoder
// rejects any key not listed here.
type Config struct {
	Source    Source    `yaml:"source"`
	Replica   *Replica  `yaml:"replica"`
	Storage   Storage   `yaml:"storage"`
	Spool     Spool     `yaml:"spool"`
	Archive   Archive   `yaml:"archive"`
	Backup    Backup    `yaml:"backup"`
	Retention Retention `yaml:"retention"`
	HTTP      HTTP      `yaml:"http"`
	Serve     Serve     `yaml:"serve"`

	// Path is the file the configuration came from ("" for defaults).
	Path string `yaml:"-"`
	// secrets are the values ${VAR} expanded to, scrubbed from errors.
	secrets []string
}

type Source struct {
	// DSN names the primary; several hosts (host1:3306,host2:3306) name
	// the servers binvault may follow when the primary changes.
	DSN      string `yaml:"dsn"`
	ServerID uint32 `yaml:"server_id"`
	// FailoverWait is how long a lost primary has to come back writable
	// before binvault looks for another among the DSN's hosts.
	FailoverWait Duration `yaml:"failover_wait"`
	// SemiSync makes binvault a semi-synchronous replica: off, spool
	// (acknowledge once fsync'd in the spool) or store (once in the store).
	SemiSync string `yaml:"semi_sync"`
}

type Replica struct {
	DSN           string   `yaml:"dsn"`
	Include       []string `yaml:"include"`
	Exclude       []string `yaml:"exclude"`
	Delay         Duration `yaml:"delay"`
	AllowWritable bool     `yaml:"allow_writable"`
}

type Storage struct {
	URL       string `yaml:"url"`
	Endpoint  string `yaml:"endpoint"`
	Region    string `yaml:"region"`
	PathStyle bool   `yaml:"path_style"`
}

type Spool struct {
	Dir string `yaml:"dir"`
}

type Archive struct {
	SegmentMaxBytes Size `yaml:"segment_max_bytes"`
	// FlushInterval, when set, closes a segment at the latest this long
	// after it opened; 0 leaves it to RPOTarget.
	FlushInterval Duration `yaml:"flush_interval"`
	// RPOTarget closes a segment early enough that its oldest transaction
	// is in the store this long after it reached binvault.
	RPOTarget Duration `yaml:"rpo_target"`
}

type Backup struct {
	Schedule string `yaml:"schedule"`
	// Parallel is how many connections dump at once, each with its own
	// snapshot of the same instant.
	Parallel int `yaml:"parallel"`
	// ChunkSize is the uncompressed SQL size of one data object: a table
	// larger than this is split into several objects (and, with an integer
	// primary key, read in key ranges by several connections).
	ChunkSize Size `yaml:"chunk_size"`
}

type Retention struct {
	KeepLast   int      `yaml:"keep_last"`
	KeepWithin Duration `yaml:"keep_within"`
}

type HTTP struct {
	Listen string `yaml:"listen"`
	// MaxReplicaLag: /health/replica answers 503 above this lag.
	MaxReplicaLag Duration `yaml:"max_replica_lag"`
	// TokenFile holds the bearer token POST /promote asks for; without it
	// the endpoint is off.
	TokenFile string `yaml:"token_file"`
	token     string
}

// Token is the bearer token read from TokenFile ("" without one).
func (h HTTP) Token() string { return h.token }

// Serve is the binlog server: native replicas replicate from binvault.
type Serve struct {
	Listen  string      `yaml:"listen"` // "": off
	Users   []ServeUser `yaml:"users"`
	TLSCert string      `yaml:"tls_cert"`
	TLSKey  string      `yaml:"tls_key"`
}

// ServeUser is an account replicas log in with. The password comes from a
// file or an environment variable, never from the configuration itself.
type ServeUser struct {
	Name         string `yaml:"name"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	password     string
}

// Password is the account's password, read when the configuration loaded.
func (u ServeUser) Password() string { return u.password }

// Defaults, one block: what a key the file leaves out means.
// configs/binvault.example.yaml documents the same values (a test checks).
const (
	DefaultStorageURL      = "file:///var/lib/binvault/archive"
	DefaultSpoolDir        = "/var/lib/binvault/spool"
	DefaultSegmentMaxBytes = 64 * MiB
	DefaultRPOTarget       = time.Second
	DefaultBackupParallel  = 4
	DefaultChunkSize       = 64 * MiB
	DefaultKeepLast        = 7
	DefaultKeepWithin      = 168 * time.Hour
	DefaultHTTPListen      = "127.0.0.1:9420"
	DefaultMaxReplicaLag   = 5 * time.Second
	DefaultFailoverWait    = 10 * time.Second
)

// minTokenLen keeps a guessable http.token_file token out.
const minTokenLen = 16

// Default returns the configuration used for every key the file leaves out.
func Default() Config {
	return Config{
		Source:    Source{FailoverWait: Duration(DefaultFailoverWait)},
		Storage:   Storage{URL: DefaultStorageURL},
		Spool:     Spool{Dir: DefaultSpoolDir},
		Archive:   Archive{SegmentMaxBytes: DefaultSegmentMaxBytes, RPOTarget: Duration(DefaultRPOTarget)},
		Backup:    Backup{Parallel: DefaultBackupParallel, ChunkSize: DefaultChunkSize},
		Retention: Retention{KeepLast: DefaultKeepLast, KeepWithin: Duration(DefaultKeepWithin)},
		HTTP:      HTTP{Listen: DefaultHTTPListen, MaxReplicaLag: Duration(DefaultMaxReplicaLag)},
	}
}

// Load reads, expands, decodes and validates the file at path, for a
// command that talks to the primary (source: is required).
func Load(path string) (*Config, error) { return load(path, true) }

// LoadServe is Load for `binvault serve`, which needs only storage: and
// serve: (no source credentials).
func LoadServe(path string) (*Config, error) {
	cfg, err := load(path, false)
	if err != nil {
		return nil, err
	}
	if cfg.Serve.Listen == "" {
		return nil, cfg.errorf("serve.listen: is required for binvault serve: the address replicas connect to, e.g. 0.0.0.0:3307")
	}
	return cfg, nil
}

func load(path string, needSource bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("config file %s does not exist: pass --config FILE or set BINVAULT_CONFIG (configs/binvault.example.yaml is a starting point)", path)
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := parse(data, path, os.LookupEnv, needSource)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse decodes a configuration; lookup resolves ${VAR} references.
func Parse(data []byte, path string, lookup func(string) (string, bool)) (*Config, error) {
	return parse(data, path, lookup, true)
}

func parse(data []byte, path string, lookup func(string) (string, bool), needSource bool) (*Config, error) {
	cfg := Default()
	cfg.Path = path
	if err := decode(data, path, lookup, &cfg); err != nil {
		return nil, err
	}
	if err := cfg.validate(needSource, lookup); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Validate checks every field; the first problem is returned, naming the key.
func (c *Config) Validate() error { return c.validate(true, os.LookupEnv) }

func (c *Config) validate(needSource bool, lookup func(string) (string, bool)) error {
	fail := func(key, format string, args ...any) error {
		return c.errorf("%s: %s", key, fmt.Sprintf(format, args...))
	}
	if c.Source.DSN == "" && needSource {
		return fail("source.dsn", "is required: the primary to stream from, e.g. mysql://repl:${REPL_PASSWORD}@primary:3306")
	}
	if c.Source.DSN != "" {
		if _, err := dbconn.ParseHosts(c.Source.DSN); err != nil {
			return fail("source.dsn", "%v", err)
		}
	}
	if c.Source.ServerID == 0 && needSource {
		return fail("source.server_id", "is required: a server_id no other server or replica of this primary uses, e.g. 9001")
	}
	if c.Replica != nil {
		if c.Replica.DSN == "" {
			return fail("replica.dsn", "is required when replica: is present (remove the replica: section to run without one)")
		}
		if _, err := dbconn.Parse(c.Replica.DSN); err != nil {
			return fail("replica.dsn", "%v", err)
		}
		for _, l := range []struct {
			key  string
			pats []string
		}{{"replica.include", c.Replica.Include}, {"replica.exclude", c.Replica.Exclude}} {
			for i, p := range l.pats {
				if err := ValidateFilterPattern(p); err != nil {
					return fail(fmt.Sprintf("%s[%d]", l.key, i), "%q %v", p, err)
				}
			}
		}
		if c.Replica.Delay < 0 {
			return fail("replica.delay", "must not be negative (e.g. 1h, or 0 for none)")
		}
	}
	if err := c.validateStorage(); err != nil {
		return err
	}
	if c.Spool.Dir == "" {
		return fail("spool.dir", "is required: a local directory for the relay log, e.g. /var/lib/binvault/spool")
	}
	c.Spool.Dir = c.resolve(c.Spool.Dir)
	if s := c.Archive.SegmentMaxBytes; s < 64*KiB || s > 4*GiB {
		return fail("archive.segment_max_bytes", "%s is out of range: use between 64KiB and 4GiB (default 64MiB)", s)
	}
	if d := c.Archive.FlushInterval.D(); d != 0 && (d < 100*time.Millisecond || d > time.Hour) {
		return fail("archive.flush_interval", "%s is out of range: use between 100ms and 1h, or 0 to leave it to archive.rpo_target (the default)", d)
	}
	if d := c.Archive.RPOTarget.D(); d != 0 && (d < 100*time.Millisecond || d > time.Hour) {
		return fail("archive.rpo_target", "%s is out of range: use between 100ms and 1h (default 1s)", d)
	}
	if c.Archive.RPOTarget == 0 && c.Archive.FlushInterval == 0 {
		return fail("archive.rpo_target", "is 0 and so is archive.flush_interval: set one of them, or segments would close only when full (default rpo_target: 1s)")
	}
	if c.Backup.Schedule != "" {
		if _, err := cron.ParseStandard(c.Backup.Schedule); err != nil {
			return fail("backup.schedule", "%q does not parse (%v): use 5 cron fields like \"0 3 * * *\" or @daily, or leave it empty for no scheduled backups", c.Backup.Schedule, err)
		}
	}
	if p := c.Backup.Parallel; p < 1 || p > 64 {
		return fail("backup.parallel", "%d is out of range: use between 1 and 64 connections (default %d)", p, DefaultBackupParallel)
	}
	if s := c.Backup.ChunkSize; s < MiB || s > GiB {
		return fail("backup.chunk_size", "%s is out of range: use between 1MiB and 1GiB (default %s)", s, Size(DefaultChunkSize))
	}
	if c.Retention.KeepLast < 1 {
		return fail("retention.keep_last", "is %d: keep at least 1 backup (the newest is never pruned)", c.Retention.KeepLast)
	}
	if c.Retention.KeepWithin < 0 {
		return fail("retention.keep_within", "must not be negative")
	}
	if c.HTTP.Listen != "" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			return fail("http.listen", "%q is not host:port: use e.g. 127.0.0.1:9420, or \"\" to turn the HTTP server off", c.HTTP.Listen)
		}
	}
	if c.HTTP.MaxReplicaLag <= 0 {
		return fail("http.max_replica_lag", "must be positive (default %s)", DefaultMaxReplicaLag)
	}
	if c.HTTP.TokenFile != "" {
		c.HTTP.TokenFile = c.resolve(c.HTTP.TokenFile)
		b, err := os.ReadFile(c.HTTP.TokenFile)
		if err != nil {
			return fail("http.token_file", "%v: create it holding a random token (e.g. openssl rand -hex 32 > FILE; chmod 600 FILE)", err)
		}
		c.HTTP.token = strings.TrimSpace(string(b))
		if len(c.HTTP.token) < minTokenLen {
			return fail("http.token_file", "the token in %s is %d characters: use at least %d (e.g. openssl rand -hex 32)", c.HTTP.TokenFile, len(c.HTTP.token), minTokenLen)
		}
		c.secrets = append(c.secrets, c.HTTP.token)
	}
	switch c.Source.SemiSync {
	case "":
		c.Source.SemiSync = "off"
	case "off", "spool", "store":
	default:
		return fail("source.semi_sync", "%q: use off, spool (acknowledge once fsync'd in the spool) or store (once the segment is in the store)", c.Source.SemiSync)
	}
	if c.Source.FailoverWait < 0 {
		return fail("source.failover_wait", "must not be negative (default %s)", DefaultFailoverWait)
	}
	return c.validateServe(lookup)
}

func (c *Config) validateServe(lookup func(string) (string, bool)) error {
	fail := func(key, format string, args ...any) error {
		return c.errorf("%s: %s", key, fmt.Sprintf(format, args...))
	}
	s := &c.Serve
	if s.Listen == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		return fail("serve.listen", "%q is not host:port: use e.g. 0.0.0.0:3307, or leave it out to serve no replicas", s.Listen)
	}
	if len(s.Users) == 0 {
		return fail("serve.users", "is required with serve.listen: at least one account replicas log in with, e.g. - name: repl, password_file: /etc/binvault/serve-repl.pw")
	}
	seen := map[string]bool{}
	for i := range s.Users {
		u := &s.Users[i]
		key := fmt.Sprintf("serve.users[%d]", i)
		if u.Name == "" {
			return fail(key+".name", "is required: the user name replicas give in CHANGE MASTER TO MASTER_USER")
		}
		if seen[u.Name] {
			return fail(key+".name", "%q appears twice", u.Name)
		}
		seen[u.Name] = true
		switch {
		case (u.PasswordFile == "") == (u.PasswordEnv == ""):
			return fail(key, "give exactly one of password_file and password_env (the password itself never goes into the configuration)")
		case u.PasswordFile != "":
			u.PasswordFile = c.resolve(u.PasswordFile)
			b, err := os.ReadFile(u.PasswordFile)
			if err != nil {
				return fail(key+".password_file", "%v: create it holding the password (mode 0600)", err)
			}
			u.password = strings.TrimRight(string(b), "\r\n")
		default:
			v, ok := lookup(u.PasswordEnv)
			if !ok || v == "" {
				return fail(key+".password_env", "%s is not set in the environment: export it, or use password_file", u.PasswordEnv)
			}
			u.password = v
		}
		if u.password == "" {
			return fail(key, "the password is empty: replicas must log in with a password")
		}
		c.secrets = append(c.secrets, u.password)
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return fail("serve.tls_cert", "and serve.tls_key go together: give both (PEM files) or neither")
	}
	if s.TLSCert != "" {
		s.TLSCert, s.TLSKey = c.resolve(s.TLSCert), c.resolve(s.TLSKey)
		if _, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey); err != nil {
			return fail("serve.tls_cert", "%v: give a PEM certificate and its key", err)
		}
	}
	return nil
}

func (c *Config) validateStorage() error {
	fail := func(key, format string, args ...any) error {
		return c.errorf("%s: %s", key, fmt.Sprintf(format, args...))
	}
	s := &c.Storage
	u, err := url.Parse(s.URL)
	if err != nil || s.URL == "" {
		return fail("storage.url", "%q is not a URL: use s3://bucket/prefix or file:///absolute/dir", s.URL)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return fail("storage.url", "%q must name an absolute directory with three slashes, e.g. file:///var/lib/binvault/archive", s.URL)
		}
	case "s3":
		if n := len(u.Host); n < 3 || n > 63 {
			return fail("storage.url", "bucket %q must have 3 to 63 characters, as in s3://my-bucket/prefix", u.Host)
		}
		if u.User != nil {
			return fail("storage.url", "must not carry credentials: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an IAM role")
		}
	default:
		return fail("storage.url", "%q has an unsupported scheme: use s3://bucket/prefix or file:///absolute/dir", s.URL)
	}
	if s.Endpoint != "" {
		e, err := url.Parse(s.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return fail("storage.endpoint", "%q is not an http(s) URL: use e.g. http://127.0.0.1:7070, or leave it out for AWS", s.Endpoint)
		}
		if u.Scheme != "s3" {
			return fail("storage.endpoint", "only applies to s3:// storage URLs")
		}
	}
	return nil
}

// ValidateFilterPattern checks a replica filter: "db" or "db.table", where
// either part may use the wildcards * and ?.
func ValidateFilterPattern(p string) error {
	if p == "" {
		return fmt.Errorf("is empty: write db or db.table (wildcards * and ? allowed)")
	}
	parts := strings.Split(p, ".")
	if len(parts) > 2 {
		return fmt.Errorf("has more than one dot: write db or db.table (wildcards * and ? allowed)")
	}
	for _, part := range parts {
		if part == "" {
			return fmt.Errorf("has an empty name: write db or db.table (wildcards * and ? allowed)")
		}
		if _, err := filepath.Match(part, ""); err != nil {
			return fmt.Errorf("is not a valid pattern: write db or db.table (wildcards * and ? allowed)")
		}
	}
	return nil
}

// resolve makes a relative path relative to the config file's directory.
func (c *Config) resolve(p string) string {
	if filepath.IsAbs(p) || c.Path == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.Path), p)
}

// errorf builds a usage error prefixed with the file name, with every
// expanded environment value scrubbed.
func (c *Config) errorf(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if c.Path != "" {
		msg = c.Path + ": " + msg
	}
	return configError(Redact(msg, c.secrets))
}

// Redact replaces each secret in s with "***".
func Redact(s string, secrets []string) string {
	for _, v := range secrets {
		if len(v) >= 3 {
			s = strings.ReplaceAll(s, v, "***")
		}
	}
	return s
}
