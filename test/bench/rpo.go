package main

import (
	"bufio"
	"context"
	"database/sql"
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

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/open"
	"github.com/binvault/binvault/test/harness"
)

// The rpo scenario: what a user lives. A probe client commits a row,
// notes the wall time the commit returned, and polls the store itself (not
// the daemon) until that transaction's GTID is listed there; the figures
// are commit → in the store, over every probe, at a steady background load,
// with binvault at its defaults (archive.rpo_target 1s), archiving to a
// real S3 server (versitygw on loopback). Beside them, the PUTs per second
// the daemon made (binvault_store_requests_total). There is no native tool
// to compare with: mysqlbinlog --stop-never keeps a local copy and uploads
// nothing.
func benchRPO(ctx context.Context, e *env) error {
	rate := envInt("BINVAULT_BENCH_RPO_RATE", 300)
	probes := envInt("BINVAULT_BENCH_RPO_PROBES", 1200)
	gap := 50 * time.Millisecond
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
	body := fmt.Sprintf("source:\n  dsn: mysql://root:%s@%s\n  server_id: 9003\nstorage:\n  url: %s\n  endpoint: %s\n  path_style: true\n  region: us-east-1\nspool:\n  dir: %s\nhttp:\n  listen: 127.0.0.1:%d\n",
		p.RootPassword, p.Addr(), s3.URL("rpo"), s3.Endpoint(), filepath.Join(e.dir, "rpo-spool"), port)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return err
	}
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	st, err := open.Open(ctx, open.Options{URL: s3.URL("rpo"), Endpoint: s3.Endpoint(), Region: "us-east-1", PathStyle: true})
	if err != nil {
		return err
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
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	load := steadyLoad(lctx, db, rate)
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	time.Sleep(3 * time.Second) // the daemon connects, the load settles
	before, err := scrape(metrics)
	if err != nil {
		return fmt.Errorf("scrape the daemon: %w", err)
	}
	step("%d probes, one every %s, beside a steady load of %d transactions/s; polling the store every 10 ms", probes, gap, rate)
	w := newStoreWatcher(st)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go w.run(wctx, 10*time.Millisecond)
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	started := time.Now()
	for i := 0; i < probes && ctx.Err() == nil; i++ {
		next := started.Add(time.Duration(i) * gap)
		time.Sleep(time.Until(next))
		if _, err := conn.ExecContext(ctx, "INSERT INTO rpo.t (v, n) VALUES ('probe', 2)"); err != nil {
			return err
		}
		committed := time.Now()
		var gtid string
		if err := conn.QueryRowContext(ctx, "SELECT @@last_gtid").Scan(&gtid); err != nil {
			return err
		}
		w.expect(gtid, committed)
	}
	elapsed := time.Since(started)
	after, err := scrape(metrics)
	if err != nil {
		return fmt.Errorf("scrape the daemon: %w", err)
	}
	lat, missing := w.wait(30 * time.Second)
	stopLoad()
	done := load.wait()
	if missing > 0 {
		return fmt.Errorf("%d of %d probes never appeared in the store within 30 s", missing, probes)
	}
	puts := func(m map[string]float64) float64 {
		return m[`binvault_store_requests_total{operation="put"}`] + m[`binvault_store_requests_total{operation="put_if_absent"}`]
	}
	secs := elapsed.Seconds()
	segPuts := (after["binvault_archive_segments_total"] - before["binvault_archive_segments_total"]) / secs
	allPuts := (puts(after) - puts(before)) / secs
	fmt.Printf("\ncommit → in the store (listed by a client polling versitygw), %d probes, beside %.0f transactions/s, binvault defaults (rpo_target 1s):\n", len(lat), float64(done)/load.seconds())
	fmt.Printf("  %-26s %6s %6s %6s\n", "", "p50", "p99", "max")
	fmt.Printf("  %-26s %5.3fs %5.3fs %5.3fs\n", "commit → in store", quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 1))
	fmt.Printf("  PUTs per second: %.2f (segments %.2f, catalog and other %.2f), about %.0f per hour\n", allPuts, segPuts, allPuts-segPuts, allPuts*3600)
	return nil
}

// load is a steady write load of plain autocommit inserts.
type load struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	done    int
	started time.Time
	ended   time.Time
}

func steadyLoad(ctx context.Context, db *sql.DB, rate int) *load {
	l := &load{started: time.Now()}
	const workers = 4
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(time.Duration(float64(time.Second) * workers / float64(rate)))
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if _, err := db.ExecContext(ctx, "INSERT INTO rpo.t (v, n) VALUES (REPEAT('x', 80), 1)"); err == nil {
					l.mu.Lock()
					l.done++
					l.mu.Unlock()
				}
			}
		}()
	}
	return l
}

func (l *load) wait() int {
	l.wg.Wait()
	l.ended = time.Now()
	return l.done
}

func (l *load) seconds() float64 { return l.ended.Sub(l.started).Seconds() }

// storeWatcher polls the store the way a reader would: it lists the
// segments after the last one it saw and reads each new one's manifest.
// A probe is in the store when a listed segment's end contains its GTID.
type storeWatcher struct {
	st      storage.Store
	mu      sync.Mutex
	lastKey string
	end     binlog.GTIDSet
	pending map[string]time.Time // GTID -> commit time
	lat     []float64
}

func newStoreWatcher(st storage.Store) *storeWatcher {
	return &storeWatcher{st: st, pending: map[string]time.Time{}}
}

func (w *storeWatcher) expect(gtid string, committed time.Time) {
	w.mu.Lock()
	w.pending[gtid] = committed
	w.mu.Unlock()
}

func (w *storeWatcher) run(ctx context.Context, every time.Duration) {
	for ctx.Err() == nil {
		w.poll(ctx)
		time.Sleep(every)
	}
}

func (w *storeWatcher) poll(ctx context.Context) {
	var keys []string
	storage.ListAfter(ctx, w.st, archive.SegmentsPrefix, w.lastKey, func(oi storage.ObjectInfo) error {
		if _, manifest, ok := archive.ParseSegmentsKey(oi.Key); ok && !manifest {
			keys = append(keys, oi.Key)
		}
		return nil
	})
	for _, k := range keys {
		m, err := archive.ReadHeader(ctx, w.st, k)
		if err != nil {
			return // read again next time
		}
		seen := time.Now()
		end, err := binlog.ParseGTIDSet(m.Source.Flavor, m.End.GTIDSet)
		if err != nil {
			return
		}
		w.mu.Lock()
		w.lastKey, w.end = k, end
		for g, t := range w.pending {
			if end.ContainsGTID(g) {
				w.lat = append(w.lat, seen.Sub(t).Seconds())
				delete(w.pending, g)
			}
		}
		w.mu.Unlock()
	}
}

// wait returns every probe's latency once all are in the store, or what
// there is after timeout with the number still missing.
func (w *storeWatcher) wait(timeout time.Duration) ([]float64, int) {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		n := len(w.pending)
		lat := append([]float64(nil), w.lat...)
		w.mu.Unlock()
		if n == 0 || time.Now().After(deadline) {
			return lat, n
		}
		time.Sleep(50 * time.Millisecond)
	}
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
