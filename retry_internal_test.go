package pgq

import (
	"testing"
	"time"
)

// The retry delay: exponential from InitialDelay, capped at MaxDelay,
// spread by Jitter; zero and out-of-range fields take their defaults. Pure
// arithmetic: runs without a database.
func TestRetryDelay(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		p       RetryPolicy
		attempt int32
		base    time.Duration // before jitter
		jitter  float64
	}{
		{"defaults, first retry", RetryPolicy{}, 0, time.Second, 0.1},
		{"defaults, third retry", RetryPolicy{}, 2, 4 * time.Second, 0.1},
		{"defaults cap at an hour", RetryPolicy{}, 40, time.Hour, 0.1},
		{"huge attempt stays capped", RetryPolicy{Jitter: 0}, 1 << 30, time.Hour, 0.1},
		{"no jitter is exact", RetryPolicy{InitialDelay: 100 * time.Millisecond, Multiplier: 3, Jitter: 1e-12}, 2, 900 * time.Millisecond, 1e-12},
		{"own cap", RetryPolicy{InitialDelay: time.Second, MaxDelay: 5 * time.Second}, 10, 5 * time.Second, 0.1},
		{"multiplier below 1 means 2", RetryPolicy{Multiplier: 0.5}, 1, 2 * time.Second, 0.1},
		{"jitter above 1 means 0.1", RetryPolicy{Jitter: 7}, 0, time.Second, 0.1},
		{"full jitter", RetryPolicy{Jitter: 1}, 0, time.Second, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			lo := time.Duration(float64(c.base) * (1 - c.jitter))
			hi := time.Duration(float64(c.base) * (1 + c.jitter))
			for range 200 {
				if d := c.p.delay(c.attempt); d < lo-time.Microsecond || d > hi+time.Microsecond || d < 0 {
					t.Fatalf("delay(%d) = %v, want within [%v, %v]", c.attempt, d, lo, hi)
				}
			}
		})
	}
}
