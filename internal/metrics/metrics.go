package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is one daemon's set of collectors.
type Metrics struct {
	Registry *prometheus.Registry

	SourceEvents        prometheus.Counter
	SourceBytes         prometheus.Counter
	SourceTransactions  prometheus.Counter
	SourceReconnects    prometheus.Counter
	SourceFailovers     prometheus.Counter
	SourceConnected     prometheus.Gauge
	SourceSecondsBehind prometheus.Gauge

	SemiSyncMode           *prometheus.GaugeVec // mode=spool|store
	SemiSyncAcks           prometheus.Counter
	SemiSyncAckSeconds     prometheus.Histogram
	SemiSyncPending        prometheus.Gauge
	SemiSyncPrimaryActive  prometheus.Gauge
	SemiSyncPrimaryClients prometheus.Gauge
	SemiSyncFallbacks      prometheus.Counter
	SemiSyncUnacked        prometheus.Counter

	ArchiveSegments       prometheus.Counter
	ArchiveTransactions   prometheus.Counter
	ArchiveBytes          prometheus.Counter
	ArchiveUploadErrors   prometheus.Counter
	ArchiveNewestTxnTime  prometheus.Gauge
	ArchiveUploadDuration prometheus.Histogram
	StoreRequests         *prometheus.CounterVec // operation=put|put_if_absent|get|stat|list|delete

	ReplicaConnected    prometheus.Gauge
	ReplicaAppliedTxns  prometheus.Counter
	ReplicaApplyErrors  prometheus.Counter
	ReplicaBatchTxns    prometheus.Histogram
	ReplicaBatchSeconds prometheus.Histogram

	BackupLastSuccess    prometheus.Gauge
	BackupDuration       prometheus.Gauge
	Backups              *prometheus.CounterVec // result="ok"|"error"
	PruneDeletedBackups  prometheus.Counter
	PruneDeletedSegments prometheus.Counter
}

// New creates and registers the collectors; rpo reports the live RPO.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "binvault", Name: name, Help: help})
		f(c)
		return c
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "binvault", Name: name, Help: help})
		f(g)
		return g
	}
	m.SourceEvents = counter("source_events_total", "Binlog events read from the primary.")
	m.SourceBytes = counter("source_bytes_total", "Binlog bytes read from the primary.")
	m.SourceTransactions = counter("source_transactions_total", "Whole transactions written to the spool.")
	m.SourceReconnects = counter("source_reconnects_total", "Times the binlog stream was re-established after an error.")
	m.SourceFailovers = counter("source_failovers_total", "Times binvault followed a new primary among source.dsn's hosts.")
	m.SourceConnected = gauge("source_connected", "1 while the binlog stream is connected.")
	m.SourceSecondsBehind = gauge("source_seconds_behind", "Seconds between the newest event's timestamp and now when it arrived; 0 when caught up (heartbeat).")
	m.SemiSyncMode = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "binvault", Name: "semisync_mode",
		Help: "1 for the semi-synchronous mode binvault runs in (source.semi_sync: spool or store); absent when off."}, []string{"mode"})
	f(m.SemiSyncMode)
	m.SemiSyncAcks = counter("semisync_acks_total", "Semi-sync acknowledgements sent to the primary (each covers every request before it).")
	m.SemiSyncAckSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "binvault", Name: "semisync_ack_delay_seconds",
		Help:    "Time from the primary's acknowledgement request (the transaction's last event received) to binvault's acknowledgement, once the transaction was durable; one observation per request.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)})
	f(m.SemiSyncAckSeconds)
	m.SemiSyncPending = gauge("semisync_pending_requests", "Acknowledgement requests waiting for their transaction to be durable.")
	m.SemiSyncPrimaryActive = gauge("semisync_primary_active", "1 while the primary waits for semi-sync acknowledgements (Rpl_semi_sync_master_status ON, rpl_semi_sync_master_enabled ON); 0 when it commits asynchronously.")
	m.SemiSyncPrimaryClients = gauge("semisync_primary_clients", "Semi-sync replicas the primary counts (Rpl_semi_sync_master_clients), binvault included.")
	m.SemiSyncFallbacks = counter("semisync_primary_fallbacks_total", "Times the primary fell back to asynchronous replication (Rpl_semi_sync_master_no_times), seen while binvault ran.")
	m.SemiSyncUnacked = counter("semisync_primary_unacknowledged_commits_total", "Commits the primary made without a semi-sync acknowledgement (Rpl_semi_sync_master_no_tx), seen while binvault ran.")
	m.ArchiveSegments = counter("archive_segments_total", "Segments uploaded.")
	m.ArchiveTransactions = counter("archive_transactions_total", "Transactions in uploaded segments.")
	m.ArchiveBytes = counter("archive_bytes_total", "Compressed bytes uploaded for segments.")
	m.ArchiveUploadErrors = counter("archive_upload_errors_total", "Failed segment upload attempts (each is retried).")
	m.ArchiveNewestTxnTime = gauge("archive_newest_transaction_timestamp_seconds", "Commit time (Unix seconds) of the newest archived transaction.")
	m.ArchiveUploadDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "binvault", Name: "archive_upload_duration_seconds",
		Help: "Time to compress and upload one segment (one object, its manifest inside).", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)})
	f(m.ArchiveUploadDuration)
	m.StoreRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "binvault", Name: "store_requests_total",
		Help: "Requests the daemon made to the store, by operation (put, put_if_absent, get, stat, list, delete): object stores bill by the request."}, []string{"operation"})
	for _, op := range []string{"put", "put_if_absent", "get", "stat", "list", "delete"} {
		m.StoreRequests.WithLabelValues(op)
	}
	f(m.StoreRequests)
	m.ReplicaConnected = gauge("replica_connected", "1 while the applier is connected to the replica.")
	m.ReplicaAppliedTxns = counter("replica_applied_transactions_total", "Source transactions committed on the replica.")
	m.ReplicaApplyErrors = counter("replica_apply_errors_total", "Transactions the replica refused (the applier stops at each).")
	m.ReplicaBatchTxns = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "binvault", Name: "replica_batch_transactions",
		Help: "Source transactions committed per round trip to the replica.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)})
	m.ReplicaBatchSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "binvault", Name: "replica_batch_duration_seconds",
		Help: "Time of one round trip to the replica (send, execute, answers).", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	f(m.ReplicaBatchTxns)
	f(m.ReplicaBatchSeconds)
	m.BackupLastSuccess = gauge("backup_last_success_timestamp_seconds", "End time (Unix seconds) of the last successful scheduled backup.")
	m.BackupDuration = gauge("backup_duration_seconds", "Duration of the last successful scheduled backup.")
	m.Backups = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "binvault", Name: "backups_total",
		Help: "Scheduled backups that ended, by result (ok or error)."}, []string{"result"})
	m.Backups.WithLabelValues("ok")
	m.Backups.WithLabelValues("error")
	f(m.Backups)
	m.PruneDeletedBackups = counter("prune_deleted_backups_total", "Backups deleted by retention after scheduled backups.")
	m.PruneDeletedSegments = counter("prune_deleted_segments_total", "Segments deleted by retention after scheduled backups.")
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ReplicaGauges are read from the applier at scrape time.
type ReplicaGauges struct {
	SecondsBehind, TxnsBehind func() float64
}

