package pgq

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Causes of a job context's end.
var (
	errJobCanceled = errors.New("pgq: job canceled by MarkJobAsCancelled")
	errShutdown    = errors.New("pgq: worker shutting down")
	// errJobLost ends the handler of a job this worker no longer holds:
	// its heartbeat went stale and it was put back in the queue (and maybe
	// claimed again, by another worker or by this one), or it was canceled
	// and the notification missed. Its outcome is dropped: the job belongs
	// to whoever holds it now.
	errJobLost = errors.New("pgq: job no longer held by this worker (its heartbeat went stale, or it was canceled)")
	// errHoldExpired ends the handler of a job whose heartbeat this worker
	// could not refresh for most of the heartbeat timeout (see
	// holdings.expire): soon another worker may find it stale and run it.
	// Unless the handler finished anyway, the job goes back to the queue.
	errHoldExpired = errors.New("pgq: job's heartbeat not refreshed for most of the heartbeat timeout; " +
		"stopping its handler before another worker may run the job")
	// errHoldUnconfirmed ends, before its handler starts, an attempt
	// claimed ahead of a free slot whose hold the heartbeat has not
	// confirmed lately (see holdings.fresh): another worker may soon find
	// it stale, so it goes back to the queue instead of running.
	errHoldUnconfirmed = errors.New("pgq: job claimed ahead waited for a slot while its heartbeat could not be refreshed; " +
		"giving it back instead of starting it")
)

// attempt is one claim of a job by one run, from the claim until its
// outcome is written. A job released (its heartbeat stale) and claimed
// again is a new attempt, with its own token, context and outcome.
type attempt struct {
	job    *Job  // &jobValue: the attempt and its job are one allocation
	token  int64 // the claim's claim_token (see JobsClaim)
	qm     *QueueManager
	cancel context.CancelCauseFunc
	// completedTx is set once CompleteTx has deleted the job in the
	// handler's transaction: when the row is gone, that transaction
	// committed (the job is done), not a lost claim.
	completedTx atomic.Bool

	// Guarded by holdings.mu.
	returned bool // the handler returned; its outcome is on its way
	lost     bool // the claim was lost: the outcome is dropped
	expired  bool // its context ended with errHoldExpired
	// confirmed is when (this host's clock) the last statement that found
	// the job held by this attempt was sent: its claim, the claim's
	// confirmation, a heartbeat. The job's heartbeat in the database is
	// no older than that.
	confirmed time.Time

	jobValue Job
}

// holdings are the jobs one run holds: its current attempt of each, from
// the claim until the outcome is written. The heartbeat keeps them all
// held, cancellations reach the running ones, and an attempt whose claim
// turns out lost is cut off here (its handler's context ends with
// errJobLost and its outcome is dropped).
type holdings struct {
	logger *slog.Logger

	mu      sync.Mutex
	running map[JobID]*attempt
	stopped error        // cancelAll's cause: attempts added later start canceled
	lost    atomic.Int64 // attempts whose claim was lost, for the log
}

func newHoldings(logger *slog.Logger) *holdings {
	return &holdings{logger: logger, running: map[JobID]*attempt{}}
}

// add registers claimed attempts, each with its own context under parent,
// and returns those contexts. A job this run still has an attempt of was
// released and claimed again: the earlier attempt lost its claim. After
// cancelAll, the contexts start canceled with its cause.
func (h *holdings) add(parent context.Context, atts []*attempt) []context.Context {
	ctxs := make([]context.Context, len(atts))
	for i, a := range atts {
		ctxs[i], a.cancel = context.WithCancelCause(parent)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range atts {
		if old := h.running[a.job.ID]; old != nil {
			h.loseLocked(old, "claimed again")
		}
		h.running[a.job.ID] = a
		if h.stopped != nil {
			a.cancel(h.stopped)
		}
	}
	return ctxs
}

// cancelAll ends the contexts of every attempt held, with cause, and of
// every attempt added from now on (Run's shutdown). A context already
// ended keeps its first cause.
func (h *holdings) cancelAll(cause error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped == nil {
		h.stopped = cause
	}
	for _, a := range h.running {
		a.cancel(cause)
	}
}

// returned marks a's handler as returned and reports whether its claim is
// still held (its outcome is to be written).
func (h *holdings) returned(a *attempt) (held bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	a.returned = true
	a.cancel(nil)
	return !a.lost
}

// cancel ends the contexts of the running attempts of ids with cause.
func (h *holdings) cancel(ids []JobID, cause error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		if a, ok := h.running[id]; ok {
			a.cancel(cause)
		}
	}
}

