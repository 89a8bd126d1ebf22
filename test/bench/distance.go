package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/binvault/binvault/test/harness"
)

// The distance scenario: commit → visible on a replica, as a user lives
// it. A probe commits a row on the primary every 50 ms, notes when the
// commit returned, and polls each replica until the row is there, beside
// a steady sysbench oltp_write_only load (--rate). Two replicas follow the
// primary through one binvault run: one by binvault's client-side applier,
// one natively (4 optimistic parallel threads) from binvault's binlog
// server. Between binvault and each replica sits a TCP proxy (toxiproxy):
// first without delay (loopback), then with 40 ms each way. Durable
// settings on every server.
func benchDistance(ctx context.Context, e *env) error {
	if _, err := exec.LookPath("sysbench"); err != nil {
		return fmt.Errorf("sysbench not found: run BINVAULT_SETUP_BENCH=1 scripts/setup.sh (make bench does)")
	}
	seconds := envInt("BINVAULT_BENCH_DISTANCE_SECONDS", 25)
	var rates []int
	for _, r := range strings.Split(envStr("BINVAULT_BENCH_DISTANCE_RATES", "300,1000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			return fmt.Errorf("BINVAULT_BENCH_DISTANCE_RATES: %q is not a rate", r)
		}
		rates = append(rates, n)
	}
	p, err := benchServer(e, "dist-primary", 1)
	if err != nil {
		return err
	}
	ra, err := benchServer(e, "dist-applied", 21, "--read-only=ON")
	if err != nil {
		return err
	}
	rn, err := benchServer(e, "dist-native", 22, "--slave-parallel-threads=4", "--slave-parallel-mode=optimistic")
	if err != nil {
		return err
	}
	servePort, err := harness.FreePort()
	if err != nil {
		return err
	}
	proxies := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	toApplied := toxiproxy.NewProxy(proxies, "applied", "127.0.0.1:0", ra.Addr())
	toServe := toxiproxy.NewProxy(proxies, "serve", "127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", servePort))
	for _, px := range []*toxiproxy.Proxy{toApplied, toServe} {
		if err := px.Start(); err != nil {
			return err
		}
		e.cleanup(px.Stop)
	}
	os.Setenv("BINVAULT_BENCH_SERVE_PW", "bench-serve-pw")
	cfg := filepath.Join(e.dir, "distance.yaml")
	body := fmt.Sprintf("source:\n  dsn: mysql://root:%s@%s\n  server_id: 9001\nstorage:\n  url: file://%s\nspool:\n  dir: %s\nhttp:\n  listen: \"\"\n"+
		"replica:\n  dsn: mysql://root:%s@%s\n"+
		"serve:\n  listen: 127.0.0.1:%d\n  users:\n    - name: repl\n      password_env: BINVAULT_BENCH_SERVE_PW\n",
		p.RootPassword, p.Addr(), filepath.Join(e.dir, "distance-archive"), filepath.Join(e.dir, "distance-spool"),
		ra.RootPassword, toApplied.Listen, servePort)
	os.MkdirAll(filepath.Join(e.dir, "distance-archive"), 0o755)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return err
	}
	d, err := startBinvault(e, cfg)
	if err != nil {
		return err
	}
	defer d.stop()
	if err := waitListening(fmt.Sprintf("127.0.0.1:%d", servePort), 30*time.Second); err != nil {
		return err
	}
	host, port, _ := strings.Cut(toServe.Listen, ":")
	if err := execAll(rn, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%s, MASTER_USER='repl', MASTER_PASSWORD='bench-serve-pw', MASTER_USE_GTID=slave_pos, MASTER_HEARTBEAT_PERIOD=1", host, port), "START SLAVE"); err != nil {
		return err
	}
	step("preparing sysbench (4 tables × 10,000 rows) and the probe table; both replicas follow through binvault")
	if err := execAll(p, "CREATE DATABASE sbtest", "CREATE DATABASE probe", "CREATE TABLE probe.p (id BIGINT PRIMARY KEY, at BIGINT)"); err != nil {
		return err
	}
	if err := runCmd(ctx, "sysbench", append(replicaSysbenchArgs(p, 4, 10000, 4), "prepare")...); err != nil {
		return err
	}
	pdb, err := p.Open("")
	if err != nil {
		return err
	}
	defer pdb.Close()
	for _, r := range []*harness.MariaDB{ra, rn} {
		if err := waitPos(ctx, r, gtidPos(pdb), 5*time.Minute); err != nil {
			return err
		}
	}

	type row struct {
		rate, achieved int
		link           string
		applied        []float64
		native         []float64
	}
	var rows []row
	nextID := int64(0)
	for _, rate := range rates {
		for _, link := range []string{"loopback", "40 ms each way"} {
			for _, px := range []*toxiproxy.Proxy{toApplied, toServe} {
				for _, s := range []string{"upstream", "downstream"} {
					px.Toxics.RemoveToxic(context.Background(), "latency_"+s)
					if link != "loopback" {
						if _, err := px.Toxics.AddToxicJson(strings.NewReader(`{"name":"latency_` + s + `","type":"latency","stream":"` + s + `","attributes":{"latency":40}}`)); err != nil {
							return err
						}
					}
				}
			}
			step("%d transactions/s, %s: %d s of load with a probe every 50 ms", rate, link, seconds)
			g0 := seqOf(gtidPos(pdb))
			t0 := time.Now()
			load := exec.CommandContext(ctx, "sysbench", append(append([]string{"oltp_write_only"}, replicaSysbenchArgs(p, 4, 10000, 8)[1:]...),
				fmt.Sprintf("--rate=%d", rate), fmt.Sprintf("--time=%d", seconds), "run")...)
			if err := load.Start(); err != nil {
				return err
			}
			lat, err := probe(ctx, p, []*harness.MariaDB{ra, rn}, &nextID, 3*time.Second, time.Duration(seconds-4)*time.Second)
			load.Wait()
			achieved := int(float64(seqOf(gtidPos(pdb))-g0) / time.Since(t0).Seconds())
			if err != nil {
				return err
			}
			rows = append(rows, row{rate, achieved, link, lat[0], lat[1]})
		}
	}
	fmt.Printf("\ncommit → visible on the replica (a probe every 50 ms beside sysbench oltp_write_only; durable settings; one run each):\n")
	fmt.Printf("  %-10s %-16s %-28s %-28s\n", "primary", "binvault ↔ replica", "client-side applier", "native 4 threads via binvault")
	fmt.Printf("  %-10s %-16s %-28s %-28s\n", "trx/s", "", "p50 / p99 / max", "p50 / p99 / max")
	for _, r := range rows {
		f := func(v []float64) string {
			return fmt.Sprintf("%.3f / %.3f / %.3f s", quantile(v, 0.5), quantile(v, 0.99), quantile(v, 1))
		}
		fmt.Printf("  %-10s %-16s %-28s %-28s\n", fmt.Sprintf("%d (%d)", r.achieved, r.rate), r.link, f(r.applied), f(r.native))
	}
	return nil
}

