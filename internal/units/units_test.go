package units

import (
	"errors"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{
		"0": 0, "4096": 4096, "64KiB": 64 << 10, "64kib": 64 << 10, "64K": 64 << 10, "64Ki": 64 << 10,
		"1MiB": 1 << 20, "1m": 1 << 20, "2GiB": 2 << 30, "1TiB": 1 << 40, "100B": 100, " 8KiB ": 8 << 10,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "KiB", "-1", "1.5MiB", "64KB", "1MB", "abc", "99999999999999999999", "20000000TiB"} {
		if _, err := ParseSize(in); !errors.Is(err, ErrSize) {
			t.Errorf("ParseSize(%q) error = %v, want ErrSize", in, err)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0B", 1000: "1000B", 1024: "1KiB", 64 << 10: "64KiB", 1 << 20: "1MiB", 1536: "1536B", 3 << 30: "3GiB", 1 << 40: "1TiB",
	} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
