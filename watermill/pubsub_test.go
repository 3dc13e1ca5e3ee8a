package watermill_test

import (
	"os"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/shm"
	shmwm "github.com/shmq/shmq/watermill"
)

// testDir is a directory for the segments of one test, in /dev/shm when there is one,
// removed when the test ends.
func testDir(t testing.TB) string {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	d, err := os.MkdirTemp(base, "wm-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// suiteConfig is the shape of the suite's topics: the suite publishes up to 10,000
// messages before it subscribes (5,000 and 100 with -short), all of which a new subscriber
// must still find, so the topics hold 16,384.
func suiteConfig(dir string) shmwm.Config {
	slots := uint64(16384)
	if testing.Short() {
		slots = 1024
	}
	return shmwm.Config{Dir: dir, Topic: shmwm.TopicConfig{Slots: slots, MaxMessage: 496}}
}

// features are the suite's flags: what the adapter does (the README lists why).
func features() tests.Features {
	return tests.Features{
		ConsumerGroups:                      true,
		ExactlyOnceDelivery:                 false,
		GuaranteedOrder:                     true,
		GuaranteedOrderWithSingleSubscriber: false,
		Persistent:                          true,
		RestartServiceCommand:               nil,
		RequireSingleInstance:               false,
		NewSubscriberReceivesOldMessages:    true,
		ContextPreserved:                    false,
	}
}

func runSuite(t *testing.T, f tests.Features) {
	dir := testDir(t)
	newPubSub := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		logger := watermill.NopLogger{}
		pub, err := shmwm.NewPublisher(shmwm.PublisherConfig{Config: suiteConfig(dir)}, logger)
		require.NoError(t, err)
		sub, err := shmwm.NewSubscriber(shmwm.SubscriberConfig{Config: suiteConfig(dir), ConsumerGroup: group}, logger)
		require.NoError(t, err)
		return pub, sub
	}
	tests.TestPubSub(t, f,
		func(t *testing.T) (message.Publisher, message.Subscriber) { return newPubSub(t, "") },
		newPubSub)
}

func TestPubSub(t *testing.T) { runSuite(t, features()) }

// TestPubSubOddTopicNames runs the suite on topics whose names a segment name cannot hold:
// escaped ones, and ones so long that they are hashed (each message's envelope then says
// which topic it belongs to).
func TestPubSubOddTopicNames(t *testing.T) {
	t.Run("escaped", func(t *testing.T) {
		f := features()
		f.GenerateTopicFunc = func(tc tests.TestContext) string { return ".odd topic/ü_" + string(tc.TestID) }
		runSuite(t, f)
	})
	t.Run("hashed", func(t *testing.T) {
		f := features()
		f.GenerateTopicFunc = func(tc tests.TestContext) string {
			return strings.Repeat("a long/topic ", 8) + string(tc.TestID)
		}
		runSuite(t, f)
	})
}
