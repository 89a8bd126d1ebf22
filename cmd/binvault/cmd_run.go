package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/internal/availability"
	"github.com/binvault/binvault/internal/binlog"
	"github.com/binvault/binvault/internal/config"
	"github.com/binvault/binvault/internal/dbconn"
	"github.com/binvault/binvault/internal/metrics"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/replicator"
	"github.com/binvault/binvault/replicator/archiver"
	"github.com/binvault/binvault/replicator/serve"
	"github.com/binvault/binvault/storage"
)

// drainTimeout bounds how long a SIGTERM waits for the last uploads.
const drainTimeout = 20 * time.Second

func newRunCmd(g *globals) *cobra.Command {
	var startFrom string
	var acceptLost bool
	c := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: stream the binlog into the spool and archive it (stops cleanly on SIGINT/SIGTERM)",
		Long: `run registers with the primary as a replica (GTID auto-position), writes every
transaction to the local spool (fsync'd), and uploads closed segments to the
store. It resumes where the spool (or, with an empty spool, the archive) ends.
On a fresh spool and archive it starts at the primary's current position
(@@gtid_binlog_pos), or where --start-from says.

SIGINT/SIGTERM: stop streaming, close the open segment, upload what is left
(at most 20s), exit 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			return runDaemon(cmd.Context(), cfg, runOptions{startFrom: startFrom, acceptLost: acceptLost})
		},
	}
	c.Flags().StringVar(&startFrom, "start-from", "", "with an empty spool and archive, start at this position instead of the primary's current one: gtid:SET (e.g. gtid:0-1-1000)")
	c.Flags().BoolVar(&acceptLost, "accept-lost-transactions", false, "continue from a primary that lacks transactions binvault archived (lost with the old primary): the archive records a fork; restores past it need a backup taken after it")
	return c
}

// daemon is one running `binvault run`.
type daemon struct {
	cfg      *config.Config
	log      *slog.Logger
	metrics  *metrics.Metrics
	store    storage.Store
	spool    *replicator.Spool
	source   *replicator.Source
	archiver *archiver.Archiver
	applier  *replicator.Applier // nil without a replica: section
	sched    *scheduler          // nil without backup.schedule
	server   *serve.Server       // nil without serve.listen
	info     dbconn.ServerInfo
	started  time.Time
	avail    *availability.Tracker

	mu        sync.Mutex
	promoting sync.Mutex // one POST /promote at a time
	sourceErr string
	stateMu   sync.Mutex // one state file writer at a time
}

// runOptions are run's flags.
type runOptions struct {
	startFrom  string
	acceptLost bool
}

func runDaemon(ctx context.Context, cfg *config.Config, ro runOptions) error {
	d := &daemon{cfg: cfg, log: slog.Default(), metrics: metrics.New(), started: time.Now()}
	if err := d.setup(ctx, ro); err != nil {
		if d.spool != nil {
			d.spool.Close()
		}
		return err
	}
	defer d.spool.Close()
	return d.run(ctx)
}

// setup checks everything before anything runs: a problem found here is
// the user's to fix (exit 2).
func (d *daemon) setup(ctx context.Context, ro runOptions) error {
	cfg := d.cfg
	startFrom := ro.startFrom
	hosts, err := dbconn.ParseHosts(cfg.Source.DSN)
	if err != nil {
		return usage.Errorf("source.dsn: %v", err)
	}
	if startFrom != "" && !strings.HasPrefix(startFrom, "gtid:") {
		return usage.Errorf("--start-from %q: write gtid:SET, e.g. gtid:0-1-1000", startFrom)
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	d.store = storage.Counted(st, func(op string) { d.metrics.StoreRequests.WithLabelValues(op).Inc() })
	if ck, ok := d.store.(storage.Checker); ok {
		if err := ck.Check(ctx); err != nil {
			return usage.Wrap(err)
		}
	}
	id, err := replicator.SpoolID(cfg.Spool.Dir)
	if err != nil {
		return usage.Wrap(err)
	}
	if ro.acceptLost {
		d.log.Warn("--accept-lost-transactions: a new primary that lacks archived transactions is followed anyway, and the archive records the fork")
	}
	so := replicator.SourceOptions{DSN: hosts[0], Hosts: hosts, FailoverWait: cfg.Source.FailoverWait.D(), AcceptLost: ro.acceptLost,
		ServerID: cfg.Source.ServerID, Label: "binvault-" + id, SemiSync: cfg.Source.SemiSync, Metrics: d.metrics, Log: d.log}
	if len(hosts) > 1 {
		if so.DSN, err = replicator.PickPrimary(ctx, so); err != nil {
			return err
		}
	}
	info, src, err := replicator.Preflight(ctx, so)
	if err != nil {
		// The daemon cannot start without its primary: whatever the reason,
		// the user has to act, so exit 2 with the one-line explanation.
		return usage.Wrap(err)
	}
	d.info = info
	if d.avail, err = availability.Open(filepath.Join(cfg.Spool.Dir, "availability.json"), time.Now); err != nil {
		return usage.Wrap(err)
	}
	limits := replicator.SpoolLimits{SegmentMaxBytes: int64(cfg.Archive.SegmentMaxBytes), FlushInterval: cfg.Archive.FlushInterval.D(), RPOTarget: cfg.Archive.RPOTarget.D()}
	d.spool, err = replicator.OpenSpool(cfg.Spool.Dir, info.Flavor, limits, d.log)
	if err != nil {
		return err
	}
	d.spool.SetSource(src)
	if err := d.resolveStart(ctx, startFrom); err != nil {
		return err
	}
	if pos, _, ok := d.spool.End(); ok {
		if err := replicator.CheckHolds(ctx, so, d.spool, info.Flavor, pos); err != nil {
			return usage.Wrap(err)
		}
	}
	if pos, _, ok := d.spool.End(); ok {
		if err := replicator.CheckResumable(ctx, so, info.Flavor, pos); err != nil {
			return usage.Wrap(err)
		}
	}
	d.source = replicator.NewSource(so, info, d.spool)
	d.archiver = archiver.New(d.store, d.spool, archiver.Options{Metrics: d.metrics, Log: d.log,
		// The state file follows each upload at once, so status never shows
		// the archive behind what the store already holds.
		// Semi-sync store mode acknowledges what each upload made durable.
		Uploaded: func(seg archive.Segment) {
			d.source.Stored(seg.End, seg.Source.ServerID)
			d.writeState(true)
		}})
	d.spool.SetUploadEstimate(d.archiver.UploadEstimate)
	if r := cfg.Replica; r != nil {
		rdsn, err := dbconn.Parse(r.DSN)
		if err != nil {
			return usage.Errorf("replica.dsn: %v", err)
		}
		ao := replicator.ApplierOptions{DSN: rdsn, Include: r.Include, Exclude: r.Exclude, Delay: r.Delay.D(),
			AllowWritable: r.AllowWritable, StateDir: cfg.Spool.Dir, Metrics: d.metrics, Log: d.log.With("part", "applier")}
		d.applier = replicator.NewApplier(ao, info.Flavor, d.spool, d.store)
	}
	if cfg.Backup.Schedule != "" {
		if d.sched, err = newScheduler(d); err != nil {
			return usage.Errorf("backup.schedule: %v", err)
		}
	}
	if cfg.Serve.Listen != "" {
		if d.server, err = newBinlogServer(cfg, &serve.Live{Spool: d.spool, Store: d.store, Origin: src}, d.metrics, d.log); err != nil {
			return err
		}
	}
	return nil
}

// newBinlogServer listens for replicas as serve: says.
func newBinlogServer(cfg *config.Config, h serve.History, m *metrics.Metrics, log *slog.Logger) (*serve.Server, error) {
	var users []serve.User
	for _, u := range cfg.Serve.Users {
		users = append(users, serve.User{Name: u.Name, Password: u.Password()})
	}
	var tc *tls.Config
	if cfg.Serve.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.Serve.TLSCert, cfg.Serve.TLSKey)
		if err != nil {
			return nil, usage.Errorf("serve.tls_cert: %v", err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	s, err := serve.New(serve.Options{Listen: cfg.Serve.Listen, Users: users, TLS: tc, History: h, Metrics: m, Log: log.With("part", "serve")})
	if err != nil {
		return nil, usage.Errorf("%v: choose a free address, or leave serve.listen empty", err)
	}
	return s, nil
}

// resolveStart picks where streaming begins when the spool is empty: the
// archive's end, or --start-from, or the primary's current position.
func (d *daemon) resolveStart(ctx context.Context, startFrom string) error {
	pos, _, ok := d.spool.End()
	if ok {
		if startFrom != "" {
			return usage.Errorf("--start-from: the spool %s already continues from %s; move the spool aside to start elsewhere", d.spool.Dir(), pos)
		}
		return nil
	}
	ix, err := archive.Load(ctx, d.store, true)
	if err != nil {
		return fmt.Errorf("read the archive's end in %s: %w", d.store, err)
	}
	if last := ix.Last(); last != nil {
		if startFrom != "" {
			return usage.Errorf("--start-from: the archive in %s already ends at %s; binvault continues from there (use a new storage prefix to start elsewhere)", d.store, last.End)
		}
		d.log.Info("continuing from the archive's end", "segment", last.Seq, "position", last.End.String())
		return d.spool.Start(last.End, last.Seq+1)
	}
	start := binlog.Position{GTIDSet: d.info.GTIDPosition}
	if startFrom != "" {
		set := strings.TrimPrefix(startFrom, "gtid:")
		if _, err := binlog.ParseGTIDSet(d.info.Flavor, set); err != nil {
			// Name the flag's value and the expected form: the parser's own
			// words alone ("must domain-server-sequence") are no fix.
			return usage.Errorf("--start-from %q: %v: write gtid:SET in the primary's GTID syntax, e.g. gtid:0-1-1000", startFrom, err)
		}
		start.GTIDSet = set
	}
	d.log.Info("empty spool and archive: starting", "position", start.String())
	return d.spool.Start(start, 1)
}

func (d *daemon) run(ctx context.Context) error {
	d.metrics.RegisterAvailability(d.availability)
	d.metrics.RegisterSpool(metrics.SpoolGauges{
		Bytes:    func() float64 { return float64(d.spool.Bytes()) },
		Segments: func() float64 { return float64(d.spool.Segments()) },
		RPO: func() float64 {
			if t, _, ok := d.spool.OldestUnarchived(); ok {
				return max(0, time.Since(t).Seconds())
			}
			return 0
		},
		CommitAge: func() float64 {
			if _, t, ok := d.spool.OldestUnarchived(); ok {
				return max(0, time.Since(t).Seconds())
			}
			return 0
		},
	})

	if d.applier != nil {
		d.metrics.RegisterReplica(metrics.ReplicaGauges{
			SecondsBehind: func() float64 { return d.applier.Status().Lag.Seconds() },
			TxnsBehind:    d.applier.TxnsBehind,
		})
	}

	srv, err := d.serveHTTP()
	if err != nil {
		return err
	}
	if srv != nil {
		defer srv.Close()
	}

	streamCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	archCtx, stopArch := context.WithCancel(context.Background())
	defer stopArch()

	srcDone := make(chan error, 1)
	archDone := make(chan error, 1)
	go func() { srcDone <- d.source.Run(streamCtx) }()
	go func() { archDone <- d.archiver.Run(archCtx) }()
	applyDone := make(chan struct{})
	if d.applier != nil {
		// The applier runs beside the stream and the archive and never
		// ends them: whatever the replica does, it stops only the applying
		// and is tried again.
		go func() {
			defer close(applyDone)
			d.applier.Run(streamCtx)
		}()
	} else {
		close(applyDone)
	}
	if d.sched != nil {
		d.sched.start(ctx)
	}
	serveDone := make(chan struct{})
	if d.server != nil {
		go func() {
			defer close(serveDone)
			if err := d.server.Run(streamCtx); err != nil {
				d.log.Error("binlog server stopped; streaming and archiving go on", "err", err.Error())
			}
		}()
	} else {
		close(serveDone)
	}
	// Often enough that `status` never shows a state older than what it
	// sees in the store; the file is small and not fsync'd.
	stateTick := time.NewTicker(250 * time.Millisecond)
	defer stateTick.Stop()

	var runErr error
	sourceRunning, archRunning := true, true
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-srcDone:
			sourceRunning = false
			if err != nil {
				d.mu.Lock()
				d.sourceErr = err.Error()
				d.mu.Unlock()
				d.log.Error("binlog stream stopped", "err", err.Error())
				runErr = err
			}
			break loop
		case err := <-archDone:
			archRunning = false
			if err != nil {
				d.log.Error("archiver stopped", "err", err.Error())
				runErr = err
			}
			break loop
		case <-stateTick.C:
			d.observe()
			d.writeState(true)
		}
	}
	// Shutdown: a scheduled backup stops without a manifest (the next
	// backup deletes what it wrote); a retention under way finishes.
	if d.sched != nil {
		d.sched.stop()
	}
	// Stop the stream first, close the open segment at a transaction
	// boundary, then let the archiver upload what is left.
	stopStream()
	if sourceRunning {
		<-srcDone
	}
	<-applyDone
	<-serveDone
	if err := d.spool.Flush(); err != nil {
		d.log.Error("closing the open segment", "err", err.Error())
	}
	stopArch()
	if archRunning {
		<-archDone
	}
	if runErr == nil || !errors.Is(runErr, archiver.ErrConflict) {
		dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		if err := d.archiver.Drain(dctx); err != nil {
			d.log.Warn("not everything was uploaded before exit; the next run uploads the rest from the spool", "err", err.Error())
		}
		cancel()
	}
	d.writeState(false)
	if runErr == nil {
		d.log.Info("stopped", "position", posString(d.spool))
	}
	return runErr
}

func posString(s *replicator.Spool) string {
	p, _, _ := s.End()
	return p.String()
}

func (d *daemon) serveHTTP() (*http.Server, error) {
	if d.cfg.HTTP.Listen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", d.cfg.HTTP.Listen)
	if err != nil {
		return nil, usage.Errorf("http.listen %s: %v: choose a free address or \"\" to turn it off", d.cfg.HTTP.Listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if problems := d.unready(); len(problems) > 0 {
			http.Error(w, strings.Join(problems, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if d.applier != nil {
		mux.HandleFunc("/health/replica", appliedReplicaHealth(d.applier, d.cfg.HTTP.MaxReplicaLag.D()))
	}
	if d.server != nil {
		mux.HandleFunc("/health/replica/", replicaHealth(d.server, d.cfg.HTTP.MaxReplicaLag.D()))
	}
	mux.HandleFunc("/promote", d.promoteHandler)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	d.log.Info("serving /metrics, /healthz, /readyz", "listen", ln.Addr().String())
	return srv, nil
}

// appliedReplicaHealth answers /health/replica for load balancers (the
// contract of HAProxy's option httpchk): 200 while the applier applies
// and the replica is at most maxLag behind, 503 with a one-line reason
// otherwise.
func appliedReplicaHealth(a *replicator.Applier, maxLag time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		st := a.Status()
		switch {
		case st.Promoted:
			http.Error(w, "replica promoted: it is a primary now, binvault applies nothing to it", http.StatusServiceUnavailable)
		case st.Stopped:
			http.Error(w, "replica not applied: "+oneLine(st.LastError), http.StatusServiceUnavailable)
		case !st.Connected:
			reason := "connecting"
			if st.LastError != "" {
				reason = oneLine(st.LastError)
			}
			http.Error(w, "replica not connected: "+reason, http.StatusServiceUnavailable)
		case st.Lag > maxLag:
			http.Error(w, fmt.Sprintf("replica %s behind, over %s", st.Lag.Round(time.Second), maxLag), http.StatusServiceUnavailable)
		default:
			fmt.Fprintf(w, "replica applying, %s behind\n", st.Lag.Round(time.Second))
		}
	}
}

// replicaHealth answers /health/replica/<server_id> for load balancers:
// 200 while that served replica is connected and at most maxLag behind,
// 503 otherwise, with the reason.
func replicaHealth(s *serve.Server, maxLag time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseUint(strings.TrimPrefix(r.URL.Path, "/health/replica/"), 10, 32)
		if err != nil {
			http.Error(w, "use /health/replica/<server_id>", http.StatusNotFound)
			return
		}
		for _, rep := range s.Replicas() {
			if uint64(rep.ServerID) != id || !rep.Dumping {
				continue
			}
			if lag := time.Duration(rep.LagSeconds * float64(time.Second)); lag > maxLag {
				http.Error(w, fmt.Sprintf("replica %d is %s behind (%d transactions), over %s", id, lag, rep.LagTransactions, maxLag), http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintf(w, "replica %d: %d transactions, %.0fs behind\n", id, rep.LagTransactions, rep.LagSeconds)
			return
		}
		http.Error(w, fmt.Sprintf("replica %d is not connected", id), http.StatusServiceUnavailable)
	}
}

// observe records whether the watched parts are up: the stream connected,
// the store taking uploads within the RPO bound, the replica applying.
func (d *daemon) observe() {
	d.avail.Observe(availability.Stream, d.source.Connected())
	rpoOK := true
	if t, _, ok := d.spool.OldestUnarchived(); ok {
		rpoOK = time.Since(t) <= d.rpoLimit()
	}
	d.avail.Observe(availability.Store, d.archiver.LastError() == "" && rpoOK)
	if d.applier != nil {
		// A promoted replica is not down: binvault stopped applying on purpose.
		if st := d.applier.Status(); !st.Promoted {
			d.avail.Observe(availability.Replica, st.Connected && !st.Stopped)
		}
	}
}

// availability is the metrics' view of the watched parts.
func (d *daemon) availability() []metrics.PartAvailability {
	var out []metrics.PartAvailability
	for _, s := range d.avail.Stats() {
		out = append(out, metrics.PartAvailability{Part: s.Part, Up: s.Up, Failures: s.Failures, Transitions: s.Transitions,
			WindowSeconds: s.Window.Seconds(), MTBFSeconds: s.MTBF.Seconds(), MTTRSeconds: s.MTTR.Seconds(), Observed: s.Observed, Steady: s.Steady})
	}
	return out
}

// rpoLimit is the RPO past which the daemon is not ready: five times what
// it should be (the longer of the RPO target and the flush interval), at
// least 10 s.
func (d *daemon) rpoLimit() time.Duration {
	a := d.cfg.Archive
	return max(10*time.Second, 5*max(a.FlushInterval.D(), a.RPOTarget.D()))
}

// unready lists why the daemon is not doing its job right now.
func (d *daemon) unready() []string {
	var p []string
	st := d.state()
	if !st.Source.Connected {
		p = append(p, "binlog stream not connected")
	}
	if st.Archive.LastError != "" {
		p = append(p, "archive: "+st.Archive.LastError)
	}
	// The SDK retries a request for a while before the archiver sees an
	// error; the RPO says sooner that uploads are not keeping up.
	if limit := d.rpoLimit(); st.Archive.RPOSeconds > limit.Seconds() {
		p = append(p, fmt.Sprintf("archive: RPO %.0fs, over %s: the oldest streamed transaction is not archived yet", st.Archive.RPOSeconds, limit))
	}
	if msg := d.source.SemiSyncProblem(); msg != "" {
		p = append(p, msg)
	}
	if r := st.Replica; r != nil && !r.Promoted && (r.Stopped || !r.Connected) {
		p = append(p, "replica applier not running: "+r.LastError)
	}
	return p
}

// primaryDSN is source.dsn's server, or with several hosts the one that
// is the writable primary now.
func primaryDSN(ctx context.Context, cfg *config.Config) (dbconn.DSN, error) {
	hosts, err := dbconn.ParseHosts(cfg.Source.DSN)
	if err != nil {
		return dbconn.DSN{}, usage.Errorf("source.dsn: %v", err)
	}
	if len(hosts) == 1 {
		return hosts[0], nil
	}
	return replicator.PickPrimary(ctx, replicator.SourceOptions{Hosts: hosts, Log: slog.Default()})
}

func parseDSN(raw string) (string, error) {
	d, err := dbconn.Parse(raw)
	if err != nil {
		return "", err
	}
	return d.String(), nil
}
