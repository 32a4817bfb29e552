package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgq-dev/pgq"
)

// Defaults of the throughput benchmark.
const (
	DefaultDuration  = 10 * time.Second
	DefaultProducers = 1
)

// ThroughputConfig configures Throughput. Zero fields take the defaults.
type ThroughputConfig struct {
	Duration     time.Duration // how long producers and workers run (default DefaultDuration)
	Producers    int           // goroutines calling EnqueueBatch in a loop (default DefaultProducers)
	Rate         float64       // jobs enqueued per second by all producers together; 0: as fast as they can
	EnqueueBatch int           // jobs per EnqueueBatch call (default DefaultEnqueueBatch)
	Workers      int           // QueueManagers (default DefaultWorkers)
	BatchSize    int           // pgq.WithBatchSize (default pgq.DefaultBatchSize)
	Concurrency  int           // pgq.WithMaxConcurrentTasks (default pgq.DefaultMaxConcurrentTasks)
	SyncClaims   bool          // pgq.WithSynchronousClaims
	SyncOutcomes bool          // pgq.WithSynchronousOutcomes
	// NoConcurrencyTuning: pgq.WithConcurrencyTuning(false).
	NoConcurrencyTuning bool
	ListenDSN           string        // pgq.WithListenDSN for the workers
	Logger              *slog.Logger  // the workers' logger (pgq.WithLogger); nil: quiet
	Handler             HandlerConfig // what each job's handler does (default: nothing)
	// Warmup, when positive, runs producers and workers this long before
	// the measured Duration: the pool fills and the server's caches warm
	// up. Jobs enqueued or worked during it count in no rate, latency or
	// CPU figure. Warmed, when not nil, is called as it ends.
	Warmup time.Duration
	Warmed func()
	// ReportEvery, when positive, takes a row (an Interval) every so long
	// of the measured span, writes it to Report as a line (when Report is
	// not nil; a header line first) and compares the span's first tenth
	// with its last (ThroughputResult.Decay): for runs of many minutes,
	// to see whether the queue keeps its pace and its tables their size.
	ReportEvery time.Duration
	Report      io.Writer
	// LogRetention and StatsInterval are the workers'
	// pgq.WithLogRetention and pgq.WithStatisticsInterval (0: the
	// library's defaults: the log is kept, and folded into the statistics
	// only with a retention, then every minute).
	LogRetention  time.Duration
	StatsInterval time.Duration
}

func (c *ThroughputConfig) defaults() error {
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Duration < 0 {
		return fmt.Errorf("duration must be positive, got %v", c.Duration)
	}
	if c.Rate < 0 {
		return fmt.Errorf("rate must not be negative, got %v", c.Rate)
	}
	if c.Warmup < 0 {
		return fmt.Errorf("warmup must not be negative, got %v", c.Warmup)
	}
	switch {
	case c.ReportEvery < 0:
		return fmt.Errorf("report interval must not be negative, got %v", c.ReportEvery)
	case c.ReportEvery > c.Duration:
		return fmt.Errorf("report interval %v is longer than the duration %v", c.ReportEvery, c.Duration)
	case c.LogRetention < 0:
		return fmt.Errorf("log retention must not be negative, got %v", c.LogRetention)
	case c.StatsInterval < 0:
		return fmt.Errorf("statistics interval must not be negative, got %v", c.StatsInterval)
	}
	c.Producers = orDefault(c.Producers, DefaultProducers)
	c.EnqueueBatch = orDefault(c.EnqueueBatch, DefaultEnqueueBatch)
	c.Workers = orDefault(c.Workers, DefaultWorkers)
	c.BatchSize = orDefault(c.BatchSize, pgq.DefaultBatchSize)
	c.Concurrency = orDefault(c.Concurrency, pgq.DefaultMaxConcurrentTasks)
	if err := c.Handler.check(); err != nil {
		return err
	}
	return positives(map[string]int{"producers": c.Producers, "enqueue batch": c.EnqueueBatch,
		"workers": c.Workers, "batch size": c.BatchSize, "concurrency": c.Concurrency})
}

