package test

import (
	"math/rand/v2"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// kill -9 of binvault run while it serves two native replicas (4 parallel
// threads, one optimistic, one conservative) under a write load with DDL,
// five times: the replicas reconnect by themselves (MASTER_CONNECT_RETRY=1)
// each time, and end identical to the primary (CHECKSUM TABLE of every
// table, equal GTID positions) without a duplicate key or a missing row
// on the way. Between binvault's crashes one replica is killed -9 twice
// while it is fed: it resumes from its own gtid_slave_pos.
func TestServedReplicasSurviveKill9(t *testing.T) {
	s := newServedSetupWith(t)
	p := s.primary
	rs := startServers(t, serverSpec{"optimistic", nativeOpts("optimistic")}, serverSpec{"conservative", nativeOpts("conservative")})
	opt, cons := rs[0], rs[1]
	d := startDaemon(t, s.env, "--config", s.cfg)
	s.waitConnected(t, d)
	prepareLoadSchema(t, p)
	l := startLoad(t, p, 3, true)
	defer func() { l.Stop() }()
	s.replicate(t, opt, "slave_pos")
	s.replicate(t, cons, "slave_pos")
	s.waitServing(t, d, opt, cons)

	replicaKills := 0
	for i := 0; i < 5; i++ {
		time.Sleep(time.Duration(500+rand.IntN(1000)) * time.Millisecond)
		d.kill()
		if i%2 == 0 {
			time.Sleep(500 * time.Millisecond) // the primary runs ahead meanwhile
		}
		d = startDaemon(t, s.env, "--config", s.cfg)
		s.waitServing(t, d, opt, cons)
		if i == 1 || i == 3 {
			// The replica is fed again: kill it mid-stream.
			before := gtidSeq(opt.QueryString(t, "SELECT @@gtid_slave_pos"))
			eventually(t, 20*time.Second, "the replica to apply more", func() bool {
				return gtidSeq(opt.QueryString(t, "SELECT @@gtid_slave_pos")) > before+20
			})
			killed := opt.QueryString(t, "SELECT @@gtid_slave_pos")
			logged := logSize(t, opt)
			if err := opt.Kill(); err != nil {
				t.Fatal(err)
			}
			replicaKills++
			if err := opt.Start(); err != nil {
				t.Fatal(err)
			}
			// It asks binvault for what follows its own gtid_slave_pos,
			// which crash recovery kept at or after where it was seen.
			from := replicaStarts(t, opt, logged)
			if gtidSeq(from) < gtidSeq(killed) {
				t.Fatalf("the killed replica restarted from %q, before %q it had applied", from, killed)
			}
			t.Logf("round %d: replica killed at %s or later, resumed from %s", i, killed, from)
			s.waitServing(t, d, opt, cons)
		}
	}
	time.Sleep(time.Second)
	l.Stop()
	if l.commits.Load() < 300 {
		t.Fatalf("the load committed only %d transactions (%d errors, last %v): the test shows little", l.commits.Load(), l.errs.Load(), l.lastErr.Load())
	}
	s.waitArchived(t, 60*time.Second)
	for _, r := range []*harness.MariaDB{opt, cons} {
		waitReplicaAt(t, p, r, 90*time.Second)
		sameAsPrimary(t, p, r)
		if errs := sqlThreadErrors(t, r); len(errs) > 0 {
			t.Errorf("%s: replication errors in the error log:\n%s", r.Name, errs)
		}
	}
	if code := d.stop(t, 15*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, d.log)
	}
	t.Logf("%d transactions (%s DDL groups on the replica), 5 kill -9 of binvault, %d of a replica", l.commits.Load(),
		showSlave(t, cons)["Slave_DDL_Groups"], replicaKills)
}

var replStarts = regexp.MustCompile(`Slave I/O thread: connected to master '[^']*',replication starts at GTID position '([^']*)'`)

// logSize is the length of a server's error log now.
func logSize(t testing.TB, r *harness.MariaDB) int {
	t.Helper()
	b, err := os.ReadFile(r.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

// replicaStarts waits for the replica's first connection logged after
// offset in its error log and returns the GTID position it asked for.
func replicaStarts(t testing.TB, r *harness.MariaDB, offset int) string {
	t.Helper()
	var pos string
	eventually(t, 20*time.Second, r.Name+" to connect", func() bool {
		b, err := os.ReadFile(r.LogFile)
		if err != nil || len(b) < offset {
			return false
		}
		m := replStarts.FindStringSubmatch(string(b[offset:]))
		if m == nil {
			return false
		}
		pos = m[1]
		return true
	})
	return pos
}
