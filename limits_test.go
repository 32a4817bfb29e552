package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/syncbuf"
)

func TestConcurrencyLimitFleetWide(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		var jobs []pgq.NewJob
		for range 12 {
			jobs = append(jobs, pgq.NewJob{Entrypoint: "limited"}, pgq.NewJob{Entrypoint: "free"})
		}
		if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		var running, peak, freeRan atomic.Int32
		limited := func(ctx context.Context, j *pgq.Job) error {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(30 * time.Millisecond)
			running.Add(-1)
			return nil
		}
		var wg sync.WaitGroup
		for range 2 { // two workers, as in two processes
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			if err := qm.Entrypoint("limited", limited, pgq.WithConcurrencyLimit(2)); err != nil {
				t.Fatal(err)
			}
			_ = qm.Entrypoint("free", func(ctx context.Context, j *pgq.Job) error { freeRan.Add(1); return nil })
			wg.Go(func() {
				if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain), pgq.WithDequeueTimeout(20*time.Millisecond)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if p := peak.Load(); p != 2 {
			t.Fatalf("peak concurrency %d, want 2", p)
		}
		if freeRan.Load() != 12 {
			t.Fatalf("free entrypoint ran %d of 12", freeRan.Load())
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"); n != 24 {
			t.Fatalf("%d successful, want 24", n)
		}
	})
}

