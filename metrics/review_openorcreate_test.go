package metrics_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/shm"
)

func init() { proctest.Register("halfcreator", runHalfCreator) }

func reviewSchema() []metrics.Desc {
	return []metrics.Desc{{Name: "a", Type: metrics.TypeCounter}}
}

// runHalfCreator does what metrics.Create does up to the moment the set is ready: the
// segment exists under its name with its schema written, the state word still 0. It is
// killed there (KillAt "created"), as a creator can be.
func runHalfCreator(c *proctest.Child) error {
	schema := metrics.EncodeSchema(reviewSchema())
	seg, err := shm.Create("m", shm.Spec{Kind: metrics.SegmentKind, DataSize: 1 << 16,
		Params: [2]uint64{metrics.FormatVersion, metrics.SchemaParam(schema)}}, shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	copy(seg.Data(), schema)
	c.Point("created")
	return nil
}

// TestReviewOpenOrCreateAfterDeadCreator: a creator killed between creating the segment and
// marking it ready left a set that no process can open (ErrNotReady: its creator died), and
// OpenOrCreate failed with that error for ever, the name taken until someone removed it by
// hand. Nobody can hold such a set open, so OpenOrCreate now removes it (if the name still
// refers to it) and creates the set anew; Open still refuses it.
func TestReviewOpenOrCreateAfterDeadCreator(t *testing.T) {
	dir := testDir(t)
	opts := shm.Options{Dir: dir}
	p := proctest.Start(t, "halfcreator", proctest.Options{Args: []string{dir}, KillAt: "created"})
	_ = p.Wait(time.Minute)
	require.True(t, p.Killed(), "the creator died at the point: %s", p.Output())

	_, err := metrics.Open("m", opts)
	require.ErrorIs(t, err, metrics.ErrNotReady, "the half-made set cannot be opened")

	s, created, err := metrics.OpenOrCreate("m", reviewSchema(), opts)
	require.NoError(t, err)
	defer s.Close()
	assert.True(t, created)
	c, err := s.Counter("a")
	require.NoError(t, err)
	c.Add(7)
	snap, err := metrics.Read("m", opts)
	require.NoError(t, err)
	assert.Equal(t, uint64(7), find(t, snap, "a").Counter)
}
