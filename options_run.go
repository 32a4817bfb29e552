package pgq

import (
	"fmt"
	"time"
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
)

// Mode says when Run returns.
type Mode int

const (
	// ModeContinuous runs until Run's ctx ends.
	ModeContinuous Mode = iota
	// ModeDrain returns nil once no job that the worker can run now is
	// queued and none is in flight.
	ModeDrain
)

// RunOption configures QueueManager.Run. The options that a
// SchedulerManager takes too (WithPollInterval, WithHeartbeatTimeout,
// WithShutdownTimeout) are TimingOptions, which are both RunOptions and
// SchedulerRunOptions.
type RunOption interface{ applyRun(*runConfig) }

// SchedulerRunOption configures SchedulerManager.Run: WithPollInterval,
// WithHeartbeatTimeout and WithShutdownTimeout.
type SchedulerRunOption interface{ applySchedulerRun(*schedConfig) }

// timing is what QueueManager.Run and SchedulerManager.Run both take.
type timing struct {
	heartbeatTimeout time.Duration
	shutdownTimeout  time.Duration
	pollInterval     time.Duration
}

// optionErr keeps the first invalid option a configuration saw, for the
// call that reports it (see the package documentation on options).
type optionErr struct{ err error }

func (o *optionErr) check(err error) {
	if err != nil && o.err == nil {
		o.err = err
	}
}

type runConfig struct {
	timing
	optionErr
	batchSize      int
	maxConcurrent  int
	dequeueTimeout time.Duration
	statsInterval  time.Duration
	logRetention   time.Duration
	vacuum         bool
	syncClaims     bool
	syncOutcomes   bool
	poolTuning     bool
	// concurrencyTuning lets the governor lower the handlers run at once.
	concurrencyTuning bool
	mode              Mode
	maxJobs           int          // WithMaxJobs; 0 = no limit
	middleware        []Middleware // WithMiddleware given to Run

	// Intervals the tests shorten (run options in export_manager_test.go).
	healthInterval, healthTimeout time.Duration
	upkeepInterval                time.Duration
	sweepInterval                 time.Duration
	beforeAnalyze                 func() // see maintainer.beforeAnalyze
}

// newRunConfig applies opts to the defaults; the first invalid option is
// in the result's err.
func newRunConfig(opts []RunOption) runConfig {
	rc := runConfig{
		timing: timing{
			heartbeatTimeout: DefaultHeartbeatTimeout,
			shutdownTimeout:  DefaultShutdownTimeout,
			pollInterval:     DefaultPollInterval,
		},
		batchSize:         DefaultBatchSize,
		maxConcurrent:     DefaultMaxConcurrentTasks,
		dequeueTimeout:    DefaultDequeueTimeout,
		vacuum:            true,
		poolTuning:        true,
		concurrencyTuning: true,
		healthInterval:    defaultHealthInterval,
		healthTimeout:     defaultHealthTimeout,
		upkeepInterval:    defaultUpkeepInterval,
		sweepInterval:     afterSweepInterval,
	}
	for _, o := range opts {
		if o != nil {
			o.applyRun(&rc)
		}
	}
	if rc.logRetention > 0 && rc.statsInterval == 0 {
		rc.statsInterval = time.Minute
	}
	return rc
}

// runOption is a RunOption that only QueueManager.Run takes.
type runOption func(*runConfig)

func (o runOption) applyRun(c *runConfig) { o(c) }

// TimingOption is an option that both QueueManager.Run and
// SchedulerManager.Run take: WithPollInterval, WithHeartbeatTimeout and
// WithShutdownTimeout.
type TimingOption struct {
	name string
	d    time.Duration
	set  func(*timing, time.Duration)
}

func (o TimingOption) apply(t *timing, e *optionErr) {
	if o.d <= 0 {
		e.check(fmt.Errorf("pgq: %s must be positive, got %v", o.name, o.d))
		return
	}
	o.set(t, o.d)
}

func (o TimingOption) applyRun(c *runConfig)            { o.apply(&c.timing, &c.optionErr) }
func (o TimingOption) applySchedulerRun(c *schedConfig) { o.apply(&c.timing, &c.optionErr) }

// WithBatchSize sets how many jobs one claim takes at most (default
// DefaultBatchSize).
func WithBatchSize(n int) RunOption {
	return runOption(func(c *runConfig) {
		if n < 1 {
			c.check(fmt.Errorf("pgq: batch size must be at least 1, got %d", n))
		}
		c.batchSize = n
	})
}

