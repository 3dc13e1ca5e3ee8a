//go:build !linux

package supervise

import "os/exec"

// setParentDeathSignal does nothing off Linux: there is no parent-death signal.
func setParentDeathSignal(*exec.Cmd) {}
