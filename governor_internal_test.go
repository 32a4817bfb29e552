package pgq

import (
	"database/sql"
	"log/slog"
	"testing"
	"time"
)

// TestGovernorDecide: the governor lowers the limit by a quarter while
// the worker's statements are slow and the handlers hold the pool's
// connections (by half when they are over twice as slow), never below an
// eighth of the most; raises it by a
// twentieth of the most when they are fast or the handlers hold few
// connections; and leaves it on too few statements. No database: the
// decisions alone.
func TestGovernorDecide(t *testing.T) {
	t.Parallel()
	slow := make([]time.Duration, governSamples)
	fast := make([]time.Duration, governSamples)
	mid := make([]time.Duration, governSamples)
	slower := make([]time.Duration, governSamples)
	for i := range slow {
		slow[i], fast[i], mid[i], slower[i] = 7*time.Millisecond, time.Millisecond, 4500*time.Microsecond, 40*time.Millisecond
	}
	// One slow statement in ten is under the 90th percentile.
	oneSlow := append([]time.Duration(nil), fast...)
	oneSlow[0] = time.Second
	cases := []struct {
		name  string
		from  int
		fresh int
		times []time.Duration
		inUse int
		want  int
	}{
		{"slow, handlers hold connections", 100, 10, slow, 90, 75},
		{"over twice as slow: halved", 100, 10, slower, 90, 50},
		{"slow, handlers hold half the limit", 100, 10, slow, 50, 75},
		{"slow, handlers hold few connections", 100, 10, slow, 49, 100},
		{"slow, below the limit: raised", 60, 10, slow, 10, 65},
		{"slow at the floor", 12, 10, slow, 12, 12},
		{"slow near the floor", 14, 10, slow, 14, 12},
		{"fast: raised", 60, 10, fast, 60, 65},
		{"fast near the most", 98, 10, fast, 98, 100},
		{"one slow outlier", 60, 10, oneSlow, 60, 65},
		{"between: kept", 60, 10, mid, 60, 60},
		{"too few statements", 60, governMinSamples - 1, slow, 60, 60},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := newGovernor(&sql.DB{}, 3, 100, slog.New(slog.DiscardHandler))
			g.limit.Store(int64(c.from))
			g.decide(c.fresh, append([]time.Duration(nil), c.times...), c.inUse)
			if got := g.current(); got != c.want {
				t.Errorf("limit %d → %d, want %d", c.from, got, c.want)
			}
		})
	}
}

// TestGovernorObserve: statements of more than governRows rows are not
// counted, the ring keeps the latest governSamples, and a governor without
// a database (WithConcurrencyTuning(false)) counts nothing.
func TestGovernorObserve(t *testing.T) {
	t.Parallel()
	g := newGovernor(&sql.DB{}, 3, 100, slog.New(slog.DiscardHandler))
	g.observe(time.Second, governRows+1)
	if g.fresh != 0 {
		t.Fatalf("a statement of %d rows counted", governRows+1)
	}
	for i := range governSamples + 5 {
		g.observe(time.Duration(i), 1)
	}
	if len(g.times) != governSamples || g.fresh != governSamples+5 {
		t.Fatalf("ring of %d, %d fresh; want %d and %d", len(g.times), g.fresh, governSamples, governSamples+5)
	}
	for _, d := range g.times {
		if d < 5 {
			t.Fatalf("ring kept %v, one of the oldest", d)
		}
	}
	off := newGovernor(nil, 3, 100, slog.New(slog.DiscardHandler))
	off.observe(time.Second, 1)
	if off.fresh != 0 || off.current() != 100 {
		t.Fatalf("a governor without a database counted (%d) or moved (%d)", off.fresh, off.current())
	}
}