// probe commits a row on p every 50 ms for the given time (after a warm
// up), and returns, per replica, the seconds from each commit's return
// until the row was visible there (polled every 5 ms).
func probe(ctx context.Context, p *harness.MariaDB, replicas []*harness.MariaDB, nextID *int64, warm, span time.Duration) ([][]float64, error) {
	pdb, err := p.Open("")
	if err != nil {
		return nil, err
	}
	defer pdb.Close()
	time.Sleep(warm)
	var mu sync.Mutex
	committed := map[int64]time.Time{}
	out := make([][]float64, len(replicas))
	seen := make([]int64, len(replicas))
	first := *nextID + 1
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range replicas {
		db, err := r.Open("")
		if err != nil {
			return nil, err
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		wg.Add(1)
		go func(i int, db *sql.DB) {
			defer wg.Done()
			seen[i] = first - 1
			for {
				var max sql.NullInt64
				db.QueryRow("SELECT MAX(id) FROM probe.p").Scan(&max)
				now := time.Now()
				mu.Lock()
				for id := seen[i] + 1; max.Valid && id <= max.Int64; id++ {
					if at, ok := committed[id]; ok {
						out[i] = append(out[i], now.Sub(at).Seconds())
						seen[i] = id
					} else {
						break
					}
				}
				done := len(out[i]) == len(committed)
				mu.Unlock()
				select {
				case <-stop:
					if done {
						return
					}
				default:
				}
				time.Sleep(5 * time.Millisecond)
			}
		}(i, db)
	}
	end := time.Now().Add(span)
	for time.Now().Before(end) && ctx.Err() == nil {
		*nextID++
		id := *nextID
		if _, err := pdb.Exec("INSERT INTO probe.p VALUES (?, ?)", id, time.Now().UnixNano()); err != nil {
			close(stop)
			return nil, err
		}
		mu.Lock()
		committed[id] = time.Now()
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(2 * time.Minute):
		return nil, fmt.Errorf("the probes did not all reach the replicas within 2 minutes")
	}
	return out, nil
}

func envStr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
