package pgq

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestDecide: a handler's result and its context's cause make the outcome
// the completer writes, without a database.
func TestDecide(t *testing.T) {
	t.Parallel()
	fail := errors.New("boom")
	retry3 := &entrypoint{retry: RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second, Jitter: 0}, maxSnoozes: DefaultMaxSnoozes}
	hold := &entrypoint{retry: RetryPolicy{MaxAttempts: 1}, onFailure: Hold}
	cases := []struct {
		name      string
		cause     error
		ep        *entrypoint
		attempts  int32
		err       error
		action    string
		status    Status
		delay     time.Duration // checked when positive
		traceback bool
	}{
		{"success", nil, &entrypoint{}, 0, nil, actionFinish, StatusSuccessful, 0, false},
		{"canceled, returned nil", errJobCanceled, &entrypoint{}, 0, nil, actionFinish, StatusCanceled, 0, false},
		{"canceled, returned its error", errJobCanceled, &entrypoint{}, 0, fail, actionFinish, StatusCanceled, 0, true},
		{"success wins over shutdown", errShutdown, &entrypoint{}, 0, nil, actionFinish, StatusSuccessful, 0, false},
		{"shutdown releases", errShutdown, retry3, 0, fail, actionRelease, StatusQueued, 0, false},
		{"first failure retries", nil, retry3, 0, fail, actionRetry, StatusQueued, time.Second, true},
		{"second failure backs off", nil, retry3, 1, fail, actionRetry, StatusQueued, 2 * time.Second, true},
		{"RetryAfter sets the delay", nil, retry3, 0, &RetryAfterError{Delay: 7 * time.Second, Err: fail}, actionRetry, StatusQueued, 7 * time.Second, true},
		{"last attempt is an exception", nil, retry3, 2, fail, actionFinish, StatusException, 0, true},
		{"no retry policy", nil, &entrypoint{}, 0, fail, actionFinish, StatusException, 0, true},
		{"hold keeps the job", nil, hold, 0, fail, actionHold, StatusFailed, 0, true},
		{"no entrypoint", nil, nil, 0, fail, actionFinish, StatusException, 0, true},
		{"panic", nil, &entrypoint{}, 0, &panicError{value: "x", stack: []byte("stack")}, actionFinish, StatusException, 0, true},
		{"snooze uses no attempt", nil, retry3, 2, Snooze(3 * time.Second), actionSnooze, StatusQueued, 3 * time.Second, true},
		{"snooze without a retry policy", nil, &entrypoint{maxSnoozes: 1}, 0, Snooze(time.Second), actionSnooze, StatusQueued, time.Second, true},
		{"snooze past the cap fails", nil, &entrypoint{maxSnoozes: 0}, 0, Snooze(time.Second), actionFinish, StatusException, 0, true},
		{"snooze past the cap retries", nil, &entrypoint{retry: retry3.retry, maxSnoozes: 0}, 0, Snooze(time.Second), actionRetry, StatusQueued, time.Second, true},
		{"discard ends retries", nil, retry3, 0, Discard(fail), actionFinish, StatusException, 0, true},
		{"discard is not held", nil, hold, 0, Discard(fail), actionFinish, StatusException, 0, true},
		{"timeout fails the attempt", &timeoutError{time.Second}, retry3, 0, context.DeadlineExceeded, actionRetry, StatusQueued, time.Second, true},
		{"timeout, returned nil: success", &timeoutError{time.Second}, retry3, 0, nil, actionFinish, StatusSuccessful, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			job := &Job{ID: 7, Entrypoint: "e", Attempts: c.attempts, Headers: map[string]string{}}
			out := decide(c.cause, c.ep, controlOf(job, c.ep), job, c.err, uuid.Nil)
			if out.action != c.action || out.status != c.status || out.id != 7 {
				t.Fatalf("got %s/%s for job %d, want %s/%s", out.action, out.status, out.id, c.action, c.status)
			}
			if c.delay > 0 && out.delay != c.delay {
				t.Errorf("delay %v, want %v", out.delay, c.delay)
			}
			if (out.traceback != "") != c.traceback {
				t.Errorf("traceback %q, want one: %v", out.traceback, c.traceback)
			}
			if c.traceback && !strings.Contains(out.traceback, strings.ReplaceAll(c.err.Error(), `"`, `\"`)) {
				t.Errorf("traceback %s does not name the error %q", out.traceback, c.err)
			}
			if c.cause != nil && errors.Is(c.cause, ErrJobTimeout) && c.traceback && !strings.Contains(out.traceback, "timed out after 1s") {
				t.Errorf("traceback %s does not say it timed out", out.traceback)
			}
		})
	}
}

