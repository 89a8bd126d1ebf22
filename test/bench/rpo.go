package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/binvault/binvault/test/harness"
)

// The rpo scenario: how far the archive trails the primary at a steady
// load with flush_interval 1s, archiving to a real S3 server (versitygw on
// loopback). Two figures, sampled every 100 ms from the daemon's /metrics:
// the live RPO (binvault_archive_rpo_seconds: age of the oldest streamed,
// not yet archived transaction) and the age of the newest archived
// transaction. Binlog timestamps are whole seconds, so both read up to 1 s
// high; there is no native tool to compare with (mysqlbinlog
// --stop-never keeps a local copy and uploads nothing).
func benchRPO(ctx context.Context, e *env) error {
	rate := envInt("BINVAULT_BENCH_RPO_RATE", 300)
	seconds := envInt("BINVAULT_BENCH_RPO_SECONDS", 60)
	p, err := harness.NewMariaDB(e.dir, "rpoprimary", harness.MariaDBOptions{ServerID: 1})
	if err != nil {
		return err
	}
	e.cleanup(func() { p.Stop() })
	if err := p.Start(); err != nil {
		return err
	}
	if err := p.Bootstrap(); err != nil {
		return err
	}
	bin, err := harness.VersityGWPath()
	if err != nil {
		return err
	}
	s3, err := harness.NewS3(filepath.Join(e.dir, "rpo-s3"), bin)
	if err != nil {
		return err
	}
	e.cleanup(s3.Stop)
	if err := s3.Start(); err != nil {
		return err
	}
	port, err := harness.FreePort()
	if err != nil {
		return err
	}
	cfg := filepath.Join(e.dir, "rpo.yaml")
	body := fmt.Sprintf("source:\n  dsn: mysql://root:%s@%s\n  server_id: 9003\nstorage:\n  url: %s\n  endpoint: %s\n  path_style: true\n  region: us-east-1\nspool:\n  dir: %s\nhttp:\n  listen: 127.0.0.1:%d\narchive:\n  flush_interval: 1s\n",
		p.RootPassword, p.Addr(), s3.URL("rpo"), s3.Endpoint(), filepath.Join(e.dir, "rpo-spool"), port)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return err
	}
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	d, err := startBinvault(e, cfg)
	if err != nil {
		return err
	}
	defer d.stop()
	db, err := p.Open("")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE rpo; CREATE TABLE rpo.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(100), n INT)"); err != nil {
		return err
	}
	step("steady load: %d transactions/s for %d s; sampling /metrics every 100 ms", rate, seconds)
	lctx, stop := context.WithTimeout(ctx, time.Duration(seconds)*time.Second)
	defer stop()
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	const workers = 4
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Duration(float64(time.Second) * workers / float64(rate)))
			defer tick.Stop()
			for {
				select {
				case <-lctx.Done():
					return
				case <-tick.C:
				}
				if _, err := db.ExecContext(lctx, "INSERT INTO rpo.t (v, n) VALUES (REPEAT('x', 80), 1)"); err == nil {
					mu.Lock()
					done++
					mu.Unlock()
				}
			}
		}()
	}
	var rpo, newest []float64
	warm := time.Now().Add(3 * time.Second)
	for lctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		m, err := scrape(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil || time.Now().Before(warm) {
			continue
		}
		rpo = append(rpo, m["binvault_archive_rpo_seconds"])
		if ts := m["binvault_archive_newest_transaction_timestamp_seconds"]; ts > 0 {
			newest = append(newest, float64(time.Now().UnixNano())/1e9-ts)
		}
	}
	wg.Wait()
	fmt.Printf("\narchive lag at %.0f transactions/s (S3 on loopback, flush_interval 1s, %d samples):\n", float64(done)/float64(seconds), len(rpo))
	fmt.Printf("  %-42s %6s %6s %6s\n", "", "p50", "p99", "max")
	for _, r := range []struct {
		name string
		v    []float64
	}{{"live RPO (binvault_archive_rpo_seconds)", rpo}, {"age of the newest archived transaction", newest}} {
		fmt.Printf("  %-42s %5.2fs %5.2fs %5.2fs\n", r.name, quantile(r.v, 0.5), quantile(r.v, 0.99), quantile(r.v, 1))
	}
	return nil
}

func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
