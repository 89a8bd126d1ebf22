package test

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// haproxyPath finds HAProxy (scripts/setup.sh installs it from Debian).
func haproxyPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy"
	}
	msg := "haproxy not found: run scripts/setup.sh (installs haproxy from Debian)"
	if os.Getenv("BINVAULT_REQUIRE_SERVERS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// The read pool of configs/haproxy.example.cfg, run by the real HAProxy:
// a replica whose lag crosses http.max_replica_lag leaves the pool (queries
// through HAProxy find no server), and rejoins once it has caught up.
func TestHAProxyTakesALaggingReplicaOutOfTheReadPool(t *testing.T) {
	bin := haproxyPath(t)
	e := newReplicaEnv(t, replicaOpts{listen: true, http: []string{"max_replica_lag: 2s"}})
	d := e.startStreaming(t)
	p, r := e.primary, e.replica
	execOn(t, p, "CREATE DATABASE app", "CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
	e.waitApplied(t, d, 20*time.Second)

	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	webPort := strings.TrimPrefix(e.base, "http://127.0.0.1:")
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "haproxy.cfg"), fmt.Sprintf(`global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
listen mariadb-read
    bind 127.0.0.1:%d
    option httpchk GET /health/replica
    http-check expect status 200
    default-server inter 200ms fall 1 rise 1
    server replica %s check port %s
`, port, r.Addr(), webPort))
	hp := exec.Command(bin, "-db", "-f", cfg)
	var hlog strings.Builder
	hp.Stdout, hp.Stderr = &hlog, &hlog
	if err := hp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hp.Process.Kill(); hp.Wait() })

	// A query through HAProxy's read pool answers with the replica's
	// server_id, or fails when HAProxy has no server for it.
	readThrough := func() (string, error) {
		db, err := sql.Open("mysql", fmt.Sprintf("root:%s@tcp(127.0.0.1:%d)/?timeout=1s&readTimeout=1s", r.RootPassword, port))
		if err != nil {
			return "", err
		}
		defer db.Close()
		var id string
		err = db.QueryRow("SELECT @@server_id").Scan(&id)
		return id, err
	}
	want := fmt.Sprint(r.ServerID)
	eventually(t, 10*time.Second, "the replica to be in the read pool", func() bool {
		id, err := readThrough()
		return err == nil && id == want
	})

	// Stall the replica: a lock the applier waits for while the primary
	// writes on.
	lock, err := r.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	lock.SetMaxOpenConns(1)
	conn, err := lock.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), "LOCK TABLES app.t WRITE"); err != nil {
		t.Fatal(err)
	}
	stop := time.Now().Add(4 * time.Second)
	for time.Now().Before(stop) {
		execOn(t, p, "INSERT INTO app.t (v) VALUES (1)")
		time.Sleep(100 * time.Millisecond)
	}
	eventually(t, 10*time.Second, "the lagging replica to leave the read pool", func() bool {
		_, err := readThrough()
		return err != nil
	})
	code, body := httpGet(e.base, "/health/replica")
	if code != 503 || !strings.Contains(body, "behind, over 2s") {
		t.Errorf("/health/replica while lagging: %d %q", code, body)
	}

	// Released, the replica catches up and rejoins.
	if _, err := conn.ExecContext(t.Context(), "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	e.waitApplied(t, d, 30*time.Second)
	eventually(t, 10*time.Second, "the replica to rejoin the read pool", func() bool {
		id, err := readThrough()
		return err == nil && id == want
	})
	if code, body := httpGet(e.base, "/health/replica"); code != 200 {
		t.Errorf("/health/replica caught up: %d %q", code, body)
	}
	if code := d.stop(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, d.log)
	}
	if t.Failed() {
		t.Logf("haproxy:\n%s", hlog.String())
	}
}
