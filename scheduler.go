package pgq

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
)

// DefaultSchedulePollInterval is the longest a SchedulerManager sleeps
// between looks at the schedules table (set it with WithPollInterval). It
// sleeps until the earliest next run of its schedules, but no longer than
// this, so that it notices what other processes change.
const DefaultSchedulePollInterval = time.Second

// Timings of the scheduler that are not options.
const (
	// maxScheduleHeartbeatInterval caps the heartbeat interval (a tenth of
	// the heartbeat timeout), so that PGQueuer schedulers, which take a
	// schedule over after 30 s without a heartbeat, never see a live pgq
	// run as dead.
	maxScheduleHeartbeatInterval = 5 * time.Second
	// overdueRetry is how soon a scheduler looks again when a due schedule
	// could not be claimed (another scheduler was claiming it).
	overdueRetry = 25 * time.Millisecond
	// scheduleWriteTimeout bounds the writes that end a tick, retries
	// included.
	scheduleWriteTimeout = 10 * time.Second
)

// SchedulerManager runs functions (or enqueues jobs) on cron schedules
// kept in the schedules table, which it shares with PGQueuer's scheduler.
// Any number of SchedulerManagers, in any number of processes (pgq's or
// PGQueuer's), can run the same schedules: each tick runs once in the whole
// fleet. A scheduler claims a due schedule with FOR UPDATE SKIP LOCKED,
// marks it picked, heartbeats it while it runs, and then sets its next run;
// a schedule whose scheduler died (no heartbeat for the heartbeat timeout)
// is taken over by another. Cron times are in UTC unless the expression
// starts with CRON_TZ=Zone or the schedule has WithLocation.
type SchedulerManager struct {
	db      *sql.DB
	cfg     common
	q       *dbgen.Queries
	entries registry[scheduleKey, *scheduleEntry]
}

// SchedulerOption configures NewSchedulerManager: WithPrefix, WithSchema
// and WithLogger.
type SchedulerOption interface{ applySchedulerManager(*common) }

// NewSchedulerManager returns a scheduler that runs on db. Register
// schedules with Schedule, then call Run (which reports an invalid
// option).
func NewSchedulerManager(db *sql.DB, opts ...SchedulerOption) *SchedulerManager {
	cfg := newCommon()
	for _, o := range opts {
		if o != nil {
			o.applySchedulerManager(&cfg)
		}
	}
	return &SchedulerManager{
		db:  db,
		cfg: cfg,
		q:   dbgen.New(),
	}
}

// Schedule registers fn to run at the times cron expression expr matches
// (see ParseCron), under the name entrypoint. The schedule's row in the
// schedules table is identified by (expression, entrypoint), so the same
// pair registered in several processes (pgq or PGQueuer) is one schedule
// whose every tick runs once. An entrypoint may have several expressions.
//
// With WithEnqueue, fn must be nil: each tick enqueues a job instead.
func (sm *SchedulerManager) Schedule(entrypoint, expr string, fn ScheduleFunc, opts ...ScheduleOption) error {
	if entrypoint == "" {
		return fmt.Errorf("pgq: schedule with cron expression %q: empty entrypoint", expr)
	}
	c, err := parseCron(expr)
	if err != nil {
		return fmt.Errorf("pgq: schedule %q: %w", entrypoint, err)
	}
	e := &scheduleEntry{entrypoint: entrypoint, cron: c, fn: fn}
	for _, o := range opts {
		if o != nil {
			o.applySchedule(e)
		}
	}
	if e.locErr != nil {
		return fmt.Errorf("pgq: schedule %q (%s): %w", entrypoint, c, e.locErr)
	}
	if e.loc != nil {
		// The zone is stored by name: every process must load the same one.
		if _, err := loadZone(e.loc.String()); err != nil {
			return fmt.Errorf("pgq: schedule %q (%s): WithLocation: %w", entrypoint, c, err)
		}
		if e.cron, err = parseCronIn(expr, e.loc); err != nil {
			return fmt.Errorf("pgq: schedule %q: %w", entrypoint, err)
		}
		c = e.cron
	}
	switch {
	case e.enqueue && fn != nil:
		return fmt.Errorf("pgq: schedule %q (%s): WithEnqueue enqueues a job on each tick, so fn must be nil "+
			"(the job's handler does the work)", entrypoint, c)
	case !e.enqueue && fn == nil:
		return fmt.Errorf("pgq: schedule %q (%s): fn is nil; pass a function, or WithEnqueue to enqueue jobs",
			entrypoint, c)
	}
	key := scheduleKey{entrypoint, c.String()}
	return sm.entries.add(key, e, fmt.Sprintf("schedule %q (%s)", entrypoint, c))
}

