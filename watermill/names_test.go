package watermill

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/shm"
)

func TestTopicSegmentNames(t *testing.T) {
	cases := []struct{ topic, segment string }{
		{"orders.created", "wm.orders.created"},
		{"topic-3b0f2136-2296-4641-a18d-84d6f8b86779", "wm.topic-3b0f2136-2296-4641-a18d-84d6f8b86779"},
		{"a/b c", "wm.a_2fb_20c"},
		{"snake_case", "wm.snake_5fcase"},
		{"", "wm._"},
		{".hidden", "wm._2ehidden"},
		{"a.", "wm.a."},
		{"ü", "wm._c3_bc"},
		{"__", "wm._5f_5f"},
		{"\x00", "wm._00"},
	}
	for _, c := range cases {
		got := TopicSegment("wm.", c.topic)
		assert.Equal(t, c.segment, got, "topic %q", c.topic)
		require.NoError(t, shm.ValidateName(got))
		back, ok := TopicOf("wm.", got)
		assert.True(t, ok, "%q decodes", got)
		assert.Equal(t, c.topic, back)
		assert.NoError(t, shm.ValidateName(TopicSegment("", c.topic)), "no prefix: %q", c.topic)
	}
	assert.Equal(t, "wm.a_2fb__billing_20eu", GroupSegment("wm.", "a/b", "billing eu"))
	_, ok := TopicOf("wm.", GroupSegment("wm.", "a", "b"))
	assert.False(t, ok, "a group queue is no topic segment")
	_, ok = TopicOf("wm.", "other.name")
	assert.False(t, ok, "another prefix")
	for _, bad := range []string{"wm._2", "wm._zz", "wm._61", "wm._2E", "wm.a b", "wm."} {
		_, ok := TopicOf("wm.", bad)
		assert.False(t, ok, "%q is no encoding", bad)
	}
}

func TestLongNamesAreHashed(t *testing.T) {
	long := strings.Repeat("x", 300)
	other := strings.Repeat("x", 299) + "y" // same start: only the hash tells them apart
	prefix := strings.Repeat("p", maxPrefix)
	a, b := TopicSegment(prefix, long), TopicSegment(prefix, other)
	assert.NotEqual(t, a, b)
	assert.Contains(t, a, hashedMark)
	require.NoError(t, shm.ValidateName(a))
	g := GroupSegment(prefix, long, strings.Repeat("/", 200))
	require.NoError(t, shm.ValidateName(g), "the longest prefix, topic and group fit a segment name")
	_, ok := TopicOf(prefix, a)
	assert.False(t, ok, "a hashed name is not reversible")

	// A cut never splits an escape: the part before the mark holds whole escapes only.
	e := encodePart(strings.Repeat("é", 100))
	before, _, found := strings.Cut(e, hashedMark)
	require.True(t, found)
	_, ok = decodePart(before)
	assert.True(t, ok, "%q", before)
	assert.LessOrEqual(t, len(e), maxPart)
}

func TestDurableName(t *testing.T) {
	assert.Equal(t, "billing", durableName("billing"))
	assert.Len(t, durableName(strings.Repeat("g", 64)), maxDurableName)
	assert.NotEqual(t, "#x", durableName("#x"), "a '#' start is hashed, so no group reads as another's hash")
	assert.NotEqual(t, durableName(strings.Repeat("g", 64)), durableName(strings.Repeat("g", 65)))
}

func TestPrefixChecked(t *testing.T) {
	for _, p := range []string{".x", "a__b", "a/b", strings.Repeat("p", maxPrefix+1)} {
		assert.ErrorIs(t, checkPrefix(p), ErrInvalidConfig, "%q", p)
	}
	assert.NoError(t, checkPrefix("app-1."))
}

// FuzzTopicSegment: every topic string maps to a valid segment name that decodes back to
// it (or is hashed), and two strings map to one name only if they are the same.
func FuzzTopicSegment(f *testing.F) {
	f.Add("orders", "orders2")
	f.Add("", "_")
	f.Add(".a", "_2ea")
	f.Add(strings.Repeat("é", 50), strings.Repeat("é", 51))
	f.Fuzz(func(t *testing.T, a, b string) {
		na, nb := TopicSegment("wm.", a), TopicSegment("wm.", b)
		if err := shm.ValidateName(na); err != nil {
			t.Fatalf("%q: %v", a, err)
		}
		back, ok := TopicOf("wm.", na)
		if ok && back != a {
			t.Fatalf("%q decodes to %q", na, back)
		}
		if !ok && !strings.Contains(na, hashedMark) {
			t.Fatalf("%q does not decode", na)
		}
		if a != b && na == nb {
			t.Fatalf("%q and %q both map to %q", a, b, na)
		}
		if ga := GroupSegment("wm.", a, b); ga == nb || ga == na {
			t.Fatalf("group queue %q has a topic's name", ga)
		}
	})
}
