package pgq

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Control of running work: timeouts, snoozes, per-job attempts and
// discarding. The per-job settings travel in the job's headers, under keys
// that start with "pgq-" (PGQueuer keeps headers as they are and ignores
// them), so they need no column of their own:
//
//   - HeaderTimeout: the job's timeout (WithJobTimeout), a Go duration;
//   - HeaderMaxAttempts: its total tries (WithMaxAttempts);
//   - HeaderSnoozes: how often it has snoozed, kept by the worker.
const (
	HeaderTimeout     = "pgq-timeout"
	HeaderMaxAttempts = "pgq-max-attempts"
	HeaderSnoozes     = "pgq-snoozes"
)

// Bounds of the control options.
const (
	// MaxTimeout is the longest timeout WithTimeout and WithJobTimeout
	// take.
	MaxTimeout = 7 * 24 * time.Hour
	// DefaultMaxSnoozes is how often a job may snooze before a snooze
	// counts as a failed attempt (WithMaxSnoozes).
	DefaultMaxSnoozes = 100
	// maxTimeoutGrace caps how long a handler that ignores its timed-out
	// context is waited for before it is abandoned.
	maxTimeoutGrace = 5 * time.Second
)

// ErrJobTimeout is the cause of the context of a handler whose job ran
// past its timeout (context.Cause), and is in the error of its attempt.
var ErrJobTimeout = errors.New("pgq: job timed out")

// timeoutError is ErrJobTimeout with the timeout it passed.
type timeoutError struct{ after time.Duration }

func (e *timeoutError) Error() string        { return fmt.Sprintf("pgq: job timed out after %v", e.after) }
func (e *timeoutError) Is(target error) bool { return target == ErrJobTimeout }

// timeoutGrace is how long a handler that ignores its context is waited
// for after its timeout: a tenth of the timeout, from 100 ms to 5 s.
func timeoutGrace(timeout time.Duration) time.Duration {
	return min(max(timeout/10, 100*time.Millisecond), maxTimeoutGrace)
}

// WithTimeout bounds how long the entrypoint's handler runs a job (a job's
// own WithJobTimeout overrides it). When it passes, the handler's context
// ends, with a cause matching ErrJobTimeout. A handler that returns then
// has its job fail as usual (retry policy, then exception or hold), the
// error saying that it timed out. A handler that ignores its context is
// abandoned after a grace of a tenth of the timeout (from 100 ms to 5 s):
// the job's outcome is written as if it had returned ErrJobTimeout, its
// slots (this worker's, and the entrypoint's fleet-wide concurrency) are
// freed, and the goroutine is logged at ERROR and counted by
// QueueManager.AbandonedHandlers until it returns; what it returns then is
// dropped. d must be positive and at most MaxTimeout.
func WithTimeout(d time.Duration) EntrypointOption {
	return entrypointOption(func(e *entrypoint) error {
		if err := checkTimeout(d); err != nil {
			return err
		}
		e.timeout = d
		return nil
	})
}

func checkTimeout(d time.Duration) error {
	if d <= 0 || d > MaxTimeout {
		return fmt.Errorf("timeout %v: want more than 0 and at most %v", d, MaxTimeout)
	}
	return nil
}

// WithMaxSnoozes sets how often a job of the entrypoint may snooze (default
// DefaultMaxSnoozes); a snooze beyond that counts as a failed attempt, so
// that a handler that snoozes in a loop shows in the log and ends. n must
// be at least 0.
func WithMaxSnoozes(n int) EntrypointOption {
	return entrypointOption(func(e *entrypoint) error {
		if n < 0 {
			return fmt.Errorf("max snoozes must not be negative, got %d", n)
		}
		e.maxSnoozes = n
		return nil
	})
}

// WithJobTimeout sets this job's timeout, overriding its entrypoint's
// WithTimeout. d must be positive and at most MaxTimeout (Enqueue reports
// it otherwise). It is kept in the job's headers (HeaderTimeout).
func WithJobTimeout(d time.Duration) EnqueueOption {
	return enqueueOption(func(c *enqueueConfig) { c.job.Timeout = d })
}

