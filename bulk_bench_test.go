package pgq_test

import (
	"context"
	"database/sql"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// TestBulkActionThroughput measures what a bulk action on 200,000 jobs
// does to a worker running meanwhile: the worker's jobs per second (one
// sample a second) before, during and after CancelJobs (or DeleteJobs) of
// 200,000 queued jobs of another entrypoint, and how long the action
// takes. It runs only with PGQ_BULK_BENCH=1 (docs/web.md has the figures):
//
//	PGQ_BULK_BENCH=1 go run ./internal/cmd/withpg -- go test -run TestBulkActionThroughput -v -timeout 30m .
func TestBulkActionThroughput(t *testing.T) {
	if os.Getenv("PGQ_BULK_BENCH") != "1" {
		t.Skip("a measurement: set PGQ_BULK_BENCH=1")
	}
	runs, _ := strconv.Atoi(os.Getenv("PGQ_BULK_BENCH_RUNS"))
	runs = max(runs, 1)
	for _, action := range []string{"cancel", "delete"} {
		for run := range runs {
			t.Run(action+"/"+strconv.Itoa(run), func(t *testing.T) {
				db, dsn := pgqtest.NewDB(t, "pgx")
				bulkThroughput(t, db, dsn, action)
			})
		}
	}
}

func bulkThroughput(t *testing.T, db *sql.DB, dsn, action string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	q := pgq.NewQueries(db)
	const bulkJobs, workJobs, batch = 200_000, 400_000, 5_000
	enqueue := func(ep string, n int) {
		jobs := make([]pgq.NewJob, batch)
		for i := range jobs {
			jobs[i] = pgq.NewJob{Entrypoint: ep}
		}
		for done := 0; done < n; done += batch {
			if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
				t.Fatal(err)
			}
		}
	}
	enqueue("bulk", bulkJobs)
	enqueue("work", workJobs)
	if _, err := db.ExecContext(ctx, "VACUUM ANALYZE pgqueuer"); err != nil {
		t.Fatal(err)
	}

	var ran atomic.Int64
	qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
	if err := qm.Entrypoint("work", func(context.Context, *pgq.Job) error { ran.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- qm.Run(wctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	// Samples of jobs/s, one a second, labelled by phase.
	type sample struct {
		phase string
		rate  float64
	}
	var samples []sample
	phase := atomic.Value{}
	phase.Store("warm-up")
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last, lastAt := ran.Load(), time.Now()
		for {
			select {
			case <-wctx.Done():
				return
			case now := <-tick.C:
				n := ran.Load()
				p := phase.Load().(string)
				if p == "stop" {
					return
				}
				samples = append(samples, sample{p, float64(n-last) / now.Sub(lastAt).Seconds()})
				last, lastAt = n, now
			}
		}
	}()
	time.Sleep(3 * time.Second)
	phase.Store("before")
	time.Sleep(10 * time.Second)
	phase.Store("during")
	start := time.Now()
	var n int64
	var err error
	f := pgq.JobFilter{Entrypoints: []string{"bulk"}}
	if action == "cancel" {
		n, err = q.CancelJobs(ctx, f)
	} else {
		n, err = q.DeleteJobs(ctx, f)
	}
	took := time.Since(start)
	if err != nil || n != bulkJobs {
		t.Fatalf("%s: %d, %v", action, n, err)
	}
	phase.Store("after")
	time.Sleep(10 * time.Second)
	phase.Store("stop")
	<-sampled

	median := func(p string) (float64, int) {
		var r []float64
		for _, s := range samples {
			if s.phase == p {
				r = append(r, s.rate)
			}
		}
		if len(r) == 0 {
			return 0, 0
		}
		slices.Sort(r)
		return r[len(r)/2], len(r)
	}
	b, nb := median("before")
	d, nd := median("during")
	a, na := median("after")
	t.Logf("%s of %d jobs: %v (%.0f jobs/s); worker jobs/s median before %.0f (%d s), during %.0f (%d s), after %.0f (%d s); during/before %.2f",
		action, n, took.Round(time.Millisecond), float64(n)/took.Seconds(), b, nb, d, nd, a, na, d/b)
	if left := ran.Load(); left >= workJobs {
		t.Errorf("the worker ran out of jobs (%d): the figures are wrong", left)
	}
}
