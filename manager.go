package pgq

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/notifier"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Defaults of the RunOptions.
const (
	DefaultBatchSize          = 100
	DefaultMaxConcurrentTasks = 100
	DefaultDequeueTimeout     = 5 * time.Second
	DefaultHeartbeatTimeout   = 30 * time.Second
	DefaultShutdownTimeout    = 30 * time.Second
	// DefaultPollInterval is how often a worker without a listener (a lib/pq
	// pool from sql.Open without WithListenDSN) or whose listener is down
	// looks for jobs.
	DefaultPollInterval = 250 * time.Millisecond
	// maxFinishBatch bounds the outcomes written by one statement.
	maxFinishBatch = 1000
)

type managerConfig struct {
	common
	resources  any
	middleware []Middleware
}

// Middleware wraps every handler of a QueueManager: for metrics, tracing,
// logging or recovering in your own way. The first one given is the
// outermost.
type Middleware func(next Handler) Handler

type middlewareOption []Middleware

func (o middlewareOption) applyManager(c *managerConfig) { c.middleware = append(c.middleware, o...) }

// WithMiddleware wraps every handler of the QueueManager with mw, in order
// (the first is outermost). A middleware sees the job before the handler
// runs and the handler's error after. The pgqprom module has a Prometheus
// middleware; TraceMiddleware carries trace context from the enqueuer.
func WithMiddleware(mw ...Middleware) ManagerOption { return middlewareOption(mw) }

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

	claims atomic.Int64 // claims tried, for the tests
}

type entrypoint struct {
	name             string
	handler          Handler
	concurrencyLimit int     // fleet-wide; 0 = none
	rateLimit        float64 // starts per second, fleet-wide; 0 = none
	retry            RetryPolicy
	onFailure        FailureAction
}

func (e *entrypoint) limited() bool { return e.concurrencyLimit > 0 || e.rateLimit > 0 }

// EntrypointOption configures one entrypoint: WithConcurrencyLimit,
// WithRateLimit, WithRetry, OnFailure.
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
	return w != nil && w.connected.Load() && !w.deaf.Load()
}

