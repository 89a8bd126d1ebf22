package availability

import (
	"encoding/json"
	"math"
	"path/filepath"
	"testing"
	"time"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// Hand-computed: up 9,000 s with 3 failures, down 300 s with 3 recoveries.
// MTBF 3,000 s, MTTR 100 s, observed 9,000/9,300; per 1 s step P01 =
// 3/9,000, P10 = 3/300, A = P10/(P01+P10) = 0.01/(0.01+0.000333...) =
// 30/31.
func TestComputeAgainstHandValues(t *testing.T) {
	s := Compute(Stream, true, 9000*time.Second, 300*time.Second, 3, 3)
	if s.MTBF != 3000*time.Second || s.MTTR != 100*time.Second || s.Window != 9300*time.Second || s.Transitions != 6 {
		t.Fatalf("%+v", s)
	}
	if !near(s.Observed, 9000.0/9300) || !near(s.P01, 3.0/9000) || !near(s.P10, 3.0/300) || !near(s.Steady, 30.0/31) {
		t.Fatalf("observed %v p01 %v p10 %v steady %v", s.Observed, s.P01, s.P10, s.Steady)
	}
}

func TestComputeWithNoFailureYet(t *testing.T) {
	s := Compute(Store, true, time.Hour, 0, 0, 0)
	if s.Failures != 0 || s.MTBF != time.Hour || s.MTTR != 0 || s.Observed != 1 || s.P01 != 0 || s.P10 != 0 || s.Steady != 1 {
		t.Fatalf("%+v", s)
	}
	if s := Compute(Store, true, 0, 0, 0, 0); s.Steady != 0 || s.Observed != 0 || s.Window != 0 {
		t.Fatalf("nothing observed yet: %+v", s)
	}
}

// Down now, never recovered: up 600 s then one failure, down 60 s so far.
// MTTR counts the outage so far; P10 = 0, so the model says 0 until a
// recovery is seen.
func TestComputeForAPartDownNow(t *testing.T) {
	s := Compute(Replica, false, 600*time.Second, 60*time.Second, 1, 0)
	if s.Up || s.MTBF != 600*time.Second || s.MTTR != 60*time.Second || !near(s.Observed, 600.0/660) {
		t.Fatalf("%+v", s)
	}
	if !near(s.P01, 1.0/600) || s.P10 != 0 || s.Steady != 0 {
		t.Fatalf("p01 %v p10 %v steady %v", s.P01, s.P10, s.Steady)
	}
}

// The tracker counts time only while it observes, counts transitions, and
// keeps them across a restart (Open of the same file); the time the
// daemon was not running counts neither up nor down.
func TestTrackerAcrossARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "availability.json")
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	tr, err := Open(path, clock)
	if err != nil {
		t.Fatal(err)
	}
	tr.Observe(Stream, true)
	now = now.Add(100 * time.Second)
	tr.Observe(Stream, false) // failure after 100 s up
	now = now.Add(20 * time.Second)
	tr.Observe(Stream, true) // recovery after 20 s down
	now = now.Add(30 * time.Second)
	tr.Observe(Stream, true)
	s := tr.Stats()[0]
	if s.Window != 150*time.Second || s.Failures != 1 || s.Recoveries != 1 || s.MTBF != 130*time.Second || s.MTTR != 20*time.Second {
		t.Fatalf("before the restart: %+v", s)
	}
	tr.saveLocked(now, true)

	// The daemon was down an hour; it comes back and finds the stream down.
	now = now.Add(time.Hour)
	tr2, err := Open(path, clock)
	if err != nil {
		t.Fatal(err)
	}
	tr2.Observe(Stream, false)
	now = now.Add(10 * time.Second)
	s = tr2.Stats()[0]
	if s.Window != 160*time.Second || s.Failures != 2 || s.Up || s.Down != 30*time.Second {
		t.Fatalf("after the restart: %+v", s)
	}
}

func TestStatsJSONRoundTrip(t *testing.T) {
	in := Compute(Stream, false, 90*time.Second+500*time.Millisecond, 10*time.Second, 2, 1)
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Stats
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if out != in {
		t.Fatalf("round trip:\n in %+v\nout %+v\n%s", in, out, b)
	}
}