// ---------------------------------------------------------------------------
// Running

// Run runs the registered schedules until ctx ends. It first adds each
// schedule's row to the schedules table if missing (with its next tick);
// existing rows keep their state. It then sleeps until the earliest next run
// among its schedules (at most the poll interval), claims the due ones,
// runs them, and sets their next run: the first tick after the run ends, so
// a run that outlasts the interval skips the ticks it overlapped (see
// WithCatchUp for ticks missed before the claim).
//
// Run takes WithPollInterval (default DefaultSchedulePollInterval),
// WithHeartbeatTimeout (default DefaultHeartbeatTimeout: a schedule whose
// scheduler has not heartbeated for that long is taken over; heartbeats go
// every tenth of it, at most every 5 s) and WithShutdownTimeout (default
// DefaultShutdownTimeout). It reports an invalid option, its own or
// NewSchedulerManager's, before it starts.
//
// When ctx ends, Run stops claiming, lets running functions finish for up
// to the shutdown timeout, then cancels their contexts and waits for them,
// records their schedules' next runs, and returns nil. It returns nil as
// well when ctx ends while it starts (checks the schema, registers the
// schedules). When it returns, every goroutine it started has ended.
func (sm *SchedulerManager) Run(ctx context.Context, opts ...SchedulerRunOption) error {
	rc := schedConfig{timing: timing{
		heartbeatTimeout: DefaultHeartbeatTimeout,
		shutdownTimeout:  DefaultShutdownTimeout,
		pollInterval:     DefaultSchedulePollInterval,
	}}
	for _, o := range opts {
		if o != nil {
			o.applySchedulerRun(&rc)
		}
	}
	if sm.cfg.err != nil {
		return sm.cfg.err
	}
	if rc.err != nil {
		return rc.err
	}

	entries, end, err := sm.entries.begin("SchedulerManager", "schedule", "Schedule")
	if err != nil {
		return err
	}
	defer end()

	if err := checkSchema(ctx, sm.db, sm.cfg); err != nil {
		return stoppedEarly(ctx, err)
	}
	r := &schedRun{
		sm:      sm,
		rc:      rc,
		entries: entries,
		logger:  sm.cfg.logger.With("component", "scheduler"),
		done:    make(chan ScheduleID),
	}
	r.conn = newLane(sm.db, sm.cfg.names, canPin(sm.db, 1, "the scheduler", r.logger))
	defer r.conn.close()
	keys := slices.SortedFunc(maps.Keys(entries), func(a, b scheduleKey) int {
		return strings.Compare(a.entrypoint+"\x00"+a.expression, b.entrypoint+"\x00"+b.expression)
	})
	for _, k := range keys {
		r.eps = append(r.eps, k.entrypoint)
		r.exprs = append(r.exprs, k.expression)
	}
	if err := r.register(ctx); err != nil {
		return stoppedEarly(ctx, err)
	}
	return r.loop(ctx)
}

// schedConfig is what SchedulerManager.Run takes.
type schedConfig struct {
	timing
	optionErr
}

// schedRun is the state of one Run call.
type schedRun struct {
	sm      *SchedulerManager
	rc      schedConfig
	entries map[scheduleKey]*scheduleEntry
	eps     []string // the (entrypoint, expression) pairs, element by element
	exprs   []string
	logger  *slog.Logger
	done    chan ScheduleID // a tick's run and its bookkeeping are over
	// conn is the scheduler's own connection: claims, heartbeats and the
	// writes that end ticks.
	conn *lane
}

// register adds the missing schedule rows, each with its next tick.
func (r *schedRun) register(ctx context.Context) error {
	now := time.Now()
	p := dbgen.SchedulesInsertParams{Expressions: r.exprs, Entrypoints: r.eps, NextRunUs: make([]int64, len(r.eps))}
	for i := range r.eps {
		p.NextRunUs[i] = r.entries[scheduleKey{r.eps[i], r.exprs[i]}].cron.Next(now).UnixMicro()
	}
	if err := r.conn.do(ctx, func(s session) error { return r.sm.q.SchedulesInsert(ctx, s.db, p) }); err != nil {
		return fmt.Errorf("pgq: registering schedules: %w", interpretError(err))
	}
	return nil
}

