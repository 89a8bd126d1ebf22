package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/binvault/binvault/internal/config"
	"github.com/binvault/binvault/internal/metrics"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/replicator/serve"
	"github.com/binvault/binvault/storage"
)

func newServeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Binlog server from the store alone: native replicas replicate from the archive (needs only storage: and serve:)",
		Long: `serve speaks the primary's side of MariaDB replication from the archive
alone, for a region that has the store but no connection to the primary:
replicas there CHANGE MASTER TO binvault (MASTER_USE_GTID=slave_pos) and
replicate natively with their own parallel threads. It follows the archive
as new segments land (it lists the store every archive.rpo_target, or
archive.flush_interval when that is shorter). Only storage: and serve: (and
http:) are needed: no source credentials.

SIGINT/SIGTERM: disconnect the replicas (they reconnect by themselves when
binvault serves again), exit 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadServeConfig()
			if err != nil {
				return err
			}
			return runServe(cmd.Context(), cfg)
		},
	}
}

// followInterval is how often binvault serve lists the store for new
// segments: as often as the archive's writer closes them at most.
func followInterval(a config.Archive) time.Duration {
	d := a.RPOTarget.D()
	if f := a.FlushInterval.D(); f > 0 && (d == 0 || f < d) {
		d = f
	}
	if d <= 0 {
		d = time.Second
	}
	return d
}

func runServe(ctx context.Context, cfg *config.Config) error {
	log := slog.Default()
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	if ck, ok := st.(storage.Checker); ok {
		if err := ck.Check(ctx); err != nil {
			return usage.Wrap(err)
		}
	}
	m := metrics.New()
	st = storage.Counted(st, func(op string) { m.StoreRequests.WithLabelValues(op).Inc() })
	h, err := serve.NewArchived(ctx, st, followInterval(cfg.Archive), log)
	if err != nil {
		return fmt.Errorf("read the archive in %s: %w", st, err)
	}
	srv, err := newBinlogServer(cfg, h, m, log)
	if err != nil {
		return err
	}
	if cfg.HTTP.Listen != "" {
		ln, err := net.Listen("tcp", cfg.HTTP.Listen)
		if err != nil {
			return usage.Errorf("http.listen %s: %v: choose a free address or \"\" to turn it off", cfg.HTTP.Listen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if err := h.Err(); err != nil {
				http.Error(w, "archive: "+strings.Join(strings.Fields(err.Error()), " "), http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ready")
		})
		mux.HandleFunc("/health/replica/", replicaHealth(srv, cfg.HTTP.MaxReplicaLag.D()))
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(ln)
		defer hs.Close()
		log.Info("serving /metrics, /healthz, /readyz, /health/replica/<server_id>", "listen", ln.Addr().String())
	}
	go h.Follow(ctx)
	if end, _, ok := h.End(); ok {
		log.Info("serving the archive", "store", st.String(), "to", end.String())
	} else {
		log.Info("serving the archive, empty so far", "store", st.String())
	}
	if err := srv.Run(ctx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
