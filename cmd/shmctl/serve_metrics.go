package main

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/shmq/shmq/promshmq"
)

func newServeMetricsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve-metrics --listen ADDR [--path /metrics]",
		Short: "Serve the counters of every segment to Prometheus over HTTP",
		Long: "Serve, at http://ADDR/metrics, the counters of every shmq segment in the directory\n" +
			"as Prometheus metrics (package promshmq; the README's Monitoring section lists them),\n" +
			"read-only at each scrape, as node_exporter serves a host's, along with this\n" +
			"process's own go_ and process_ metrics. Runs until interrupted (SIGINT, SIGTERM).\n" +
			"ADDR is host:port; port 0 picks a free one. The address served is printed first.",
		Args: exactArgs(0, "no arguments"),
		RunE: runServeMetrics,
	}
	cmd.Flags().String("listen", "", "address to listen on, host:port (required)")
	cmd.Flags().String("path", "/metrics", "URL path of the metrics")
	return cmd
}

func runServeMetrics(cmd *cobra.Command, args []string) error {
	addr, _ := cmd.Flags().GetString("listen")
	path, _ := cmd.Flags().GetString("path")
	if addr == "" {
		return usagef("serve-metrics needs --listen ADDR")
	}
	if path == "" || path[0] != '/' {
		return usagef("--path must start with /")
	}
	opts := options(cmd)
	if _, err := os.Stat(opts.ResolvedDir()); err != nil {
		return fmt.Errorf("serve-metrics: %w", err)
	}
	collector := promshmq.NewCollector(promshmq.Options{Segments: opts})
	defer collector.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	mux := http.NewServeMux()
	mux.Handle(path, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<html><head><title>shmctl serve-metrics</title></head><body>"+
			"<h1>shmq segments in %s</h1><p><a href=\"%s\">Metrics</a></p></body></html>\n",
			html.EscapeString(opts.ResolvedDir()), html.EscapeString(path))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve-metrics: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(cmd.OutOrStdout(), "serving metrics of %s on http://%s%s\n", opts.ResolvedDir(), ln.Addr(), path)

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve-metrics: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("serve-metrics: %w", err)
	}
	return nil
}