// RegisterReplica adds the applier's lag gauges.
func (m *Metrics) RegisterReplica(g ReplicaGauges) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "binvault", Name: "replica_seconds_behind",
		Help: "How long ago the oldest transaction the applier read and has not applied yet was committed on the primary (whole seconds); 0 when it waits for more."}, g.SecondsBehind))
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "binvault", Name: "replica_transactions_behind",
		Help: "Transactions streamed from the primary but not yet applied (by GTID sequence numbers)."}, g.TxnsBehind))
}

// SpoolGauges are read from the spool at scrape time.
type SpoolGauges struct {
	Bytes, Segments, RPO, CommitAge func() float64
}

// RegisterSpool adds the gauges computed from the spool when scraped.
func (m *Metrics) RegisterSpool(g SpoolGauges) {
	gf := func(name, help string, fn func() float64) {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "binvault", Name: name, Help: help}, fn))
	}
	gf("spool_bytes", "Bytes of segments in the spool (closed and open).", g.Bytes)
	gf("spool_segments", "Closed segments in the spool not yet released.", g.Segments)
	gf("archive_rpo_seconds", "Time since the oldest transaction not yet archived arrived at binvault (0 when all are archived): what losing this host now would lose.", g.RPO)
	gf("archive_unarchived_commit_age_seconds", "Age of the oldest transaction not yet archived, from its commit time on the primary (binlog timestamps: whole seconds); includes the primary's delay in sending it.", g.CommitAge)
}

// ServedReplica is one replica of the binlog server at scrape time.
type ServedReplica struct {
	ServerID        uint32
	LagTransactions int64
	LagSeconds      float64
}

// ServeSnapshot is what the binlog server reports at scrape time.
type ServeSnapshot struct {
	Replicas      []ServedReplica
	Events, Bytes int64
}

// RegisterServe adds the binlog server's metrics, read from snap when
// scraped (per-replica series come and go with the replicas).
func (m *Metrics) RegisterServe(snap func() ServeSnapshot) {
	m.Registry.MustRegister(&serveCollector{snap: snap})
}

