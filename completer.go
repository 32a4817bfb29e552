package pgq

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/idruns"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Actions of an outcome (see JobsFinish in db/queries/jobs.sql).
const (
	actionFinish  = "finish"  // delete the row; log the terminal status
	actionRetry   = "retry"   // back to the queue after a delay, attempts + 1
	actionHold    = "hold"    // keep as failed
	actionRelease = "release" // back to the queue at once (shutdown)
	actionSnooze  = "snooze"  // back to the queue after a delay, attempts unchanged, snoozes + 1
)

// Outcome writes: the most outcomes one statement writes, and how long a
// batch is retried while the database is unreachable (after that its jobs
// stay picked, and are claimed again once their heartbeat is stale).
const (
	maxFinishBatch   = 1000
	finishRetryFor   = 2 * time.Minute
	finishTryTimeout = 30 * time.Second
)

// finishNotifyGap is the least time between two notifications of this
// worker's finishes. Each finish deletes rows, and the job table's trigger
// sent a table_changed_event for every one: hundreds a second under load,
// each delivered to every listener of the channel (4 worker processes
// drained 10 % faster without them). Only watchers need them, and a
// watcher re-reads every job it waits for on any one event. So a finish
// within the gap of the last notification is quiet (JobsFinish's quiet,
// migration 10), and the completer sends the event itself once the gap is
// over: a watcher hears of a finish at most this much later.
const finishNotifyGap = 20 * time.Millisecond

// outcome is a finished attempt on its way to the database.
type outcome struct {
	att       *attempt
	id        JobID
	action    string
	status    Status
	traceback string // JSON, for a failure
	delay     time.Duration
}

// completer writes one run's outcomes, in batches, on the run's own
// outcome connection. It writes at once when idle and, while a write is in
// progress, gathers what arrives meanwhile into the next write: one
// statement per batch under load, no timer on an idle queue. It tells the
// run what it wrote through written, and nothing else.
type completer struct {
	q            *dbgen.Queries
	lane         *lane
	qmID         uuid.UUID
	syncOutcomes bool // WithSynchronousOutcomes
	held         *holdings
	logger       *slog.Logger
	// written is called after each batch: retryIn is the soonest retry
	// among its outcomes (negative for none).
	written func(retryIn time.Duration)

	in        chan outcome
	unwritten atomic.Int64 // outcomes added and not yet written (or dropped)

	// The finishes' notifications (see finishNotifyGap), run's own.
	names    sqlname.Names
	notified time.Time // when the last notifying finish or event began
	// timed, when set, is told each successful write's round trip and
	// outcomes (the governor's signal).
	timed     func(d time.Duration, outcomes int)
	owed      bool // a quiet finish was written since
	owedTimer *time.Timer
}

func newCompleter(q *dbgen.Queries, ln *lane, qmID uuid.UUID, syncOutcomes bool, held *holdings, logger *slog.Logger,
	names sqlname.Names, capacity int, written func(time.Duration)) *completer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &completer{q: q, lane: ln, qmID: qmID, syncOutcomes: syncOutcomes, held: held, logger: logger, written: written,
		in: make(chan outcome, capacity), names: names, owedTimer: t}
}

// add hands an outcome over for writing. Call it before the handler's
// slot is given back, so that pending counts it.
func (c *completer) add(o outcome) {
	c.unwritten.Add(1)
	c.in <- o
}

// pending reports how many outcomes are added and not yet written.
func (c *completer) pending() int64 { return c.unwritten.Load() }

// close ends the input: run returns once what was added is written.
func (c *completer) close() { close(c.in) }

// run writes batches until close. A batch holds one outcome per job: a
// second one (of a later attempt) starts the next batch. It sends the
// notification quiet finishes owe once their gap is over, and before it
// returns.
func (c *completer) run() {
	defer c.owedTimer.Stop()
	batch := make([]outcome, 0, maxFinishBatch)
	in := make(map[JobID]bool, maxFinishBatch)
	var next outcome // the first of the next batch, when hasNext
	hasNext := false
	for {
		if hasNext {
			batch, hasNext = append(batch[:0], next), false
		} else {
			select {
			case o, ok := <-c.in:
				if !ok {
					c.notifyOwed()
					return
				}
				batch = append(batch[:0], o)
			case <-c.owedTimer.C:
				c.notifyOwed()
				continue
			}
		}
		clear(in)
		in[batch[0].id] = true
	gather:
		for len(batch) < maxFinishBatch {
			select {
			case o, ok := <-c.in:
				if !ok {
					break gather
				}
				if in[o.id] {
					next, hasNext = o, true
					break gather
				}
				in[o.id] = true
				batch = append(batch, o)
			default:
				break gather
			}
		}
		c.write(batch)
	}
}

// write writes one batch of outcomes, retrying while the database is
// unreachable (see finishRetryFor). Outcomes of attempts that lost their
// claim are dropped; the statement itself changes only jobs still held by
// the claim that ran them.
func (c *completer) write(batch []outcome) {
	n := len(batch)
	batch = c.held.live(batch)
	if len(batch) == 0 {
		c.unwritten.Add(-int64(n))
		return
	}
	began := time.Now()
	quiet := began.Sub(c.notified) < finishNotifyGap
	finish, soonest := c.statement(batch, quiet)
	var missed []int64
	err := retryWrite(finishRetryFor, finishTryTimeout, func(ctx context.Context) error {
		return c.lane.do(ctx, func(s session) (err error) {
			missed, err = finish(ctx, s.db)
			return err
		})
	}, func(err error, wait time.Duration) {
		c.logger.Warn("pgq: writing job outcomes failed; retrying", "jobs", len(batch), "err", err, "in", wait)
	})
	if err != nil {
		c.logger.Error("pgq: writing job outcomes failed; giving up", "jobs", len(batch), "err", err)
	} else if c.timed != nil {
		c.timed(time.Since(began), len(batch))
	}
	switch {
	case err != nil:
	case !quiet:
		// Its commit notified, after any quiet finish before it.
		c.notified, c.owed = began, false
		c.owedTimer.Stop()
	case !c.owed:
		c.owed = true
		c.owedTimer.Reset(time.Until(c.notified.Add(finishNotifyGap)))
	}
	// The attempts are over: stop heartbeating them. Then the run hears
	// of it, after pending has dropped (a drain checks it).
	c.held.written(batch, missed, err == nil)
	c.unwritten.Add(-int64(n))
	c.written(soonest)
}

// statement returns the write of batch, and the soonest retry among its
// outcomes (negative for none). A batch of successes only, the common
// one, is written by JobsFinishSucceeded, which takes two arrays where
// JobsFinish takes six.
func (c *completer) statement(batch []outcome, quiet bool) (func(context.Context, dbgen.DBTX) ([]int64, error), time.Duration) {
	qm := uuid.NullUUID{UUID: c.qmID, Valid: true}
	ok := true
	for _, o := range batch {
		if o.action != actionFinish || o.status != StatusSuccessful || o.traceback != "" {
			ok = false
			break
		}
	}
	if ok {
		p := dbgen.JobsFinishSucceededParams{
			Ids:                make([]int64, len(batch)),
			ClaimTokens:        make([]int64, len(batch)),
			QueueManagerID:     qm,
			SynchronousOutcome: c.syncOutcomes,
			Quiet:              quiet,
		}
		for i, o := range batch {
			p.Ids[i], p.ClaimTokens[i] = int64(o.id), o.att.token
		}
		p = idruns.Finish(p)
		return func(ctx context.Context, db dbgen.DBTX) ([]int64, error) { return c.q.JobsFinishSucceeded(ctx, db, p) }, -1
	}
	p := dbgen.JobsFinishParams{
		Ids:                make([]int64, len(batch)),
		Actions:            make([]string, len(batch)),
		Statuses:           make([]string, len(batch)),
		Tracebacks:         make([]string, len(batch)),
		DelaysUs:           make([]int64, len(batch)),
		ClaimTokens:        make([]int64, len(batch)),
		QueueManagerID:     qm,
		SynchronousOutcome: c.syncOutcomes,
		Quiet:              quiet,
	}
	soonest := time.Duration(-1)
	for i, o := range batch {
		p.Ids[i], p.Actions[i], p.Statuses[i] = int64(o.id), o.action, string(o.status)
		p.Tracebacks[i], p.DelaysUs[i], p.ClaimTokens[i] = o.traceback, o.delay.Microseconds(), o.att.token
		if (o.action == actionRetry || o.action == actionSnooze) && (soonest < 0 || o.delay < soonest) {
			soonest = o.delay
		}
	}
	return func(ctx context.Context, db dbgen.DBTX) ([]int64, error) { return c.q.JobsFinish(ctx, db, p) }, soonest
}

// notifyOwed sends the table_changed_event the quiet finishes since the
// last notification owe, as the job table's trigger would have (a
// failure is logged: watchers then hear of those jobs at their next
// event or poll).
func (c *completer) notifyOwed() {
	if !c.owed {
		return
	}
	c.owed = false
	began := time.Now()
	payload, err := json.Marshal(newTableChangedEvent(c.names, "delete"))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), finishTryTimeout)
		err = c.lane.do(ctx, func(s session) error {
			return c.q.Notify(ctx, s.db, dbgen.NotifyParams{Channel: c.names.Channel(), Payload: string(payload)})
		})
		cancel()
	}
	if err != nil {
		c.logger.Warn("pgq: notifying of finished jobs failed", "err", err)
		return
	}
	c.notified = began
}
