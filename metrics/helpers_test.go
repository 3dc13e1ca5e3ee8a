package metrics_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/shm"
)

// testDir returns a private segment directory under /dev/shm (else the default temporary
// directory), removed after the test.
func testDir(t testing.TB) string {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	d, err := os.MkdirTemp(base, "metrics-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
