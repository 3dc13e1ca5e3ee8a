package main

import (
	"bytes"
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	if os.Getenv(envRole) != "" { // a child of measure: this test binary re-executed
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRun measures every transport once with few messages: each row has a rate and
// latencies, and nothing was lost.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run([]string{"--messages", "2000", "--latency", "200", "--runs", "1"}, &out))
	for _, via := range []string{"topic", "nats", "bridged"} {
		require.Regexp(t, regexp.MustCompile(`(?m)^1\s+`+via+`\s+\d+\s+[\d.]+x\s+\S+\s+\S+\s+[\d.]+x$`), out.String())
	}
	require.NotContains(t, out.String(), "lost")
}
