// Command chaos runs binvault through rounds of faults on servers it starts
// itself, all on loopback: a primary and its native standby (GTID
// replication), the DR replica binvault applies to, a scratch server for
// restores, and versitygw as the store. `make chaos ROUNDS=N` runs it.
//
// Each round puts a write load (small transactions and some DDL) on the
// primary, injects one fault chosen at random (CHAOS_SEED reproduces the
// choices; CHAOS_FAULTS=daemon,replica,store,failover restricts them):
//
//   - daemon: kill -9 of `binvault run`, restarted after a few seconds;
//   - replica: kill -9 of the DR replica, restarted after a few seconds;
//   - store: versitygw killed, or the TCP proxy in front of it disabled or
//     made a black hole, for 10 to 60 s;
//   - failover: kill -9 of the primary, the standby promoted by SQL, the
//     load moved to it; binvault must follow (multi-host source.dsn); the
//     old primary is then rebuilt as the new standby.
//
// then stops the load, lets things settle and checks: `binvault verify`,
// the archived GTIDs against the primary's binlog (no gap, no duplicate),
// the DR replica's CHECKSUM TABLE against the primary's, and a restore to a
// random archived GTID into the scratch server, which must then replicate
// natively from the primary starting at that GTID, without error, to equal
// checksums. The worst RPO (binvault_archive_rpo_seconds, scraped every
// 250 ms) is reported per round and overall.
//
// It exits 0 when every round passed, 1 otherwise, keeping its work
// directory (server and binvault logs) and printing where it is.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// faultKinds are the faults a round can inject, in the order reports list them.
var faultKinds = []string{"daemon", "replica", "store", "failover"}

