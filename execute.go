package pgq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// executor runs the handlers of one run's claimed jobs on goroutines it
// keeps while the run lasts (one per handler slot at most), and turns each
// handler's result into an outcome for the completer.
type executor struct {
	qmID      uuid.UUID
	abandoned *atomic.Int64 // handlers abandoned after their timeout, still running
	eps       map[string]*entrypoint
	handlers  map[string]Handler // each entrypoint's handler inside the middleware chain
	resources any
	logger    *slog.Logger
	held      *holdings
	outcomes  *completer
	progress  *progressWriter // ReportProgress's writes
	done      chan<- JobID    // a handler returned, or a job was given back (its outcome, if any, is with the completer)
	limit     *governor       // how many handlers may run at once (WithMaxConcurrentTasks, lowered by the governor)
	// holdLimit is the oldest a job's last confirmed hold may be when its
	// handler starts (half the heartbeat timeout): one older goes back to
	// the queue instead (see start).
	holdLimit time.Duration

	handlerTime atomic.Int64 // handlers' recent run time in ns, a moving average (0: none yet)

	mu      sync.Mutex
	running int       // handler slots taken (each by a goroutine that runs one job, then the next waiting one)
	waiting waitQueue // jobs claimed ahead of free slots, in claim order; after Run's end, the ones it kept from starting
	// parked holds the inboxes of handler goroutines that freed their
	// slot and wait for another job, the latest last; a job goes to one
	// of them before a new goroutine is started. They number at most the
	// most slots ever taken at once, and end when stop closes their
	// inboxes; once stopped, a goroutine that frees its slot ends.
	parked  []chan struct{}
	stopped bool
	waking  bool // a goroutine launched to take the first waiting job has not taken one yet (see wakeLocked)
}

// waitQueue holds jobs in the order they came, taken from the front.
// Whenever it empties it goes back to the start of its array: taken from
// its front and appended to at its back, a plain slice moves along its
// array and grows a new one over and over (about 80 bytes a job at 2,000
// at once, for the garbage collector).
type waitQueue struct {
	jobs []heldJob // the jobs waiting, first first
	base []heldJob // the start of jobs' array
}

func (q *waitQueue) len() int { return len(q.jobs) }

// push adds j at the back.
func (q *waitQueue) push(j heldJob) {
	if len(q.jobs) == 0 {
		q.jobs = q.base
	}
	before := cap(q.jobs)
	q.jobs = append(q.jobs, j)
	if cap(q.jobs) != before { // a new array, filled from its start
		q.base = q.jobs[:0]
	}
}

// pop takes the job at the front; the queue must not be empty.
func (q *waitQueue) pop() heldJob {
	j := q.jobs[0]
	q.jobs[0] = heldJob{} // nothing kept alive by the array
	q.jobs = q.jobs[1:]
	return j
}

// takeAll returns the jobs waiting and empties the queue, its array too.
func (q *waitQueue) takeAll() []heldJob {
	jobs := q.jobs
	q.jobs, q.base = nil, nil
	return jobs
}

// heldJob is one job of a heldBatch.
type heldJob struct {
	att *attempt
	ctx context.Context
	// fresh: the job found a slot free when its claim came, so it starts
	// without a check of its hold (see start).
	fresh bool
}

// aheadHandlerTime is the longest recent mean handler time at which a
// worker claims jobs ahead of its free slots (see WithMaxConcurrentTasks).
const aheadHandlerTime = 50 * time.Millisecond

// shortHandlers reports whether the handlers lately took so little time
// that jobs claimed ahead of free slots wait no longer than
// aheadHandlerTime for them: only then does the worker claim ahead, so
// that it never holds back from other workers more than that much work.
func (x *executor) shortHandlers() bool {
	d := x.handlerTime.Load()
	return d > 0 && d <= int64(aheadHandlerTime)
}

