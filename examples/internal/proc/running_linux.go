package proc

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
)

// Running lists the processes, other than this one, whose environment names dir as their
// group's directory: the children of the group that made dir, if any still run. It reads
// /proc/PID/environ, which only the process's owner may read; a process that exited and
// was not reaped yet has an empty one.
func Running(dir string) []int {
	want := []byte(envDir + "=" + dir + "\x00")
	paths, _ := filepath.Glob("/proc/[0-9]*/environ")
	var pids []int
	for _, p := range paths {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(append([]byte{0}, b...), append([]byte{0}, want...)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
