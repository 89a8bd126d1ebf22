package config

import (
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

	// Path is the file the configuration came from ("" for defaults).
	Path string `yaml:"-"`
	// secrets are the values ${VAR} expanded to, scrubbed from errors.
	secrets []string
}

type Source struct {
	DSN      string `yaml:"dsn"`
	ServerID uint32 `yaml:"server_id"`
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
}

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
)

// Default returns the configuration used for every key the file leaves out.
func Default() Config {
	return Config{
		Storage:   Storage{URL: DefaultStorageURL},
		Spool:     Spool{Dir: DefaultSpoolDir},
		Archive:   Archive{SegmentMaxBytes: DefaultSegmentMaxBytes, RPOTarget: Duration(DefaultRPOTarget)},
		Backup:    Backup{Parallel: DefaultBackupParallel, ChunkSize: DefaultChunkSize},
		Retention: Retention{KeepLast: DefaultKeepLast, KeepWithin: Duration(DefaultKeepWithin)},
		HTTP:      HTTP{Listen: DefaultHTTPListen},
	}
}

// Load reads, expands, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("config file %s does not exist: pass --config FILE or set BINVAULT_CONFIG (configs/binvault.example.yaml is a starting point)", path)
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data, path, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse decodes a configuration; lookup resolves ${VAR} references.
func Parse(data []byte, path string, lookup func(string) (string, bool)) (*Config, error) {
	cfg := Default()
	cfg.Path = path
	if err := decode(data, path, lookup, &cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Validate checks every field; the first problem is returned, naming the key.
func (c *Config) Validate() error {
	fail := func(key, format string, args ...any) error {
		return c.errorf("%s: %s", key, fmt.Sprintf(format, args...))
	}
	if c.Source.DSN == "" {
		return fail("source.dsn", "is required: the primary to stream from, e.g. mysql://repl:${REPL_PASSWORD}@primary:3306")
	}
	if _, err := dbconn.Parse(c.Source.DSN); err != nil {
		return fail("source.dsn", "%v", err)
	}
	if c.Source.ServerID == 0 {
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
