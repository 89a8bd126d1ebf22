// Package metrics holds every Prometheus metric binvault exports, in one
// place so the README's list and the code cannot drift apart silently
// (a test compares them).
package metrics

import (
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
	SourceConnected     prometheus.Gauge
	SourceSecondsBehind prometheus.Gauge

	ArchiveSegments       prometheus.Counter
	ArchiveTransactions   prometheus.Counter
	ArchiveBytes          prometheus.Counter
	ArchiveUploadErrors   prometheus.Counter
	ArchiveNewestTxnTime  prometheus.Gauge
	ArchiveUploadDuration prometheus.Histogram
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
	m.SourceConnected = gauge("source_connected", "1 while the binlog stream is connected.")
	m.SourceSecondsBehind = gauge("source_seconds_behind", "Seconds between the newest event's timestamp and now when it arrived; 0 when caught up (heartbeat).")
	m.ArchiveSegments = counter("archive_segments_total", "Segments uploaded.")
	m.ArchiveTransactions = counter("archive_transactions_total", "Transactions in uploaded segments.")
	m.ArchiveBytes = counter("archive_bytes_total", "Compressed bytes uploaded for segments.")
	m.ArchiveUploadErrors = counter("archive_upload_errors_total", "Failed segment upload attempts (each is retried).")
	m.ArchiveNewestTxnTime = gauge("archive_newest_transaction_timestamp_seconds", "Commit time (Unix seconds) of the newest archived transaction.")
	m.ArchiveUploadDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "binvault", Name: "archive_upload_duration_seconds",
		Help: "Time to compress and upload one segment with its manifest.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)})
	f(m.ArchiveUploadDuration)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SpoolGauges are read from the spool at scrape time.
type SpoolGauges struct {
	Bytes, Segments, RPO func() float64
}

// RegisterSpool adds the gauges computed from the spool when scraped.
func (m *Metrics) RegisterSpool(g SpoolGauges) {
	gf := func(name, help string, fn func() float64) {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "binvault", Name: name, Help: help}, fn))
	}
	gf("spool_bytes", "Bytes of segments in the spool (closed and open).", g.Bytes)
	gf("spool_segments", "Closed segments in the spool not yet released.", g.Segments)
	gf("archive_rpo_seconds", "Age of the oldest streamed transaction not yet archived (0 when all are): what losing this host now would lose. Binlog timestamps have 1s resolution.", g.RPO)
}