func (r *schedRun) heartbeatInterval() time.Duration {
	return max(min(r.rc.heartbeatTimeout/10, maxScheduleHeartbeatInterval), time.Millisecond)
}

func (r *schedRun) loop(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	// Functions get their own context: it outlives ctx by the shutdown
	// grace period.
	fnCtx, cancelFns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFns()

	running := map[ScheduleID]bool{}
	timer := time.NewTimer(0)
	defer timer.Stop()
	hb := time.NewTicker(r.heartbeatInterval())
	defer hb.Stop()
	var failures backoff

	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-timer.C:
			wait, err := r.poll(ctx, fnCtx, &wg, running)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				wait = failures.failed()
				r.logger.Warn("pgq: scheduler: reading schedules failed; retrying", "err", err, "in", wait)
			} else {
				failures.ok()
			}
			timer.Reset(wait)
		case id := <-r.done:
			delete(running, id)
			// Its next run is written: look again.
			resetTimer(timer, 0)
		case <-hb.C:
			r.heartbeat(running)
		}
	}

	// Shutdown: let running functions finish within the grace period,
	// heartbeating their rows meanwhile, then cancel their contexts.
	graceful(len(running), r.done, func(id ScheduleID) { delete(running, id) }, r.rc.shutdownTimeout, cancelFns,
		r.logger, "running schedules", hb.C, func() { r.heartbeat(running) })
	return nil
}

// poll claims the due schedules, starts their runs, and returns how long to
// sleep before looking again.
func (r *schedRun) poll(ctx, fnCtx context.Context, wg *sync.WaitGroup, running map[ScheduleID]bool) (time.Duration, error) {
	var rows []*dbgen.SchedulesClaimRow
	err := r.conn.do(ctx, func(s session) (err error) {
		rows, err = r.sm.q.SchedulesClaim(ctx, s.db, dbgen.SchedulesClaimParams{
			StaleAfterUs: r.rc.heartbeatTimeout.Microseconds(),
			Entrypoints:  r.eps,
			Expressions:  r.exprs,
		})
		return err
	})
	if err != nil {
		return 0, interpretError(err)
	}
	claimedAt := time.Now()
	for _, row := range rows {
		id := ScheduleID(row.ID)
		e := r.entries[scheduleKey{row.Entrypoint, row.Expression}]
		if running[id] || e == nil {
			// Its run here is still going (the claim had gone stale and
			// was renewed), or the row is not ours (cannot happen: the
			// claim filters on our pairs). The running goroutine, or the
			// heartbeat timeout, puts it back.
			continue
		}
		running[id] = true
		t := claimedTick{row: row, claimedAt: claimedAt}
		wg.Go(func() {
			r.runTick(fnCtx, e, t)
			r.done <- id
		})
	}
	var next *dbgen.SchedulesNextWaitRow
	err = r.conn.do(ctx, func(s session) (err error) {
		next, err = r.sm.q.SchedulesNextWait(ctx, s.db, dbgen.SchedulesNextWaitParams{
			Entrypoints: r.eps,
			Expressions: r.exprs,
		})
		return err
	})
	if err != nil {
		return 0, interpretError(err)
	}
	wait := r.rc.pollInterval
	if next.Queued > 0 {
		d := time.Duration(next.WaitUs) * time.Microsecond
		if d <= 0 {
			d = overdueRetry // due, but another scheduler was claiming it
		}
		wait = min(wait, d)
	}
	return wait, nil
}

// claimedTick is a claimed schedule row.
type claimedTick struct {
	row       *dbgen.SchedulesClaimRow
	claimedAt time.Time // local clock when the claim returned
}

// now estimates the database's clock: the claim's now() plus the time
// elapsed since, so that next runs do not depend on this host's clock.
func (t claimedTick) now() time.Time {
	return t.row.DbNow.Add(time.Since(t.claimedAt))
}