// ThroughputResult is what Throughput measured. A run whose queue is
// (nearly) empty at the end was bound by the producers, not the workers:
// Bound says which.
type ThroughputResult struct {
	Seconds            float64 `json:"seconds"`
	Enqueued           int64   `json:"enqueued"`
	Worked             int64   `json:"worked"`
	EnqueuedJobsPerSec float64 `json:"enqueued_jobs_per_sec"`
	WorkedJobsPerSec   float64 `json:"worked_jobs_per_sec"`
	QueueDepthEnd      int64   `json:"queue_depth_end"`
	Bound              string  `json:"bound"` // "producers" or "workers"
	// RanTwice counts the jobs whose handler ran more than once,
	// PickedTwice those the log shows picked more than once, and
	// StaleRescues the jobs the workers' log says were put back in the
	// queue because their heartbeat was too old. Without faults all three
	// should be 0.
	RanTwice     int64 `json:"ran_twice"`
	PickedTwice  int64 `json:"picked_twice"`
	StaleRescues int64 `json:"stale_rescues"`
	// MaxHeartbeatAgeMs is the oldest heartbeat of a running job seen
	// during the run (sampled 5 times a second on a connection of its
	// own): the margin to the heartbeat timeout (30 s) is what keeps
	// running jobs from being rescued as stale.
	MaxHeartbeatAgeMs float64 `json:"max_heartbeat_age_ms"`
	// PoolIdleClosed and PoolWaitCount are from the pool's statistics
	// over the run: connections closed because the pool held its
	// SetMaxIdleConns idle ones already, and waits for a connection.
	PoolIdleClosed    int64   `json:"pool_idle_closed"`
	PoolWaitCount     int64   `json:"pool_wait_count"`
	ClientCPUSeconds  float64 `json:"client_cpu_seconds"`
	ServerCPUSeconds  float64 `json:"server_cpu_seconds"`
	ServerCPUReadable bool    `json:"server_cpu_readable"`
	PeakRSSBytes      int64   `json:"peak_rss_bytes"`
	// PeakHeapInuseBytes is the largest runtime.MemStats.HeapInuse of
	// the client, sampled every second over warm-up and run.
	PeakHeapInuseBytes int64 `json:"peak_heap_inuse_bytes"`
	// EnqueueToStart is, in a paced run (Rate > 0), the time from an
	// EnqueueBatch call's return (its commit done) to the start of the
	// handler of each job it enqueued, over the jobs that started before
	// the run ended (LatencySamples of them); a handler that started
	// before the producer had read the commit's reply counts as 0.
	EnqueueToStart Percentiles `json:"enqueue_to_start,omitzero"`
	LatencySamples int64       `json:"latency_samples,omitempty"`
	// Intervals and Decay are reported with ReportEvery: one row per
	// interval (the table output printed them as they came), and the
	// first tenth against the last.
	Intervals []Interval `json:"intervals,omitempty" table:"-"`
	Decay     Decay      `json:"decay,omitzero"`
	StatementTimes
	Settings Settings `json:"settings"`
}