// timed folds one handler's run time into handlerTime, a moving average.
func (x *executor) timed(d time.Duration) {
	for {
		old := x.handlerTime.Load()
		avg := int64(d)
		if old > 0 {
			avg = old + (int64(d)-old)/16
		}
		if x.handlerTime.CompareAndSwap(old, max(avg, 1)) {
			return
		}
	}
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

// heldBatch is a claim's jobs, held (holdings.add) since the claim, with
// the context of each.
type heldBatch struct {
	atts []*attempt
	ctxs []context.Context
}

// start runs the handler of each of a claim's jobs, in claim order: at
// once while fewer than limit run, else after the jobs before it, by the
// first handler goroutine to finish its job (so that a freed slot takes
// the next job without a hand-over). start never waits. A job canceled
// (or whose claim was lost) while it waits for its slot ends without
// running. Once runCtx has ended (Run is stopping), jobs are no longer
// started: they wait, and the caller gives them back (giveBackAll) once
// claims have stopped. Given back at once, they could be taken again by a
// claim still under way, which takes its snapshot when the server starts
// it. A job whose hold was last confirmed (by its claim or a heartbeat)
// holdLimit ago or more when its slot comes goes back to the queue at
// once: the heartbeats are failing, and before the handler could finish
// another worker might find the job stale and run it too.
//
// The jobs go to the queue of waiting jobs, and one handler goroutine is
// woken (or started) to take the first (see wakeLocked); before it runs
// that job it wakes the next, while jobs wait and slots are free. So a
// batch that finds its slots free starts as fast as goroutines can be
// scheduled, and handlers that block (on I/O) each pass the wake-up on at
// once; but goroutines already running take waiting jobs too as they
// finish theirs, and when handlers are quick a batch is run by the few
// goroutines the cores keep busy, not by one woken per job (a wake-up and
// a park each, about a tenth of the worker's CPU a job at 2,000 at once).
// An empty batch only wakes a goroutine: the limit was raised.
func (x *executor) start(runCtx context.Context, b heldBatch, wg *sync.WaitGroup) {
	x.mu.Lock()
	free := x.limit.current() - x.running
	for i, a := range b.atts {
		ctx := b.ctxs[i]
		if runCtx.Err() != nil && ctx.Err() != nil {
			x.mu.Unlock()
			x.giveBack(ctx, a, errShutdown) // canceled or lost: nothing goes back to the queue
			x.mu.Lock()
			continue
		}
		// A job that finds a slot free starts as fresh as its claim (one
		// that took long was confirmed; see claimer.confirm).
		fresh := runCtx.Err() == nil && x.waiting.len() < free
		x.waiting.push(heldJob{att: a, ctx: ctx, fresh: fresh})
	}
	inbox, wake := x.wakeLocked(runCtx)
	x.mu.Unlock()
	if wake {
		x.launch(runCtx, inbox, wg)
	}
}

// wakeLocked takes a slot for a handler goroutine to come and take the
// first waiting job, when jobs wait, a slot is free, Run still starts
// jobs and no goroutine is on its way already; it returns the inbox of
// the goroutine parked last to wake (nil: start a new one), and whether
// to. The caller holds x.mu and then calls launch.
func (x *executor) wakeLocked(runCtx context.Context) (inbox chan struct{}, wake bool) {
	if x.waking || x.waiting.len() == 0 || runCtx.Err() != nil || x.running >= x.limit.current() {
		return nil, false
	}
	x.waking = true
	x.running++
	return x.unpark(), true
}

// unpark takes the inbox of the handler goroutine parked last, or returns
// nil when none is parked. The caller holds x.mu.
func (x *executor) unpark() chan struct{} {
	n := len(x.parked)
	if n == 0 {
		return nil
	}
	inbox := x.parked[n-1]
	x.parked[n-1] = nil
	x.parked = x.parked[:n-1]
	return inbox
}

// launch wakes the parked handler goroutine of inbox (from wakeLocked),
// or starts a new one when inbox is nil, to take the first waiting job;
// the caller has counted its slot in x.running. A goroutine is reused
// rather than started anew for each job because a new one starts on a
// small stack, which the handler's call grows (copied) and its exit
// frees: both, with the start itself, about a quarter of the worker's own
// CPU time a job when handlers do little.
func (x *executor) launch(runCtx context.Context, inbox chan struct{}, wg *sync.WaitGroup) {
	if inbox != nil {
		inbox <- struct{}{} // buffered, and empty while parked
		return
	}
	wg.Go(func() { x.work(runCtx, wg) })
}

// work is a handler goroutine, woken (or started) by launch: it takes the
// first waiting job (waking the next goroutine, see start), runs it, then
// the jobs waiting for a slot, one after another; when none waits it frees
// its slot and parks until launch wakes it again, or stop closes its
// inbox. (Its own inbox, not a channel shared by all of them: thousands of
// goroutines waiting in one channel's queue contend for its lock.)
func (x *executor) work(runCtx context.Context, wg *sync.WaitGroup) {
	inbox := make(chan struct{}, 1)
	j, parked := x.next(runCtx, inbox, true, wg)
	for {
		if j.att != nil {
			x.execute(j.ctx, j.att)
			id := j.att.job.ID
			j, parked = x.next(runCtx, inbox, false, wg)
			x.done <- id // after the next job took the slot: the claim loop may count it free
			continue
		}
		if !parked {
			return
		}
		if _, ok := <-inbox; !ok {
			return
		}
		j, parked = x.next(runCtx, inbox, true, wg)
	}
}

// stop ends the parked handler goroutines, once Run has stopped starting
// jobs and every handler has returned; any still to free its slot ends
// then instead of parking.
func (x *executor) stop() {
	x.mu.Lock()
	x.stopped = true
	parked := x.parked
	x.parked = nil
	x.mu.Unlock()
	for _, inbox := range parked {
		close(inbox)
	}
}

// next takes the first job waiting for a slot that may start; or else it
// frees the caller's slot, parks inbox (unless Run has stopped starting
// jobs) and returns a zero job, and whether it parked. woken says the
// caller was woken by launch: it then wakes the next goroutine while jobs
// wait and slots are free (see start).
func (x *executor) next(runCtx context.Context, inbox chan struct{}, woken bool, wg *sync.WaitGroup) (heldJob, bool) {
	unconfirmed := 0
	defer func() {
		if unconfirmed > 0 {
			x.logger.Warn("pgq: jobs waited for a handler slot while their heartbeats failed; giving them back",
				"jobs", unconfirmed, "limit", x.holdLimit)
		}
	}()
	for {
		x.mu.Lock()
		if woken {
			x.waking = false
		}
		// Over the limit (the governor lowered it), the slot is given up.
		if x.waiting.len() == 0 || runCtx.Err() != nil || x.running > x.limit.current() {
			x.running--
			park := runCtx.Err() == nil && !x.stopped
			if park {
				x.parked = append(x.parked, inbox)
			}
			x.mu.Unlock()
			return heldJob{}, park
		}
		j := x.waiting.pop()
		var wakeNext chan struct{}
		var wake bool
		if woken {
			wakeNext, wake = x.wakeLocked(runCtx)
			woken = false
		}
		x.mu.Unlock()
		if wake {
			x.launch(runCtx, wakeNext, wg)
		}
		if x.holdLimit > 0 && !j.fresh && j.ctx.Err() == nil && !x.held.fresh(j.att, time.Now(), x.holdLimit) {
			unconfirmed++
			x.giveBack(j.ctx, j.att, errHoldUnconfirmed)
			continue
		}
		return j, false
	}
}

// giveBackAll gives back the jobs Run's end kept from starting (see
// start), once no claim can take them again.
func (x *executor) giveBackAll() {
	x.mu.Lock()
	waiting := x.waiting.takeAll()
	x.mu.Unlock()
	for _, j := range waiting {
		x.giveBack(j.ctx, j.att, errShutdown)
	}
}

// giveBack ends an attempt whose handler never started, for why (Run is
// stopping, or its hold is unconfirmed): the job goes back to the queue,
// unless it was canceled meanwhile.
func (x *executor) giveBack(ctx context.Context, a *attempt, why error) {
	cause := context.Cause(ctx)
	if cause == nil {
		cause = why
	}
	x.finish(a, cause, cause)
	x.done <- a.job.ID
}

// execute runs one job's handler and hands its outcome to the completer,
// unless the attempt lost its claim meanwhile. A job canceled (or whose
// claim was lost) while it waited for a slot is not started.
func (x *executor) execute(ctx context.Context, a *attempt) {
	if cause := context.Cause(ctx); cause != nil {
		x.finish(a, cause, cause)
		return
	}
	began := time.Now()
	defer func() { x.timed(time.Since(began)) }()
	job := a.job
	ep := x.eps[job.Entrypoint]
	ctl := controlOf(job, ep)
	ctx = &jobContext{Context: ctx, scope: jobScope{job: job, resources: x.resources, base: x.logger, progress: x.progress}}
	var err error
	if ctl.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, ctl.timeout, &timeoutError{ctl.timeout})
		err = x.callBounded(ctx, job, ctl.timeout)
		cancel()
	} else {
		err = x.call(ctx, job)
	}
	if x.progress != nil {
		x.progress.finished(ctx, job.ID) // before the outcome removes the row
	}
	x.finish(a, context.Cause(ctx), err)
}