// Entrypoint registers h as the handler of the jobs enqueued for name. The
// worker only ever claims jobs of registered entrypoints.
func (qm *QueueManager) Entrypoint(name string, h Handler, opts ...EntrypointOption) error {
	if name == "" {
		return errors.New("pgq: entrypoint name is empty")
	}
	if h == nil {
		return fmt.Errorf("pgq: entrypoint %q: handler is nil", name)
	}
	ep := &entrypoint{name: name, handler: h}
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

// Mode says when Run returns.
type Mode int

const (
	// ModeContinuous runs until Run's ctx ends.
	ModeContinuous Mode = iota
	// ModeDrain returns nil once no job that the worker can run now is
	// queued and none is in flight.
	ModeDrain
)

// RunOption configures Run.
type RunOption func(*runConfig)

type runConfig struct {
	batchSize        int
	maxConcurrent    int
	dequeueTimeout   time.Duration
	heartbeatTimeout time.Duration
	shutdownTimeout  time.Duration
	pollInterval     time.Duration
	statsInterval    time.Duration
	logRetention     time.Duration
	vacuum           bool
	syncClaims       bool
	poolTuning       bool
	mode             Mode
	err              error
}

func (c *runConfig) check(err error) {
	if err != nil && c.err == nil {
		c.err = err
	}
}

// WithBatchSize sets how many jobs one claim takes at most (default
// DefaultBatchSize).
func WithBatchSize(n int) RunOption {
	return func(c *runConfig) {
		if n < 1 {
			c.check(fmt.Errorf("pgq: batch size must be at least 1, got %d", n))
		}
		c.batchSize = n
	}
}

// WithMaxConcurrentTasks bounds how many jobs this worker runs at once
// (default DefaultMaxConcurrentTasks). Claimed jobs count against it until
// their handler returns, and a claim takes at most the free slots; with a
// limit of twice the batch size the worker claims the next full batch while
// the last one runs, which keeps a busy queue moving fastest.
func WithMaxConcurrentTasks(n int) RunOption {
	return func(c *runConfig) {
		if n < 1 {
			c.check(fmt.Errorf("pgq: max concurrent tasks must be at least 1, got %d", n))
		}
		c.maxConcurrent = n
	}
}

// WithDequeueTimeout sets how long the worker waits for a notification
// before it looks for jobs anyway (default DefaultDequeueTimeout). It
// bounds how late a job is found when a notification is lost.
func WithDequeueTimeout(d time.Duration) RunOption {
	return func(c *runConfig) { c.check(positive("dequeue timeout", d)); c.dequeueTimeout = d }
}

// WithHeartbeatTimeout sets after how long without a heartbeat a running
// job counts as abandoned (default DefaultHeartbeatTimeout).
func WithHeartbeatTimeout(d time.Duration) RunOption {
	return func(c *runConfig) { c.check(positive("heartbeat timeout", d)); c.heartbeatTimeout = d }
}

// WithShutdownTimeout sets how long Run, once its ctx ends, lets running
// handlers finish before it cancels their contexts (default
// DefaultShutdownTimeout).
func WithShutdownTimeout(d time.Duration) RunOption {
	return func(c *runConfig) { c.check(positive("shutdown timeout", d)); c.shutdownTimeout = d }
}

// WithPollInterval sets how often a worker that has no listener looks for
// jobs (default DefaultPollInterval).
func WithPollInterval(d time.Duration) RunOption {
	return func(c *runConfig) { c.check(positive("poll interval", d)); c.pollInterval = d }
}

// WithStatisticsInterval makes the worker fold new log rows into the
// statistics table every d (0, the default, leaves that to another worker;
// Stats and `pgq dashboard` count log rows not folded yet). Folding runs on
// its own connection in small batches and never holds up claims; any number
// of workers may do it.
func WithStatisticsInterval(d time.Duration) RunOption {
	return func(c *runConfig) {
		if d < 0 {
			c.check(fmt.Errorf("pgq: statistics interval must not be negative, got %v", d))
		}
		c.statsInterval = d
	}
}

// WithLogRetention makes the worker delete log rows older than d (once they
// are folded into the statistics), in small batches, so that the log does
// not grow without bound. 0, the default, keeps the log. A job whose log
// rows are gone is unknown to JobStatus and CompletionWatcher. It implies
// statistics folding (every minute unless WithStatisticsInterval says).
func WithLogRetention(d time.Duration) RunOption {
	return func(c *runConfig) {
		if d < 0 {
			c.check(fmt.Errorf("pgq: log retention must not be negative, got %v", d))
		}
		c.logRetention = d
	}
}

// WithVacuum says whether the worker vacuums the job table itself when its
// dead rows pile up (default true). Under load every claimed and finished
// job leaves two dead rows, and autovacuum, which wakes once a minute, lets
// hundreds of thousands gather, slowing claims; so every 10 seconds the
// worker checks pg_stat_user_tables and runs VACUUM (SKIP_LOCKED) on the job
// table when it holds over 10,000 dead rows and over a tenth of its size
// (a second or so on a table of a million rows; a vacuum already running,
// such as another worker's, is skipped). Like VACUUM it needs the
// privileges of the table's owner: a worker whose role lacks them leaves
// the table to autovacuum. Pass false to leave vacuuming to autovacuum
// alone.
func WithVacuum(on bool) RunOption {
	return func(c *runConfig) { c.vacuum = on }
}

// WithSynchronousClaims says whether a claim waits for its commit to reach
// disk (default false). By default the transaction that claims jobs commits
// with synchronous_commit off, for that transaction only, which takes the
// wait for a WAL flush off the worker's critical path: a claim lost when
// the server crashes within a fraction of a second after it (before the
// WAL writer flushes it) leaves its jobs queued, so they run again, as
// after a worker crash; the at-least-once guarantee is the same. Enqueues
// and outcomes always wait for the flush, and an outcome's flush also
// makes every claim before it durable. Pass true to have claims wait too
// (the server's synchronous_commit setting then applies), so that a server
// crash never makes a claimed job run twice.
func WithSynchronousClaims(on bool) RunOption {
	return func(c *runConfig) { c.syncClaims = on }
}

// WithPoolTuning says whether Run may raise the idle limit of the pool it
// was given (default true). Handlers that use the database through the
// same *sql.DB need about as many connections as run at once; a pool that
// keeps fewer idle (database/sql keeps 2 unless told otherwise) closes a
// connection after nearly every statement and opens a new one for the
// next, a new server process each time, which costs more than the
// statement and can cut the worker's throughput tenfold. When Run sees
// that happen (db.Stats: over 8 connections a second closed over the
// idle limit, for half a second) it calls db.SetMaxIdleConns with the sum of
// the MaxConcurrentTasks of the workers running on the pool, plus 2 each
// (never lowering it: not if more connections were seen idle), and logs
// that once at WARN. With false it only logs what to do. Either way,
// calling db.SetMaxIdleConns yourself next to WithMaxConcurrentTasks is
// best. A pool that makes callers wait (at its SetMaxOpenConns) is logged
// once too, and left alone.
func WithPoolTuning(on bool) RunOption {
	return func(c *runConfig) { c.poolTuning = on }
}

// WithMode sets when Run returns: ModeContinuous (default) or ModeDrain.
func WithMode(m Mode) RunOption {
	return func(c *runConfig) {
		if m != ModeContinuous && m != ModeDrain {
			c.check(fmt.Errorf("pgq: unknown mode %d", int(m)))
		}
		c.mode = m
	}
}

// Actions of an outcome (see JobsFinish in db/queries/jobs.sql).
const (
	actionFinish  = "finish"  // delete the row; log the terminal status
	actionRetry   = "retry"   // back to the queue after a delay, attempts + 1
	actionHold    = "hold"    // keep as failed
	actionRelease = "release" // back to the queue at once (shutdown)
)

// outcome is a finished attempt on its way to the database.
type outcome struct {
	att       *attempt
	id        JobID
	action    string
	status    Status
	traceback string // JSON, for a failure
	delay     time.Duration
}

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
)

// attempt is one claim of a job by one run, from the claim until its
// outcome is written. A job released (its heartbeat stale) and claimed
// again is a new attempt, with its own token, context and outcome.
type attempt struct {
	job    *Job
	token  int64 // the claim's claim_token (see JobsClaim)
	qm     *QueueManager
	cancel context.CancelCauseFunc
	// completedTx is set once CompleteTx has deleted the job in the
	// handler's transaction: when the row is gone, that transaction
	// committed (the job is done), not a lost claim.
	completedTx atomic.Bool

	// Guarded by run.mu.
	returned bool // the handler returned; its outcome is on its way
	lost     bool // the claim was lost: the outcome is dropped
}