// Throughput runs cfg.Producers producers and cfg.Workers workers together
// for cfg.Duration and counts the jobs enqueued and worked within it. At the
// end it leaves no job of Entrypoint behind.
func Throughput(ctx context.Context, db *sql.DB, cfg ThroughputConfig) (ThroughputResult, error) {
	if err := cfg.defaults(); err != nil {
		return ThroughputResult{}, err
	}
	settings, err := readSettings(ctx, db, cfg.ListenDSN)
	if err != nil {
		return ThroughputResult{}, err
	}
	settings.Producers, settings.EnqueueBatch, settings.Workers = cfg.Producers, cfg.EnqueueBatch, cfg.Workers
	settings.BatchSize, settings.Concurrency, settings.Duration = cfg.BatchSize, cfg.Concurrency, cfg.Duration.String()
	settings.SyncClaims, settings.SyncOutcomes, settings.Rate = cfg.SyncClaims, cfg.SyncOutcomes, cfg.Rate
	settings.ConcurrencyTuning = !cfg.NoConcurrencyTuning
	settings.ReportEvery, settings.LogRetention = optionalDuration(cfg.ReportEvery), optionalDuration(cfg.LogRetention)
	settings.StatsInterval, settings.Warmup = optionalDuration(cfg.StatsInterval), optionalDuration(cfg.Warmup)
	settings.setHandler(cfg.Handler)
	res := ThroughputResult{Settings: settings}
	if err := purge(ctx, db); err != nil {
		return res, err
	}
	if err := cfg.Handler.prepare(ctx, db); err != nil {
		return res, err
	}
	meter := newCPUMeter(ctx, db)
	res.ServerCPUReadable = meter.serverReadable()

	warmed := time.Now().Add(cfg.Warmup) // the measured span: warmed to deadline
	deadline := warmed.Add(cfg.Duration)
	runCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	measured := func(t time.Time) bool { return !t.Before(warmed) && t.Before(deadline) }
	firstTenth, lastTenth := tenthSpans(warmed, deadline)

	var counts workCounts
	var firstID atomic.Int64
	ran := newRuns()
	var starts *startTimes
	if cfg.Rate > 0 {
		starts = newStartTimes(measured, warmed, deadline)
		ran.onStart = starts.started
	}
	handler := cfg.Handler.handler(db, ran, nil, func() {
		now := time.Now()
		if !measured(now) {
			return
		}
		counts.worked.Add(1)
		for i, span := range [2][2]time.Time{firstTenth, lastTenth} {
			if within(now, span) {
				counts.tenths[i].Add(1)
			}
		}
	})
	peakHeap := heapPeak(time.Second)
	defer peakHeap()
	logger, stale := newLogCounter(cfg.Logger)
	var wg sync.WaitGroup
	var workErr, ageErr, reportErr error
	var p0 sql.DBStats
	var s0 cpuSample
	wg.Go(func() {
		// Sampled once the warm-up is over; wg.Wait orders it before the
		// reads below.
		select {
		case <-runCtx.Done():
		case <-time.After(time.Until(warmed)):
		}
		p0, s0 = db.Stats(), meter.sample()
		if cfg.Warmed != nil {
			cfg.Warmed()
		}
	})
	wg.Go(func() { res.MaxHeartbeatAgeMs, ageErr = heartbeatAge(runCtx, db) })
	var rep *reporter
	if cfg.ReportEvery > 0 {
		rep = &reporter{db: db, every: cfg.ReportEvery, out: cfg.Report, counts: &counts, starts: starts, runs: ran}
		// ctx, not runCtx: the last row is taken at the deadline.
		wg.Go(func() { reportErr = rep.run(ctx, warmed, deadline) })
	}
	wg.Go(func() {
		workErr = runWorkers(runCtx, db, cfg.Workers, workerOptions(cfg.ListenDSN, logger), handler, 0,
			pgq.WithBatchSize(cfg.BatchSize), pgq.WithMaxConcurrentTasks(cfg.Concurrency),
			pgq.WithSynchronousClaims(cfg.SyncClaims), pgq.WithSynchronousOutcomes(cfg.SyncOutcomes), pgq.WithLogRetention(cfg.LogRetention),
			pgq.WithStatisticsInterval(cfg.StatsInterval), pgq.WithConcurrencyTuning(!cfg.NoConcurrencyTuning))
	})
	prodErrs := make([]error, cfg.Producers)
	for i := range cfg.Producers {
		wg.Go(func() {
			var every time.Duration // between one producer's batches
			if cfg.Rate > 0 {
				every = time.Duration(float64(time.Second) * float64(cfg.EnqueueBatch*cfg.Producers) / cfg.Rate)
			}
			prodErrs[i] = produce(ctx, runCtx, pgq.NewQueries(db), cfg.EnqueueBatch, every, measured, &counts.enqueued, &firstID, starts)
		})
	}
	wg.Wait()
	s1, p1 := meter.sample(), db.Stats()
	res.PeakHeapInuseBytes = peakHeap()
	res.PoolIdleClosed, res.PoolWaitCount = p1.MaxIdleClosed-p0.MaxIdleClosed, p1.WaitCount-p0.WaitCount
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if workErr != nil && !errors.Is(workErr, context.DeadlineExceeded) {
		return res, workErr
	}
	if err := errors.Join(append(prodErrs, ageErr, reportErr)...); err != nil {
		return res, err
	}

	if err := db.QueryRowContext(ctx, sqlQueueDepth, Entrypoint).Scan(&res.QueueDepthEnd); err != nil {
		return res, fmt.Errorf("reading queue depth: %w", err)
	}
	used := s1.sub(s0)
	res.Seconds = seconds(cfg.Duration)
	res.Enqueued, res.Worked = counts.enqueued.Load(), counts.worked.Load()
	res.EnqueuedJobsPerSec, res.WorkedJobsPerSec = rate(res.Enqueued, cfg.Duration), rate(res.Worked, cfg.Duration)
	res.Bound = "workers"
	if res.QueueDepthEnd <= int64(cfg.Producers*cfg.EnqueueBatch) {
		res.Bound = "producers"
	}
	res.ClientCPUSeconds, res.ServerCPUSeconds = seconds(used.client), seconds(used.server)
	res.PeakRSSBytes = peakRSS()
	res.RanTwice, res.StaleRescues = ran.twice.Load(), stale.Load()
	if starts != nil {
		res.EnqueueToStart, res.LatencySamples, _, _ = starts.totals()
	}
	if rep != nil {
		res.Intervals = rep.rows
		res.Decay = decay(&counts, starts, cfg.Duration, rep.rows)
	}
	if first := firstID.Load(); first > 0 {
		if err := db.QueryRowContext(ctx, sqlPickedTwice, Entrypoint, first).Scan(&res.PickedTwice); err != nil {
			return res, fmt.Errorf("counting jobs picked twice: %w", err)
		}
	}
	return res, purge(ctx, db)
}

