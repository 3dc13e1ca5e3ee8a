package shm_test

import "github.com/shmq/shmq/shm"

// Kinds of the tests' segments. shm registers no kind itself; a layer above would.
const (
	testKind  shm.Kind = 7
	otherKind shm.Kind = 8
)

func init() {
	shm.RegisterKind(testKind, "shmtest")
	shm.RegisterKind(otherKind, "shmother")
}
