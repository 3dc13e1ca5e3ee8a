//go:build linux && shmqpoison

package broker_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/broker"
)

// poisonTag says whether the build tag shmqpoison turns Options.Poison on for every test.
const poisonTag = true

// TestPoisonBuildTag: built with -tags shmqpoison, every connection poisons its sent
// buffers without Options.Poison.
func TestPoisonBuildTag(t *testing.T) {
	_, cc, _ := pair(t, broker.Options{Dir: testDir(t)})
	ctx := context.Background()
	p, err := cc.Reserve(ctx, 1, 4)
	require.NoError(t, err)
	require.NoError(t, cc.Commit())
	p[0] = 1
	_, err = cc.Reserve(ctx, 1, 4)
	assert.ErrorIs(t, err, broker.ErrBufferReused)
}
