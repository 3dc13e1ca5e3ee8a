package bus

import (
	"fmt"
	"strings"
)

func splitLines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

func fmtSscan(line string, seq *uint64, attempt *uint32) (int, error) {
	return fmt.Sscan(line, seq, attempt)
}
