//go:build linux && !shmqpoison

package broker_test

// poisonTag says whether the build tag shmqpoison turns Options.Poison on for every test.
const poisonTag = false
