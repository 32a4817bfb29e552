package cli_test

import (
	"strings"
	"testing"
)

// TestChaosUsage checks what `pgq chaos` refuses before it starts anything.
func TestChaosUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"chaos", "extra"}, "unexpected argument"},
		{[]string{"chaos", "--faults", "kill,flood"}, `unknown fault kind "flood"`},
		{[]string{"chaos", "--duration", "0"}, "must be positive"},
		{[]string{"chaos", "--heartbeat-timeout", "10ms"}, "at least 100ms"},
		{[]string{"chaos", "--dsn", "host=/nowhere", "--faults", "kill,crash"}, "need the throwaway server"},
		{[]string{"chaos", "--workers", "0"}, "--workers"},
	} {
		r := pgq(t, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("pgq %q: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	h := pgq(t, "chaos", "-h").ok(t)
	for _, flag := range []string{"--duration", "--json", "--seed", "--complete-tx", "--faults"} {
		if !strings.Contains(h.stdout, flag) {
			t.Errorf("pgq chaos -h does not mention %s:\n%s", flag, h.stdout)
		}
	}
}
