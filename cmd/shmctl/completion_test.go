package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCompletionScripts(t *testing.T) {
	dir := testDir(t)
	for shell, marker := range map[string]string{
		"bash": "__start_shmctl",
		"zsh":  "#compdef shmctl",
		"fish": "complete -c shmctl",
	} {
		stdout, stderr, status := shmctl(t, dir, "completion", shell)
		require.Equal(t, 0, status, stderr)
		assert.Contains(t, stdout, marker, shell)
	}
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}} {
		_, stderr, status := shmctl(t, dir, args...)
		assert.Equal(t, 2, status, "%v: %s", args, stderr)
	}
}

// TestCompletionSegments: a NAME completes to the shmq segments of the directory, never to
// other files; rm does not offer a name twice.
func TestCompletionSegments(t *testing.T) {
	dir := testDir(t)
	for _, n := range []string{"orders", "ticks"} {
		_, stderr, status := shmctl(t, dir, "create", n, "--kind", "spsc", "--size", "64KiB")
		require.Equal(t, 0, status, stderr)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a segment, long enough to have a magic"), 0o600))
	complete := func(args ...string) []string {
		var out, errOut bytes.Buffer
		require.Equal(t, 0, run(append([]string{"__complete", "--dir", dir}, args...), &out, &errOut), errOut.String())
		lines := splitLines(out.String())
		require.NotEmpty(t, lines)
		assert.Equal(t, ":4", lines[len(lines)-1], "no file completion")
		return lines[:len(lines)-1]
	}
	for _, cmd := range []string{"stat", "watch", "peek", "tail"} {
		assert.Equal(t, []string{"orders", "ticks"}, complete(cmd, ""), cmd)
		assert.Empty(t, complete(cmd, "orders", ""), "%s takes one NAME", cmd)
	}
	assert.Equal(t, []string{"ticks"}, complete("rm", "orders", ""))
	assert.Contains(t, complete("completion", ""), "bash")
}

// TestCompletionBash runs the generated script in bash, against this test binary in the
// role of shmctl: typing "shmctl stat <TAB>" offers the segments.
func TestCompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	// The script, like every cobra bash completion, uses the bash-completion package's
	// functions, which a shell with completions loads first.
	const library = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(library); err != nil {
		t.Skip("bash-completion is not installed (apt-get install bash-completion)")
	}
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "create", "orders", "--kind", "spsc", "--size", "64KiB")
	require.Equal(t, 0, status, stderr)
	self, err := os.Executable()
	require.NoError(t, err)
	bin := t.TempDir()
	wrapper := filepath.Join(bin, "shmctl")
	require.NoError(t, os.WriteFile(wrapper, []byte("#!/bin/sh\nSHMQ_PROCTEST_ROLE=shmctl exec "+self+" \"$@\"\n"), 0o700))
	script, _, status := shmctl(t, dir, "completion", "bash")
	require.Equal(t, 0, status)
	scriptFile := filepath.Join(bin, "shmctl.bash")
	require.NoError(t, os.WriteFile(scriptFile, []byte(script), 0o600))

	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", `source "$2"
source "$1"
COMP_WORDS=(shmctl stat "")
COMP_CWORD=2
COMP_LINE="shmctl stat "
COMP_POINT=${#COMP_LINE}
__start_shmctl shmctl "" stat
printf '%s\n' "${COMPREPLY[@]}"`, "bash", scriptFile, library)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "SHMQ_DIR="+dir)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut // compopt complains outside a real completion: not our concern
	out, err := cmd.Output()
	require.NoError(t, err, "%s", errOut.String())
	assert.Equal(t, "orders", strings.TrimSpace(string(out)))
}