// snapshot returns the attempts held now and their job ids.
func (h *holdings) snapshot() ([]*attempt, []int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	atts := make([]*attempt, 0, len(h.running))
	ids := make([]int64, 0, len(h.running))
	for id, a := range h.running {
		atts = append(atts, a)
		ids = append(ids, int64(id))
	}
	return atts, ids
}

// verify gives up the attempts among atts whose claim the heartbeat found
// lost, and records sent (when the heartbeat was sent) as the time the
// others were last confirmed: token holds the claim token of each job the
// heartbeat found held by this worker. A running attempt whose job is
// gone, or held by a later claim, lost it: the job was canceled (its
// notification missed), or released after a stale heartbeat. An attempt
// whose outcome is being written is left to the write, which changes
// nothing when the job is not held; one that CompleteTx completed is done,
// not lost.
func (h *holdings) verify(atts []*attempt, token map[int64]int64, sent time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range atts {
		t, ok := token[int64(a.job.ID)]
		if ok && t == a.token {
			if sent.After(a.confirmed) {
				a.confirmed = sent
			}
			continue
		}
		if !ok && a.completedTx.Load() {
			continue
		}
		if h.running[a.job.ID] == a && !a.returned {
			h.loseLocked(a, "by the heartbeat")
		}
	}
}

// expire stops the handlers of the attempts whose hold was last confirmed
// over limit before now (see maintainer.expireHolds): the heartbeat could
// not refresh them (the database slow or out of reach, no connection to
// be had), so that soon another worker may find them stale, release them
// and run them. Their contexts end with errHoldExpired before that can
// happen. The attempts stay held: the heartbeat goes on trying, and the
// outcome (the job put back in the queue, or whatever the handler
// returned) is written if the job is still this attempt's by then, and
// dropped if not.
func (h *holdings) expire(now time.Time, limit time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, a := range h.running {
		// A job CompleteTx completed is done: its heartbeat no longer
		// finds the row, and nothing is left to protect.
		if !a.returned && !a.lost && !a.expired && !a.completedTx.Load() && now.Sub(a.confirmed) > limit {
			a.expired = true
			a.cancel(errHoldExpired)
			n++
		}
	}
	if n > 0 {
		h.logger.Warn("pgq: heartbeats failed for most of the heartbeat timeout; stopping the handlers of the jobs "+
			"they could not refresh, before another worker may run them", "jobs", n, "limit", limit)
	}
}

// fresh reports whether a's hold was confirmed (by its claim, or a
// heartbeat that found it held) less than limit before now.
func (h *holdings) fresh(a *attempt, now time.Time, limit time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return now.Sub(a.confirmed) < limit
}

// live drops the outcomes of attempts that lost their claim from batch
// and returns the rest.
func (h *holdings) live(batch []outcome) []outcome {
	h.mu.Lock()
	defer h.mu.Unlock()
	kept := batch[:0]
	for _, o := range batch {
		if !o.att.lost {
			kept = append(kept, o)
		}
	}
	return kept
}

// written ends the attempts of a batch of outcomes: they are no longer
// held. missed lists the jobs whose outcome the write did not write;
// written is false when the write gave up. An outcome that changed
// nothing belonged to a job no longer held (canceled, or released after a
// stale heartbeat and now someone else's): it is logged as lost.
func (h *holdings) written(batch []outcome, missed []int64, written bool) {
	var unwritten map[int64]bool
	if len(missed) > 0 {
		unwritten = make(map[int64]bool, len(missed))
		for _, id := range missed {
			unwritten[id] = true
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range batch {
		if h.running[o.id] == o.att {
			delete(h.running, o.id)
		}
		if written && unwritten[int64(o.id)] && !o.att.lost && o.status != StatusCanceled && !o.att.completedTx.Load() {
			h.logger.Warn("pgq: outcome of a job no longer held not written",
				"job_id", o.id, "entrypoint", o.att.job.Entrypoint, "status", o.status, "lost_total", h.lost.Add(1))
		}
	}
}

// loseLocked marks an attempt whose claim was lost (why says how it was
// found out): its handler's context ends with errJobLost, and its outcome
// is dropped. h.mu must be held.
func (h *holdings) loseLocked(a *attempt, why string) {
	if a.lost {
		return
	}
	a.lost = true
	a.cancel(errJobLost)
	if h.running[a.job.ID] == a {
		delete(h.running, a.job.ID)
	}
	h.logger.Warn("pgq: lost a job's claim; its outcome will not be written",
		"job_id", a.job.ID, "entrypoint", a.job.Entrypoint, "found", why,
		"handler_returned", a.returned, "lost_total", h.lost.Add(1))
}