// WithMaxConcurrentTasks bounds how many jobs this worker runs at once
// (default DefaultMaxConcurrentTasks). A claim takes at most the free
// slots, except while the queue is deep (the last claim came back full)
// and handlers are short (lately 50 ms or less on average): then the
// worker claims up to one batch (at most n) ahead, so that a slot that
// frees up starts its next job at once instead of waiting for a claim,
// and it holds back from other workers at most about 50 ms of work. Jobs
// claimed ahead are held and heartbeated like running ones and start in
// claim order as slots free up; one canceled meanwhile never starts, one
// whose heartbeats failed for half the heartbeat timeout goes back to the
// queue instead of starting, and when Run stops, those not started go back
// to the queue at once. Entrypoints with a fleet-wide concurrency or rate
// limit (WithConcurrencyLimit, WithRateLimit) make the worker claim no
// further than its free slots, so as not to hold the limit's slots with
// jobs that wait. Handlers run on goroutines the worker keeps until Run
// returns, at most n of them (as many as ever ran at once), each reused
// for job after job.
func WithMaxConcurrentTasks(n int) RunOption {
	return runOption(func(c *runConfig) {
		if n < 1 {
			c.check(fmt.Errorf("pgq: max concurrent tasks must be at least 1, got %d", n))
		}
		c.maxConcurrent = n
	})
}

// WithDequeueTimeout sets how long the worker waits for a notification
// before it looks for jobs anyway (default DefaultDequeueTimeout). It
// bounds how late a job is found when a notification is lost.
func WithDequeueTimeout(d time.Duration) RunOption {
	return runOption(func(c *runConfig) { c.check(positive("dequeue timeout", d)); c.dequeueTimeout = d })
}

// WithHeartbeatTimeout sets after how long without a heartbeat a running
// job (or, for a SchedulerManager, a running schedule) counts as abandoned
// and is taken over (default DefaultHeartbeatTimeout). Every worker and
// scheduler of a queue, pgq's and PGQueuer's, should use the same value.
//
// A worker heartbeats its jobs three times per timeout. When it cannot
// (the database slow or out of reach) for three quarters of the timeout,
// it cancels the contexts of the handlers of the jobs it could not
// refresh, before another worker may take them over; such a job goes back
// to the queue unless its handler finished anyway. Handlers that honour
// their context therefore do not run at the same time as the same job on
// another worker.
func WithHeartbeatTimeout(d time.Duration) TimingOption {
	return TimingOption{"heartbeat timeout", d, func(t *timing, d time.Duration) { t.heartbeatTimeout = d }}
}

// WithShutdownTimeout sets how long Run, once its ctx ends, lets running
// handlers (or schedule functions) finish before it cancels their contexts
// (default DefaultShutdownTimeout).
func WithShutdownTimeout(d time.Duration) TimingOption {
	return TimingOption{"shutdown timeout", d, func(t *timing, d time.Duration) { t.shutdownTimeout = d }}
}

// WithPollInterval sets how often a worker that has no listener looks for
// jobs (default DefaultPollInterval), or the longest a SchedulerManager
// sleeps between looks at the schedules table (default
// DefaultSchedulePollInterval).
func WithPollInterval(d time.Duration) TimingOption {
	return TimingOption{"poll interval", d, func(t *timing, d time.Duration) { t.pollInterval = d }}
}

// WithStatisticsInterval makes the worker fold new log rows into the
// statistics table every d (0, the default, leaves that to another worker;
// Stats and `pgq dashboard` count log rows not folded yet). A worker's
// claims and outcomes count their own log rows as they write them, so
// what is left to fold is the enqueues' 'queued' rows, rows written inside
// transactions of more than one statement (CompleteTx, claims of
// entrypoints with keys or a concurrency limit) and PGQueuer workers'
// rows. Folding runs on its own connection in small batches and never
// holds up claims; any number of workers may do it.
func WithStatisticsInterval(d time.Duration) RunOption {
	return runOption(func(c *runConfig) {
		if d < 0 {
			c.check(fmt.Errorf("pgq: statistics interval must not be negative, got %v", d))
		}
		c.statsInterval = d
	})
}

// WithLogRetention makes the worker delete log rows older than d, in small
// batches, so that the log does not grow without bound; a row not folded
// into the statistics yet is folded as it is deleted, so the statistics
// miss nothing. 0, the default, keeps the log. A job whose log rows are
// gone is unknown to JobStatus and CompletionWatcher. It implies statistics
// folding (every minute unless WithStatisticsInterval says). Folding and
// pruning take turns, a batch each, so under a steady stream of jobs
// neither waits for the other to finish; while the passes keep up, each
// rests between turns as long as they took, spreading the work over the
// interval instead of running it in one burst.
func WithLogRetention(d time.Duration) RunOption {
	return runOption(func(c *runConfig) {
		if d < 0 {
			c.check(fmt.Errorf("pgq: log retention must not be negative, got %v", d))
		}
		c.logRetention = d
	})
}