// Run claims and runs jobs until ctx ends (or, in ModeDrain, until the
// queue has nothing it can run). It wakes on the job table's notifications
// and also looks every dequeue timeout. Running jobs heartbeat; jobs whose
// worker died (heartbeat older than the heartbeat timeout) are claimed
// again. When ctx ends it stops claiming, lets running handlers finish for
// up to the shutdown timeout, then cancels their contexts, puts the jobs
// that did not finish back in the queue, writes every outcome, and returns
// nil. When it returns, every goroutine it started has ended.
//
// Connections: Run holds three connections of the QueueManager's pool for
// as long as it runs, one each for claiming, for writing outcomes, and for
// heartbeats (with the release of stale jobs and the listener's health
// checks), so that neither the program's own traffic on the pool nor the
// pool's settings slow them down or make heartbeats late; a connection
// that fails is replaced. The listener takes a fourth (borrowed from a
// pgx pool, or its own on WithListenDSN's DSN), and maintenance
// (statistics, vacuum) borrows one now and then. Handlers that use the
// pool need as many more as run at once (WithMaxConcurrentTasks): size
// the server's max_connections for that, per worker, and keep as many
// idle (db.SetMaxIdleConns; see WithPoolTuning). A pool whose
// SetMaxOpenConns leaves fewer than five makes Run share the pool for
// its statements instead, and say so.
func (qm *QueueManager) Run(ctx context.Context, opts ...RunOption) error {
	rc := runConfig{
		batchSize:        DefaultBatchSize,
		maxConcurrent:    DefaultMaxConcurrentTasks,
		dequeueTimeout:   DefaultDequeueTimeout,
		heartbeatTimeout: DefaultHeartbeatTimeout,
		shutdownTimeout:  DefaultShutdownTimeout,
		pollInterval:     DefaultPollInterval,
		vacuum:           true,
		poolTuning:       true,
	}
	for _, o := range opts {
		if o != nil {
			o(&rc)
		}
	}
	if rc.err != nil {
		return rc.err
	}
	if qm.cfg.err != nil {
		return qm.cfg.err
	}
	if rc.logRetention > 0 && rc.statsInterval == 0 {
		rc.statsInterval = time.Minute
	}
	eps, end, err := qm.eps.begin("QueueManager", "entrypoint", "Entrypoint")
	if err != nil {
		return err
	}
	defer end()

	if err := checkSchema(ctx, qm.db, qm.cfg.common); err != nil {
		return err
	}
	w := &run{
		qm:       qm,
		rc:       rc,
		eps:      eps,
		names:    slices.Sorted(maps.Keys(eps)),
		logger:   qm.cfg.logger.With("queue_manager_id", qm.id),
		wake:     make(chan struct{}, 1),
		wakeIn:   make(chan time.Duration, 1),
		done:     make(chan JobID, rc.maxConcurrent),
		results:  make(chan outcome, rc.maxConcurrent),
		running:  map[JobID]*attempt{},
		healthID: uuid.New(),
	}
	// The claim, the outcome writes and the heartbeat each hold a
	// connection; the listener may borrow a fourth.
	pin := canPin(qm.db, workerConns+1, "the worker", w.logger)
	w.claims = newLane(qm.db, qm.cfg.names, pin).named(claimsAppName(qm.id, qm.cfg.names.Channel()))
	w.outcomes = newLane(qm.db, qm.cfg.names, pin)
	w.beats = newLane(qm.db, qm.cfg.names, pin)
	ps, leave := enterPool(qm.db, rc.maxConcurrent+2)
	defer leave()
	w.pool = &poolCheck{db: qm.db, state: ps, raise: rc.poolTuning, logger: w.logger}
	for _, name := range w.names {
		if eps[name].limited() {
			w.limited = append(w.limited, name)
		}
	}
	return w.loop(ctx)
}

// run is the state of one Run call.
type run struct {
	qm      *QueueManager
	rc      runConfig
	eps     map[string]*entrypoint
	names   []string // registered entrypoints, sorted
	limited []string // those with a concurrency or rate limit
	logger  *slog.Logger
	wake    chan struct{}      // a notification said jobs may be waiting
	wakeIn  chan time.Duration // look again after this long (a retry is due)
	done    chan JobID         // a handler returned (its outcome is queued for writing)
	results chan outcome       // outcomes for the completer

	unwritten atomic.Int64 // outcomes handed to the completer and not yet written
	connected atomic.Bool  // the listener's LISTEN is in place
	deaf      atomic.Bool  // the listener failed its last health check: poll often
	healthID  uuid.UUID    // id of this run's health_check_events
	heard     atomic.Int64 // when this run last received its own health check (UnixNano)

	mu sync.Mutex
	// running holds this run's current attempt of each job it holds, from
	// the claim until the outcome is written: heartbeats keep them all
	// held, and cancellations reach the running ones.
	running map[JobID]*attempt
	lost    atomic.Int64 // attempts whose claim was lost (outcome dropped)

	// The worker's own connections (see lane): claims, outcome writes,
	// and heartbeats with the release of stale jobs and the listener's
	// health checks.
	claims, outcomes, beats *lane
	pool                    *poolCheck

	// The heartbeat and the outcome write may run at once: the heartbeat
	// never waits for a row lock (see JobsHeartbeat), so the two cannot
	// deadlock, and a slow outcome write does not hold up the heartbeats
	// of the worker's other jobs (they would go stale and run twice).

	maintainOnce sync.Once // logs that the role may not vacuum the job table
}

// wakeGap is the least time from the start of a claim that found nothing
// to the next claim a notification starts: notifications that arrive
// sooner wait for it, together. A flood of notifications (each enqueue of
// any entrypoint notifies every worker) then costs an idle worker at most
// one claim per wakeGap, not one per notification; a claim that found
// jobs lets the next one start at once.
const wakeGap = 20 * time.Millisecond

// workerConns is how many connections of its pool a running worker holds
// for its own statements, besides the listener's.
const workerConns = 3

