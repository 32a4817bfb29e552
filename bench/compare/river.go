package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// River's benchmark, through River's public API, set up as `river bench`
// sets it up (cmd/river/riverbench/river_bench.go and
// cmd/river/rivercli/command.go of River's repository): a pgxpool with the
// CLI's connection settings and pgxpool's default size, the riverpgxv5
// driver, a client with FetchCooldown 2 ms, FetchPollInterval 20 ms and
// 2,000 workers on the default queue, a no-op worker, jobs counted through a
// subscription to completed, cancelled and failed events, and inserts with
// InsertMany in batches of 5,000. With --num-total-jobs (drain) all jobs
// are inserted before the client starts; with --duration, every 250 ms one
// batch is inserted, and more until at least 75,000 jobs are left. The rate is
// jobs worked ÷ (last job worked − client start), as River's bench reports
// it ("overall job/sec").
const (
	riverMaxWorkers        = 2_000
	riverFetchCooldown     = 2 * time.Millisecond
	riverFetchPollInterval = 20 * time.Millisecond
	riverInsertBatch       = 5_000
	riverMinJobs           = 75_000
	riverTopUpEvery        = 250 * time.Millisecond
)

// riverResult is what a River child process prints, as JSON, on stdout.
type riverResult struct {
	Worked   int64   `json:"worked"`
	Inserted int64   `json:"inserted"`
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"jobs_per_sec"`
	// StartNs and EndNs bound the measured span (client start to the last
	// job worked), in Unix nanoseconds, so that the parent can take the
	// CPU used within it from its samples.
	StartNs int64 `json:"start_unix_ns"`
	EndNs   int64 `json:"end_unix_ns"`
	// ClientCPUNs is this process's own CPU time (getrusage) from the
	// client's start until the figures were taken.
	ClientCPUNs int64 `json:"client_cpu_ns"`
}

type benchArgs struct{ Num int }

func (benchArgs) Kind() string { return "benchmark" }

type benchWorker struct {
	river.WorkerDefaults[benchArgs]
}

func (*benchWorker) Work(context.Context, *river.Job[benchArgs]) error { return nil }

// riverChild runs River's benchmark on dsn: a drain of jobs (jobs > 0) or
// a run of duration with continuous inserts, and prints a riverResult.
func riverChild(ctx context.Context, dsn string, jobs int, duration time.Duration, stdout, stderr io.Writer) error {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pool, err := riverPool(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Logger: logger})
	if err != nil {
		return err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrate: %w", err)
	}
	// resetJobsTable: truncate River's tables and VACUUM FULL river_job.
	exec := driver.GetExecutor()
	if err := exec.TableTruncate(ctx, &riverdriver.TableTruncateParams{
		Table: driver.GetMigrationTruncateTables(riverdriver.MigrationLineMain, 0),
	}); err != nil {
		return fmt.Errorf("river truncate: %w", err)
	}
	if err := exec.Exec(ctx, "VACUUM FULL river_job"); err != nil {
		return fmt.Errorf("river vacuum: %w", err)
	}

	workers := river.NewWorkers()
	river.AddWorker(workers, &benchWorker{})
	client, err := river.NewClient(driver, &river.Config{
		FetchCooldown:     riverFetchCooldown,
		FetchPollInterval: riverFetchPollInterval,
		Logger:            logger,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: riverMaxWorkers}},
		Workers:           workers,
	})
	if err != nil {
		return err
	}
	events, cancelSub := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: riverMinJobs,
		Kinds:    []river.EventKind{river.EventKindJobCancelled, river.EventKindJobCompleted, river.EventKindJobFailed},
	})
	defer cancelSub()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var inserted, left, worked, lastWorked atomic.Int64
	allWorked := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				if ev == nil {
					return
				}
				if ev.Kind != river.EventKindJobCompleted {
					logger.Error("river job not completed", "kind", ev.Kind, "job_id", ev.Job.ID)
				}
				lastWorked.Store(time.Now().UnixNano())
				left.Add(-1)
				if n := worked.Add(1); jobs > 0 && n == int64(jobs) {
					close(allWorked)
				}
			}
		}
	})

	batch := make([]river.InsertManyParams, riverInsertBatch)
	for i := range batch {
		batch[i].Args = benchArgs{Num: i}
	}
	insert := func(n int) error {
		if _, err := client.InsertMany(ctx, batch[:n]); err != nil {
			return fmt.Errorf("river insert: %w", err)
		}
		inserted.Add(int64(n))
		left.Add(int64(n))
		return nil
	}
	var insertErr error
	if jobs > 0 {
		for done := 0; done < jobs; done += riverInsertBatch {
			if err := insert(min(riverInsertBatch, jobs-done)); err != nil {
				return err
			}
		}
	} else {
		ready := make(chan struct{})
		wg.Go(func() {
			first := true
			for {
				// As insertJobsContinuously: at least one batch each
				// time, then more until riverMinJobs are left.
				for {
					if err := insert(riverInsertBatch); err != nil {
						if ctx.Err() == nil {
							insertErr = err
						}
						cancel()
						return
					}
					if left.Load() >= riverMinJobs {
						break
					}
				}
				if first {
					close(ready)
					first = false
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(riverTopUpEvery):
				}
			}
		})
		select {
		case <-ready:
		case <-ctx.Done():
			wg.Wait()
			return cmp.Or(insertErr, ctx.Err())
		}
	}

	cpu0 := selfCPU()
	if err := client.Start(ctx); err != nil {
		return err
	}
	start := time.Now()
	if jobs > 0 {
		select {
		case <-allWorked:
		case <-ctx.Done():
		}
	} else {
		select {
		case <-time.After(duration):
		case <-ctx.Done():
		}
	}
	// As River's bench, the figures are taken before the client stops.
	end := time.Unix(0, lastWorked.Load())
	res := riverResult{Worked: worked.Load(), Inserted: inserted.Load(), StartNs: start.UnixNano(), EndNs: end.UnixNano(),
		ClientCPUNs: int64(selfCPU() - cpu0)}
	stopCtx, stopCancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer stopCancel()
	stopErr := client.Stop(stopCtx)
	cancel()
	wg.Wait()
	if err := cmp.Or(insertErr, context.Cause(ctx)); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if stopErr != nil {
		return fmt.Errorf("river stop: %w", stopErr)
	}
	if jobs > 0 && res.Worked != int64(jobs) {
		return fmt.Errorf("river worked %d of %d jobs", res.Worked, jobs)
	}
	if span := end.Sub(start); span > 0 {
		res.Seconds = span.Seconds()
		res.Rate = float64(res.Worked) / span.Seconds()
	}
	return json.NewEncoder(stdout).Encode(res)
}

// selfCPU is this process's user and system time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// riverPool opens a pgxpool as River's CLI does (openPgxV5DBPool): pgxpool's
// default size, application_name "river CLI", idle_in_transaction_session_timeout
// 11 s and statement_timeout 10 s.
func riverPool(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("river: parse DSN: %w", err)
	}
	rp := cfg.ConnConfig.RuntimeParams
	rp["application_name"] = "river CLI"
	rp["idle_in_transaction_session_timeout"] = strconv.Itoa(int((11 * time.Second).Milliseconds()))
	rp["statement_timeout"] = strconv.Itoa(int((10 * time.Second).Milliseconds()))
	return pgxpool.NewWithConfig(ctx, cfg)
}

// riverChildMain is main for `compare river-child DSN JOBS DURATION`.
func riverChildMain(ctx context.Context, args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "compare river-child: want DSN JOBS DURATION")
		return 2
	}
	jobs, err := strconv.Atoi(args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "compare river-child: jobs %q: %v\n", args[1], err)
		return 2
	}
	d, err := time.ParseDuration(args[2])
	if err != nil {
		fmt.Fprintf(os.Stderr, "compare river-child: duration %q: %v\n", args[2], err)
		return 2
	}
	if err := riverChild(ctx, args[0], jobs, d, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "compare river-child: %v\n", err)
		return 1
	}
	return 0
}
