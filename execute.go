package pgq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
)

// executor runs the handlers of one run's claimed jobs, each in its own
// goroutine, and turns each handler's result into an outcome for the
// completer.
type executor struct {
	qmID      uuid.UUID
	eps       map[string]*entrypoint
	handlers  map[string]Handler // each entrypoint's handler inside the middleware chain
	resources any
	logger    *slog.Logger
	held      *holdings
	outcomes  *completer
	done      chan<- JobID // a handler returned (its outcome, if any, is with the completer)
}

// chain wraps each entrypoint's handler in the middleware (the first one
// outermost), once for the whole run.
func chain(eps map[string]*entrypoint, mw []Middleware) map[string]Handler {
	hs := make(map[string]Handler, len(eps))
	for name, ep := range eps {
		h := ep.handler
		for i := len(mw) - 1; i >= 0; i-- {
			if mw[i] != nil {
				h = mw[i](h)
			}
		}
		hs[name] = h
	}
	return hs
}

// start registers the claimed jobs as held (so that cancellations and
// heartbeats find them) and runs each one's handler in its own goroutine
// of wg, with a context under jobsCtx.
func (x *executor) start(jobsCtx context.Context, atts []*attempt, wg *sync.WaitGroup) {
	ctxs := x.held.add(jobsCtx, atts)
	for i, a := range atts {
		wg.Go(func() { x.execute(ctxs[i], a) })
	}
}

// execute runs one job's handler and hands its outcome to the completer,
// unless the attempt lost its claim meanwhile.
func (x *executor) execute(ctx context.Context, a *attempt) {
	job := a.job
	ctx = context.WithValue(ctx, scopeKey{}, &jobScope{job: job, resources: x.resources, base: x.logger})
	err := x.call(ctx, job)
	out := decide(context.Cause(ctx), x.eps[job.Entrypoint], job, err, x.qmID)
	out.att = a
	if x.held.returned(a) {
		x.outcomes.add(out)
	}
	x.done <- job.ID
}

// call runs the job's handler (inside the middleware), turning a panic
// into an error.
func (x *executor) call(ctx context.Context, job *Job) error {
	h := x.handlers[job.Entrypoint]
	if h == nil {
		return fmt.Errorf("pgq: no handler registered for entrypoint %q", job.Entrypoint)
	}
	err := callSafely(func() error { return h(ctx, job) })
	var pe *panicError
	if errors.As(err, &pe) {
		x.logger.Error("pgq: handler panicked", "entrypoint", job.Entrypoint, "job_id", job.ID, "panic", pe.value)
	}
	return err
}

// decide turns a handler's result into an outcome: success, cancellation,
// release at shutdown, retry, hold or exception. cause is why the job's
// context ended, if it did; ep is nil for an entrypoint with no handler.
func decide(cause error, ep *entrypoint, job *Job, err error, qmID uuid.UUID) outcome {
	out := outcome{id: job.ID, action: actionFinish, status: StatusSuccessful}
	switch {
	case errors.Is(cause, errJobCanceled):
		out.status = StatusCanceled
		if err != nil {
			out.traceback = tracebackJSON(job, qmID, err)
		}
		return out
	case err == nil:
		return out
	case errors.Is(cause, errShutdown):
		// Not finished when the grace period ended: another worker (or
		// this one, restarted) runs it again.
		out.action, out.status = actionRelease, StatusQueued
		return out
	}
	out.traceback = tracebackJSON(job, qmID, err)
	var retry RetryPolicy
	onFailure := Delete
	if ep != nil {
		retry, onFailure = ep.retry, ep.onFailure
	}
	if int(job.Attempts)+1 < retry.MaxAttempts {
		out.action, out.status = actionRetry, StatusQueued
		if ra, ok := asRetryAfter(err); ok {
			out.delay = ra.Delay
		} else {
			out.delay = retry.delay(job.Attempts)
		}
		return out
	}
	if onFailure == Hold {
		out.action, out.status = actionHold, StatusFailed
		return out
	}
	out.status = StatusException
	return out
}

// tracebackJSON renders an error in the shape of PGQueuer's traceback
// record, so that its tools show pgq's failures too.
func tracebackJSON(job *Job, qmID uuid.UUID, err error) string {
	tb := err.Error()
	var pe *panicError
	if errors.As(err, &pe) {
		tb = fmt.Sprintf("%s\n\n%s", pe.Error(), pe.stack)
	}
	b, _ := json.Marshal(map[string]any{
		"job_id":            job.ID,
		"timestamp":         time.Now().UTC(),
		"exception_type":    fmt.Sprintf("%T", err),
		"exception_message": err.Error(),
		"traceback":         tb,
		"additional_context": map[string]any{
			"entrypoint":       job.Entrypoint,
			"queue_manager_id": qmID,
			"attempts":         job.Attempts + 1,
		},
	})
	return string(b)
}