// runTick runs (or enqueues, or skips) one claimed tick and records the
// schedule's next run.
func (r *schedRun) runTick(ctx context.Context, e *scheduleEntry, t claimedTick) {
	tick := t.row.NextRun.UTC()
	missed := !e.cron.Next(tick).After(t.row.DbNow)
	ran := !missed || e.catchUp
	logger := r.logger.With("entrypoint", e.entrypoint, "expression", e.cron.String(), "schedule_id", t.row.ID,
		"tick", tick)
	if missed && !e.catchUp {
		logger.Info("pgq: scheduler: skipping missed tick")
	}
	if ran && e.enqueue {
		if err := r.enqueueTick(e, t, tick); err != nil {
			logger.Error("pgq: scheduler: enqueuing the tick's job failed; the schedule is taken over "+
				"after the heartbeat timeout", "err", err)
		}
		return
	}
	if ran {
		s := &Schedule{
			ID:         ScheduleID(t.row.ID),
			Entrypoint: e.entrypoint,
			Expression: e.cron.String(),
			Tick:       tick,
		}
		if t.row.LastRun.Valid {
			s.LastRun = t.row.LastRun.Time.UTC()
		}
		if err := callSafely(func() error { return e.fn(ctx, s) }); err != nil {
			logger.Error("pgq: scheduler: schedule failed", "err", err)
		}
	}
	err := r.retryWrite(func(ctx context.Context) error {
		return r.conn.do(ctx, func(s session) error {
			_, err := r.sm.q.SchedulesFinish(ctx, s.db, r.finishParams(e, t, tick, ran))
			return err
		})
	})
	if err != nil {
		logger.Error("pgq: scheduler: recording the next run failed; the schedule is taken over "+
			"after the heartbeat timeout", "err", err)
	}
}

func (r *schedRun) finishParams(e *scheduleEntry, t claimedTick, tick time.Time, ran bool) dbgen.SchedulesFinishParams {
	base := t.now()
	if base.Before(tick) {
		base = tick
	}
	next := e.cron.Next(base)
	if next.IsZero() { // no match within five years: look again in a year
		next = base.Add(365 * 24 * time.Hour)
	}
	return dbgen.SchedulesFinishParams{NextRun: next, Ran: ran, ID: t.row.ID, ClaimedNextRun: t.row.NextRun}
}

// enqueueTick enqueues the tick's job and records the schedule's next run
// in one transaction. If the row was taken over meanwhile, neither happens.
func (r *schedRun) enqueueTick(e *scheduleEntry, t claimedTick, tick time.Time) error {
	key := fmt.Sprintf("schedule:%d:%d", t.row.ID, tick.Unix())
	opts := append(slices.Clone(e.enqueueOpts), WithDedupeKey(key), WithSkipDuplicates())
	return r.retryWrite(func(ctx context.Context) error {
		return r.conn.do(ctx, func(s session) error { return r.enqueueTickTx(ctx, s, e, t, tick, opts) })
	})
}

// enqueueTickTx is one attempt of enqueueTick.
func (r *schedRun) enqueueTickTx(ctx context.Context, s session, e *scheduleEntry, t claimedTick, tick time.Time,
	opts []EnqueueOption) error {
	names := r.sm.cfg.names
	tx, err := s.begin(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	q := NewQueries(tx, NamingOption{func(c *common) { c.names = names }})
	if _, err := q.Enqueue(ctx, e.entrypoint, nil, opts...); err != nil {
		return err
	}
	n, err := r.sm.q.SchedulesFinish(ctx, wrapDB(names, tx), r.finishParams(e, t, tick, true))
	if err != nil {
		return err
	}
	if n == 0 {
		r.logger.Warn("pgq: scheduler: schedule was taken over by another scheduler; not enqueuing",
			"entrypoint", e.entrypoint, "schedule_id", t.row.ID, "tick", tick)
		return nil // rolled back
	}
	return tx.Commit()
}

// retryWrite runs a write that ends a tick, retrying while the database is
// unreachable, for up to scheduleWriteTimeout.
func (r *schedRun) retryWrite(write func(ctx context.Context) error) error {
	return retryWrite(scheduleWriteTimeout, scheduleWriteTimeout, write, nil)
}

// heartbeat refreshes the heartbeat of every running schedule, in one
// statement.
func (r *schedRun) heartbeat(running map[ScheduleID]bool) {
	if len(running) == 0 {
		return
	}
	ids := make([]int64, 0, len(running))
	for id := range running {
		ids = append(ids, int64(id))
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(r.heartbeatInterval(), time.Second))
	defer cancel()
	err := r.conn.do(ctx, func(s session) error {
		_, err := r.sm.q.SchedulesHeartbeat(ctx, s.db, ids)
		return err
	})
	if err != nil {
		r.logger.Warn("pgq: scheduler: heartbeat failed", "err", interpretError(err), "schedules", len(ids))
	}
}
