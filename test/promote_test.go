package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// promoteHTTP posts to the daemon's /promote and returns the status and body.
func promoteHTTP(t testing.TB, base, token, query string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/promote"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The primary dies under a write load with DDL while the replica applies
// 2 s late: promote waits until the replica holds every transaction
// binvault holds, then opens it for writes with its events enabled, and
// nothing of the old primary reaches it again when that one comes back.
func TestPromoteAppliesEverythingHeldThenOpensTheReplica(t *testing.T) {
	e := newReplicaEnv(t, replicaOpts{listen: true, keys: []string{"delay: 2s"}})
	d := e.startStreaming(t)
	p, r := e.primary, e.replica
	prepareLoadSchema(t, p)
	execOn(t, p, "CREATE EVENT app.hourly ON SCHEDULE EVERY 1 HOUR STARTS CURRENT_TIMESTAMP + INTERVAL 1 HOUR DO UPDATE app.counters SET n = n + 1 WHERE name = 'ddl'")
	l := startLoad(t, p, 3, true)
	time.Sleep(4 * time.Second)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	l.Stop()
	if l.commits.Load() < 50 {
		t.Fatalf("only %d load transactions before the primary died", l.commits.Load())
	}
	if ro := r.QueryString(t, "SELECT @@read_only"); ro != "1" {
		t.Fatalf("the replica is writable before the promotion: read_only=%s", ro)
	}

	res := binvaultWithin(t, 2*time.Minute, e.env, "promote", "--config", e.cfg)
	if res.code != 0 || !strings.Contains(res.stdout, "promoted") || !strings.Contains(res.stdout, "every transaction binvault holds is applied") {
		t.Fatalf("promote: %s\ndaemon log:\n%s", res, tailLog(d))
	}
	t.Logf("promote said:\n%s", res.stdout)
	if ro := r.QueryString(t, "SELECT @@read_only"); ro != "0" {
		t.Fatalf("read_only=%s after the promotion", ro)
	}
	// Every transaction binvault archived is on the promoted replica.
	onReplica := map[string]bool{}
	for _, g := range r.BinlogGTIDs(t) {
		onReplica[g] = true
	}
	archived := archiveGTIDs(t, e.store)
	var missing []string
	for _, g := range archived {
		if !onReplica[g] {
			missing = append(missing, g)
		}
	}
	if len(archived) < 50 || len(missing) > 0 {
		t.Fatalf("%d archived transactions, %d not on the promoted replica: %v", len(archived), len(missing), head(missing))
	}
	if s := eventStatus(t, r, "app", "hourly"); s != "ENABLED" {
		t.Fatalf("event app.hourly on the promoted replica: %q, want ENABLED", s)
	}
	execOn(t, r, "INSERT INTO app.counters VALUES ('after-promote', 1)")

	again := binvault(t, e.env, "promote", "--config", e.cfg)
	if again.code != 0 || !strings.Contains(again.stdout, "already promoted") {
		t.Fatalf("second promote: %s", again)
	}
	eventually(t, 5*time.Second, "/health/replica to say promoted", func() bool {
		code, body := httpGet(e.base, "/health/replica")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "promoted")
	})
	if rs := e.replicaState(t); rs["promoted"] != true {
		t.Fatalf("state.json replica section: %v", rs)
	}

	// The old primary comes back and takes writes: binvault archives them
	// (the daemon never stopped), the promoted replica gets none.
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	execOn(t, p, "INSERT INTO app.counters VALUES ('old-primary', 1)")
	want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	eventually(t, 30*time.Second, "the old primary's write to be archived", func() bool {
		return strings.Contains(e.archivedPosition(t), want)
	})
	time.Sleep(3 * time.Second) // the 2 s delay, and more
	if n := r.QueryString(t, "SELECT COUNT(*) FROM app.counters WHERE name = 'old-primary'"); n != "0" {
		t.Fatalf("the old primary's write reached the promoted replica")
	}
	if code := d.stop(t, 20*time.Second); code != 0 {
		t.Fatalf("daemon exit %d: %s", code, d.log)
	}
}

// A replica behind what binvault holds is refused, by the CLI and by POST
// /promote, with the number of transactions it would lose, and nothing
// changes; --force (force=1) promotes it anyway and says what is lost.
func TestPromoteRefusesABehindReplicaUnlessForced(t *testing.T) {
	dir := t.TempDir()
	token := "0123456789abcdef0123456789abcdef"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newReplicaEnv(t, replicaOpts{listen: true, keys: []string{"delay: 1h"}, http: []string{"token_file: " + tokenFile}})
	d := e.startStreaming(t)
	p, r := e.primary, e.replica
	execOn(t, p, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)")
	for i := range 20 {
		execOn(t, p, fmt.Sprintf("INSERT INTO app.t VALUES (%d)", i))
	}
	want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	eventually(t, 20*time.Second, "the writes to be archived", func() bool { return e.archivedPosition(t) == want })

	if code, body := promoteHTTP(t, e.base, "", ""); code != http.StatusUnauthorized {
		t.Fatalf("POST /promote without a token: %d %s", code, body)
	}
	if code, body := promoteHTTP(t, e.base, "wrong-token-wrong-token", ""); code != http.StatusUnauthorized {
		t.Fatalf("POST /promote with a wrong token: %d %s", code, body)
	}
	if code, _ := httpGet(e.base, "/promote"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /promote: %d", code)
	}
	code, body := promoteHTTP(t, e.base, token, "?wait=1s")
	if code != http.StatusConflict || !strings.Contains(body, "transaction(s) behind") || !strings.Contains(body, "--force") {
		t.Fatalf("POST /promote of a behind replica: %d %s", code, body)
	}
	res := binvaultWithin(t, time.Minute, e.env, "promote", "--config", e.cfg, "--wait", "1s")
	// 20 inserts, the CREATE DATABASE and the CREATE TABLE.
	if res.code != 2 || !strings.Contains(res.stderr, "is 22 transaction(s) behind") || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 {
		t.Fatalf("promote of a behind replica: %s", res)
	}
	if ro := r.QueryString(t, "SELECT @@read_only"); ro != "1" {
		t.Fatalf("a refused promotion changed read_only to %s", ro)
	}
	if _, err := os.Stat(filepath.Join(e.spool, "promoted.json")); !os.IsNotExist(err) {
		t.Fatalf("a refused promotion left its marker: %v", err)
	}

	code, body = promoteHTTP(t, e.base, token, "?wait=1s&force=1")
	if code != http.StatusOK {
		t.Fatalf("POST /promote?force=1: %d %s\n%s", code, body, tailLog(d))
	}
	var out struct {
		Lost      int64  `json:"transactions_not_applied"`
		FinalGTID string `json:"final_gtid"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || out.Lost != 22 {
		t.Fatalf("forced promotion: %v %s", err, body)
	}
	if ro := r.QueryString(t, "SELECT @@read_only"); ro != "0" {
		t.Fatalf("read_only=%s after a forced promotion", ro)
	}
	// The applier stays off although the delayed transactions fall due.
	if n := r.QueryString(t, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'app'"); n != "0" {
		t.Fatalf("the forced promotion applied the held transactions after all")
	}
	again := binvault(t, e.env, "promote", "--config", e.cfg, "--json")
	if again.code != 0 || !strings.Contains(again.stdout, `"already_promoted": true`) {
		t.Fatalf("second promote: %s", again)
	}
	if code := d.stop(t, 20*time.Second); code != 0 {
		t.Fatalf("daemon exit %d: %s", code, d.log)
	}
}
