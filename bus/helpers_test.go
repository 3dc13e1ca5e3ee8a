package bus

import (
	"testing"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func takeDeadLetters(t *testing.T, seg *shm.Segment) []DeadLetter {
	t.Helper()
	r, err := ring.NewMPMCReader(seg, ring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []DeadLetter
	for {
		rec, err := r.TryNext()
		if err != nil {
			return out
		}
		d, err := parseDeadLetter(rec.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
		r.Release()
	}
}
