// Package availability measures how available the parts binvault watches
// are (the primary's stream, the store, the replica apply) and models it:
// each part's up/down transitions, observed while the daemon runs and kept
// across restarts in a small file, give failures, MTBF, MTTR, observed
// availability, and the steady-state availability of a two-state Markov
// chain fitted to them.
//
// The chain: per interval Δ (one second), an up part fails with
// probability P01 and a down part recovers with probability P10, estimated
// as failures per interval spent up and recoveries per interval spent
// down. Its steady state is A = P10 / (P01 + P10). With few transitions the
// estimate is rough: Stats says over how long a window and how many
// transitions it was fitted, so a short history is not over-read.
package availability

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Interval is the Markov chain's step.
const Interval = time.Second

// Parts binvault watches.
const (
	Stream  = "stream"  // the binlog stream from the primary
	Store   = "store"   // uploads to the store
	Replica = "replica" // the replica apply
)

// part is one watched part's record. Times only count while the daemon
// runs and observes: a restart does not count as time up or down.
type part struct {
	Up         bool          `json:"up"`
	UpFor      time.Duration `json:"up_for"`
	DownFor    time.Duration `json:"down_for"`
	Failures   int           `json:"failures"`
	Recoveries int           `json:"recoveries"`
	LastChange time.Time     `json:"last_change"`
	known      bool          // observed at least once in this run
	since      time.Time     // when the current run's accounting last moved
}

// Tracker records the parts' states. Safe for concurrent use.
type Tracker struct {
	path string
	now  func() time.Time

	mu    sync.Mutex
	parts map[string]*part
	saved time.Time
}

// file is what the tracker keeps on disk.
type file struct {
	Parts map[string]*part `json:"parts"`
}

// Open loads the record at path (a missing file starts empty); now is the
// clock (time.Now outside tests).
func Open(path string, now func() time.Time) (*Tracker, error) {
	t := &Tracker{path: path, now: now, parts: map[string]*part{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, err
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w (move it aside to start the record over)", path, err)
	}
	for name, p := range f.Parts {
		t.parts[name] = p
	}
	return t, nil
}

// Observe records that part name is up or down now. The first observation
// of a run only resumes the accounting (the time the daemon was not running
// is not counted); a change is a failure or a recovery.
func (t *Tracker) Observe(name string, up bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	p := t.parts[name]
	if p == nil {
		p = &part{Up: up, LastChange: now}
		t.parts[name] = p
	}
	if p.known {
		t.account(p, now)
		if up != p.Up {
			if up {
				p.Recoveries++
			} else {
				p.Failures++
			}
			p.Up, p.LastChange = up, now
			t.saveLocked(now, true)
		}
	} else {
		// A part that changed while the daemon was not running: the change
		// is counted, the time of it is not known.
		if up != p.Up {
			if up {
				p.Recoveries++
			} else {
				p.Failures++
			}
			p.Up, p.LastChange = up, now
		}
		p.known = true
	}
	p.since = now
	t.saveLocked(now, false)
}

// account adds the time since the last observation to up or down.
func (t *Tracker) account(p *part, now time.Time) {
	d := now.Sub(p.since)
	if d < 0 {
		return
	}
	if p.Up {
		p.UpFor += d
	} else {
		p.DownFor += d
	}
	p.since = now
}

// saveLocked writes the record, at once for a transition, else at most
// every ten seconds (a kill -9 loses at most that much of the times, never
// a transition).
func (t *Tracker) saveLocked(now time.Time, force bool) {
	if t.path == "" || !force && now.Sub(t.saved) < 10*time.Second {
		return
	}
	t.saved = now
	b, _ := json.MarshalIndent(file{Parts: t.parts}, "", "  ")
	tmp := t.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return
	}
	if os.Rename(tmp, t.path) == nil {
		if d, err := os.Open(filepath.Dir(t.path)); err == nil {
			d.Sync()
			d.Close()
		}
	}
}

// Stats is one part's figures.
type Stats struct {
	Part        string        `json:"part"`
	Up          bool          `json:"up"`
	Window      time.Duration `json:"window_seconds"` // time observed, up and down
	Down        time.Duration `json:"down_seconds"`   // of which down
	Failures    int           `json:"failures"`
	Recoveries  int           `json:"recoveries"`
	Transitions int           `json:"transitions"`
	// Observed is the share of the window the part was up.
	Observed float64 `json:"observed_availability"`
	// MTBF is the mean time up between failures (the window's up time
	// when there was none: a lower bound); MTTR the mean time down per
	// failure, the current outage included.
	MTBF time.Duration `json:"mtbf_seconds"`
	MTTR time.Duration `json:"mttr_seconds"`
	// P01, P10 and Steady are the Markov chain's (per Interval).
	P01    float64 `json:"p01"`
	P10    float64 `json:"p10"`
	Steady float64 `json:"steady_state_availability"`
}

// MarshalJSON writes durations in seconds.
func (s Stats) MarshalJSON() ([]byte, error) {
	type alias Stats
	return json.Marshal(struct {
		alias
		Window float64 `json:"window_seconds"`
		Down   float64 `json:"down_seconds"`
		MTBF   float64 `json:"mtbf_seconds"`
		MTTR   float64 `json:"mttr_seconds"`
	}{alias(s), s.Window.Seconds(), s.Down.Seconds(), s.MTBF.Seconds(), s.MTTR.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *Stats) UnmarshalJSON(b []byte) error {
	type alias Stats
	var v struct {
		alias
		Window float64 `json:"window_seconds"`
		Down   float64 `json:"down_seconds"`
		MTBF   float64 `json:"mtbf_seconds"`
		MTTR   float64 `json:"mttr_seconds"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Stats(v.alias)
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	s.Window, s.Down, s.MTBF, s.MTTR = sec(v.Window), sec(v.Down), sec(v.MTBF), sec(v.MTTR)
	return nil
}

// Stats returns the figures of every part observed, by name.
func (t *Tracker) Stats() []Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var out []Stats
	for name, p := range t.parts {
		if p.known {
			t.account(p, now)
		}
		out = append(out, Compute(name, p.Up, p.UpFor, p.DownFor, p.Failures, p.Recoveries))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Part < out[j].Part })
	return out
}

// Compute derives a part's figures from its record.
func Compute(name string, up bool, upFor, downFor time.Duration, failures, recoveries int) Stats {
	s := Stats{Part: name, Up: up, Window: upFor + downFor, Down: downFor, Failures: failures, Recoveries: recoveries, Transitions: failures + recoveries}
	if s.Window > 0 {
		s.Observed = upFor.Seconds() / s.Window.Seconds()
	}
	s.MTBF = upFor
	if failures > 0 {
		s.MTBF = upFor / time.Duration(failures)
		s.MTTR = downFor / time.Duration(failures)
	}
	upSteps, downSteps := upFor.Seconds()/Interval.Seconds(), downFor.Seconds()/Interval.Seconds()
	if upSteps > 0 {
		s.P01 = min(1, float64(failures)/upSteps)
	}
	if downSteps > 0 {
		s.P10 = min(1, float64(recoveries)/downSteps)
	}
	switch {
	case s.P01+s.P10 > 0:
		s.Steady = s.P10 / (s.P01 + s.P10)
	case upFor > 0:
		s.Steady = 1 // never failed
	}
	return s
}