var (
	serveReplicasDesc = prometheus.NewDesc("binvault_serve_replicas", "Replicas connected to the binlog server.", nil, nil)
	serveEventsDesc   = prometheus.NewDesc("binvault_serve_events_total", "Binlog events sent to served replicas.", nil, nil)
	serveBytesDesc    = prometheus.NewDesc("binvault_serve_bytes_total", "Binlog bytes sent to served replicas.", nil, nil)
	serveLagTxnsDesc  = prometheus.NewDesc("binvault_serve_replica_lag_transactions",
		"Transactions binvault holds that a served replica has not been sent yet, by server_id.", []string{"server_id"}, nil)
	serveLagSecsDesc = prometheus.NewDesc("binvault_serve_replica_lag_seconds",
		"How far a served replica is behind, in the primary's commit time (whole seconds), by server_id; 0 when it has everything.", []string{"server_id"}, nil)
)

type serveCollector struct{ snap func() ServeSnapshot }

func (c *serveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{serveReplicasDesc, serveEventsDesc, serveBytesDesc, serveLagTxnsDesc, serveLagSecsDesc} {
		ch <- d
	}
}

func (c *serveCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snap()
	ch <- prometheus.MustNewConstMetric(serveReplicasDesc, prometheus.GaugeValue, float64(len(s.Replicas)))
	ch <- prometheus.MustNewConstMetric(serveEventsDesc, prometheus.CounterValue, float64(s.Events))
	ch <- prometheus.MustNewConstMetric(serveBytesDesc, prometheus.CounterValue, float64(s.Bytes))
	seen := map[uint32]bool{}
	for _, r := range s.Replicas {
		if seen[r.ServerID] {
			continue // a duplicate server_id is being disconnected
		}
		seen[r.ServerID] = true
		id := strconv.FormatUint(uint64(r.ServerID), 10)
		ch <- prometheus.MustNewConstMetric(serveLagTxnsDesc, prometheus.GaugeValue, float64(r.LagTransactions), id)
		ch <- prometheus.MustNewConstMetric(serveLagSecsDesc, prometheus.GaugeValue, r.LagSeconds, id)
	}
}

// PartAvailability is one watched part's availability at scrape time.
type PartAvailability struct {
	Part                                    string
	Up                                      bool
	Failures, Transitions                   int
	WindowSeconds, MTBFSeconds, MTTRSeconds float64
	Observed, Steady                        float64
}

// RegisterAvailability adds the availability figures, read when scraped.
func (m *Metrics) RegisterAvailability(parts func() []PartAvailability) {
	m.Registry.MustRegister(&availabilityCollector{parts: parts})
}

var availabilityDescs = map[string]*prometheus.Desc{
	"up":          prometheus.NewDesc("binvault_availability_up", "1 while the part is up (stream: connected; store: uploads succeed within the RPO bound; replica: applying).", []string{"part"}, nil),
	"failures":    prometheus.NewDesc("binvault_availability_failures_total", "Times the part went down, observed while binvault ran (kept across restarts).", []string{"part"}, nil),
	"transitions": prometheus.NewDesc("binvault_availability_transitions_total", "Up/down transitions the figures were fitted to.", []string{"part"}, nil),
	"window":      prometheus.NewDesc("binvault_availability_window_seconds", "Time the part was observed (while binvault ran).", []string{"part"}, nil),
	"mtbf":        prometheus.NewDesc("binvault_availability_mtbf_seconds", "Mean time up between failures (the whole time up before the first failure).", []string{"part"}, nil),
	"mttr":        prometheus.NewDesc("binvault_availability_mttr_seconds", "Mean time down per failure, the current outage included.", []string{"part"}, nil),
	"observed":    prometheus.NewDesc("binvault_availability_observed_ratio", "Share of the window the part was up.", []string{"part"}, nil),
	"steady":      prometheus.NewDesc("binvault_availability_steady_state_ratio", "Steady-state availability of a two-state Markov chain fitted to the transitions: P10/(P01+P10) per second.", []string{"part"}, nil),
}

type availabilityCollector struct{ parts func() []PartAvailability }

func (c *availabilityCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range availabilityDescs {
		ch <- d
	}
}

func (c *availabilityCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.parts() {
		up := 0.0
		if p.Up {
			up = 1
		}
		for name, v := range map[string]float64{"up": up, "window": p.WindowSeconds, "mtbf": p.MTBFSeconds, "mttr": p.MTTRSeconds, "observed": p.Observed, "steady": p.Steady} {
			ch <- prometheus.MustNewConstMetric(availabilityDescs[name], prometheus.GaugeValue, v, p.Part)
		}
		ch <- prometheus.MustNewConstMetric(availabilityDescs["failures"], prometheus.CounterValue, float64(p.Failures), p.Part)
		ch <- prometheus.MustNewConstMetric(availabilityDescs["transitions"], prometheus.CounterValue, float64(p.Transitions), p.Part)
	}
}
