package test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/open"
	"github.com/binvault/binvault/test/harness"
)

// archiveSetup is a primary, an S3 server and a daemon configuration.
type archiveSetup struct {
	primary *harness.MariaDB
	s3      *harness.S3
	cfg     string
	env     []string
	store   storage.Store
	spool   string
}

func newArchiveSetup(t *testing.T, flush string) *archiveSetup {
	t.Helper()
	return newArchiveSetupWith(t, "archive:\n  segment_max_bytes: 1MiB\n  flush_interval: "+flush+"\n")
}

// newArchiveSetupWith writes the configuration sections in extra (each a
// whole top-level section) after source, storage, spool and http.
func newArchiveSetupWith(t *testing.T, extra ...string) *archiveSetup {
	t.Helper()
	p := harness.StartMariaDB(t, "primary", harness.MariaDBOptions{})
	p.Exec(t, "SET sql_log_bin=0; CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'repl-pw'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO repl@'127.0.0.1'")
	s3 := harness.StartS3(t)
	cfg := writeS3Config(t, "mysql://repl:repl-pw@"+p.Addr(), s3, "archive", extra...)
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	st, err := open.Open(context.Background(), open.Options{URL: s3.URL("archive"), Endpoint: s3.Endpoint(), Region: "us-east-1", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return &archiveSetup{primary: p, s3: s3, cfg: cfg, env: s3.Env(), store: st, spool: filepath.Join(filepath.Dir(cfg), "spool")}
}

// state reads the daemon's state file.
func (a *archiveSetup) state(t testing.TB) map[string]any {
	b, err := os.ReadFile(filepath.Join(a.spool, "state.json"))
	if err != nil {
		return nil
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

// archivedPosition is the GTID position the archive ends at, per `segments --json`.
func (a *archiveSetup) archivedPosition(t testing.TB) string {
	r := binvault(t, a.env, "segments", "--config", a.cfg, "--json")
	if r.code != 0 {
		t.Fatalf("segments: %s", r)
	}
	var rep struct {
		Coverage *struct {
			End struct {
				GTIDSet string `json:"gtid_set"`
			} `json:"end"`
		} `json:"coverage"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("segments --json: %v\n%s", err, r.stdout)
	}
	if rep.Coverage == nil {
		return ""
	}
	return rep.Coverage.End.GTIDSet
}

func (a *archiveSetup) waitArchived(t testing.TB, timeout time.Duration) {
	t.Helper()
	want := a.primary.QueryString(t, "SELECT @@gtid_binlog_pos")
	eventually(t, timeout, "the archive to reach "+want, func() bool { return a.archivedPosition(t) == want })
}

func TestArchiveHoldsEveryTransactionOnceAcrossKill9(t *testing.T) {
	a := newArchiveSetup(t, "300ms")
	d := startDaemon(t, a.env, "--config", a.cfg)
	eventually(t, 20*time.Second, "the daemon to connect", func() bool {
		if d.exited() {
			t.Fatalf("daemon exited: %s", d.log)
		}
		st := a.state(t)
		return st != nil && st["source"].(map[string]any)["connected"] == true
	})
	prepareLoadSchema(t, a.primary)
	l := startLoad(t, a.primary, 3, true)
	defer l.Stop()
	for i := 0; i < 10; i++ {
		time.Sleep(time.Duration(300+rand.IntN(1500)) * time.Millisecond)
		d.kill()
		if i%3 == 0 {
			time.Sleep(500 * time.Millisecond) // let the primary run ahead while the daemon is down
		}
		d = startDaemon(t, a.env, "--config", a.cfg)
	}
	time.Sleep(time.Second)
	l.Stop()
	if l.commits.Load() < 200 {
		t.Fatalf("load committed only %d transactions (%d errors, last %v)", l.commits.Load(), l.errs.Load(), l.lastErr.Load())
	}
	a.waitArchived(t, 60*time.Second)
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d; log:\n%s", code, d.log)
	}
	sameHistory(t, a.primary.BinlogGTIDs(t), archiveGTIDs(t, a.store), 0)
	r := binvault(t, a.env, "verify", "--config", a.cfg)
	if r.code != 0 {
		t.Fatalf("verify: %s", r)
	}
	t.Logf("%d transactions archived across 10 kill -9; %s", l.commits.Load(), strings.TrimSpace(r.stdout))
}
