package test

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// nativeOpts are the options of a native replica: 4 parallel threads in
// the given slave_parallel_mode (gtid_strict_mode and log_slave_updates
// come from the harness).
func nativeOpts(mode string, extra ...string) harness.MariaDBOptions {
	return harness.MariaDBOptions{Extra: append([]string{"--slave-parallel-threads=4", "--slave-parallel-mode=" + mode}, extra...)}
}

// startNativeReplica starts a MariaDB replica of binvault's binlog server.
func (s *servedSetup) startNativeReplica(t *testing.T, name string, extra ...string) *harness.MariaDB {
	t.Helper()
	r := harness.StartMariaDB(t, name, nativeOpts("optimistic", extra...))
	s.replicate(t, r, "slave_pos")
	return r
}

// replicate points r at binvault's binlog server (MASTER_USE_GTID=useGTID,
// reconnecting every second, heartbeats every second) and starts it.
func (s *servedSetup) replicate(t testing.TB, r *harness.MariaDB, useGTID string) {
	t.Helper()
	changeMaster(t, r, s.serveAddr, s.user, s.pw, useGTID)
}

func changeMaster(t testing.TB, r *harness.MariaDB, addr, user, pw, useGTID string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	r.Exec(t, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%s, MASTER_USER='%s', MASTER_PASSWORD='%s', MASTER_USE_GTID=%s, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1", host, port, user, pw, useGTID))
	r.Exec(t, "START SLAVE")
}

// serverSpec is one server for startServers.
type serverSpec struct {
	name string
	opt  harness.MariaDBOptions
}

// startServers starts several MariaDB servers at once (most of a start is
// mariadb-install-db) and stops them at cleanup.
func startServers(t *testing.T, specs ...serverSpec) []*harness.MariaDB {
	t.Helper()
	harness.RequireMariaDB(t)
	ms := make([]*harness.MariaDB, len(specs))
	errs := make([]error, len(specs))
	dirs := make([]string, len(specs))
	for i := range specs {
		dirs[i] = t.TempDir()
	}
	var wg sync.WaitGroup
	for i, sp := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := harness.NewMariaDB(dirs[i], sp.name, sp.opt)
			if err == nil {
				ms[i] = m
				if err = m.Start(); err == nil {
					err = m.Bootstrap()
				}
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, m := range ms {
		if m != nil {
			t.Cleanup(func() { m.Stop() })
		}
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", specs[i].name, err)
		}
	}
	return ms
}

// showSlave is SHOW SLAVE STATUS by column name, on a connection of its
// own that it closes (tests poll it).
func showSlave(t testing.TB, m *harness.MariaDB) map[string]string {
	t.Helper()
	db, err := m.Open("")
	if err != nil {
		t.Fatalf("%s: %v", m.Name, err)
	}
	defer db.Close()
	rows, err := db.Query("SHOW SLAVE STATUS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	out := map[string]string{}
	if !rows.Next() {
		return out
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		t.Fatal(err)
	}
	for i, c := range cols {
		out[c] = vals[i].String
	}
	return out
}

// waitReplicaAt waits until the replica has applied the primary's whole
// position, failing early when its replication stopped.
func waitReplicaAt(t *testing.T, p, r *harness.MariaDB, timeout time.Duration) {
	t.Helper()
	want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	waitReplicaAtPos(t, r, want, timeout)
}

func waitReplicaAtPos(t *testing.T, r *harness.MariaDB, want string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, r.Name+" to reach "+want, func() bool {
		st := showSlave(t, r)
		if st["Slave_SQL_Running"] == "No" || st["Last_IO_Errno"] != "0" && st["Slave_IO_Running"] == "No" {
			t.Fatalf("replica %s stopped: IO %s %s: %s; SQL %s: %s", r.Name, st["Slave_IO_Running"], st["Last_IO_Errno"], st["Last_IO_Error"], st["Last_SQL_Errno"], st["Last_SQL_Error"])
		}
		return r.QueryString(t, "SELECT @@gtid_slave_pos") == want
	})
}

// waitIOStopped waits until the replica's IO thread stopped with an error
// and returns Last_IO_Errno and Last_IO_Error.
func waitIOStopped(t *testing.T, r *harness.MariaDB, timeout time.Duration) (string, string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := showSlave(t, r)
		if st["Slave_IO_Running"] == "No" && st["Last_IO_Errno"] != "0" && st["Last_IO_Errno"] != "" {
			return st["Last_IO_Errno"], st["Last_IO_Error"]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's IO thread did not stop with an error within %v: IO %s, SQL %s, Gtid_IO_Pos %s, IO error %s: %s; SQL error %s: %s",
				r.Name, timeout, st["Slave_IO_Running"], st["Slave_SQL_Running"], st["Gtid_IO_Pos"], st["Last_IO_Errno"], st["Last_IO_Error"], st["Last_SQL_Errno"], st["Last_SQL_Error"])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sameAsPrimary fails unless the replica holds the primary's data
// (CHECKSUM TABLE of every table), has applied and binlogged exactly the
// primary's GTID position, and its SQL thread runs without error.
func sameAsPrimary(t testing.TB, p, r *harness.MariaDB) {
	t.Helper()
	sameChecksums(t, p, r)
	want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	for _, v := range []string{"gtid_slave_pos", "gtid_binlog_pos"} {
		if got := r.QueryString(t, "SELECT @@"+v); got != want {
			t.Fatalf("%s: @@%s %q, the primary's @@gtid_binlog_pos %q", r.Name, v, got, want)
		}
	}
	st := showSlave(t, r)
	if st["Slave_SQL_Running"] != "Yes" || st["Last_SQL_Errno"] != "0" {
		t.Fatalf("%s: SQL thread %s, error %s: %s", r.Name, st["Slave_SQL_Running"], st["Last_SQL_Errno"], st["Last_SQL_Error"])
	}
}

// sqlThreadErrors lists the replication SQL errors in a server's error
// log (a duplicate key, a missing row: a transaction applied twice or
// skipped), which SHOW SLAVE STATUS forgets after a restart.
func sqlThreadErrors(t testing.TB, m *harness.MariaDB) []string {
	t.Helper()
	b, err := os.ReadFile(m.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "[ERROR] Slave SQL") || strings.Contains(line, "Duplicate entry") || strings.Contains(line, "Can't find record") || strings.Contains(line, "HA_ERR_KEY_NOT_FOUND") {
			out = append(out, line)
		}
	}
	return out
}

// freeAddrs returns n free loopback addresses (host:port).
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		p, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return out
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

// editConfig replaces the first old in the configuration with new.
func (s *servedSetup) editConfig(t testing.TB, old, new string) {
	t.Helper()
	b, err := os.ReadFile(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", s.cfg, old)
	}
	writeFile(t, s.cfg, strings.Replace(string(b), old, new, 1))
}

// sourceAsRoot makes binvault connect to the primary as root, which may
// take backups (the repl user may only replicate).
func (s *servedSetup) sourceAsRoot(t testing.TB) {
	t.Helper()
	s.editConfig(t, "mysql://repl:repl-pw@"+s.primary.Addr(), s.primary.DSN("", ""))
}

// waitServing waits until this binvault process serves every replica:
// its state file lists each server_id with a dump running.
func (s *servedSetup) waitServing(t testing.TB, d *daemon, rs ...*harness.MariaDB) {
	t.Helper()
	eventually(t, 30*time.Second, "binvault to serve every replica", func() bool {
		if d.exited() {
			t.Fatalf("daemon exited: %s", d.log)
		}
		st := s.state(t)
		if pid, _ := st["pid"].(float64); int(pid) != d.cmd.Process.Pid {
			return false
		}
		dumping := map[int]bool{}
		for _, r := range servedReplicas(st) {
			if r["dumping"] == true {
				id, _ := r["server_id"].(float64)
				dumping[int(id)] = true
			}
		}
		for _, r := range rs {
			if !dumping[r.ServerID] {
				return false
			}
		}
		return true
	})
}

// servedReplicas is the "serve" section's replicas of a state document.
func servedReplicas(st map[string]any) []map[string]any {
	sv, _ := st["serve"].(map[string]any)
	list, _ := sv["replicas"].([]any)
	var out []map[string]any
	for _, r := range list {
		if m, ok := r.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}
