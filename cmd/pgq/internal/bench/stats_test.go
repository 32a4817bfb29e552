package bench

import (
	"os"
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	p := percentiles(ds)
	if p.P50 != 50 || p.P90 != 90 || p.P99 != 99 || p.Max != 100 {
		t.Errorf("percentiles of 1..100 ms = %+v", p)
	}
	if got := percentiles([]time.Duration{3 * time.Microsecond}); got.P50 != 0.003 || got.P99 != 0.003 {
		t.Errorf("one sample: %+v", got)
	}
	if got := median([]time.Duration{4, 1, 3, 2}); got != 2 {
		t.Errorf("median = %v, want 2", got)
	}
}

func TestParsePlan(t *testing.T) {
	p := parsePlan(`Unique  (actual time=0.1..0.2 rows=3 loops=1)
  Buffers: shared hit=12 read=3
  ->  Index Only Scan
        Buffers: shared hit=9
Planning Time: 0.150 ms
Execution Time: 1.250 ms`)
	if p.ExecutionMs != 1.25 || p.PlanningMs != 0.15 || p.SharedHit != 12 || p.SharedRead != 3 {
		t.Errorf("parsePlan = %+v", p)
	}
}

func TestDurabilityName(t *testing.T) {
	for _, tc := range []struct{ job, log, want string }{
		{"p", "p", "durable"}, {"p", "u", "balanced"}, {"u", "u", "volatile"}, {"", "p", "not installed"},
	} {
		if got := durabilityName(tc.job, tc.log); got != tc.want {
			t.Errorf("durabilityName(%q, %q) = %q, want %q", tc.job, tc.log, got, tc.want)
		}
	}
}

func TestReadStat(t *testing.T) {
	st, ok := readStat(os.Getpid())
	if !ok {
		t.Skip("/proc is not readable here")
	}
	if st.ppid != os.Getppid() {
		t.Errorf("ppid = %d, want %d", st.ppid, os.Getppid())
	}
	if _, ok := readStat(-1); ok {
		t.Error("readStat(-1) succeeded")
	}
}
