package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Size is a byte count written as 64MiB, 512KiB, 1GiB or plain bytes.
type Size int64

const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

var sizeUnits = []struct {
	suffix string
	mult   Size
}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}, {"B", 1}}

// ParseSize reads a size; decimal units (MB) are refused rather than guessed.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	mult := Size(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size: write a whole number with KiB, MiB, GiB or TiB, e.g. 64MiB", s)
	}
	if n > int64(1<<62)/int64(mult) {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(n) * mult, nil
}

func (s *Size) parse(v string) error {
	p, err := ParseSize(v)
	*s = p
	return err
}

func (s Size) String() string {
	for _, u := range sizeUnits {
		if s >= u.mult && s%u.mult == 0 {
			return strconv.FormatInt(int64(s/u.mult), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// Duration is a Go duration (500ms, 1s, 168h).
type Duration time.Duration

func (d *Duration) parse(v string) error {
	p, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("%q is not a duration: write e.g. 500ms, 1s, 5m or 168h", v)
	}
	*d = Duration(p)
	return nil
}

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }
