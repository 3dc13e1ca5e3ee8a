//go:build !linux

package proc

import (
	"os/exec"
	"syscall"
)

// setSysProcAttr puts the child in a process group of its own, so that a Ctrl-C at the
// terminal reaches the parent only (which then stops the children itself). There is no
// parent-death signal outside Linux.
func setSysProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