// TestChainBuiltOnce: the middleware chain wraps each handler once per
// run, the first middleware outermost, and a nil middleware is skipped.
func TestChainBuiltOnce(t *testing.T) {
	t.Parallel()
	built := 0
	var trail []string
	mw := func(name string) Middleware {
		return func(next Handler) Handler {
			built++
			return func(ctx context.Context, j *Job) error {
				trail = append(trail, name)
				return next(ctx, j)
			}
		}
	}
	eps := map[string]*entrypoint{"a": {handler: func(context.Context, *Job) error { trail = append(trail, "h"); return nil }}}
	hs := chain(eps, []Middleware{mw("outer"), nil, mw("inner")})
	for range 3 {
		_ = hs["a"](context.Background(), &Job{})
	}
	if built != 2 {
		t.Errorf("middleware applied %d times for 3 jobs, want 2 (once each)", built)
	}
	if got := strings.Join(trail[:3], ","); got != "outer,inner,h" {
		t.Errorf("order %s, want outer,inner,h", got)
	}
}

// TestControlOf: a job's headers override its entrypoint's timeout and
// attempts; headers that do not parse are ignored.
func TestControlOf(t *testing.T) {
	t.Parallel()
	ep := &entrypoint{timeout: time.Minute, retry: RetryPolicy{MaxAttempts: 3}, maxSnoozes: 7}
	cases := []struct {
		headers map[string]string
		want    control
	}{
		{nil, control{timeout: time.Minute, maxAttempts: 3, maxSnoozes: 7}},
		{map[string]string{HeaderTimeout: "2s", HeaderMaxAttempts: "5", HeaderSnoozes: "4"},
			control{timeout: 2 * time.Second, maxAttempts: 5, snoozes: 4, maxSnoozes: 7}},
		{map[string]string{HeaderTimeout: "soon", HeaderMaxAttempts: "0", HeaderSnoozes: "-1"},
			control{timeout: time.Minute, maxAttempts: 3, maxSnoozes: 7}},
		{map[string]string{HeaderTimeout: "-5s", HeaderMaxAttempts: "x"}, control{timeout: time.Minute, maxAttempts: 3, maxSnoozes: 7}},
	}
	for _, c := range cases {
		if got := controlOf(&Job{Headers: c.headers}, ep); got != c.want {
			t.Errorf("headers %v: got %+v, want %+v", c.headers, got, c.want)
		}
	}
	if got := controlOf(&Job{Headers: map[string]string{HeaderMaxAttempts: "2"}}, nil); got.maxAttempts != 2 || got.maxSnoozes != DefaultMaxSnoozes {
		t.Errorf("no entrypoint: %+v", got)
	}
}

// TestWaitQueue: jobs leave in the order they came, and a queue that
// empties between batches reuses its array (a slice taken from its front
// grew a new array for every batch).
func TestWaitQueue(t *testing.T) {
	var q waitQueue
	atts := make([]attempt, 8)
	cycle := func() {
		next := 0 // the job pop must give
		pop := func() {
			if got := q.pop(); got.att != &atts[next] {
				t.Fatalf("pop gave job %p, want job %d (%p)", got.att, next, &atts[next])
			}
			next++
		}
		for i := range atts {
			q.push(heldJob{att: &atts[i]})
			if i%3 == 2 { // interleaved, as handlers take jobs while a claim's arrive
				pop()
			}
		}
		for q.len() > 0 {
			pop()
		}
		if next != len(atts) {
			t.Fatalf("%d jobs left the queue, want %d", next, len(atts))
		}
	}
	cycle()
	if allocs := testing.AllocsPerRun(100, cycle); allocs != 0 {
		t.Errorf("%v allocations a batch once the queue has grown, want 0", allocs)
	}
	q.push(heldJob{att: &atts[0]})
	if all := q.takeAll(); len(all) != 1 || all[0].att != &atts[0] || q.len() != 0 {
		t.Errorf("takeAll = %v, then len %d", all, q.len())
	}
}
