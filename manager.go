package pgq

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// The worker, by role (each in its own file):
//   - manager.go: QueueManager, Entrypoint, Run and the loop that claims
//     and hands jobs on, with its start-up and shutdown;
//   - claim.go: the claimer, which takes batches of jobs;
//   - execute.go: the executor, which runs handlers and decides outcomes;
//   - holdings.go: the jobs a run holds, and claims found lost;
//   - completer.go: the completer, which writes outcomes in batches;
//   - maintainer.go: heartbeats, release of stale jobs, vacuum, analyze
//     and log folding;
//   - listener.go: LISTEN and its health echo (shared with the watcher);
//   - runner.go: what Run shares with SchedulerManager.Run;
//   - options_run.go: the RunOptions.

// QueueManager is a worker: it runs the handlers registered with
// Entrypoint on the jobs it claims. Any number of QueueManagers, in any
// number of processes, can share one queue; each job runs once.
type QueueManager struct {
	db  *sql.DB
	rdb sqlname.DBTX // db with object names rewritten
	cfg managerConfig
	q   *dbgen.Queries
	id  uuid.UUID
	eps registry[string, *entrypoint]
	cur atomic.Pointer[run] // the running Run, for Listening

	claims    atomic.Int64 // claims tried, for the tests
	abandoned atomic.Int64 // handlers abandoned after their timeout, still running
}

type entrypoint struct {
	name             string
	handler          Handler
	concurrencyLimit int     // fleet-wide; 0 = none
	rateLimit        float64 // starts per second, fleet-wide; 0 = none
	retry            RetryPolicy
	onFailure        FailureAction
	timeout          time.Duration // 0 = none (see WithTimeout)
	maxSnoozes       int
	keyLimit         int  // fleet-wide per fairness key; 0 = none (WithKeyConcurrencyLimit)
	serialByPriority bool // WithSerialPriority
	serialSkipHeld   bool // WithSerialSkipHeld
}

// limited reports whether claims of the entrypoint count what the fleet
// runs, under a fleet-wide lock (claimLimited).
func (e *entrypoint) limited() bool {
	return e.concurrencyLimit > 0 || e.rateLimit > 0 || e.keyLimit > 0
}

// EntrypointOption configures one entrypoint: WithConcurrencyLimit,
// WithRateLimit, WithRetry, OnFailure, WithTimeout, WithMaxSnoozes.
type EntrypointOption interface {
	applyEntrypoint(*entrypoint) error
}

// NewQueueManager returns a worker that runs on db. Register handlers with
// Entrypoint, then call Run.
func NewQueueManager(db *sql.DB, opts ...ManagerOption) *QueueManager {
	cfg := managerConfig{common: newCommon()}
	for _, o := range opts {
		if o != nil {
			o.applyManager(&cfg)
		}
	}
	return &QueueManager{
		db:  db,
		rdb: wrapDB(cfg.names, db),
		cfg: cfg,
		q:   dbgen.New(),
		id:  uuid.New(),
	}
}

// ID returns the worker's id, the queue_manager_id of the jobs it holds.
func (qm *QueueManager) ID() uuid.UUID { return qm.id }

// Listening reports whether the worker wakes on notifications now: Run is
// running, its LISTEN is in place and the listener answered its last
// health check. It is false before Run and after it returns, while the
// listener connects or reconnects, and always for a pool that cannot
// listen (lib/pq opened with sql.Open, without WithListenDSN: use Open);
// meanwhile the worker polls every poll interval (WithPollInterval) and
// says why in its log.
func (qm *QueueManager) Listening() bool {
	w := qm.cur.Load()
	return w != nil && w.listen.live()
}

// AbandonedHandlers returns how many of the worker's handlers were
// abandoned after their job's timeout (see WithTimeout) and have not
// returned yet: goroutines that leak while they run.
func (qm *QueueManager) AbandonedHandlers() int64 { return qm.abandoned.Load() }

// Entrypoint registers h as the handler of the jobs enqueued for name. The
// worker only ever claims jobs of registered entrypoints.
func (qm *QueueManager) Entrypoint(name string, h Handler, opts ...EntrypointOption) error {
	if name == "" {
		return errors.New("pgq: entrypoint name is empty")
	}
	if h == nil {
		return fmt.Errorf("pgq: entrypoint %q: handler is nil", name)
	}
	ep := &entrypoint{name: name, handler: h, maxSnoozes: DefaultMaxSnoozes}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.applyEntrypoint(ep); err != nil {
			return fmt.Errorf("pgq: entrypoint %q: %w", name, err)
		}
	}
	return qm.eps.add(name, ep, fmt.Sprintf("entrypoint %q", name))
}

