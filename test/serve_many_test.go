package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// Eight native replicas at once, each connecting at its own moment of a
// write load and so streamed from its own position, four optimistic and
// four conservative. One is frozen (SIGSTOP) while the
// load goes on: binvault's writes to it block, and only to it. The seven
// others reach the primary's position and the archive keeps its RPO while
// it is frozen; /health/replica answers 503 for it (over
// http.max_replica_lag) and 200 for the others; `status --json`, the state
// file and /metrics list each replica with its position and lag. Thawed,
// it catches up; all eight end identical to the primary.
func TestServeEightReplicasOneStalled(t *testing.T) {
	const n, maxLag = 8, 2 * time.Second
	s := newServedSetupWith(t)
	s.editConfig(t, "http:\n", fmt.Sprintf("http:\n  max_replica_lag: %s\n", maxLag))
	p := s.primary
	specs := make([]serverSpec, n)
	for i := range specs {
		mode := "optimistic"
		if i%2 == 1 {
			mode = "conservative"
		}
		// Small servers: nine of them share two cores.
		specs[i] = serverSpec{fmt.Sprintf("replica%d", i), nativeOpts(mode, "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--max-connections=20")}
	}
	started := time.Now()
	rs := startServers(t, specs...)
	t.Logf("%d replicas started in %s", n, time.Since(started).Round(time.Millisecond))
	frozen := rs[n-1]

	d := startDaemon(t, s.env, "--config", s.cfg)
	s.waitConnected(t, d)
	prepareLoadSchema(t, p)
	l := startLoad(t, p, 2, true)
	defer func() { l.Stop() }()
	for _, r := range rs {
		time.Sleep(200 * time.Millisecond) // each starts from its own point of the load
		s.replicate(t, r, "slave_pos")
	}
	s.waitServing(t, d, rs...)
	// The replica to freeze has caught up with the load first.
	now := gtidSeq(p.QueryString(t, "SELECT @@gtid_binlog_pos"))
	eventually(t, 60*time.Second, frozen.Name+" to catch up", func() bool {
		return gtidSeq(frozen.QueryString(t, "SELECT @@gtid_slave_pos")) >= now
	})

	// Freeze one replica: it reads nothing more.
	if err := syscall.Kill(frozen.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			syscall.Kill(frozen.PID(), syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	frozeAt := time.Now()
	health := func(r *harness.MariaDB) (int, string) {
		return httpGet(s.web, fmt.Sprintf("/health/replica/%d", r.ServerID))
	}
	var maxRPO float64
	eventually(t, 30*time.Second, "/health/replica of the frozen replica to answer 503", func() bool {
		maxRPO = max(maxRPO, metric(t, s.web, "binvault_archive_rpo_seconds"))
		code, _ := health(frozen)
		if code != http.StatusServiceUnavailable {
			// binvault sees a replica stop reading once the socket's
			// buffers are full (tens of MB on loopback): fill them.
			p.Exec(t, "INSERT INTO app.events (account, kind, payload) VALUES (0, 'stall', REPEAT('s', 2097152))")
		}
		return code == http.StatusServiceUnavailable
	})
	time.Sleep(time.Second)
	l.Stop()
	// The frozen replica's socket buffers grow (loopback autotuning, up
	// to tens of MB) and may take in what the load wrote after the first
	// 503: write more until binvault holds events it cannot send, so the
	// frozen replica stays behind once nothing more is written.
	eventually(t, 30*time.Second, "binvault to hold events the frozen replica cannot take", func() bool {
		p.Exec(t, "INSERT INTO app.events (account, kind, payload) VALUES (0, 'stall', REPEAT('s', 2097152))")
		time.Sleep(300 * time.Millisecond)
		code, _ := health(frozen)
		return code == http.StatusServiceUnavailable && s.statusReplicas(t)[frozen.ServerID].LagTransactions > 0
	})
	want := p.QueryString(t, "SELECT @@gtid_binlog_pos")
	eventually(t, 30*time.Second, "the archive to reach "+want, func() bool {
		maxRPO = max(maxRPO, metric(t, s.web, "binvault_archive_rpo_seconds"))
		return s.archivedPosition(t) == want
	})
	for _, r := range rs[:n-1] {
		waitReplicaAtPos(t, r, want, 60*time.Second)
	}
	stalledFor := time.Since(frozeAt)
	if maxRPO > 3 {
		t.Errorf("the archive's RPO reached %.1fs while a replica was frozen", maxRPO)
	}

	// What binvault reports, with one replica frozen and seven caught up.
	var body string
	eventually(t, 10*time.Second, "/health/replica to answer 200 for every caught-up replica", func() bool {
		for _, r := range rs[:n-1] {
			var code int
			if code, body = health(r); code != http.StatusOK {
				return false
			}
		}
		return true
	})
	code, body := health(frozen)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, fmt.Sprintf("replica %d is", frozen.ServerID)) || !strings.Contains(body, "behind") {
		t.Errorf("/health/replica/%d of the frozen replica: %d %s", frozen.ServerID, code, body)
	}
	if code, _ := httpGet(s.web, "/health/replica/4242"); code != http.StatusServiceUnavailable {
		t.Errorf("/health/replica of a server_id never connected: %d", code)
	}
	st := s.statusReplicas(t)
	if len(st) != n {
		t.Fatalf("status --json lists %d served replicas, want %d: %v", len(st), n, st)
	}
	for _, r := range rs {
		got, ok := st[r.ServerID]
		if !ok {
			t.Errorf("status --json does not list server_id %d: %v", r.ServerID, st)
			continue
		}
		if !strings.HasPrefix(got.Address, "127.0.0.1:") || got.User != s.user || !got.Dumping || got.EventsSent == 0 {
			t.Errorf("status --json, server_id %d: %+v", r.ServerID, got)
		}
		if r == frozen {
			if got.LagTransactions <= 0 || got.LagSeconds <= maxLag.Seconds() || got.Position == want {
				t.Errorf("status --json, the frozen replica %d: %+v; the primary is at %s", r.ServerID, got, want)
			}
		} else if got.LagTransactions != 0 || got.LagSeconds != 0 || got.Position != want {
			t.Errorf("status --json, the caught-up replica %d: %+v; the primary is at %s", r.ServerID, got, want)
		}
	}
	if got := len(servedReplicas(s.state(t))); got != n {
		t.Errorf("state.json lists %d served replicas, want %d", got, n)
	}
	m := scrape(t, s.web)
	if m["binvault_serve_replicas"] != n || m["binvault_serve_events_total"] == 0 || m["binvault_serve_bytes_total"] == 0 {
		t.Errorf("/metrics: binvault_serve_replicas %v, events %v, bytes %v", m["binvault_serve_replicas"], m["binvault_serve_events_total"], m["binvault_serve_bytes_total"])
	}
	for _, r := range rs {
		lag := fmt.Sprintf(`binvault_serve_replica_lag_seconds{server_id="%d"}`, r.ServerID)
		txns := fmt.Sprintf(`binvault_serve_replica_lag_transactions{server_id="%d"}`, r.ServerID)
		v, ok := m[lag]
		if !ok {
			t.Errorf("/metrics has no %s", lag)
		}
		if r == frozen && (v <= maxLag.Seconds() || m[txns] <= 0) || r != frozen && (v != 0 || m[txns] != 0) {
			t.Errorf("/metrics: %s %v, %s %v", lag, v, txns, m[txns])
		}
	}

	// Thawed, the frozen replica catches up.
	thaw()
	waitReplicaAtPos(t, frozen, want, 60*time.Second)
	eventually(t, 10*time.Second, "/health/replica of the thawed replica to answer 200", func() bool {
		code, _ := health(frozen)
		return code == http.StatusOK
	})
	for _, r := range rs {
		sameAsPrimary(t, p, r)
	}
	if code := d.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, d.log)
	}
	t.Logf("%d transactions; one replica frozen %s (seven caught up meanwhile), archive RPO at most %.2fs", l.commits.Load(), stalledFor.Round(100*time.Millisecond), maxRPO)
}