func TestRateLimit(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		enqueueN(t, ctx, db, "rl", 400)
		// Run for 6 s from the first job's start (a loaded machine can take
		// seconds to start a worker), with a bound on the whole run.
		runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var first sync.Once
		var wg sync.WaitGroup
		for range 2 {
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			_ = qm.Entrypoint("rl", func(ctx context.Context, j *pgq.Job) error {
				first.Do(func() { time.AfterFunc(6*time.Second, cancel) })
				return nil
			}, pgq.WithRateLimit(20))
			wg.Go(func() { _ = qm.Run(runCtx) })
		}
		wg.Wait()
		// The limit holds over every 1 s window of the starts' log times
		// (the picked rows' created, the clock the limit counts by), so the
		// 5 s from the first start hold five windows' worth: 100, within
		// -10 %. (Counted by the handlers' own clocks instead, the first
		// batch's dispatch delay can fit a sixth batch in.)
		n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer_log
			WHERE status = 'picked' AND entrypoint = 'rl'
			  AND created < (SELECT min(created) FROM pgqueuer_log WHERE status = 'picked' AND entrypoint = 'rl') + interval '5 seconds'`)
		if n < 90 || n > 100 {
			t.Fatalf("started %d jobs in 5 s at 20/s", n)
		}
		t.Logf("started %d jobs in 5 s at a limit of 20/s", n)
	})
}

func TestRetryKeepsJobAndCountsAttempts(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		id, err := q.Enqueue(ctx, "flaky", []byte("data"), pgq.WithPriority(4), pgq.WithHeaders(map[string]string{"h": "v"}))
		if err != nil {
			t.Fatal(err)
		}
		type seen struct {
			id       pgq.JobID
			attempts int32
			payload  string
			prio     int32
			header   string
			at       time.Time
		}
		var mu sync.Mutex
		var runs []seen
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		err = qm.Entrypoint("flaky", func(ctx context.Context, j *pgq.Job) error {
			mu.Lock()
			runs = append(runs, seen{j.ID, j.Attempts, string(j.Payload), j.Priority, j.Headers["h"], time.Now()})
			n := len(runs)
			mu.Unlock()
			switch n {
			case 1:
				return errors.New("first failure")
			case 2:
				return pgq.RetryAfter(300 * time.Millisecond)
			}
			return nil
		}, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 3, InitialDelay: 100 * time.Millisecond, Jitter: 0.01}))
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- qm.Run(runCtx) }()
		for {
			st, _ := q.JobStatus(ctx, []pgq.JobID{id})
			if st[id].Terminal() || runCtx.Err() != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		<-done
		if len(runs) != 3 {
			t.Fatalf("%d runs, want 3", len(runs))
		}
		for i, r := range runs {
			if r.id != id || r.attempts != int32(i) || r.payload != "data" || r.prio != 4 || r.header != "v" {
				t.Fatalf("run %d: %+v", i, r)
			}
		}
		if gap := runs[1].at.Sub(runs[0].at); gap < 90*time.Millisecond {
			t.Errorf("backoff gap %v, want ≥ 100 ms", gap)
		}
		if gap := runs[2].at.Sub(runs[1].at); gap < 290*time.Millisecond {
			t.Errorf("RetryAfter gap %v, want ≥ 300 ms", gap)
		}
		// Each failed attempt is in the log with its error; the last is successful.
		if msg := scalar[string](t, db, `SELECT string_agg(status::text || ':' || coalesce(traceback->>'exception_message', ''), ',' ORDER BY id) FROM pgqueuer_log WHERE job_id = $1`, int64(id)); msg != "queued:,picked:,queued:first failure,picked:,queued:retry after 300ms,picked:,successful:" {
			t.Fatalf("log: %s", msg)
		}
	})
}

func TestHoldThenRequeue(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		id, _ := q.Enqueue(ctx, "h", []byte("p"))
		fail := atomic.Bool{}
		fail.Store(true)
		newQM := func() *pgq.QueueManager {
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			_ = qm.Entrypoint("h", func(ctx context.Context, j *pgq.Job) error {
				if fail.Load() {
					return errors.New("upstream down")
				}
				return nil
			}, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Millisecond}), pgq.OnFailure(pgq.Hold))
			return qm
		}
		runUntil := func(want pgq.Status) {
			t.Helper()
			runCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			qm := newQM()
			done := make(chan error, 1)
			go func() { done <- qm.Run(runCtx) }()
			defer func() { cancel(); <-done }()
			for runCtx.Err() == nil {
				if st, _ := q.JobStatus(ctx, []pgq.JobID{id}); st[id] == want {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Fatalf("job never reached %s", want)
		}
		runUntil(pgq.StatusFailed)
		failed, err := q.ListFailed(ctx, 10)
		if err != nil || len(failed) != 1 || failed[0].ID != id || failed[0].Attempts != 2 || failed[0].LastError != "upstream down" {
			t.Fatalf("ListFailed = %+v, %v", failed, err)
		}
		fail.Store(false)
		got, err := q.Requeue(ctx, []pgq.JobID{id, 999999})
		if err != nil || len(got) != 1 || got[0] != id {
			t.Fatalf("Requeue = %v, %v", got, err)
		}
		runUntil(pgq.StatusSuccessful)
		if failed, _ := q.ListFailed(ctx, 10); len(failed) != 0 {
			t.Fatalf("still held: %+v", failed)
		}
	})
}

func TestCancelRunningJob(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		id, _ := q.Enqueue(ctx, "long", nil)
		started := make(chan struct{})
		ended := make(chan time.Time, 1)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("long", func(ctx context.Context, j *pgq.Job) error {
			close(started)
			select {
			case <-ctx.Done():
				ended <- time.Now()
				return ctx.Err()
			case <-time.After(20 * time.Second):
				return nil
			}
		})
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- qm.Run(runCtx) }()
		defer func() { cancel(); <-done }()
		<-started
		t0 := time.Now()
		if err := q.MarkJobAsCancelled(ctx, []pgq.JobID{id}); err != nil {
			t.Fatal(err)
		}
		select {
		case at := <-ended:
			t.Logf("handler ctx ended %v after MarkJobAsCancelled", at.Sub(t0))
		case <-time.After(5 * time.Second):
			t.Fatal("handler ctx not canceled")
		}
		for range 200 {
			if st, _ := q.JobStatus(ctx, []pgq.JobID{id}); st[id] == pgq.StatusCanceled {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("job not logged canceled")
	})
}

func TestRetentionPrunesLog(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		enqueueN(t, ctx, db, "r", 50)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("r", func(ctx context.Context, j *pgq.Job) error { return nil })
		drain(t, ctx, qm)
		// Age the log, then let a worker with retention run briefly.
		if _, err := db.Exec("UPDATE pgqueuer_log SET created = created - interval '2 hours'"); err != nil {
			t.Fatal(err)
		}
		fresh, _ := q.Enqueue(ctx, "other", nil)
		// Run until the old rows are gone (or 20 s: a loaded machine can be
		// slow to start a worker, so no fixed run time).
		runCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- qm.Run(runCtx, pgq.WithLogRetention(time.Hour), pgq.WithStatisticsInterval(100*time.Millisecond))
		}()
		old := func() int {
			return scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log WHERE created < now() - interval '1 hour'")
		}
		for runCtx.Err() == nil && old() != 0 {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := old(); n != 0 {
			t.Fatalf("%d old log rows left", n)
		}
		if st, _ := q.JobStatus(ctx, []pgq.JobID{fresh}); st[fresh] != pgq.StatusQueued {
			t.Fatalf("fresh job's log pruned: %v", st)
		}
		if n := scalar[int](t, db, "SELECT coalesce(sum(count), 0) FROM pgqueuer_statistics WHERE status = 'successful'"); n != 50 {
			t.Fatalf("statistics count %d successful, want 50", n)
		}
	})
}

func TestHandlerContext(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		type deps struct{ name string }
		id, _ := pgq.NewQueries(db).Enqueue(ctx, "c", nil)
		var logs syncbuf.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, nil))
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn), pgq.WithResources(&deps{"mailer"}), pgq.WithLogger(logger))
		var gotID pgq.JobID
		var gotRes string
		var wrongType, sameLogger bool
		_ = qm.Entrypoint("c", func(ctx context.Context, j *pgq.Job) error {
			gotID = pgq.JobFromContext(ctx).ID
			d, ok := pgq.Resources[*deps](ctx)
			if ok {
				gotRes = d.name
			}
			_, wrongType = pgq.Resources[string](ctx)
			l := pgq.LoggerFromContext(ctx)
			sameLogger = l == pgq.LoggerFromContext(ctx)
			l.Info("working")
			return nil
		})
		drain(t, ctx, qm)
		if gotID != id || gotRes != "mailer" {
			t.Fatalf("job %d resources %q", gotID, gotRes)
		}
		if wrongType || !sameLogger {
			t.Fatalf("Resources[string] ok = %v; LoggerFromContext same logger twice = %v", wrongType, sameLogger)
		}
		want := fmt.Sprintf("msg=working queue_manager_id=%s job_id=%d entrypoint=c", qm.ID(), id)
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("log lacks %q:\n%s", want, logs.String())
		}
	})
	// Outside a handler: no job, no resources, a logger that discards.
	bg := context.Background()
	if pgq.JobFromContext(bg) != nil {
		t.Fatal("JobFromContext outside a handler is not nil")
	}
	if _, ok := pgq.Resources[any](bg); ok {
		t.Fatal("Resources outside a handler: ok")
	}
	if pgq.LoggerFromContext(bg).Enabled(bg, slog.LevelError) {
		t.Fatal("LoggerFromContext outside a handler logs")
	}
}

// TestServerRestartMidRun restarts PostgreSQL (its own cluster) while a
// worker drains 5,000 jobs, cleanly (pg_ctl restart -m fast) and as a
// crash (-m immediate): every job completes. A crash loses the commits not
// yet flushed, and claims and outcomes do not wait for their flush
// (WithSynchronousClaims, WithSynchronousOutcomes): a job whose outcome
// was lost is released as stale and runs again. The WAL writer flushes
// such commits within three wal_writer_delay (600 ms by default), so the
// jobs picked twice are bounded by those that ran in the second before the
// crash, and the claims in flight; a clean restart loses nothing.
func TestServerRestartMidRun(t *testing.T) {
	ctx := testCtx(t)
	cl := ownServer(t, ctx)
	for _, c := range []struct {
		driver, mode string
		restart      func(context.Context) error
	}{{"pgx", "fast", cl.Restart}, {"postgres", "fast", cl.Restart}, {"pgx", "crash", cl.Crash}, {"postgres", "crash", cl.Crash}} {
		t.Run(c.driver+"/"+c.mode, func(t *testing.T) {
			dsn := cl.DSN("postgres")
			db, err := sql.Open(c.driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			_ = pgq.Uninstall(ctx, db)
			if err := pgq.Install(ctx, db); err != nil {
				t.Fatal(err)
			}
			const n = 5000
			ids := enqueueN(t, ctx, db, "r", n)
			var ran atomic.Int32
			restarted := make(chan struct{})
			var mu sync.Mutex
			var returns []time.Time // when handlers returned
			var crashAt time.Time
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			_ = qm.Entrypoint("r", func(ctx context.Context, j *pgq.Job) error {
				if ran.Add(1) == n/4 {
					go func() {
						mu.Lock()
						crashAt = time.Now()
						mu.Unlock()
						if err := c.restart(context.Background()); err != nil {
							t.Error(err)
						}
						close(restarted)
					}()
				}
				time.Sleep(200 * time.Microsecond)
				mu.Lock()
				returns = append(returns, time.Now())
				mu.Unlock()
				return nil
			})
			runCtx, cancel := context.WithTimeout(ctx, 45*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- qm.Run(runCtx, pgq.WithHeartbeatTimeout(2*time.Second), pgq.WithDequeueTimeout(100*time.Millisecond), pgq.WithBatchSize(50))
			}()
			select {
			case <-restarted:
			case err := <-done:
				// Run ended before a quarter of the jobs ran: report why
				// instead of waiting for a restart that never comes.
				t.Fatalf("Run returned before the restart: %v", err)
			}
			for runCtx.Err() == nil {
				var left int
				if err := db.QueryRow("SELECT count(*) FROM pgqueuer").Scan(&left); err == nil && left == 0 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			cancel()
			<-done
			st, err := pgq.NewQueries(db).JobStatus(ctx, ids)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				if st[id] != pgq.StatusSuccessful {
					t.Fatalf("job %d is %q after the restart", id, st[id])
				}
			}
			dups := scalar[int](t, db, "SELECT count(*) FROM (SELECT job_id FROM pgqueuer_log WHERE status = 'picked' GROUP BY job_id HAVING count(*) > 1) d")
			// At most 100 and, after a crash, the jobs that may have lost
			// their outcome: those that ran in the second before it.
			limit := 100
			if c.mode == "crash" {
				mu.Lock()
				for _, r := range returns {
					if r.After(crashAt.Add(-time.Second)) && r.Before(crashAt) {
						limit++
					}
				}
				mu.Unlock()
			}
			t.Logf("%d jobs ran, %d picked twice (at-least-once around the crash; at most %d)", ran.Load(), dups, limit)
			if dups > limit {
				t.Fatalf("%d jobs picked twice, over %d", dups, limit)
			}
		})
	}
}