// Run claims and runs jobs until ctx ends (or, in ModeDrain, until the
// queue has nothing it can run). It wakes on the job table's notifications
// and also looks every dequeue timeout. Running jobs heartbeat; jobs whose
// worker died (heartbeat older than the heartbeat timeout) are claimed
// again. When ctx ends it stops claiming (a claim under way finishes,
// within 2 s), puts the jobs claimed but not started back in the queue,
// lets running handlers finish for up to the shutdown timeout, then
// cancels their contexts, puts the jobs that did not finish back in the
// queue, writes every outcome, and returns nil. It returns nil as well
// when ctx ends while it starts (checks the schema). When it returns,
// every goroutine it started has ended, except the handlers abandoned
// after their job's timeout (see WithTimeout and AbandonedHandlers).
//
// Connections: Run holds three connections of the QueueManager's pool for
// as long as it runs, one each for claiming, for writing outcomes, and for
// heartbeats (with the release of stale jobs, the job table's upkeep check
// and the dependency sweep), so that neither the program's own traffic on
// the pool nor the pool's settings slow them down or make heartbeats late;
// a connection that fails is replaced. The listener takes a fourth
// (borrowed from a pgx pool, or its own on WithListenDSN's DSN), and its
// health checks and maintenance (statistics, vacuum, the log's upkeep)
// borrow one now and then. Handlers that use
// the pool need as many more as run at once (WithMaxConcurrentTasks): size
// the server's max_connections for that, per worker, and keep as many
// idle (db.SetMaxIdleConns; see WithPoolTuning). While such handlers
// saturate the database, Run runs fewer of them at once (see
// WithConcurrencyTuning). A pool whose
// SetMaxOpenConns leaves fewer than five makes Run share the pool for
// its statements instead, and say so.
func (qm *QueueManager) Run(ctx context.Context, opts ...RunOption) error {
	rc := newRunConfig(opts)
	if qm.cfg.err != nil {
		return qm.cfg.err
	}
	if rc.err != nil {
		return rc.err
	}
	eps, end, err := qm.eps.begin("QueueManager", "entrypoint", "Entrypoint")
	if err != nil {
		return err
	}
	defer end()
	if err := checkSchema(ctx, qm.db, qm.cfg.common); err != nil {
		return stoppedEarly(ctx, err)
	}
	w := qm.newRun(rc, eps)
	ps, leave := enterPool(qm.db, rc.maxConcurrent+2)
	defer leave()
	w.pool = &poolCheck{db: qm.db, state: ps, raise: rc.poolTuning, logger: w.logger}
	defer qm.cur.CompareAndSwap(w, nil)
	return w.loop(ctx)
}