// produce enqueues batches of no-op jobs until run ends, counting the jobs
// of the batches committed before deadline. Each batch is enqueued with ctx,
// not run: a statement canceled as run ends may still commit on the server
// after the call returned, and so escape the clean-up that follows.
// firstID is lowered to the smallest job id enqueued. every, when
// positive, paces the batches: one per every, late ones not made up for
// beyond one. starts, when not nil, is told when each batch committed.
func produce(ctx, run context.Context, q *pgq.Queries, batch int, every time.Duration, measured func(time.Time) bool,
	enqueued, firstID *atomic.Int64, starts *startTimes) error {
	jobs := make([]pgq.NewJob, batch)
	for i := range jobs {
		jobs[i] = pgq.NewJob{Entrypoint: Entrypoint}
	}
	next := time.Now()
	for run.Err() == nil {
		if every > 0 {
			if wait := time.Until(next); wait > 0 {
				select {
				case <-run.Done():
					return nil
				case <-time.After(wait):
				}
			}
			next = next.Add(every)
			if floor := time.Now().Add(-every); next.Before(floor) {
				next = floor
			}
		}
		ids, err := q.EnqueueBatch(ctx, jobs)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("enqueue: %w", err)
		}
		now := time.Now()
		if starts != nil {
			starts.committed(ids, now)
		}
		for id := int64(ids[0]); ; {
			old := firstID.Load()
			if (old != 0 && old <= id) || firstID.CompareAndSwap(old, id) {
				break
			}
		}
		if measured(now) {
			enqueued.Add(int64(batch))
		}
	}
	return nil
}

// heartbeatAge samples the age of the oldest heartbeat of a running job of
// Entrypoint every 200 ms until ctx ends, on a connection of its own, and
// returns the largest in milliseconds.
func heartbeatAge(ctx context.Context, db *sql.DB) (float64, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, nil // the run is over already
	}
	defer conn.Close()
	var most float64
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return most, nil
		case <-t.C:
		}
		var ms float64
		if err := conn.QueryRowContext(ctx, sqlHeartbeatAge, Entrypoint).Scan(&ms); err != nil {
			if ctx.Err() != nil {
				return most, nil
			}
			return most, fmt.Errorf("reading heartbeat age: %w", err)
		}
		most = max(most, ms)
	}
}