// WithVacuum says whether the worker vacuums the job table itself when its
// dead rows pile up (default true). Under load every claimed and finished
// job leaves two dead rows, and autovacuum, which wakes once a minute, lets
// hundreds of thousands gather, slowing claims; so every second the worker
// reads the job table's statistics counters and runs VACUUM (SKIP_LOCKED) on
// it when it holds over 10,000 dead rows and over a tenth of its size, and
// no manual vacuum of it (another worker's, say) ended in the last 2 s (a
// second or so on a table of a million rows); an autovacuum's end does not
// count, and a vacuum already running, a worker's or autovacuum's, is
// skipped. It starts no parallel workers (VACUUM's PARALLEL 0): they would
// come from the application's max_parallel_workers, and on 2 cores they
// cost a quarter more CPU without ending the vacuum sooner. Like VACUUM it
// needs the
// privileges of the table's owner: a worker whose role lacks them leaves
// the table to autovacuum. Pass false to leave vacuuming to autovacuum
// alone.
func WithVacuum(on bool) RunOption {
	return runOption(func(c *runConfig) { c.vacuum = on })
}

// WithSynchronousClaims says whether a claim waits for its commit to reach
// disk (default false). By default the transaction that claims jobs commits
// with synchronous_commit off, for that transaction only, which takes the
// wait for a WAL flush off the worker's critical path: a claim lost when
// the server crashes within a fraction of a second after it (before the
// WAL writer flushes it) leaves its jobs queued, so they run again, as
// after a worker crash; the at-least-once guarantee is the same. Enqueues
// always wait for the flush (outcomes too, with WithSynchronousOutcomes),
// and each flush also makes every claim before it durable. Pass true to
// have claims wait too (the server's synchronous_commit setting then
// applies), so that a server crash never makes a claimed job run twice.
func WithSynchronousClaims(on bool) RunOption {
	return runOption(func(c *runConfig) { c.syncClaims = on })
}

// WithSynchronousOutcomes says whether writing a batch of outcomes waits
// for its commit to reach disk (default false). Finishing a job deletes its
// row, which notifies listeners (the job table's trigger), and PostgreSQL
// holds the lock that orders notifying commits through each commit's WAL
// flush: while one outcome waits for its flush, every enqueue and every
// other worker's outcome waits behind it. So by default the transaction
// that writes outcomes commits with synchronous_commit off, for that
// transaction only: an outcome lost when the server crashes within a
// fraction of a second after it (before the WAL writer flushes it) leaves
// its jobs picked, so they are rescued as stale and run again, as after a
// worker crash that came just before the outcome; a CompletionWatcher may
// already have reported them finished. The at-least-once guarantee is the
// same, and CompleteTx, which commits with the handler's own transaction,
// is unaffected. Pass true to have outcomes wait for the flush (the
// server's synchronous_commit setting then applies), so that a server
// crash never makes a finished job run again.
func WithSynchronousOutcomes(on bool) RunOption {
	return runOption(func(c *runConfig) { c.syncOutcomes = on })
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
	return runOption(func(c *runConfig) { c.poolTuning = on })
}

// WithConcurrencyTuning says whether Run may run fewer handlers at once
// than WithMaxConcurrentTasks allows while the database is saturated by
// them (default true). Handlers that use the database through the
// worker's pool, a hundred at once on a server of a few cores, make every
// statement wait for the server's CPU, the worker's claims and outcome
// writes too, and complete no more jobs a second than a quarter of them
// would. While the worker's own claims and outcome writes are slow (the
// 90th percentile of their latest round trips over 6 ms, looked at every
// 250 ms) and the pool's connections in use beyond the worker's own are,
// on average, at least half the handlers allowed, Run lowers that number
// by a quarter (by up to half when they are slower still), down to an
// eighth of WithMaxConcurrentTasks, and raises it
// again by a twentieth of it once they are fast (under 3 ms) or the
// handlers hold fewer connections. It logs the first lowering at INFO.
// Handlers that spend most of their time outside the pool (calling other
// services, sleeping) are never held back. With false, Run always runs up
// to WithMaxConcurrentTasks.
func WithConcurrencyTuning(on bool) RunOption {
	return runOption(func(c *runConfig) { c.concurrencyTuning = on })
}

// WithMaxJobs makes Run claim at most n jobs in all; once it has, it
// stops claiming and returns when they have run and their outcomes are
// written (or when ctx ends). With WithMode(ModeDrain) it returns sooner
// when nothing is left to run. pgqtest.RunOne runs one job so.
func WithMaxJobs(n int) RunOption {
	return runOption(func(c *runConfig) {
		if n < 1 {
			c.check(fmt.Errorf("pgq: max jobs must be at least 1, got %d", n))
		}
		c.maxJobs = n
	})
}

// WithMode sets when Run returns: ModeContinuous (default) or ModeDrain.
func WithMode(m Mode) RunOption {
	return runOption(func(c *runConfig) {
		if m != ModeContinuous && m != ModeDrain {
			c.check(fmt.Errorf("pgq: unknown mode %d", int(m)))
		}
		c.mode = m
	})
}

// positive checks a duration option.
func positive(name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("pgq: %s must be positive, got %v", name, d)
	}
	return nil
}
