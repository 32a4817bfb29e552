package pgq

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// RetryPolicy says how often and when a failed job is tried again. A job
// that fails (its handler returns an error or panics) goes back to the
// queue, with its id, payload, priority and headers, and attempts + 1,
// until it has been tried MaxAttempts times; each failed attempt is logged
// (status queued, with the error in traceback).
type RetryPolicy struct {
	// MaxAttempts is the total number of tries, the first included. 1 (or
	// less) means no retry.
	MaxAttempts int
	// InitialDelay is the delay before the first retry (default 1 s).
	InitialDelay time.Duration
	// MaxDelay caps the delay (default 1 h).
	MaxDelay time.Duration
	// Multiplier grows the delay after each retry (default 2).
	Multiplier float64
	// Jitter spreads each delay by up to ± this fraction of it (default
	// 0.1), so that jobs failing together do not retry together.
	Jitter float64
}

// delay returns the wait before retry number attempt (0 for the first).
func (p RetryPolicy) delay(attempt int32) time.Duration {
	initial, maxd, mult, jitter := p.InitialDelay, p.MaxDelay, p.Multiplier, p.Jitter
	if initial <= 0 {
		initial = time.Second
	}
	if maxd <= 0 {
		maxd = time.Hour
	}
	if mult < 1 {
		mult = 2
	}
	if jitter < 0 || jitter > 1 {
		jitter = 0.1
	}
	d := float64(initial) * math.Pow(mult, float64(attempt))
	d = min(d, float64(maxd))
	d *= 1 + jitter*(2*rand.Float64()-1)
	return time.Duration(d)
}

// FailureAction says what happens to a job after its last failed attempt.
type FailureAction int

const (
	// Delete removes the job and logs it 'exception' (the default).
	Delete FailureAction = iota
	// Hold keeps the job, as 'failed', until Requeue brings it back (or
	// MarkJobAsCancelled removes it). `pgq failed` lists held jobs.
	Hold
)

type entrypointOption func(*entrypoint) error

func (o entrypointOption) applyEntrypoint(e *entrypoint) error { return o(e) }

// WithConcurrencyLimit lets at most n jobs of the entrypoint run at once
// across the whole fleet: every worker in every process counts the others'
// running jobs in the database before it claims.
func WithConcurrencyLimit(n int) EntrypointOption {
	return entrypointOption(func(e *entrypoint) error {
		if n < 1 {
			return fmt.Errorf("concurrency limit must be at least 1, got %d", n)
		}
		e.concurrencyLimit = n
		return nil
	})
}

// WithRateLimit lets at most perSecond jobs of the entrypoint start in any
// one-second window across the whole fleet, counted from the log.
func WithRateLimit(perSecond float64) EntrypointOption {
	return entrypointOption(func(e *entrypoint) error {
		if !(perSecond > 0) || math.IsInf(perSecond, 0) {
			return fmt.Errorf("rate limit must be a positive number of jobs per second, got %v", perSecond)
		}
		e.rateLimit = perSecond
		return nil
	})
}

// WithRetry sets the entrypoint's retry policy.
func WithRetry(p RetryPolicy) EntrypointOption {
	return entrypointOption(func(e *entrypoint) error {
		switch {
		case p.InitialDelay < 0 || p.MaxDelay < 0:
			return fmt.Errorf("retry delays must not be negative, got initial %v, max %v", p.InitialDelay, p.MaxDelay)
		case p.Jitter < 0 || p.Jitter > 1:
			return fmt.Errorf("retry jitter must be between 0 and 1, got %v", p.Jitter)
		}
		e.retry = p
		return nil
	})
}

// OnFailure sets what happens after a job's last failed attempt: Delete
// (default) or Hold.
func OnFailure(a FailureAction) EntrypointOption {
	return entrypointOption(func(e *entrypoint) error {
		if a != Delete && a != Hold {
			return fmt.Errorf("unknown failure action %d", int(a))
		}
		e.onFailure = a
		return nil
	})
}

func asRetryAfter(err error) (*RetryAfterError, bool) {
	var ra *RetryAfterError
	ok := errors.As(err, &ra)
	return ra, ok
}
