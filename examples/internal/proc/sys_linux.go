package proc

import (
	"os/exec"
	"syscall"
)

// setSysProcAttr puts the child in a process group of its own, so that a Ctrl-C at the
// terminal reaches the parent only (which then stops the children itself), and asks the
// kernel to SIGKILL it if the parent dies first.
func setSysProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