// finish turns the result of a's handler (err, with cause, why its context
// ended, if it did) into an outcome for the completer, unless the attempt
// lost its claim.
func (x *executor) finish(a *attempt, cause, err error) {
	job := a.job
	ep := x.eps[job.Entrypoint]
	out := decide(cause, ep, controlOf(job, ep), job, err, x.qmID)
	out.att = a
	if x.held.returned(a) {
		x.outcomes.add(out)
	}
}

// call runs the job's handler (inside the middleware), turning a panic
// into an error.
func (x *executor) call(ctx context.Context, job *Job) error {
	h := x.handlers[job.Entrypoint]
	if h == nil {
		return fmt.Errorf("pgq: no handler registered for entrypoint %q", job.Entrypoint)
	}
	err := callSafely(func() error { return h(ctx, job) })
	if err != nil {
		x.logPanic(err, job)
	}
	return err
}

// logPanic logs err when it is a handler's panic. Apart from call, so that
// the error target of errors.As is allocated only for a failed handler.
func (x *executor) logPanic(err error, job *Job) {
	var pe *panicError
	if errors.As(err, &pe) {
		x.logger.Error("pgq: handler panicked", "entrypoint", job.Entrypoint, "job_id", job.ID, "panic", pe.value)
	}
}

// Handler states of callBounded.
const (
	handlerRunning int32 = iota
	handlerReturned
	handlerAbandoned
)

