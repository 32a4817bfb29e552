package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pgq-dev/pgq"
)

// Defaults of the latency benchmark.
const (
	DefaultSamples = 1000
	// latencyWarmup samples run before the measured ones, so that the
	// listeners are up and connections open.
	latencyWarmup = 5
	// sampleTimeout bounds one sample: a job that is not seen finished
	// within it fails the benchmark.
	sampleTimeout = 30 * time.Second
)

// LatencyConfig configures Latency. Zero fields take the defaults.
type LatencyConfig struct {
	Samples int // jobs, one at a time (default DefaultSamples)
	// Interval is a pause between one sample's WaitFor return and the next
	// enqueue (default 0: back to back). A pause longer than the watcher's
	// debounce window shows the completion latency of an idle watcher;
	// back to back, each completion waits for the window.
	Interval time.Duration
	// ListenDSN is given to the worker and the watcher with
	// pgq.WithListenDSN; a lib/pq pool from sql.Open needs it to listen
	// (one from pgq.Open does not).
	ListenDSN string
	Logger    *slog.Logger // the worker's and watcher's logger (pgq.WithLogger); nil: quiet
	// SyncClaims makes claims wait for their commit to reach disk
	// (pgq.WithSynchronousClaims).
	SyncClaims bool
	// SyncOutcomes makes outcome writes wait for their commit to reach
	// disk (pgq.WithSynchronousOutcomes).
	SyncOutcomes bool
}

// LatencyResult holds the percentiles of each leg of a job's trip through
// an idle queue:
//
//   - Enqueue: the Enqueue call (insert and commit), as the producer sees it.
//   - EnqueueToStart: from Enqueue's return (the commit is done) to the
//     handler's start. The handler may start before the producer has read
//     the commit's reply; such samples count as 0 (ClampedSamples).
//   - EndToWait: from the handler's return to the return of
//     CompletionWatcher.WaitFor, which was called right after Enqueue.
//
// P50, P90 and P99 repeat EnqueueToStart.
type LatencyResult struct {
	Samples        int         `json:"samples"`
	P50            float64     `json:"p50_ms"`
	P90            float64     `json:"p90_ms"`
	P99            float64     `json:"p99_ms"`
	Enqueue        Percentiles `json:"enqueue"`
	EnqueueToStart Percentiles `json:"enqueue_to_start"`
	EndToWait      Percentiles `json:"end_to_wait"`
	ClampedSamples int         `json:"clamped_samples"`
	Settings       Settings    `json:"settings"`
}

// ran is one job's timestamps as the handler saw them.
type ran struct {
	id         pgq.JobID
	start, end time.Time
}

// Latency sends cfg.Samples jobs through an idle queue one at a time, with
// one worker (default RunOptions) and one CompletionWatcher (default
// options), and measures each leg of the trip.
func Latency(ctx context.Context, db *sql.DB, cfg LatencyConfig) (LatencyResult, error) {
	cfg.Samples = orDefault(cfg.Samples, DefaultSamples)
	if cfg.Samples < 1 {
		return LatencyResult{}, fmt.Errorf("samples must be at least 1, got %d", cfg.Samples)
	}
	if cfg.Interval < 0 {
		return LatencyResult{}, fmt.Errorf("interval must not be negative, got %v", cfg.Interval)
	}
	settings, err := readSettings(ctx, db, cfg.ListenDSN)
	if err != nil {
		return LatencyResult{}, err
	}
	settings.Samples, settings.Workers = cfg.Samples, 1
	if cfg.Interval > 0 {
		settings.Interval = cfg.Interval.String()
	}
	settings.BatchSize, settings.Concurrency = pgq.DefaultBatchSize, pgq.DefaultMaxConcurrentTasks
	settings.ConcurrencyTuning = true // the library's default, which its worker runs with
	settings.SyncClaims, settings.SyncOutcomes = cfg.SyncClaims, cfg.SyncOutcomes
	res := LatencyResult{Samples: cfg.Samples, Settings: settings}
	if err := purge(ctx, db); err != nil {
		return res, err
	}

	var wopts []pgq.WatcherOption
	if cfg.ListenDSN != "" {
		wopts = append(wopts, pgq.WithListenDSN(cfg.ListenDSN))
	}
	if cfg.Logger != nil {
		wopts = append(wopts, pgq.WithLogger(cfg.Logger))
	}
	mopts := workerOptions(cfg.ListenDSN, cfg.Logger)
	runs := make(chan ran, 1)
	qm := pgq.NewQueueManager(db, mopts...)
	if err := qm.Entrypoint(Entrypoint, func(_ context.Context, j *pgq.Job) error {
		start := time.Now()
		runs <- ran{id: j.ID, start: start, end: time.Now()}
		return nil
	}); err != nil {
		return res, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var runErr error
	wg.Go(func() {
		runErr = qm.Run(runCtx, pgq.WithSynchronousClaims(cfg.SyncClaims), pgq.WithSynchronousOutcomes(cfg.SyncOutcomes))
	})
	watcher, err := pgq.NewCompletionWatcher(runCtx, db, wopts...)
	if err != nil {
		return res, err
	}
	defer watcher.Close()

	q := pgq.NewQueries(db)
	var enq, toStart, toWait []time.Duration
	for i := range latencyWarmup + cfg.Samples {
		if i > 0 && cfg.Interval > 0 {
			select {
			case <-time.After(cfg.Interval):
			case <-ctx.Done():
			}
		}
		s, err := sample(ctx, q, watcher, runs)
		if err != nil {
			stop()
			wg.Wait()
			return res, errors.Join(fmt.Errorf("sample %d: %w", i+1, err), runErr)
		}
		if i < latencyWarmup {
			continue
		}
		enq = append(enq, s.enqueue)
		if s.toStart < 0 {
			s.toStart = 0
			res.ClampedSamples++
		}
		toStart = append(toStart, s.toStart)
		toWait = append(toWait, s.toWait)
	}
	stop()
	wg.Wait()
	if runErr != nil {
		return res, fmt.Errorf("worker: %w", runErr)
	}
	res.Enqueue, res.EnqueueToStart, res.EndToWait = percentiles(enq), percentiles(toStart), percentiles(toWait)
	res.P50, res.P90, res.P99 = res.EnqueueToStart.P50, res.EnqueueToStart.P90, res.EnqueueToStart.P99
	return res, nil
}

type legs struct{ enqueue, toStart, toWait time.Duration }

// sample sends one job through the queue and times its legs.
func sample(ctx context.Context, q *pgq.Queries, w *pgq.CompletionWatcher, runs <-chan ran) (legs, error) {
	ctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	defer cancel()
	before := time.Now()
	id, err := q.Enqueue(ctx, Entrypoint, nil)
	if err != nil {
		return legs{}, err
	}
	committed := time.Now()
	st, err := w.WaitFor(ctx, id)
	waited := time.Now()
	if err != nil {
		return legs{}, fmt.Errorf("waiting for job %d: %w", id, err)
	}
	if st != pgq.StatusSuccessful {
		return legs{}, fmt.Errorf("job %d finished %s, want successful", id, st)
	}
	select {
	case r := <-runs:
		if r.id != id {
			return legs{}, fmt.Errorf("the handler ran job %d, want %d", r.id, id)
		}
		return legs{enqueue: committed.Sub(before), toStart: r.start.Sub(committed), toWait: waited.Sub(r.end)}, nil
	case <-ctx.Done():
		return legs{}, fmt.Errorf("job %d: the handler never ran: %w", id, ctx.Err())
	}
}
