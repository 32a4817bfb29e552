package pgq

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// claimer takes jobs for one run: a batch at a time, FOR UPDATE SKIP
// LOCKED, on the run's own claim connection (see JobsClaim). Entrypoints
// with a fleet-wide concurrency or rate limit are claimed in a transaction
// that counts what the fleet runs first (claimLimited).
type claimer struct {
	qm         *QueueManager
	qmID       uuid.UUID
	q          *dbgen.Queries
	sqlNames   sqlname.Names
	lane       *lane
	eps        map[string]*entrypoint
	names      []string // the registered entrypoints, sorted
	limited    []string // those with a concurrency or rate limit
	syncClaims bool
	count      *atomic.Int64 // claims tried, for the tests
	keyed      keyedState    // see claimRows
	logger     *slog.Logger
}

// claim takes up to n jobs. again, when positive, says a rate limit held
// jobs back and when to look again (or when the next delayed job is due).
// raced says the claim lost a capacity slot to another worker's and took
// nothing: jobs may well be waiting.
func (c *claimer) claim(ctx context.Context, n int) (jobs []*attempt, again time.Duration, raced bool, err error) {
	c.count.Add(1)
	began := time.Now() // the claim's heartbeat is no older
	caps := make([]int32, len(c.names))
	for i := range caps {
		caps[i] = int32(n)
	}
	params := dbgen.JobsClaimParams{
		Entrypoints:      c.names,
		Caps:             caps,
		BatchSize:        int32(n),
		QueueManagerID:   uuid.NullUUID{UUID: c.qmID, Valid: true},
		SynchronousClaim: c.syncClaims,
	}
	var rows []*dbgen.JobsClaimRow
	var secs float64 = -1
	err = c.lane.do(ctx, func(s session) (err error) {
		if len(c.limited) == 0 {
			rows, err = c.claimRows(ctx, s, s.db, false, params)
		} else {
			rows, again, err = c.claimLimited(ctx, s, params)
			if errors.Is(err, errSlotRace) {
				rows, again, raced = nil, lostSlotRace, true
				return nil
			}
		}
		if err != nil || len(rows) >= n || again != 0 {
			return err
		}
		// The queue has nothing more that is due: sleep until the next
		// delayed job is, if that is sooner than the poll.
		if next, err := c.q.JobsNextDue(ctx, s.db, c.names); err == nil {
			secs = next
		}
		return nil
	})
	if err != nil {
		return nil, 0, false, interpretError(err)
	}
	jobs = make([]*attempt, len(rows))
	for i, r := range rows {
		a := &attempt{token: r.ClaimToken, qm: c.qm, confirmed: began, jobValue: jobFromClaim(r)}
		a.job, a.jobValue.att = &a.jobValue, a
		jobs[i] = a
	}
	if secs >= 0 {
		// Capped: a job waiting for others (WithAfter) is due in 9999,
		// past what a Duration holds.
		again = max(time.Duration(min(secs, maxNextDue.Seconds())*float64(time.Second)), time.Millisecond)
	}
	return jobs, again, raced, nil
}

// maxNextDue caps how long a claim that found nothing says to wait for
// the next delayed job.
const maxNextDue = 24 * time.Hour

// claimLimited claims in a transaction that first takes the fleet-wide
// locks of the limited entrypoints, then counts their held jobs and
// recent starts, and lowers their caps accordingly. Jobs of entrypoints
// with a concurrency limit get capacity slots as PGQueuer 1.4+ gives them
// (JobsAssignSlots), so that its workers and pgq's enforce one limit
// together. A claim that lost a slot to another worker's concurrent
// claim, or found the limit passed by claims committed since it counted
// (PGQueuer before 1.4 counts without a lock), is rolled back: it returns
// no jobs and asks to look again soon.
func (c *claimer) claimLimited(ctx context.Context, s session, p dbgen.JobsClaimParams) (rows []*dbgen.JobsClaimRow, again time.Duration, err error) {
	tx, err := s.begin(ctx, nil)
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()
	db, q := wrapDB(c.sqlNames, tx), c.q
	if err := q.JobsLockEntrypoints(ctx, db, dbgen.JobsLockEntrypointsParams{
		LockNamespace: c.sqlNames.Qualified(sqlname.JobTable) + ":",
		Entrypoints:   c.limited,
	}); err != nil {
		return nil, 0, err
	}
	var concurrency, rate []string
	for _, name := range c.limited {
		if c.eps[name].concurrencyLimit > 0 {
			concurrency = append(concurrency, name)
		}
		if c.eps[name].rateLimit > 0 {
			rate = append(rate, name)
		}
	}
	runningBy := map[string]int32{}
	if len(concurrency) > 0 {
		running, err := q.JobsRunningByEntrypoint(ctx, db, concurrency)
		if err != nil {
			return nil, 0, err
		}
		for _, r := range running {
			runningBy[r.Entrypoint] = r.Running
		}
	}
	startedBy := map[string]int32{}
	if len(rate) > 0 {
		started, err := q.LogStartedByEntrypoint(ctx, db, dbgen.LogStartedByEntrypointParams{
			Entrypoints: rate, WindowUs: time.Second.Microseconds(),
		})
		if err != nil {
			return nil, 0, err
		}
		for _, r := range started {
			startedBy[r.Entrypoint] = r.Started
		}
	}
	again = limitCaps(p.Entrypoints, p.Caps, c.eps, runningBy, startedBy)
	rows, err = c.claimRows(ctx, s, db, true, p)
	if err != nil {
		return nil, 0, err
	}
	if ok, err := c.assignSlots(ctx, db, rows); err != nil || !ok {
		return nil, 0, cmp.Or(err, errSlotRace)
	}
	return rows, again, tx.Commit()
}

