//go:build race

package ring_test

// raceEnabled: the test binary runs under the race detector.
const raceEnabled = true