// WithMaxAttempts sets how often this job is tried in all, overriding the
// MaxAttempts of its entrypoint's retry policy (whose delays still apply).
// n must be at least 1 (Enqueue reports it otherwise). It is kept in the
// job's headers (HeaderMaxAttempts).
func WithMaxAttempts(n int) EnqueueOption {
	return enqueueOption(func(c *enqueueConfig) { c.job.MaxAttempts = n })
}

// checkControl checks a new job's control fields.
func checkControl(j NewJob) error {
	if j.Timeout != 0 {
		if err := checkTimeout(j.Timeout); err != nil {
			return err
		}
	}
	if j.MaxAttempts < 0 {
		return fmt.Errorf("max attempts %d: want at least 1", j.MaxAttempts)
	}
	return nil
}

// controlHeaders returns j's headers with its control fields added.
func controlHeaders(j NewJob) map[string]string {
	if j.Timeout == 0 && j.MaxAttempts == 0 {
		return j.Headers
	}
	h := make(map[string]string, len(j.Headers)+2)
	for k, v := range j.Headers {
		h[k] = v
	}
	if j.Timeout != 0 {
		h[HeaderTimeout] = j.Timeout.String()
	}
	if j.MaxAttempts != 0 {
		h[HeaderMaxAttempts] = strconv.Itoa(j.MaxAttempts)
	}
	return h
}

// SnoozeError is what Snooze returns.
type SnoozeError struct {
	Delay time.Duration
}

func (e *SnoozeError) Error() string { return fmt.Sprintf("pgq: snoozed for %v", e.Delay) }

// Snooze is what a handler returns to put its job back in the queue for d
// without using an attempt: the job runs again after d, with the same
// attempts, and the log gets a 'queued' row saying it snoozed (RetryAfter,
// by contrast, counts a failed attempt). A negative d counts as 0. A job
// snoozes at most its entrypoint's WithMaxSnoozes times; a snooze beyond
// that counts as a failed attempt.
func Snooze(d time.Duration) error { return &SnoozeError{Delay: max(d, 0)} }

// DiscardError is what Discard returns.
type DiscardError struct {
	Err error
}

func (e *DiscardError) Error() string {
	if e.Err == nil {
		return "pgq: discarded"
	}
	return "pgq: discarded: " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *DiscardError) Unwrap() error { return e.Err }

// Discard is what a handler returns when its job must not be tried again,
// whatever attempts are left: the job ends now as 'exception' (deleted,
// even on an entrypoint that holds failed jobs), with err in the log.
func Discard(err error) error { return &DiscardError{Err: err} }

// control is what a claimed job's headers and its entrypoint say about its
// run.
type control struct {
	timeout     time.Duration // 0: none
	maxAttempts int
	snoozes     int // so far
	maxSnoozes  int
}

// controlOf reads a job's control from its headers and entrypoint. A
// header that does not parse is ignored (the entrypoint's setting holds).
func controlOf(job *Job, ep *entrypoint) control {
	c := control{maxSnoozes: DefaultMaxSnoozes}
	if ep != nil {
		c.timeout, c.maxAttempts, c.maxSnoozes = ep.timeout, ep.retry.MaxAttempts, ep.maxSnoozes
	}
	if len(job.Headers) == 0 {
		return c // the common case: nothing to parse
	}
	if v, ok := job.Headers[HeaderTimeout]; ok {
		if d, err := time.ParseDuration(v); err == nil && checkTimeout(d) == nil {
			c.timeout = d
		}
	}
	if v, ok := job.Headers[HeaderMaxAttempts]; ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 1 {
			c.maxAttempts = n
		}
	}
	if v, ok := job.Headers[HeaderSnoozes]; ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			c.snoozes = n
		}
	}
	return c
}