// servedStatus is one replica in `status --json`.
type servedStatus struct {
	ServerID        int     `json:"server_id"`
	Address         string  `json:"address"`
	User            string  `json:"user"`
	Dumping         bool    `json:"dumping"`
	Position        string  `json:"position"`
	LagTransactions int64   `json:"lag_transactions"`
	LagSeconds      float64 `json:"lag_seconds"`
	EventsSent      int64   `json:"events_sent"`
}

// statusReplicas runs `binvault status --json` and returns the served
// replicas it lists, by server_id.
func (s *servedSetup) statusReplicas(t testing.TB) map[int]servedStatus {
	t.Helper()
	r := binvault(t, s.env, "status", "--config", s.cfg, "--json")
	var doc struct {
		Daemon struct {
			State *struct {
				Serve *struct {
					Listen   string         `json:"listen"`
					Replicas []servedStatus `json:"replicas"`
				} `json:"serve"`
			} `json:"state"`
		} `json:"daemon"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("status --json: %v: %s", err, r)
	}
	if doc.Daemon.State == nil || doc.Daemon.State.Serve == nil || doc.Daemon.State.Serve.Listen != s.serveAddr {
		t.Fatalf("status --json has no serve section for %s: %s", s.serveAddr, r)
	}
	out := map[int]servedStatus{}
	for _, rep := range doc.Daemon.State.Serve.Replicas {
		out[rep.ServerID] = rep
	}
	return out
}