// errSlotRace is claimLimited's rolled-back claim (see assignSlots);
// lostSlotRace is how soon the worker looks again after one.
var errSlotRace = errors.New("pgq: claim lost a capacity slot to a concurrent claim")

const lostSlotRace = 5 * time.Millisecond

// assignSlots gives the claimed jobs of entrypoints with a concurrency
// limit their capacity slots. It reports false when the claim must be
// rolled back: a slot was taken by a concurrent claim, or the limit was
// passed by claims committed since the count.
func (c *claimer) assignSlots(ctx context.Context, db sqlname.DBTX, rows []*dbgen.JobsClaimRow) (bool, error) {
	claimed := map[string]int32{}
	var ids []int64
	for _, r := range rows {
		if c.eps[r.Entrypoint].concurrencyLimit > 0 {
			claimed[r.Entrypoint]++
			ids = append(ids, r.ID)
		}
	}
	if len(ids) == 0 {
		return true, nil
	}
	p := dbgen.JobsAssignSlotsParams{Ids: ids}
	for _, name := range c.limited {
		if n := c.eps[name].concurrencyLimit; n > 0 && claimed[name] > 0 {
			p.Entrypoints = append(p.Entrypoints, name)
			p.Limits = append(p.Limits, int32(n))
		}
	}
	got, err := c.q.JobsAssignSlots(ctx, db, p)
	if err != nil {
		if slotRace(err) {
			return false, nil
		}
		return false, err
	}
	for _, g := range got {
		if g.Assigned < claimed[g.Entrypoint] || g.Holding > int32(c.eps[g.Entrypoint].concurrencyLimit) {
			return false, nil
		}
	}
	return true, nil
}

// slotRace reports whether err is a claim losing a capacity slot to a
// concurrent claim: a unique violation on the slot index, or two claims
// waiting on each other's slots.
func slotRace(err error) bool {
	pe, ok := asPgError(err)
	return ok && (pe.Code == "40P01" || pe.Code == "23505" && strings.HasSuffix(pe.Constraint, "picked_slot_idx"))
}

// execute runs one job's handler and hands its outcome to the completer,

// limitCaps lowers caps (one per entrypoint of names) to what the limits
// leave: a concurrency limit minus the jobs the fleet runs (runningBy), a
// rate limit minus the starts of the last second (startedBy; a rate below
// one per second allows one start when the window has none). again, when
// positive, is the soonest a rate-limited entrypoint's budget frees up.
func limitCaps(names []string, caps []int32, eps map[string]*entrypoint, runningBy, startedBy map[string]int32) (again time.Duration) {
	for i, name := range names {
		ep := eps[name]
		if ep.concurrencyLimit > 0 {
			caps[i] = min(caps[i], max(int32(ep.concurrencyLimit)-runningBy[name], 0))
		}
		if ep.rateLimit > 0 {
			budget := int32(math.Floor(ep.rateLimit)) - startedBy[name]
			if ep.rateLimit < 1 && startedBy[name] == 0 {
				budget = 1
			}
			caps[i] = min(caps[i], max(budget, 0))
			if budget <= caps[i] || budget <= 0 {
				// The budget frees up as starts leave the window.
				step := time.Duration(float64(time.Second) / ep.rateLimit)
				if d := max(min(step, time.Second), 10*time.Millisecond); again == 0 || d < again {
					again = d
				}
			}
		}
	}
	return again
}

// confirm refreshes the heartbeat of jobs a slow claim has just taken
// (JobsConfirmClaim) and returns those still held by the claim: a claim's
// rows carry the heartbeat of its start, so after a claim that took a good
// part of the heartbeat timeout another worker may already have released
// them as stale, and may run them. The others are dropped, not run: they
// are another claim's now, or, if a transient lock hid them, go back to
// the queue as stale after the heartbeat timeout. When the refresh fails,
// every job is kept, as after a quick claim: the heartbeats decide.
func (c *claimer) confirm(ctx context.Context, jobs []*attempt, took time.Duration) []*attempt {
	ids := make([]int64, len(jobs))
	for i, a := range jobs {
		ids[i] = int64(a.job.ID)
	}
	var rows []*dbgen.JobsConfirmClaimRow
	var sent time.Time
	err := c.lane.do(ctx, func(s session) (err error) {
		sent = time.Now()
		rows, err = c.q.JobsConfirmClaim(ctx, s.db, dbgen.JobsConfirmClaimParams{
			Ids: ids, QueueManagerID: uuid.NullUUID{UUID: c.qmID, Valid: true},
		})
		return err
	})
	if err != nil {
		c.logger.Warn("pgq: refreshing the heartbeats of a slow claim's jobs failed; running them",
			"took", took, "jobs", len(jobs), "err", err)
		return jobs
	}
	token := make(map[int64]int64, len(rows))
	for _, r := range rows {
		token[r.ID] = r.ClaimToken
	}
	kept := jobs[:0]
	for _, a := range jobs {
		if t, ok := token[int64(a.job.ID)]; ok && t == a.token {
			a.confirmed = sent // not held yet: no lock needed
			kept = append(kept, a)
		}
	}
	if n := len(jobs) - len(kept); n > 0 {
		c.logger.Warn("pgq: a claim took so long that some of its jobs may have gone stale; not running them",
			"took", took, "jobs", n)
	}
	return kept
}
