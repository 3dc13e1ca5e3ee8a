package promshmq_test

import (
	"bytes"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/shmq/shmq/promshmq"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// A program that serves Prometheus metrics already registers a Collector with its registry
// (and serves it with promhttp.HandlerFor); here the registry is gathered by hand and the
// messages counters printed in the text format a scrape returns.
func ExampleCollector() {
	dir, err := os.MkdirTemp("", "promshmq-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	opts := shm.Options{Dir: dir}

	seg, err := ring.Create("orders", ring.Spec{Kind: ring.SPSC, Size: 64 << 10}, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer seg.Close()
	w, err := ring.NewWriter(seg, ring.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	for _, order := range []string{"buy 100", "sell 50", "buy 7"} {
		if err := w.TryWrite(1, []byte(order)); err != nil {
			log.Fatal(err)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(promshmq.NewCollector(promshmq.Options{Segments: opts}))
	families, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	var text bytes.Buffer
	for _, mf := range families {
		if _, err := expfmt.MetricFamilyToText(&text, mf); err != nil {
			log.Fatal(err)
		}
	}
	for _, line := range strings.Split(text.String(), "\n") {
		if strings.HasPrefix(line, "shmq_write_") || strings.HasPrefix(line, "shmq_read_messages") {
			fmt.Println(line)
		}
	}
	// Output:
	// shmq_read_messages_total{kind="spsc",name="orders"} 0
	// shmq_write_bytes_total{kind="spsc",name="orders"} 19
	// shmq_write_full_total{kind="spsc",name="orders"} 0
	// shmq_write_messages_total{kind="spsc",name="orders"} 3
}
