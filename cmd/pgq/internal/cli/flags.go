package cli

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/pgq-dev/pgq"
)

// parseArgs parses flags that may come before, between or after the
// positional arguments (`queue email '{}' --priority 5`) and returns the
// positional ones. Everything after "--" is positional.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag.Parse stops at the first positional argument, or after "--"
		// (which it consumes).
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" && !takesValue(fs, args[:used-1]) {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// takesValue reports whether the last of args is a flag that consumes the
// next argument as its value (so that a following "--" is that value).
func takesValue(fs *flag.FlagSet, args []string) bool {
	if len(args) == 0 {
		return false
	}
	last := args[len(args)-1]
	if !strings.HasPrefix(last, "-") || strings.Contains(last, "=") {
		return false
	}
	f := fs.Lookup(strings.TrimLeft(last, "-"))
	if f == nil {
		return false
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return false
	}
	return true
}

// flagError turns the flag package's messages into pgq's.
func flagError(cmd string, err error) error {
	msg := err.Error()
	for _, r := range [][2]string{
		{"flag provided but not defined: -", "unknown flag --"},
		{"flag needs an argument: -", "missing value for --"},
		{"for flag -", "for --"},
		{"bad flag syntax: ", "bad flag syntax "},
	} {
		msg = strings.Replace(msg, r[0], r[1], 1)
	}
	return usagef("%s: %s (see `pgq %s -h`)", cmd, oneLine(msg), cmd)
}

// intFlag is an integer flag with a range and a clear parse error.
type intFlag struct {
	v        *int
	min, max int
}

func newIntFlag(v *int, def, lo, hi int) *intFlag {
	*v = def
	return &intFlag{v: v, min: lo, max: hi}
}

func (f *intFlag) String() string {
	if f == nil || f.v == nil {
		return "0"
	}
	return strconv.Itoa(*f.v)
}

func (f *intFlag) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("want a whole number from %d to %d", f.min, f.max)
	}
	if n < f.min || n > f.max {
		return fmt.Errorf("want a whole number from %d to %d", f.min, f.max)
	}
	*f.v = n
	return nil
}

// durationFlag is a non-negative duration: Go syntax (10s, 5m, 1h30m) or a
// plain number of seconds.
type durationFlag struct{ v *time.Duration }

func (f *durationFlag) String() string {
	if f == nil || f.v == nil || *f.v == 0 {
		return "0"
	}
	return f.v.String()
}

func (f *durationFlag) Set(s string) error {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(secs) || math.IsInf(secs, 0) || math.Abs(secs) > pgq.MaxExecuteAfter.Seconds() {
			return fmt.Errorf("want a duration such as 30s, 5m or 1h30m")
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 0 {
		return fmt.Errorf("must not be negative")
	}
	if d > pgq.MaxExecuteAfter {
		return fmt.Errorf("must be at most 100 years")
	}
	*f.v = d
	return nil
}

// durabilityFlag is --durability; zero means not given.
type durabilityFlag struct{ v *pgq.Durability }

func (f *durabilityFlag) String() string {
	if f == nil || f.v == nil || *f.v == 0 {
		return ""
	}
	return f.v.String()
}

func (f *durabilityFlag) Set(s string) error {
	d, err := pgq.ParseDurability(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("want durable, balanced or volatile")
	}
	*f.v = d
	return nil
}

// headerFlag collects repeated --header key=value flags.
type headerFlag struct{ m map[string]string }

func (f *headerFlag) String() string {
	if f == nil || len(f.m) == 0 {
		return "[]"
	}
	parts := make([]string, 0, len(f.m))
	for k, v := range f.m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (f *headerFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value")
	}
	if f.m == nil {
		f.m = map[string]string{}
	}
	f.m[k] = v
	return nil
}