func (w *run) loop(ctx context.Context) error {
	// Deferred first, so run last: after every goroutine that uses the
	// lanes has ended.
	defer func() {
		w.claims.close()
		w.outcomes.close()
		w.beats.close()
	}()
	var bg sync.WaitGroup
	defer bg.Wait()

	// Handlers get their own context: it outlives ctx by the shutdown
	// grace period.
	jobsCtx, cancelJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelJobs(errShutdown)

	// The worker's own connections are taken now, in parallel (each may be
	// a new server process) and while the listener connects, rather than
	// on first use.
	var taking sync.WaitGroup
	for _, l := range []*lane{w.claims, w.outcomes, w.beats} {
		taking.Go(func() { l.take(ctx) })
	}
	defer taking.Wait()

	// The listener, heartbeat and maintenance stop when ctx ends.
	auxCtx, stopAux := context.WithCancel(ctx)
	defer stopAux()
	w.qm.cur.Store(w)
	defer w.qm.cur.CompareAndSwap(w, nil)
	poll := w.rc.dequeueTimeout
	if l := notifier.New(w.qm.db, w.qm.cfg.listenDSNFor(w.qm.db), w.qm.cfg.names.Channel(),
		workerAppName(w.qm.id, w.qm.cfg.names.Channel()), w.logger); l != nil {
		listening := make(chan struct{}) // closed once LISTEN works, or is found deaf
		var once sync.Once
		bg.Go(func() {
			_ = l.Run(auxCtx, notifier.Callbacks{Notify: w.onNotify, Connected: func() {
				w.connected.Store(true)
				once.Do(func() { close(listening) })
				w.signal()
			}, Disconnected: func() { w.connected.Store(false) },
				Echo: func(ctx context.Context, id uuid.UUID) error { return w.echo(ctx, id) },
				Deaf: func() {
					w.connected.Store(false)
					once.Do(func() { close(listening) })
				}})
		})
		// Claim only once LISTEN is in place, so that no cancellation of a
		// job this worker runs can be missed; without a listener after a
		// few seconds, start anyway (polling, heartbeat checks).
		select {
		case <-listening:
		case <-ctx.Done():
		case <-time.After(min(w.rc.dequeueTimeout, 5*time.Second)):
			w.logger.Warn("pgq: listener not connected yet; claiming anyway")
		}
		bg.Go(func() { w.checkListener(auxCtx) })
	} else {
		warnNoListener(w.logger, w.qm.db, "the worker", w.rc.pollInterval)
		poll = min(poll, w.rc.pollInterval)
	}
	taking.Wait()
	w.upkeep(ctx, false) // statistics before the first claim
	w.releaseStale(ctx)
	// Heartbeats go on until every outcome is written, through the
	// shutdown grace period: a job whose heartbeat went stale there would
	// run again elsewhere while its handler here still runs.
	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHB()
	bg.Go(func() { w.heartbeat(hbCtx) })
	bg.Go(func() { w.pool.run(auxCtx) })
	bg.Go(func() { w.tendJobTable(auxCtx) })
	if w.rc.statsInterval > 0 {
		bg.Go(func() { w.maintain(auxCtx) })
	}

	completerDone := make(chan struct{})
	go func() {
		defer close(completerDone)
		w.complete()
	}()

	// Claimed jobs are started by a dispatcher, in claim order, so that
	// the next claim does not wait for a batch's handlers to be started.
	// (It never waits for anything but a mutex, so a send to it is never
	// held for long.) It stops after the loop's last send, before bg.Wait.
	dispatch := make(chan []*attempt, 16)
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		for jobs := range dispatch {
			w.start(jobsCtx, jobs, &bg)
		}
	}()
	defer func() {
		close(dispatch)
		<-dispatched
	}()

	inFlight := 0
	want := true // look for jobs now
	threshold := max(1, min(w.rc.batchSize, w.rc.maxConcurrent)/4)
	timer := time.NewTimer(0)
	defer timer.Stop()
	nextLook := time.Now()
	lookIn := func(d time.Duration) {
		if at := time.Now().Add(d); at.Before(nextLook) || !nextLook.After(time.Now()) {
			nextLook = at
			resetTimer(timer, d)
		}
	}
	var errWait time.Duration
	// Notifications before notBefore wait for it (the timer then looks):
	// after a failed claim, its backoff; after a claim that found
	// nothing, wakeGap from its start. A claim that found jobs lets the
	// next one start at once.
	var notBefore time.Time

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
		free := w.rc.maxConcurrent - inFlight
		if want && free >= threshold {
			want = false
			n := min(w.rc.batchSize, free)
			unwritten := w.unwritten.Load() // before the claim: see the drain check
			began := time.Now()
			jobs, again, raced, err := w.claim(ctx, n)
			switch {
			case err != nil && ctx.Err() != nil:
				continue
			case err != nil:
				errWait = min(max(2*errWait, 50*time.Millisecond), 5*time.Second)
				w.logger.Warn("pgq: claiming jobs failed; retrying", "err", err, "in", errWait)
				nextLook = time.Time{}
				lookIn(errWait)
				notBefore = time.Now().Add(errWait)
			default:
				errWait = 0
				notBefore = time.Time{}
				if len(jobs) == 0 {
					notBefore = began.Add(wakeGap)
				}
				// The jobs count against the limit from now on; the
				// dispatcher starts them while this loop may already
				// claim the next batch.
				inFlight += len(jobs)
				if len(jobs) > 0 {
					dispatch <- jobs
				}
				if len(jobs) == n {
					want = true // probably more waiting
					continue
				}
				// Drain ends when nothing is claimable, running or waiting to be
				// written: an outcome not written when the claim began can hold
				// a concurrency limit (its write wakes the loop again).
				if w.rc.mode == ModeDrain && len(jobs) == 0 && inFlight == 0 && unwritten == 0 && !raced {
					return w.shutdown(ctx, 0, cancelJobs, completerDone)
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
	stopAux()
	return w.shutdown(ctx, inFlight, cancelJobs, completerDone)
}

// start registers the claimed jobs as running (so that cancellations and
// heartbeats find them) and runs each one's handler in its own goroutine.
// A job this run still has an attempt of was released and claimed again:
// the earlier attempt lost its claim.
func (w *run) start(jobsCtx context.Context, atts []*attempt, bg *sync.WaitGroup) {
	ctxs := make([]context.Context, len(atts))
	for i, a := range atts {
		ctxs[i], a.cancel = context.WithCancelCause(jobsCtx)
	}
	w.mu.Lock()
	for _, a := range atts {
		if old := w.running[a.job.ID]; old != nil {
			w.loseLocked(old, "claimed again")
		}
		w.running[a.job.ID] = a
	}
	w.mu.Unlock()
	for i, a := range atts {
		bg.Go(func() { w.execute(ctxs[i], a) })
	}
}

// loseLocked marks an attempt whose claim was lost (why says how it was
// found out): its handler's context ends with errJobLost, and its outcome
// is dropped. w.mu must be held.
func (w *run) loseLocked(a *attempt, why string) {
	if a.lost {
		return
	}
	a.lost = true
	a.cancel(errJobLost)
	if w.running[a.job.ID] == a {
		delete(w.running, a.job.ID)
	}
	w.logger.Warn("pgq: lost a job's claim; its outcome will not be written",
		"job_id", a.job.ID, "entrypoint", a.job.Entrypoint, "found", why,
		"handler_returned", a.returned, "lost_total", w.lost.Add(1))
}

// shutdown lets running handlers finish within the grace period, then
// cancels their contexts, waits for them and for the outcome writes.
func (w *run) shutdown(ctx context.Context, inFlight int, cancelJobs context.CancelCauseFunc, completerDone <-chan struct{}) error {
	if inFlight > 0 {
		grace := time.NewTimer(w.rc.shutdownTimeout)
		defer grace.Stop()
		for inFlight > 0 {
			select {
			case <-w.done:
				inFlight--
			case <-grace.C:
				w.logger.Warn("pgq: shutdown grace period over; canceling running jobs", "running", inFlight)
				cancelJobs(errShutdown)
			}
		}
	}
	close(w.results)
	<-completerDone
	return nil
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

// signal asks the loop to look for jobs.
func (w *run) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *run) onNotify(payload string) {
	ev, ok := ParseEvent(payload)
	if !ok {
		return
	}
	switch ev.Type {
	case EventTableChanged:
		if ev.Operation != "delete" {
			w.signal()
		}
	case EventHealthCheck:
		if ev.ID == w.healthID {
			w.heard.Store(time.Now().UnixNano())
		}
	case EventCancellation:
		w.mu.Lock()
		for _, id := range ev.IDs {
			if a, ok := w.running[id]; ok {
				a.cancel(errJobCanceled)
			}
		}
		w.mu.Unlock()
	}
}

// Listener health checks: how often, and how long to wait for the echo.
// Variables for the tests.
var (
	healthInterval = 30 * time.Second
	healthTimeout  = 5 * time.Second
)

// pollEvery is the fallback poll: poll while the listener answers its
// health checks, the no-listener poll interval while it does not or is not
// connected.
func (w *run) pollEvery(poll time.Duration) time.Duration {
	if w.deaf.Load() || !w.connected.Load() {
		return min(poll, w.rc.pollInterval)
	}
	return poll
}

// echo sends a health_check_event with id on the worker's own connection,
// for its listener to prove that notifications arrive.
func (w *run) echo(ctx context.Context, id uuid.UUID) error {
	payload, _ := json.Marshal(newHealthCheckEvent(w.qm.cfg.names.Channel(), id))
	return w.beats.do(ctx, func(s session) error {
		return w.qm.q.Notify(ctx, s.db, dbgen.NotifyParams{Channel: w.qm.cfg.names.Channel(), Payload: string(payload)})
	})
}

// checkListener sends a health_check_event to itself every healthInterval;
// when it does not come back within healthTimeout the worker polls often
// until it does (the listener reconnects by itself meanwhile).
func (w *run) checkListener(ctx context.Context) {
	payload, _ := json.Marshal(newHealthCheckEvent(w.qm.cfg.names.Channel(), w.healthID))
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		sent := time.Now()
		err := w.beats.do(ctx, func(s session) error {
			return w.qm.q.Notify(ctx, s.db, dbgen.NotifyParams{Channel: w.qm.cfg.names.Channel(), Payload: string(payload)})
		})
		if err == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(healthTimeout):
			}
			ok := w.heard.Load() >= sent.UnixNano()
			if w.deaf.Swap(!ok) == ok { // changed
				if ok {
					w.logger.Info("pgq: listener healthy again")
				} else {
					w.logger.Warn("pgq: listener did not echo its health check; polling", "every", w.rc.pollInterval)
					w.signal()
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// claim takes up to n jobs. again, when positive, says a rate limit held
// jobs back and when to look again. raced says the claim lost a capacity
// slot to another worker's and took nothing: jobs may well be waiting.
func (w *run) claim(ctx context.Context, n int) (jobs []*attempt, again time.Duration, raced bool, err error) {
	w.qm.claims.Add(1)
	caps := make([]int32, len(w.names))
	for i := range caps {
		caps[i] = int32(n)
	}
	params := dbgen.JobsClaimParams{
		Entrypoints:      w.names,
		Caps:             caps,
		BatchSize:        int32(n),
		QueueManagerID:   uuid.NullUUID{UUID: w.qm.id, Valid: true},
		SynchronousClaim: w.rc.syncClaims,
	}
	var rows []*dbgen.JobsClaimRow
	var secs float64 = -1
	err = w.claims.do(ctx, func(s session) (err error) {
		if len(w.limited) == 0 {
			rows, err = w.qm.q.JobsClaim(ctx, s.db, params)
		} else {
			rows, again, err = w.claimLimited(ctx, s, params)
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
		if next, err := w.qm.q.JobsNextDue(ctx, s.db, w.names); err == nil {
			secs = next
		}
		return nil
	})
	if err != nil {
		return nil, 0, false, interpretError(err)
	}
	jobs = make([]*attempt, len(rows))
	for i, r := range rows {
		jobs[i] = &attempt{token: r.ClaimToken, qm: w.qm, job: &Job{
			ID:           JobID(r.ID),
			Priority:     r.Priority,
			Entrypoint:   r.Entrypoint,
			Payload:      r.Payload,
			Headers:      decodeHeaders(r.Headers),
			Attempts:     r.Attempts,
			DedupeKey:    r.DedupeKey.String,
			Created:      r.Created,
			ExecuteAfter: r.ExecuteAfter,
		}}
		jobs[i].job.att = jobs[i]
	}
	if secs >= 0 {
		again = max(time.Duration(secs*float64(time.Second)), time.Millisecond)
	}
	return jobs, again, raced, nil
}

// claimLimited claims in a transaction that first takes the fleet-wide
// locks of the limited entrypoints, then counts their held jobs and
// recent starts, and lowers their caps accordingly. Jobs of entrypoints
// with a concurrency limit get capacity slots as PGQueuer 1.4+ gives them
// (JobsAssignSlots), so that its workers and pgq's enforce one limit
// together. A claim that lost a slot to another worker's concurrent
// claim, or found the limit passed by claims committed since it counted
// (PGQueuer before 1.4 counts without a lock), is rolled back: it returns
// no jobs and asks to look again soon.
func (w *run) claimLimited(ctx context.Context, s session, p dbgen.JobsClaimParams) (rows []*dbgen.JobsClaimRow, again time.Duration, err error) {
	tx, err := s.begin(ctx, nil)
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()
	db, q := wrapDB(w.qm.cfg.names, tx), w.qm.q
	if err := q.JobsLockEntrypoints(ctx, db, dbgen.JobsLockEntrypointsParams{
		LockNamespace: w.qm.cfg.names.Qualified(sqlname.JobTable) + ":",
		Entrypoints:   w.limited,
	}); err != nil {
		return nil, 0, err
	}
	var concurrency, rate []string
	for _, name := range w.limited {
		if w.eps[name].concurrencyLimit > 0 {
			concurrency = append(concurrency, name)
		}
		if w.eps[name].rateLimit > 0 {
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
	for i, name := range p.Entrypoints {
		ep := w.eps[name]
		if ep.concurrencyLimit > 0 {
			p.Caps[i] = min(p.Caps[i], max(int32(ep.concurrencyLimit)-runningBy[name], 0))
		}
		if ep.rateLimit > 0 {
			budget := int32(math.Floor(ep.rateLimit)) - startedBy[name]
			if ep.rateLimit < 1 && startedBy[name] == 0 {
				budget = 1
			}
			p.Caps[i] = min(p.Caps[i], max(budget, 0))
			if budget <= p.Caps[i] || budget <= 0 {
				// The budget frees up as starts leave the window.
				step := time.Duration(float64(time.Second) / ep.rateLimit)
				again = max(min(step, time.Second), 10*time.Millisecond)
			}
		}
	}
	rows, err = q.JobsClaim(ctx, db, p)
	if err != nil {
		return nil, 0, err
	}
	if ok, err := w.assignSlots(ctx, db, rows); err != nil || !ok {
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
func (w *run) assignSlots(ctx context.Context, db sqlname.DBTX, rows []*dbgen.JobsClaimRow) (bool, error) {
	claimed := map[string]int32{}
	var ids []int64
	for _, r := range rows {
		if w.eps[r.Entrypoint].concurrencyLimit > 0 {
			claimed[r.Entrypoint]++
			ids = append(ids, r.ID)
		}
	}
	if len(ids) == 0 {
		return true, nil
	}
	p := dbgen.JobsAssignSlotsParams{Ids: ids}
	for _, name := range w.limited {
		if n := w.eps[name].concurrencyLimit; n > 0 && claimed[name] > 0 {
			p.Entrypoints = append(p.Entrypoints, name)
			p.Limits = append(p.Limits, int32(n))
		}
	}
	got, err := w.qm.q.JobsAssignSlots(ctx, db, p)
	if err != nil {
		if slotRace(err) {
			return false, nil
		}
		return false, err
	}
	for _, g := range got {
		if g.Assigned < claimed[g.Entrypoint] || g.Holding > int32(w.eps[g.Entrypoint].concurrencyLimit) {
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
// unless the attempt lost its claim meanwhile.
func (w *run) execute(ctx context.Context, a *attempt) {
	job := a.job
	ep := w.eps[job.Entrypoint]
	ctx = context.WithValue(ctx, scopeKey{}, &jobScope{job: job, resources: w.qm.cfg.resources, base: w.logger})
	err := w.callHandler(ctx, ep, job)
	out := w.decide(ctx, ep, job, err)
	out.att = a

	w.mu.Lock()
	a.returned = true
	a.cancel(nil)
	lost := a.lost
	w.mu.Unlock()
	if !lost {
		w.unwritten.Add(1)
		w.results <- out
	}
	w.done <- job.ID
}

// decide turns a handler's result into an outcome: success, cancellation,
// release at shutdown, retry, hold or exception.
func (w *run) decide(ctx context.Context, ep *entrypoint, job *Job, err error) outcome {
	out := outcome{id: job.ID, action: actionFinish, status: StatusSuccessful}
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errJobCanceled):
		out.status = StatusCanceled
		if err != nil {
			out.traceback = tracebackJSON(job, w.qm.id, err)
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
	out.traceback = tracebackJSON(job, w.qm.id, err)
	if int(job.Attempts)+1 < ep.retry.MaxAttempts {
		out.action, out.status = actionRetry, StatusQueued
		if ra, ok := asRetryAfter(err); ok {
			out.delay = ra.Delay
		} else {
			out.delay = ep.retry.delay(job.Attempts)
		}
		return out
	}
	if ep.onFailure == Hold {
		out.action, out.status = actionHold, StatusFailed
		return out
	}
	out.status = StatusException
	return out
}

// panicError is a handler panic turned into an error.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

func (w *run) callHandler(ctx context.Context, ep *entrypoint, job *Job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &panicError{value: r, stack: debug.Stack()}
			w.logger.Error("pgq: handler panicked", "entrypoint", job.Entrypoint, "job_id", job.ID, "panic", r)
		}
	}()
	if ep == nil {
		return fmt.Errorf("pgq: no handler registered for entrypoint %q", job.Entrypoint)
	}
	h := ep.handler
	for i := len(w.qm.cfg.middleware) - 1; i >= 0; i-- {
		if mw := w.qm.cfg.middleware[i]; mw != nil {
			h = mw(h)
		}
	}
	return h(ctx, job)
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

// complete writes outcomes to the database. It writes at once when idle and,
// while a write is in progress, gathers what arrives meanwhile into the next
// write: one statement per batch under load, no timer on an idle queue. A
// batch holds one outcome per job: a second one (of a later attempt) starts
// the next batch.
func (w *run) complete() {
	batch := make([]outcome, 0, maxFinishBatch)
	in := make(map[JobID]bool, maxFinishBatch)
	var next *outcome
	for {
		if next != nil {
			batch, next = append(batch[:0], *next), nil
		} else {
			o, ok := <-w.results
			if !ok {
				return
			}
			batch = append(batch[:0], o)
		}
		clear(in)
		in[batch[0].id] = true
	gather:
		for len(batch) < maxFinishBatch {
			select {
			case o, ok := <-w.results:
				if !ok {
					break gather
				}
				if in[o.id] {
					next = &o
					break gather
				}
				in[o.id] = true
				batch = append(batch, o)
			default:
				break gather
			}
		}
		w.finish(batch)
	}
}

// finish writes one batch of outcomes, retrying while the database is
// unreachable (for up to two minutes; after that the jobs stay picked and
// are claimed again once their heartbeat is stale). Outcomes of attempts
// that lost their claim are dropped; the statement itself changes only
// jobs still held by the claim that ran them.
func (w *run) finish(batch []outcome) {
	w.mu.Lock()
	kept := batch[:0]
	for _, o := range batch {
		if !o.att.lost {
			kept = append(kept, o)
		}
	}
	w.mu.Unlock()
	if dropped := len(batch) - len(kept); dropped > 0 {
		w.unwritten.Add(-int64(dropped))
	}
	batch = kept
	if len(batch) == 0 {
		return
	}
	p := dbgen.JobsFinishParams{
		Ids:            make([]int64, len(batch)),
		Actions:        make([]string, len(batch)),
		Statuses:       make([]string, len(batch)),
		Tracebacks:     make([]string, len(batch)),
		DelaysUs:       make([]int64, len(batch)),
		ClaimTokens:    make([]int64, len(batch)),
		QueueManagerID: uuid.NullUUID{UUID: w.qm.id, Valid: true},
	}
	soonest := time.Duration(-1)
	for i, o := range batch {
		p.Ids[i], p.Actions[i], p.Statuses[i] = int64(o.id), o.action, string(o.status)
		p.Tracebacks[i], p.DelaysUs[i], p.ClaimTokens[i] = o.traceback, o.delay.Microseconds(), o.att.token
		if o.action == actionRetry && (soonest < 0 || o.delay < soonest) {
			soonest = o.delay
		}
	}
	wait := 50 * time.Millisecond
	deadline := time.Now().Add(2 * time.Minute)
	var changed []int64
	written := false
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := w.outcomes.do(ctx, func(s session) (err error) {
			changed, err = w.qm.q.JobsFinish(ctx, s.db, p)
			return err
		})
		cancel()
		if err == nil {
			written = true
			break
		}
		if time.Now().After(deadline) {
			w.logger.Error("pgq: writing job outcomes failed; giving up", "jobs", len(batch), "err", err)
			break
		}
		w.logger.Warn("pgq: writing job outcomes failed; retrying", "jobs", len(batch), "err", err, "in", wait)
		time.Sleep(wait)
		wait = min(2*wait, 2*time.Second)
	}
	// The attempts are over: stop heartbeating them. An outcome that
	// changed nothing belonged to a job no longer held (canceled, or
	// released after a stale heartbeat and now someone else's).
	done := make(map[int64]bool, len(changed))
	for _, id := range changed {
		done[id] = true
	}
	w.mu.Lock()
	for _, o := range batch {
		if w.running[o.id] == o.att {
			delete(w.running, o.id)
		}
		if !done[int64(o.id)] && !o.att.lost && o.status != StatusCanceled && written && !o.att.completedTx.Load() {
			w.logger.Warn("pgq: outcome of a job no longer held not written",
				"job_id", o.id, "entrypoint", o.att.job.Entrypoint, "status", o.status, "lost_total", w.lost.Add(1))
		}
	}
	w.mu.Unlock()
	w.unwritten.Add(-int64(len(batch)))
	if soonest >= 0 {
		select {
		case w.wakeIn <- soonest:
		default:
		}
	}
	// Finished jobs free fleet-wide concurrency slots; a drain waits for
	// its last writes before it decides the queue is empty.
	if len(w.limited) > 0 || w.rc.mode == ModeDrain {
		w.signal()
	}
}

// heartbeat refreshes the heartbeat of the running jobs, all in one
// statement, three times per heartbeat timeout, and each time then puts
// jobs abandoned by dead workers back in the queue.
func (w *run) heartbeat(ctx context.Context) {
	every(ctx, max(w.rc.heartbeatTimeout/3, 10*time.Millisecond), func() {
		w.beat(ctx)
		w.releaseStale(ctx)
	})
}

// every calls f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// warn logs a failed maintenance step, unless it failed because ctx ended
// (the worker is stopping).
func (w *run) warn(ctx context.Context, msg string, err error, args ...any) {
	if err != nil && ctx.Err() == nil {
		w.logger.Warn(msg, append(args, "err", err)...)
	}
}

// beat refreshes the heartbeat of the jobs this run holds (running, or
// with their outcome on its way) and gives up the attempts whose claim was
// lost: their handlers' contexts end with errJobLost and their outcomes are
// dropped.
func (w *run) beat(ctx context.Context) {
	w.mu.Lock()
	atts := make([]*attempt, 0, len(w.running))
	ids := make([]int64, 0, len(w.running))
	for id, a := range w.running {
		atts = append(atts, a)
		ids = append(ids, int64(id))
	}
	w.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	var held []*dbgen.JobsHeartbeatRow
	err := w.beats.do(ctx, func(s session) (err error) {
		held, err = w.qm.q.JobsHeartbeat(ctx, s.db, dbgen.JobsHeartbeatParams{
			Ids: ids, QueueManagerID: uuid.NullUUID{UUID: w.qm.id, Valid: true},
		})
		return err
	})
	if err != nil {
		w.warn(ctx, "pgq: heartbeat failed", err, "jobs", len(ids))
		return
	}
	// A running attempt whose job is gone, or held by another worker or by
	// a later claim, lost its claim: the job was canceled (its notification
	// missed), or released after a stale heartbeat. (An attempt whose
	// outcome is being written is left to the write, which changes nothing
	// when the job is not held.)
	token := make(map[int64]int64, len(held))
	for _, h := range held {
		token[h.ID] = h.ClaimToken
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range atts {
		t, ok := token[int64(a.job.ID)]
		if ok && t == a.token || !ok && a.completedTx.Load() {
			continue // held, or completed by the handler's committed transaction
		}
		if w.running[a.job.ID] == a && !a.returned {
			w.loseLocked(a, "by the heartbeat")
		}
	}
}

// releaseBatch is the most stale jobs one statement puts back in the queue.
const releaseBatch = 1000

// releaseStale puts the jobs of this worker's entrypoints whose heartbeat
// is older than the heartbeat timeout back in the queue (their worker died),
// and wakes the claim loop when there were any.
func (w *run) releaseStale(ctx context.Context) {
	for ctx.Err() == nil {
		// This worker's own jobs are never stale to it, even when its
		// heartbeats failed: it is alive and still runs them.
		w.mu.Lock()
		mine := make([]int64, 0, len(w.running))
		for id := range w.running {
			mine = append(mine, int64(id))
		}
		w.mu.Unlock()
		var ids []int64
		err := w.beats.do(ctx, func(s session) (err error) {
			ids, err = w.qm.q.JobsReleaseStale(ctx, s.db, dbgen.JobsReleaseStaleParams{
				Entrypoints:    w.names,
				StaleAfterUs:   w.rc.heartbeatTimeout.Microseconds(),
				QueueManagerID: uuid.NullUUID{UUID: w.qm.id, Valid: true},
				HeldIds:        mine,
				MaxJobs:        releaseBatch,
			})
			return err
		})
		if err != nil {
			w.warn(ctx, "pgq: releasing stale jobs failed", err)
			return
		}
		if len(ids) == 0 {
			return
		}
		w.logger.Info("pgq: released jobs whose worker stopped heartbeating", "jobs", len(ids), "heartbeat_timeout", w.rc.heartbeatTimeout)
		w.signal()
		if len(ids) < releaseBatch {
			return
		}
	}
}

// upkeepInterval is how often a worker checks the job table's planner
// statistics and dead rows; a variable so that tests can shorten it.
var upkeepInterval = 10 * time.Second

// vacuumMinDead is the fewest dead rows for which a worker vacuums the job
// table itself (and then only when they are over a tenth of the table).
const vacuumMinDead = 10_000

// tendJobTable keeps the job table fit for fast claims: it re-analyses the
// table when its statistics fall far behind (after a burst of enqueues into
// an empty table, without them the claim may be planned as a sort of every
// queued job), and, unless WithVacuum(false), vacuums it when dead rows
// pile up faster than autovacuum (which wakes once a minute) removes them:
// every claimed and finished job leaves two, and a claim steps over the
// dead entries at the head of the queue index.
func (w *run) tendJobTable(ctx context.Context) {
	every(ctx, upkeepInterval, func() { w.upkeep(ctx, w.rc.vacuum) })
}

// upkeep analyses the job table if its statistics are stale and, when
// vacuum is set, vacuums it if its dead rows pile up.
func (w *run) upkeep(ctx context.Context, vacuum bool) {
	need, err := w.qm.q.JobsTableUpkeep(ctx, w.qm.db, dbgen.JobsTableUpkeepParams{
		MinDead: vacuumMinDead, TableName: w.qm.cfg.names.Qualified(sqlname.JobTable),
	})
	if err != nil {
		w.warn(ctx, "pgq: reading the job table's statistics failed", err)
		return
	}
	if !need.MayMaintain {
		if need.NeedsAnalyze || vacuum && need.NeedsVacuum {
			w.maintainOnce.Do(func() {
				w.logger.Info("pgq: the job table wants VACUUM or ANALYZE, which this worker's role may not run (it needs the table's owner, or MAINTAIN on PostgreSQL 17+); leaving it to autovacuum",
					"table", w.qm.cfg.names.Qualified(sqlname.JobTable))
			})
		}
		return
	}
	if vacuum && need.NeedsVacuum {
		begin := time.Now()
		err := w.qm.q.JobsVacuum(ctx, w.qm.rdb)
		w.warn(ctx, "pgq: vacuuming the job table failed", err)
		if err == nil {
			w.logger.Debug("pgq: vacuumed the job table", "took", time.Since(begin))
		}
	}
	if need.NeedsAnalyze {
		w.warn(ctx, "pgq: analysing the job table failed", w.qm.q.JobsAnalyze(ctx, w.qm.rdb))
	}
}

// Maintenance batch sizes: small, so that no statement holds locks long.
const (
	foldBatch  = 5000
	pruneBatch = 1000
)

// maintain folds the log into the statistics and prunes old log rows.
func (w *run) maintain(ctx context.Context) {
	every(ctx, w.rc.statsInterval, func() {
		w.warn(ctx, "pgq: log maintenance failed", w.foldAndPrune(ctx))
	})
}

func (w *run) foldAndPrune(ctx context.Context) error {
	for {
		n, err := w.qm.q.LogFoldStatistics(ctx, w.qm.rdb, foldBatch)
		if err != nil {
			return err
		}
		if n == 0 || ctx.Err() != nil {
			break
		}
	}
	if w.rc.logRetention <= 0 {
		return nil
	}
	for {
		n, err := w.qm.q.LogPrune(ctx, w.qm.rdb, dbgen.LogPruneParams{
			OlderThanS: w.rc.logRetention.Seconds(), BatchSize: pruneBatch,
		})
		if err != nil {
			return err
		}
		if n < pruneBatch || ctx.Err() != nil {
			return nil
		}
	}
}