// callBounded runs the job's handler on ctx, which ends at the job's
// timeout. A handler that has not returned a grace period after its
// timeout is abandoned: callBounded returns the timeout's error, and the
// handler's goroutine, when it returns at last, only says so. Before the
// timeout (a cancellation, a shutdown, a lost claim) it waits for the
// handler however long it takes, as for a job without a timeout.
func (x *executor) callBounded(ctx context.Context, job *Job, timeout time.Duration) error {
	var state atomic.Int32
	res := make(chan error, 1)
	abandonedAt := time.Time{}
	go func() {
		err := x.call(ctx, job)
		res <- err
		if !state.CompareAndSwap(handlerRunning, handlerReturned) {
			x.abandoned.Add(-1)
			x.logger.Warn("pgq: an abandoned handler returned at last; its result is dropped",
				"entrypoint", job.Entrypoint, "job_id", job.ID, "late_by", time.Since(abandonedAt), "err", err)
		}
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
	}
	if !errors.Is(context.Cause(ctx), ErrJobTimeout) {
		return <-res
	}
	grace := time.NewTimer(timeoutGrace(timeout))
	defer grace.Stop()
	select {
	case err := <-res:
		return err
	case <-grace.C:
	}
	abandonedAt = time.Now()
	if !state.CompareAndSwap(handlerRunning, handlerAbandoned) {
		return <-res // it returned just now
	}
	n := x.abandoned.Add(1)
	x.logger.Error("pgq: handler ignored its job's timeout; abandoned, its goroutine leaks until it returns",
		"entrypoint", job.Entrypoint, "job_id", job.ID, "timeout", timeout, "grace", timeoutGrace(timeout),
		"abandoned_running", n)
	return context.Cause(ctx)
}

// decide turns a handler's result into an outcome: success, cancellation,
// release at shutdown, snooze, retry, hold or exception. cause is why the
// job's context ended, if it did; ep is nil for an entrypoint with no
// handler; ctl is the job's control (see controlOf).
func decide(cause error, ep *entrypoint, ctl control, job *Job, err error, qmID uuid.UUID) outcome {
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
	case errors.Is(cause, errShutdown), errors.Is(cause, errHoldUnconfirmed), errors.Is(cause, errHoldExpired):
		// Not finished when the grace period ended, or not started or
		// stopped because its hold could not be confirmed: another worker
		// (or this one) runs it again.
		out.action, out.status = actionRelease, StatusQueued
		return out
	}
	var retry RetryPolicy
	onFailure := Delete
	if ep != nil {
		retry, onFailure = ep.retry, ep.onFailure
	}
	if errors.Is(cause, ErrJobTimeout) && !errors.Is(err, ErrJobTimeout) {
		err = fmt.Errorf("%w (the handler returned: %w)", cause, err)
	}
	var snooze *SnoozeError
	var discard *DiscardError
	switch {
	case errors.As(err, &discard):
		out.status, out.traceback = StatusException, tracebackJSON(job, qmID, err)
		return out
	case errors.As(err, &snooze) && ctl.snoozes < ctl.maxSnoozes:
		out.action, out.status, out.delay = actionSnooze, StatusQueued, snooze.Delay
		out.traceback = tracebackJSON(job, qmID, err)
		return out
	case snooze != nil:
		err = fmt.Errorf("pgq: snoozed %d times, the most its entrypoint allows (WithMaxSnoozes): %w", ctl.snoozes, err)
	}
	out.traceback = tracebackJSON(job, qmID, err)
	if int(job.Attempts)+1 < ctl.maxAttempts {
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