func main() {
	rounds := flag.Int("rounds", envInt("ROUNDS", 3), "rounds to run (or ROUNDS)")
	bin := flag.String("binvault", "bin/binvault", "the binvault binary (make build)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, `usage: go run ./test/chaos [-rounds N] [-binvault bin/binvault]

environment:
  CHAOS_SEED=N            the seed of every random choice (default: the time)
  CHAOS_FAULTS=a,b        faults to choose from: %s (default: every one this
                          binvault supports; failover needs a multi-host source.dsn)
  CHAOS_KEEP_GOING=1      run the remaining rounds after a failed one
  CHAOS_ROUND_TIMEOUT=3m  the bound on one round, checks included
  CHAOS_DAEMON_LOG_LEVEL  binvault run's --log-level (e.g. debug)
`, strings.Join(faultKinds, ","))
		flag.PrintDefaults()
	}
	flag.Parse()
	os.Exit(run(*rounds, *bin))
}

func run(rounds int, bin string) int {
	if rounds < 1 {
		fmt.Fprintln(os.Stderr, "chaos: -rounds must be at least 1")
		return 2
	}
	seed := uint64(time.Now().UnixNano() % 1_000_000_000)
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "chaos: CHAOS_SEED=%q is not a number\n", s)
			return 2
		}
		seed = v
	}
	roundTimeout := 3 * time.Minute
	if s := os.Getenv("CHAOS_ROUND_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "chaos: CHAOS_ROUND_TIMEOUT=%q is not a duration\n", s)
			return 2
		}
		roundTimeout = d
	}
	abs, err := filepath.Abs(bin)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: binvault binary %s: %v (make build makes it)\n", bin, err)
		return 2
	}
	for _, tool := range []string{"mariadb-dump", "mariadb"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: %s not found: run scripts/setup.sh (installs mariadb-client)\n", tool)
			return 2
		}
	}
	dir, err := os.MkdirTemp("", "binvault-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 1
	}
	// A copy: a rebuild of bin/binvault during the run changes nothing.
	if abs, err = copyBinary(abs, filepath.Join(dir, "binvault")); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 1
	}
	// The driver's own log lines (connections reset by killed servers)
	// are expected here; errors that matter come back from the calls.
	mysql.SetLogger(log.New(io.Discard, "", 0))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	started := time.Now()
	c := &chaos{dir: dir, bin: abs, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), seed: seed}
	code := c.main(ctx, rounds, roundTimeout)
	c.shutdown()
	took := time.Since(started).Round(time.Second)
	if code == 0 {
		os.RemoveAll(dir)
		fmt.Printf("chaos: done in %v; work directory removed\n", took)
	} else {
		fmt.Printf("chaos: FAILED after %v; servers and binvault logs kept in %s (binvault-run.log, logs/, */error.log)\n", took, dir)
	}
	return code
}

// main sets up the servers, runs the rounds and prints the summary; it
// returns the exit code.
func (c *chaos) main(ctx context.Context, rounds int, roundTimeout time.Duration) int {
	fmt.Printf("chaos: seed %d (CHAOS_SEED=%d repeats the choices), %d round(s), work directory %s\n", c.seed, c.seed, rounds, c.dir)
	if out, err := exec.Command(c.bin, "version").Output(); err == nil {
		fmt.Printf("chaos: %s\n", strings.TrimSpace(string(out)))
	}
	t0 := time.Now()
	if err := c.setup(ctx); err != nil {
		fmt.Printf("setup FAILED: %v\n", err)
		return 1
	}
	kinds, err := c.chooseKinds()
	if err != nil {
		fmt.Printf("chaos: %v\n", err)
		return 2
	}
	fmt.Printf("setup: done in %.1fs; faults chosen from: %s\n", time.Since(t0).Seconds(), strings.Join(kinds, ", "))

	keepGoing := os.Getenv("CHAOS_KEEP_GOING") == "1"
	var results []roundResult
	for n := 1; n <= rounds; n++ {
		if ctx.Err() != nil {
			break
		}
		kind := kinds[c.rng.IntN(len(kinds))]
		if len(results) > 0 && results[len(results)-1].err != nil {
			if err := c.heal(ctx); err != nil {
				fmt.Printf("chaos: cannot go on after the failed round: %v\n", err)
				break
			}
		}
		r := c.round(ctx, n, rounds, kind, roundTimeout)
		results = append(results, r)
		if r.err != nil && !keepGoing {
			break
		}
	}
	return c.summary(results, rounds, time.Since(t0))
}

// chooseKinds returns the fault kinds rounds choose from: CHAOS_FAULTS, or
// every kind this binvault supports.
func (c *chaos) chooseKinds() ([]string, error) {
	env := os.Getenv("CHAOS_FAULTS")
	if env == "" {
		var out []string
		for _, k := range faultKinds {
			if k == "failover" && !c.failover {
				fmt.Println("chaos: the failover fault is left out: this binvault refuses a multi-host source.dsn with source.failover_wait (CHAOS_FAULTS=failover forces it)")
				continue
			}
			out = append(out, k)
		}
		return out, nil
	}
	var out []string
	for _, k := range strings.Split(env, ",") {
		k = strings.TrimSpace(k)
		known := false
		for _, f := range faultKinds {
			known = known || f == k
		}
		if !known {
			return nil, fmt.Errorf("CHAOS_FAULTS: no fault %q (have %s)", k, strings.Join(faultKinds, ","))
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("CHAOS_FAULTS names no fault")
	}
	return out, nil
}

func (c *chaos) summary(results []roundResult, rounds int, took time.Duration) int {
	passed, failed := 0, 0
	type kindStat struct {
		n, passed int
		worst     float64
	}
	byKind := map[string]*kindStat{}
	var worst float64
	worstAt := ""
	for _, r := range results {
		ks := byKind[r.kind]
		if ks == nil {
			ks = &kindStat{}
			byKind[r.kind] = ks
		}
		ks.n++
		if r.err == nil {
			passed++
			ks.passed++
		} else {
			failed++
		}
		ks.worst = max(ks.worst, r.rpoMax)
		if r.rpoMax > worst || worstAt == "" {
			worst = r.rpoMax
			worstAt = fmt.Sprintf("round %d, %s", r.n, r.detail)
		}
	}
	fmt.Printf("\nsummary: %d of %d round(s) passed", passed, rounds)
	if failed > 0 {
		fmt.Printf(", %d failed", failed)
	}
	if notRun := rounds - len(results); notRun > 0 {
		fmt.Printf(", %d not run", notRun)
	}
	fmt.Printf("; seed %d; %v in all\n", c.seed, took.Round(time.Second))
	var kinds []string
	for k := range byKind {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return kindOrder(kinds[i]) < kindOrder(kinds[j]) })
	fmt.Printf("  %-10s %7s %7s %16s\n", "fault", "rounds", "passed", "worst RPO (s)")
	for _, k := range kinds {
		ks := byKind[k]
		fmt.Printf("  %-10s %7d %7d %16.1f\n", k, ks.n, ks.passed, ks.worst)
	}
	if len(results) > 0 {
		fmt.Printf("  worst RPO seen: %.1f s (%s)\n", worst, worstAt)
	}
	for _, r := range results {
		if r.err != nil {
			fmt.Printf("  round %d (%s) failed: %v\n", r.n, r.detail, r.err)
		}
	}
	if failed > 0 || len(results) < rounds {
		return 1
	}
	return 0
}

func kindOrder(k string) int {
	for i, f := range faultKinds {
		if f == k {
			return i
		}
	}
	return len(faultKinds)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func copyBinary(src, dst string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	return dst, os.WriteFile(dst, b, 0o755)
}
