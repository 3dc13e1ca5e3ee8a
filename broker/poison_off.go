//go:build !shmqpoison

package broker

// poisonAlways turns Options.Poison on for every connection (the build tag shmqpoison).
const poisonAlways = false
