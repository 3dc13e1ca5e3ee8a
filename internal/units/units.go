// Package units parses and prints byte sizes the way people write them: 64KiB, 1MiB, 4096.
package units

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrSize is returned by ParseSize for anything that is not a size.
var ErrSize = errors.New("invalid size")

var multipliers = []struct {
	suffix string
	mult   uint64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"ki", 1 << 10}, {"mi", 1 << 20}, {"gi", 1 << 30}, {"ti", 1 << 40},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// ParseSize parses a non-negative whole number of bytes with an optional binary unit:
// "4096", "64KiB", "64K", "1MiB", "1m", "2GiB", "1TiB" (case-insensitive; K, M, G and T are
// powers of 1024). Decimal units such as "KB" and "MB" are refused rather than guessed.
func ParseSize(s string) (uint64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("%w: empty", ErrSize)
	}
	if strings.HasSuffix(t, "kb") || strings.HasSuffix(t, "mb") || strings.HasSuffix(t, "gb") || strings.HasSuffix(t, "tb") {
		return 0, fmt.Errorf("%w: %q: use binary units (KiB, MiB, GiB, TiB)", ErrSize, s)
	}
	mult := uint64(1)
	for _, m := range multipliers {
		if strings.HasSuffix(t, m.suffix) {
			t, mult = strings.TrimSuffix(t, m.suffix), m.mult
			break
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(t), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrSize, s)
	}
	if n > ^uint64(0)/mult {
		return 0, fmt.Errorf("%w: %q overflows 64 bits", ErrSize, s)
	}
	return n * mult, nil
}

// FormatSize prints n in the largest binary unit that divides it exactly ("64KiB", "1MiB"),
// or as plain bytes ("1000B").
func FormatSize(n uint64) string {
	for _, u := range []struct {
		name string
		mult uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatUint(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}
