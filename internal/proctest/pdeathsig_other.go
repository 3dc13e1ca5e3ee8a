//go:build !linux

package proctest

import "os/exec"

// setParentDeathSignal does nothing where the kernel has no parent-death signal; t.Cleanup
// still kills the child.
func setParentDeathSignal(cmd *exec.Cmd) {}
