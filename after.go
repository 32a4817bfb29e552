package pgq

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
)

// Dependencies between jobs (WithAfter). A job that waits for others is
// enqueued with its ExecuteAfter at WaitingForDependencies, which no
// worker's claim (pgq's or PGQueuer's) takes, and one edge per dependency
// in the pgq-only table pgqueuer_pgq_after. A trigger on the log settles
// the edges as jobs end, whoever ends them: see migration 7.

// MaxAfter is the most jobs one job may wait for (WithAfter).
const MaxAfter = 1000

// WaitingForDependencies is the ExecuteAfter of a job that waits for the
// jobs it was enqueued after (WithAfter): 9999-12-31, which is never due.
// When the last of them succeeds, its ExecuteAfter becomes the time it
// was enqueued for (now, or its WithExecuteAfter delay from its enqueue).
var WaitingForDependencies = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

// afterSweepInterval is how often a worker settles the dependencies that
// ended while a job waiting for them was being enqueued (see AfterSweep).
const afterSweepInterval = 10 * time.Second

// WithAfter makes the job wait until every job of ids has finished
// successfully: until then it is queued but not due (its ExecuteAfter
// reads WaitingForDependencies), so no worker claims it, pgq's or
// PGQueuer's. When the last one succeeds it becomes due (after its
// WithExecuteAfter delay, counted from its enqueue). When one fails for
// good (ends as exception, canceled or deleted; a held job is not over
// yet) the job is canceled, its log row naming that dependency, and so in
// turn are the jobs waiting for it; with WithHoldOnDependencyFailure it is
// held instead (status failed), for Requeue to run it anyway.
//
// The ids must be of jobs enqueued earlier: a job still in the job table
// (queued, running or held), or one that already finished successfully,
// which counts as done. Enqueue returns an error naming an id that is
// unknown (never enqueued, or its log pruned) or whose job already failed
// for good. So dependencies run one way only, and no cycle can form.
// Repeated ids count once; at most MaxAfter.
func WithAfter(ids ...JobID) EnqueueOption {
	return enqueueOption(func(c *enqueueConfig) { c.job.After = append(c.job.After, ids...) })
}

// WithHoldOnDependencyFailure makes a job that waits for others
// (WithAfter) be held (status failed, as after its last failed attempt)
// rather than canceled when one of them fails for good.
func WithHoldOnDependencyFailure() EnqueueOption {
	return enqueueOption(func(c *enqueueConfig) { c.job.HoldOnDependencyFailure = true })
}

// checkAfter checks a new job's dependencies.
func checkAfter(j NewJob) error {
	if len(j.After) > MaxAfter {
		return fmt.Errorf("waits for %d jobs, more than MaxAfter (%d)", len(j.After), MaxAfter)
	}
	for _, id := range j.After {
		if id <= 0 {
			return fmt.Errorf("waits for job %d: not a job id", id)
		}
	}
	return nil
}

// insertAfter enqueues a batch in which some jobs wait for others: it
// looks the dependencies up, refuses unknown and failed ones, and inserts
// the jobs with their edges in one statement (JobsEnqueueAfter).
func (q *Queries) insertAfter(ctx context.Context, jobs []NewJob, p dbgen.JobsEnqueueParams, keys *jobKeys) ([]*dbgen.JobsEnqueueRow, error) {
	var all []int64
	for _, j := range jobs {
		for _, id := range j.After {
			all = append(all, int64(id))
		}
	}
	slices.Sort(all)
	all = slices.Compact(all)
	rows, err := q.q.AfterCheck(ctx, q.db, all)
	if err != nil {
		return nil, fmt.Errorf("pgq: enqueue: looking up dependencies: %w", interpretError(err))
	}
	pending := make(map[JobID]bool, len(rows))
	for _, r := range rows {
		id, st := JobID(r.ID), Status(r.Status)
		switch {
		case r.Live:
			pending[id] = true
		case st == StatusSuccessful:
			// Done already: nothing to wait for.
		case st == "":
			return nil, fmt.Errorf("pgq: enqueue: dependency %d: %w (never enqueued, or its log was pruned)", id, ErrJobNotFound)
		case st.Terminal():
			return nil, fmt.Errorf("pgq: enqueue: dependency %d already ended %s; a job after it could never run", id, st)
		default:
			// It left the job table after this look-up's snapshot: the
			// edge is written, and the workers' sweep settles it.
			pending[id] = true
		}
	}
	n := len(jobs)
	arg := dbgen.JobsEnqueueAfterParams{
		Priorities: p.Priorities, Entrypoints: p.Entrypoints, Payloads: p.Payloads, PayloadNulls: p.PayloadNulls,
		ExecuteAfterUs: p.ExecuteAfterUs, DedupeKeys: p.DedupeKeys, Headers: p.Headers,
		Waits: make([]bool, n), Holds: make([]bool, n),
		FairnessKeys: make([]string, n), SerialKeys: make([]string, n),
	}
	if keys != nil {
		arg.FairnessKeys, arg.SerialKeys = keys.fairness, keys.serial
	}
	for i, j := range jobs {
		arg.Holds[i] = j.HoldOnDependencyFailure
		seen := map[JobID]bool{}
		for _, id := range j.After {
			if pending[id] && !seen[id] {
				seen[id] = true
				arg.Waits[i] = true
				arg.EdgeJobs = append(arg.EdgeJobs, int64(i+1))
				arg.EdgeAfter = append(arg.EdgeAfter, int64(id))
			}
		}
	}
	inserted, err := q.q.JobsEnqueueAfter(ctx, q.db, arg)
	if err != nil {
		return nil, fmt.Errorf("pgq: enqueue: %w", interpretError(err))
	}
	out := make([]*dbgen.JobsEnqueueRow, len(inserted))
	for i, r := range inserted {
		out[i] = (*dbgen.JobsEnqueueRow)(r)
	}
	return out, nil
}

// sweepAfter settles, every sweepInterval until ctx ends, the
// dependencies that ended while a job waiting for them was being enqueued
// (the log's trigger did not see its edges yet). It runs on the heartbeat's
// connection: from the pool it landed on connections that had never run
// it, each a new prepare, and took 15-105 ms under handlers that saturate
// the server.
func (m *maintainer) sweepAfter(ctx context.Context) {
	every(ctx, m.sweepInterval, func() {
		var n int32
		err := m.lane.do(ctx, func(s session) (err error) {
			n, err = m.q.AfterSweep(ctx, s.db)
			return err
		})
		switch {
		case err != nil && ctx.Err() == nil:
			m.logger.Warn("pgq: settling job dependencies failed", "err", interpretError(err))
		case n > 0:
			m.logger.Info("pgq: settled jobs whose dependencies ended while they were enqueued", "jobs", n)
		}
	})
}
