package pgq

import (
	"slices"
	"testing"
	"time"
)

// TestLimitCaps: the caps a limited claim passes to JobsClaim, from the
// fleet's running jobs and recent starts, without a database.
func TestLimitCaps(t *testing.T) {
	t.Parallel()
	eps := map[string]*entrypoint{
		"free":  {},
		"conc3": {concurrencyLimit: 3},
		"rate5": {rateLimit: 5},
		"slow":  {rateLimit: 0.5},
		"both":  {concurrencyLimit: 2, rateLimit: 10},
	}
	cases := []struct {
		name      string
		names     []string
		caps      []int32
		running   map[string]int32
		started   map[string]int32
		want      []int32
		wantAgain time.Duration // 0: none
	}{
		{"no limits", []string{"free"}, []int32{100}, nil, nil, []int32{100}, 0},
		{"concurrency room", []string{"conc3"}, []int32{100}, map[string]int32{"conc3": 1}, nil, []int32{2}, 0},
		{"concurrency full", []string{"conc3"}, []int32{100}, map[string]int32{"conc3": 3}, nil, []int32{0}, 0},
		{"concurrency over (PGQueuer raced)", []string{"conc3"}, []int32{100}, map[string]int32{"conc3": 5}, nil, []int32{0}, 0},
		{"concurrency below the batch", []string{"conc3"}, []int32{1}, nil, nil, []int32{1}, 0},
		{"rate budget left", []string{"rate5"}, []int32{100}, nil, map[string]int32{"rate5": 2}, []int32{3}, 200 * time.Millisecond},
		{"rate spent", []string{"rate5"}, []int32{100}, nil, map[string]int32{"rate5": 5}, []int32{0}, 200 * time.Millisecond},
		{"rate budget above the batch", []string{"rate5"}, []int32{2}, nil, nil, []int32{2}, 0},
		{"below one per second, window empty", []string{"slow"}, []int32{100}, nil, nil, []int32{1}, time.Second},
		{"below one per second, window used", []string{"slow"}, []int32{100}, nil, map[string]int32{"slow": 1}, []int32{0}, time.Second},
		{"both limits: the lower wins", []string{"both"}, []int32{100}, map[string]int32{"both": 1}, map[string]int32{"both": 3}, []int32{1}, 0},
		{"mixed", []string{"conc3", "free", "rate5", "slow"}, []int32{10, 10, 10, 10},
			map[string]int32{"conc3": 2}, map[string]int32{"rate5": 1, "slow": 1}, []int32{1, 10, 4, 0}, 200 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			caps := slices.Clone(c.caps)
			again := limitCaps(c.names, caps, eps, c.running, c.started)
			if !slices.Equal(caps, c.want) {
				t.Errorf("caps %v, want %v", caps, c.want)
			}
			if again != c.wantAgain {
				t.Errorf("again %v, want %v", again, c.wantAgain)
			}
		})
	}
}