// stoppedEarly is what a Run returns when its start-up failed with err:
// nil when ctx has ended (a Run stopped by its ctx returns nil, whenever
// that comes), else err. The start-up's statements fail when ctx ends
// under them, and a program that stopped just after starting a worker got
// "pgq: verify: context canceled" from it.
func stoppedEarly(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// wakeGap is the longest time from the start of a claim that found
// nothing to the next claim a notification starts: notifications that
// arrive sooner wait for it, together. A flood of notifications (each
// enqueue of any entrypoint notifies every worker) then costs an idle
// worker at most one claim per wakeGap, not one per notification. The gap
// starts at a millisecond after a claim that found jobs and doubles with
// each claim in a row that found none (emptyGap): a busy worker's claim
// comes back empty when it took the jobs of a commit before that commit's
// notification arrived, and a full gap then held the next commit's jobs
// for up to 20 ms (the p90 of enqueue → start at half the maximum rate).
const wakeGap = 20 * time.Millisecond

// emptyGap is the gap after the n-th claim in a row that found nothing
// (n ≥ 1): 1, 2, 4, 8, 16 ms, then wakeGap.
func emptyGap(n int) time.Duration {
	return min(wakeGap, time.Millisecond<<min(n-1, 5))
}

// workerConns is how many connections of its pool a running worker holds
// for its own statements, besides the listener's.
const workerConns = 3

// run is one Run call: the loop's own state, and its roles.
type run struct {
	qm     *QueueManager
	rc     runConfig
	logger *slog.Logger

	claimer    *claimer
	executor   *executor
	gov        *governor
	held       *holdings
	completer  *completer
	maintainer *maintainer
	progress   *progressWriter
	listen     *listening // nil while there is no listener
	pool       *poolCheck

	// The worker's own connections (see lane): claims, outcome writes,
	// and heartbeats (with the release of stale jobs). The heartbeat and
	// the outcome write may run at once: the heartbeat never waits for a
	// row lock (see JobsHeartbeat), so the two cannot deadlock, and a slow
	// outcome write does not hold up the heartbeats of the worker's other
	// jobs.
	claims, outcomes, beats *lane

	wake    chan struct{}      // a notification said jobs may be waiting
	wakeIn  chan time.Duration // look again after this long (a retry is due)
	done    chan JobID         // a handler returned (its outcome is with the completer)
	limited bool               // some entrypoint has a fleet-wide limit
	// ahead is how many jobs a claim may take beyond the free handler
	// slots while the queue is deep (see WithMaxConcurrentTasks).
	ahead int
}

// newRun builds a run and its roles.
func (qm *QueueManager) newRun(rc runConfig, eps map[string]*entrypoint) *run {
	logger := qm.cfg.logger.With("queue_manager_id", qm.id)
	names := slices.Sorted(maps.Keys(eps))
	w := &run{
		qm:     qm,
		rc:     rc,
		logger: logger,
		held:   newHoldings(logger),
		wake:   make(chan struct{}, 1),
		wakeIn: make(chan time.Duration, 1),
	}
	// The claim, the outcome writes and the heartbeat each hold a
	// connection; the listener may borrow a fourth.
	pin := canPin(qm.db, workerConns+1, "the worker", logger)
	w.claims = newLane(qm.db, qm.cfg.names, pin).named(claimsAppName(qm.id, qm.cfg.names.Channel()))
	w.outcomes = newLane(qm.db, qm.cfg.names, pin)
	// A heartbeat that waits on one connection attempt past a quarter of
	// the timeout gives it up and tries a new one soon after (see
	// maintainer.heartbeat): after a server restart, in chaos runs, a
	// connection attempt hung for seconds while others went through.
	w.beats = newLane(qm.db, qm.cfg.names, pin).connectWithin(rc.heartbeatTimeout / 4)
	var govDB *sql.DB
	own := 0
	if rc.concurrencyTuning {
		govDB = qm.db
	}
	if pin {
		own = workerConns
	}
	w.gov = newGovernor(govDB, own, rc.maxConcurrent, logger)

	var limited []string
	for _, name := range names {
		if eps[name].limited() {
			limited = append(limited, name)
		}
	}
	w.limited = len(limited) > 0
	if !w.limited {
		w.ahead = min(rc.batchSize, rc.maxConcurrent)
	}
	// Every job claimed, run or given back, says so once on done.
	w.done = make(chan JobID, rc.maxConcurrent+w.ahead)
	w.claimer = &claimer{qm: qm, qmID: qm.id, q: qm.q, sqlNames: qm.cfg.names, lane: w.claims, eps: eps,
		names: names, limited: limited, syncClaims: rc.syncClaims, count: &qm.claims, logger: logger}
	w.completer = newCompleter(qm.q, w.outcomes, qm.id, rc.syncOutcomes, w.held, logger, qm.cfg.names,
		rc.maxConcurrent+w.ahead, w.written)
	w.completer.timed = w.gov.observe
	w.progress = newProgressWriter(qm.q, qm.rdb, qm.cfg.names, logger)
	w.executor = &executor{qmID: qm.id, abandoned: &qm.abandoned, eps: eps, handlers: chain(eps, append(slices.Clip(qm.cfg.middleware), rc.middleware...)),
		resources: qm.cfg.resources, logger: logger, held: w.held, outcomes: w.completer, progress: w.progress, done: w.done,
		limit: w.gov, holdLimit: rc.heartbeatTimeout / 2}
	w.maintainer = &maintainer{q: qm.q, db: qm.db, rdb: qm.rdb, names: qm.cfg.names, lane: w.beats, qmID: qm.id,
		held: w.held, logger: logger, wake: func() { signal(w.wake) }, entrypoints: names,
		heartbeatTimeout: rc.heartbeatTimeout, upkeepInterval: rc.upkeepInterval, sweepInterval: rc.sweepInterval,
		statsInterval: rc.statsInterval, logRetention: rc.logRetention, vacuum: rc.vacuum,
		beforeAnalyze: rc.beforeAnalyze}
	return w
}

// loop runs the worker: start-up, the claim loop, shutdown.
//
// Start-up: the three connections are taken in parallel while the
// listener makes its first LISTEN (claims wait for it, so that no
// cancellation of a job this worker runs is missed); the job table's
// statistics are checked and stale jobs released; then the heartbeat, the
// pool check, the upkeep, the log folding, the completer and the
// dispatcher start, and the claim loop runs until ctx ends (or a drain is
// over).
//
// Shutdown, in this order: (1) claims stop (one under way finishes), and
// so do the listener, the pool check, the upkeep and the log folding; jobs
// claimed that have no handler slot yet go back to the queue, once no
// claim can take them again; (2) running handlers have the shutdown grace
// period to finish, then their contexts are canceled and they are waited
// for; (3) the completer writes every outcome; (4) the heartbeat stops:
// it ran until now so that no job held went stale meanwhile; (5) every
// goroutine has ended; (6) the connections go back to the pool.
func (w *run) loop(ctx context.Context) error {
	var bg sync.WaitGroup // every goroutine of the run, handlers included
	// Handlers' contexts outlive ctx by the shutdown grace period, the
	// heartbeat's outlives the last outcome write. Theirs have a parent
	// that is never canceled: the holdings end them (cancelAll), so that
	// a job's context is not a child each claim registers with a shared
	// parent, and each outcome removes again, under the parent's lock.
	jobsCtx := context.WithoutCancel(ctx)
	hbCtx, stopHeartbeat := context.WithCancel(context.WithoutCancel(ctx))
	auxCtx, stopAux := context.WithCancel(ctx)

	poll := w.startUp(ctx, auxCtx, hbCtx, &bg)
	w.qm.cur.Store(w) // for Listening, now that w.listen is set
	completed := make(chan struct{})
	go func() {
		defer close(completed)
		w.completer.run()
	}()
	// Claimed jobs are handed to a dispatcher, so that the next claim
	// does not wait for a batch's handlers to be started. It starts a job
	// at once while a slot is free and queues the rest, the jobs claimed
	// ahead, which handlers that finish take in claim order (see
	// executor.start); it never waits for a slot.
	dispatch := make(chan heldBatch, 16)
	bg.Go(func() {
		for b := range dispatch {
			w.executor.start(ctx, b, &bg)
		}
		// Claims have stopped: none can take these jobs again.
		w.executor.giveBackAll()
	})

	inFlight := w.claimLoop(ctx, poll, jobsCtx, dispatch)

	stopAux()                                                                                                 // (1)
	close(dispatch)                                                                                           //
	graceful(inFlight, w.done, nil, w.rc.shutdownTimeout, func() { w.held.cancelAll(errShutdown) }, w.logger, // (2)
		"running jobs", nil, nil)
	w.completer.close() // (3)
	<-completed
	stopHeartbeat()                                            // (4)
	w.executor.stop()                                          // (5): the parked handler goroutines end, then
	bg.Wait()                                                  // every goroutine has
	for _, l := range []*lane{w.claims, w.outcomes, w.beats} { // (6)
		l.close()
	}
	return nil
}

// startUp does the loop's start-up (see loop) and returns how long the
// claim loop may sleep without a notification.
func (w *run) startUp(ctx, auxCtx, hbCtx context.Context, bg *sync.WaitGroup) (poll time.Duration) {
	var taking sync.WaitGroup
	for _, l := range []*lane{w.claims, w.outcomes, w.beats} {
		taking.Go(func() { l.take(ctx) })
	}
	poll = w.rc.dequeueTimeout
	// The listener's echoes (after each LISTEN, and the health checks)
	// go through the pool, never on the heartbeat's connection: a NOTIFY
	// commits behind every other notifying commit of the server (one
	// lock, held through each one's WAL flush), and after a server
	// restart, when every listener reconnects and echoes at once, that
	// queue held a worker's heartbeats up past the heartbeat timeout.
	w.listen = startListening(auxCtx, bg, w.qm.db, w.qm.cfg.common, workerAppName(w.qm.id, w.qm.cfg.names.Channel()),
		newLane(w.qm.db, w.qm.cfg.names, false), w.logger, min(w.rc.dequeueTimeout, 5*time.Second), "pgq: listener not connected yet; claiming anyway",
		listenHooks{notify: w.onEvent, up: func() { signal(w.wake) }})
	if w.listen != nil {
		bg.Go(func() {
			w.listen.check(auxCtx, w.rc.healthInterval, w.rc.healthTimeout, w.rc.pollInterval, func() { signal(w.wake) })
		})
	} else {
		warnNoListener(w.logger, w.qm.db, "the worker", w.rc.pollInterval)
		poll = min(poll, w.rc.pollInterval)
	}
	taking.Wait()
	w.maintainer.analyzeFirst(ctx) // statistics before the first claim
	w.maintainer.releaseStale(ctx)
	bg.Go(func() { w.maintainer.heartbeat(hbCtx) })
	bg.Go(func() { w.maintainer.expireHolds(hbCtx) })
	bg.Go(func() { w.progress.run(hbCtx) }) // outlives the handlers, as the heartbeat does
	bg.Go(func() { w.pool.run(auxCtx) })
	bg.Go(func() { w.gov.run(auxCtx) })
	bg.Go(func() { w.maintainer.tendJobTable(auxCtx) })
	bg.Go(func() { w.maintainer.sweepAfter(auxCtx) })
	if w.rc.statsInterval > 0 {
		bg.Go(func() { w.maintainer.foldLog(auxCtx) })
	}
	return poll
}

// claimShutdownGrace bounds how long a claim under way when Run stops may
// still take.
const claimShutdownGrace = 2 * time.Second

// claimLoop claims jobs while handler slots are free and hands them to
// dispatch, until ctx ends or, in ModeDrain, nothing is left to run. It
// returns how many handlers are still running or about to start.
func (w *run) claimLoop(ctx context.Context, poll time.Duration, jobsCtx context.Context, dispatch chan<- heldBatch) (inFlight int) {
	want := true // look for jobs now
	lastLimit := w.gov.current()
	timer := time.NewTimer(0)
	defer timer.Stop()
	nextLook := time.Now()
	lookIn := func(d time.Duration) {
		if at := time.Now().Add(d); at.Before(nextLook) || !nextLook.After(time.Now()) {
			nextLook = at
			resetTimer(timer, d)
		}
	}
	var failures backoff
	// A claim under way when ctx ends is let finish (within
	// claimShutdownGrace): cut off, it may still commit on the server
	// after the client gave up, and its jobs stay picked, unrun, until
	// they go stale. Finished, its jobs go back to the queue with the
	// others claimed ahead (see executor.start).
	claimCtx, stopClaims := outlive(ctx, min(claimShutdownGrace, w.rc.shutdownTimeout))
	defer stopClaims()
	// Notifications before notBefore wait for it (the timer then looks):
	// after a failed claim, its backoff; after a claim that found
	// nothing, emptyGap from its start. A claim that found jobs lets the
	// next one start at once.
	var notBefore time.Time
	empties := 0 // claims in a row that found nothing
	claimed := 0 // for WithMaxJobs
	// deep says the last claim came back full: the queue probably holds
	// more, and claims may take w.ahead jobs beyond the free slots.
	deep := false

	for ctx.Err() == nil {
		// Count every handler that has returned, so that a claim under load
		// takes a full batch rather than the few slots freed so far.
	counted:
		for {
			select {
			case <-w.done:
				inFlight--
			default:
				break counted
			}
		}
		// While the queue is deep and handlers short, a claim takes up to
		// w.ahead jobs beyond the free slots: they wait for a slot, held
		// and heartbeated, and one whose hold the heartbeats could not
		// confirm lately goes back to the queue instead of starting (see
		// executor.start; without that check, chaos runs 4 and 5 in
		// docs/chaos.md ran jobs twice).
		// The governor may have lowered the limit (the database is slow
		// and the handlers keep it busy), or raised it again: then jobs
		// claimed ahead may start at once (executor.fill).
		limit := w.gov.current()
		if limit > lastLimit {
			dispatch <- heldBatch{}
		}
		lastLimit = limit
		threshold := max(1, min(w.rc.batchSize, limit)/4)
		free := limit - inFlight
		if deep && w.executor.shortHandlers() {
			free += min(w.ahead, limit) // no more ahead than the handlers allowed now take
		}
		if w.rc.maxJobs > 0 {
			if claimed >= w.rc.maxJobs {
				// WithMaxJobs: claim no more; return once they have run
				// (Run then writes their outcomes).
				if inFlight == 0 {
					return 0
				}
				select {
				case <-ctx.Done():
				case <-w.done:
					inFlight--
				}
				continue
			}
			left := w.rc.maxJobs - claimed
			free = min(free, left)
			threshold = min(threshold, left) // the last few go in one claim
		}
		if want && free >= threshold {
			want = false
			n := min(w.rc.batchSize, free)
			unwritten := w.completer.pending() // before the claim: see the drain check
			began := time.Now()
			jobs, again, raced, err := w.claimer.claim(claimCtx, n)
			switch {
			case err != nil && ctx.Err() != nil:
				continue
			case err != nil:
				wait := failures.failed()
				w.logger.Warn("pgq: claiming jobs failed; retrying", "err", err, "in", wait)
				nextLook = time.Time{}
				lookIn(wait)
				notBefore = time.Now().Add(wait)
			default:
				failures.ok()
				notBefore = time.Time{}
				// got, not what confirm keeps, says whether the queue had
				// jobs: the ones confirm drops were released as stale
				// while the claim was slow (by this worker's own
				// maintenance too) and are probably claimable again.
				got := len(jobs)
				deep = got == n
				w.gov.observe(time.Since(began), got)
				if took := time.Since(began); got > 0 && took > w.rc.heartbeatTimeout/4 {
					jobs = w.claimer.confirm(claimCtx, jobs, took)
				}
				if got == 0 {
					empties++
					notBefore = began.Add(emptyGap(empties))
				} else {
					empties = 0
				}
				// The jobs count against the limit from now on; the
				// dispatcher starts them while this loop may already
				// claim the next batch.
				inFlight += len(jobs)
				claimed += len(jobs)
				if len(jobs) > 0 {
					// Held from now on, so that heartbeats and
					// cancellations find them while they wait for the
					// dispatcher and for slots.
					dispatch <- heldBatch{jobs, w.held.add(jobsCtx, jobs)}
				}
				if got == n || got > len(jobs) {
					want = true // probably more waiting
					continue
				}
				// Drain ends when nothing is claimable, running or waiting to be
				// written: an outcome not written when the claim began can hold
				// a concurrency limit (its write wakes the loop again).
				if w.rc.mode == ModeDrain && len(jobs) == 0 && inFlight == 0 && unwritten == 0 && !raced {
					return 0
				}
				nextLook = time.Time{}
				lookIn(w.pollEvery(poll))
				if again > 0 {
					lookIn(again)
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-w.wake:
			if wait := time.Until(notBefore); wait > 0 {
				lookIn(wait) // together with whatever else comes meanwhile
			} else {
				want = true
			}
		case d := <-w.wakeIn:
			lookIn(d)
		case <-timer.C:
			want = true
			nextLook = time.Time{}
			lookIn(w.pollEvery(poll))
		case <-w.done:
			inFlight--
			if w.rc.mode == ModeDrain && inFlight == 0 {
				want = true
			}
		}
	}
	return inFlight
}

// pollEvery is the fallback poll: poll while the listener answers its
// health checks, the no-listener poll interval while it does not or is not
// connected.
func (w *run) pollEvery(poll time.Duration) time.Duration {
	if !w.listen.live() {
		return min(poll, w.rc.pollInterval)
	}
	return poll
}

// onEvent handles a notification of the queue's channel.
func (w *run) onEvent(ev Event) {
	switch ev.Type {
	case EventTableChanged:
		if ev.Operation != "delete" {
			signal(w.wake)
		}
	case EventCancellation:
		w.held.cancel(ev.IDs, errJobCanceled)
	}
}

// written is the completer's report of a batch of outcomes written:
// retryIn is the soonest retry among them (negative for none).
func (w *run) written(retryIn time.Duration) {
	if retryIn >= 0 {
		select {
		case w.wakeIn <- retryIn:
		default:
		}
	}
	// Finished jobs free fleet-wide concurrency slots; a drain waits for
	// its last writes before it decides the queue is empty.
	if w.limited || w.rc.mode == ModeDrain {
		signal(w.wake)
	}
}
