package test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// servedSetup is a primary, binvault run with serve: on a free port, and
// the account replicas log in with.
type servedSetup struct {
	*archiveSetup
	serveAddr string
	web       string
	user, pw  string
}

func newServedSetupWith(t *testing.T, extra ...string) *servedSetup {
	t.Helper()
	a := newArchiveSetup(t, "300ms")
	ports := make([]int, 2)
	for i := range ports {
		p, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	s := &servedSetup{archiveSetup: a, serveAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]), web: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		user: "repl", pw: "serve-pw-1"}
	a.env = append(a.env, "SERVE_PW="+s.pw)
	a.cfg = writeS3ConfigWith(t, a.s3, s3Config{dsn: "mysql://repl:repl-pw@" + a.primary.Addr(), prefix: "archive", listen: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		extra: append([]string{"archive:\n  segment_max_bytes: 256KiB\n  flush_interval: 300ms\n",
			fmt.Sprintf("serve:\n  listen: %s\n  users:\n    - name: %s\n      password_env: SERVE_PW\n", s.serveAddr, s.user)}, extra...)})
	a.spool = filepath.Join(filepath.Dir(a.cfg), "spool")
	return s
}

// startNativeReplica starts a MariaDB replica of binvault's binlog server.
func (s *servedSetup) startNativeReplica(t *testing.T, name string, extra ...string) *harness.MariaDB {
	t.Helper()
	r := harness.StartMariaDB(t, name, harness.MariaDBOptions{Extra: append([]string{"--slave-parallel-threads=4", "--slave-parallel-mode=optimistic"}, extra...)})
	host, port, _ := strings.Cut(s.serveAddr, ":")
	r.Exec(t, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%s, MASTER_USER='%s', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1", host, port, s.user, s.pw))
	r.Exec(t, "START SLAVE")
	return r
}

// waitReplicaAt waits until the replica has applied the primary's whole
// position, failing early when its replication stopped.
func waitReplicaAt(t *testing.T, p, r *harness.MariaDB, timeout time.Duration) {
	t.Helper()
	want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	eventually(t, timeout, "the replica to reach "+want, func() bool {
		st := slaveStatus(t, r)
		if st["Slave_SQL_Running"] == "No" || st["Last_IO_Errno"] != "0" && st["Slave_IO_Running"] == "No" {
			t.Fatalf("replica %s stopped: IO %s %s: %s; SQL %s: %s", r.Name, st["Slave_IO_Running"], st["Last_IO_Errno"], st["Last_IO_Error"], st["Last_SQL_Errno"], st["Last_SQL_Error"])
		}
		return r.QueryString(t, "SELECT @@gtid_slave_pos") == want
	})
}

func TestNativeReplicaFollowsBinvault(t *testing.T) {
	s := newServedSetupWith(t)
	d := startDaemon(t, s.env, "--config", s.cfg)
	s.waitConnected(t, d)
	prepareLoadSchema(t, s.primary)
	l := startLoad(t, s.primary, 4, true)
	r := s.startNativeReplica(t, "native")
	time.Sleep(3 * time.Second)
	l.Stop()
	waitReplicaAt(t, s.primary, r, 60*time.Second)
	pc, rc := checksums(t, s.primary), checksums(t, r)
	for tb, sum := range pc {
		if rc[tb] != sum {
			t.Errorf("%s: CHECKSUM TABLE primary %s, replica %s", tb, sum, rc[tb])
		}
	}
	if code := d.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, d.log)
	}
}

// writeServeConfig is a binvault serve configuration: storage: and serve:
// only, no source.
func (s *servedSetup) writeServeConfig(t *testing.T, serveAddr, webAddr string) string {
	t.Helper()
	dir := t.TempDir()
	body := fmt.Sprintf("storage:\n  url: %s\n  endpoint: %s\n  path_style: true\n  region: us-east-1\nspool:\n  dir: %s\nhttp:\n  listen: %q\narchive:\n  rpo_target: 300ms\nserve:\n  listen: %s\n  users:\n    - name: %s\n      password_env: SERVE_PW\n",
		s.s3.URL("archive"), s.s3.Endpoint(), filepath.Join(dir, "spool"), webAddr, serveAddr, s.user)
	return writeFile(t, filepath.Join(dir, "serve.yaml"), body)
}

// A region with the store but no primary: binvault serve feeds a native
// replica from the archive alone, with the primary stopped, then follows
// the archive as the primary comes back and writes more.
func TestServeFromTheArchiveAlone(t *testing.T) {
	s := newServedSetupWith(t)
	d := startDaemon(t, s.env, "--config", s.cfg)
	s.waitConnected(t, d)
	prepareLoadSchema(t, s.primary)
	l := startLoad(t, s.primary, 3, true)
	time.Sleep(2 * time.Second)
	l.Stop()
	s.waitArchived(t, 30*time.Second)
	if code := d.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, d.log)
	}
	want := checksums(t, s.primary)
	pos := s.primary.QueryString(t, "SELECT @@gtid_binlog_pos")
	if err := s.primary.Stop(); err != nil {
		t.Fatal(err)
	}

	ports := make([]int, 2)
	for i := range ports {
		p, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	serveAddr, web := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	sv := startCommand(t, s.env, "serve", "--config", s.writeServeConfig(t, serveAddr, web))
	eventually(t, 20*time.Second, "binvault serve to listen", func() bool {
		if sv.exited() {
			t.Fatalf("serve exited: %s", sv.log)
		}
		code, _ := httpGet("http://"+web, "/readyz")
		return code == 200
	})
	s.serveAddr = serveAddr
	r := s.startNativeReplica(t, "dr")
	eventually(t, 60*time.Second, "the replica to reach "+pos, func() bool {
		st := slaveStatus(t, r)
		if st["Slave_SQL_Running"] == "No" || st["Slave_IO_Running"] == "No" {
			t.Fatalf("replica stopped: IO %s: %s; SQL %s: %s\nserve log:\n%s", st["Last_IO_Errno"], st["Last_IO_Error"], st["Last_SQL_Errno"], st["Last_SQL_Error"], sv.log)
		}
		return r.QueryString(t, "SELECT @@gtid_slave_pos") == pos
	})
	got := checksums(t, r)
	for tb, sum := range want {
		if got[tb] != sum {
			t.Errorf("%s: CHECKSUM TABLE primary %s, DR replica %s", tb, sum, got[tb])
		}
	}

	// The primary returns and writes more; the archive grows; serve
	// follows it and so does the replica, with no connection to either.
	if err := s.primary.Start(); err != nil {
		t.Fatal(err)
	}
	d = startDaemon(t, s.env, "--config", s.cfg)
	s.waitConnected(t, d)
	l = startLoad(t, s.primary, 2, false)
	time.Sleep(2 * time.Second)
	l.Stop()
	s.waitArchived(t, 30*time.Second)
	waitReplicaAt(t, s.primary, r, 30*time.Second)
	want = checksums(t, s.primary)
	got = checksums(t, r)
	for tb, sum := range want {
		if got[tb] != sum {
			t.Errorf("after following: %s: CHECKSUM TABLE primary %s, DR replica %s", tb, sum, got[tb])
		}
	}
	if code := sv.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("serve: exit %d\n%s", code, sv.log)
	}
	d.stop(t, 15*time.Second)
}
