package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

func TestPriorityOrder(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		var jobs []pgq.NewJob
		for i := range 30 {
			jobs = append(jobs, pgq.NewJob{Entrypoint: "p", Priority: int32(i % 3), Payload: []byte(fmt.Sprint(i))})
		}
		ids, err := q.EnqueueBatch(ctx, jobs)
		if err != nil {
			t.Fatal(err)
		}
		var got []pgq.JobID
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("p", func(ctx context.Context, j *pgq.Job) error { got = append(got, j.ID); return nil })
		drain(t, ctx, qm, pgq.WithMaxConcurrentTasks(1), pgq.WithBatchSize(1))
		// Highest priority first, then oldest first.
		var want []pgq.JobID
		for p := 2; p >= 0; p-- {
			for i, id := range ids {
				if i%3 == p {
					want = append(want, id)
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("order\n got %v\nwant %v", got, want)
		}
	})
}

func TestExecuteAfter(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		later, err := q.Enqueue(ctx, "e", nil, pgq.WithExecuteAfter(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		soon, err := q.Enqueue(ctx, "e", nil, pgq.WithExecuteAfter(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		enqueued := time.Now()
		now, err := q.Enqueue(ctx, "e", nil)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		ranAt := map[pgq.JobID]time.Time{}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("e", func(ctx context.Context, j *pgq.Job) error {
			mu.Lock()
			ranAt[j.ID] = time.Now()
			mu.Unlock()
			return nil
		})
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- qm.Run(runCtx, pgq.WithDequeueTimeout(100*time.Millisecond)) }()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(ranAt)
			mu.Unlock()
			if n >= 2 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // give the delayed job a chance to run (wrongly)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, ok := ranAt[now]; !ok {
			t.Fatal("immediate job did not run")
		}
		if at, ok := ranAt[soon]; !ok || at.Sub(enqueued) < 250*time.Millisecond {
			t.Fatalf("delayed job ran=%v after %v", ok, at.Sub(enqueued))
		}
		if _, ok := ranAt[later]; ok {
			t.Fatal("job delayed by an hour ran")
		}
		if st, _ := q.JobStatus(ctx, []pgq.JobID{later}); st[later] != pgq.StatusQueued {
			t.Fatalf("later job %v", st)
		}
	})
}

func TestConcurrentWorkersRunEachJobOnce(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const n = 10000
		q := pgq.NewQueries(db)
		jobs := make([]pgq.NewJob, n)
		for i := range jobs {
			jobs[i] = pgq.NewJob{Entrypoint: fmt.Sprintf("w%d", i%3), Priority: int32(i % 5)}
		}
		for i := 0; i < n; i += 2500 {
			if _, err := q.EnqueueBatch(ctx, jobs[i:i+2500]); err != nil {
				t.Fatal(err)
			}
		}
		var mu sync.Mutex
		runs := map[pgq.JobID]int{}
		var wg sync.WaitGroup
		for w := range 4 {
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			for ep := range 3 {
				_ = qm.Entrypoint(fmt.Sprintf("w%d", ep), func(ctx context.Context, j *pgq.Job) error {
					mu.Lock()
					runs[j.ID]++
					mu.Unlock()
					return nil
				})
			}
			wg.Go(func() {
				if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain), pgq.WithBatchSize(10+w*20)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if len(runs) != n {
			t.Fatalf("%d distinct jobs ran, want %d", len(runs), n)
		}
		for id, c := range runs {
			if c != 1 {
				t.Fatalf("job %d ran %d times", id, c)
			}
		}
		if left := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); left != 0 {
			t.Fatalf("%d jobs left in the table", left)
		}
		// Every job has exactly queued, picked and one terminal log row.
		bad := scalar[int](t, db, `SELECT count(*) FROM (
			SELECT job_id FROM pgqueuer_log GROUP BY job_id
			HAVING count(*) FILTER (WHERE status = 'queued') <> 1
			    OR count(*) FILTER (WHERE status = 'picked') <> 1
			    OR count(*) FILTER (WHERE status = 'successful') <> 1
			    OR count(*) <> 3) x`)
		if bad != 0 {
			t.Fatalf("%d jobs with a wrong set of log rows", bad)
		}
		// ... in that order, by time (the order the watcher reads) and by id.
		disorder := scalar[int](t, db, `SELECT count(*) FROM (
			SELECT job_id FROM pgqueuer_log GROUP BY job_id
			HAVING string_agg(status::text, ',' ORDER BY created, id) <> 'queued,picked,successful'
			    OR string_agg(status::text, ',' ORDER BY id) <> 'queued,picked,successful') x`)
		if disorder != 0 {
			t.Fatalf("%d jobs with log rows out of order", disorder)
		}
	})
}

// TestPickedLoggedWhileRunning: while a job runs, its 'picked' log row is
// there, dated when it was claimed (the job row's updated), and JobStatus
// reports it picked; once it ends the watcher sees it successful and the
// log reads queued, picked, successful.
func TestPickedLoggedWhileRunning(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		id, err := q.Enqueue(ctx, "slow", nil)
		if err != nil {
			t.Fatal(err)
		}
		started, release := make(chan struct{}), make(chan struct{})
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("slow", func(ctx context.Context, j *pgq.Job) error {
			close(started)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		})
		runWorker(t, ctx, qm)
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatal("the job did not start")
		}
		deadline := time.Now().Add(5 * time.Second)
		for scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log WHERE job_id = $1 AND status = 'picked'", int64(id)) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no picked log row 5 s into the job")
			}
			time.Sleep(5 * time.Millisecond)
		}
		// One clock reading dates the row and its log row (see JobsClaim).
		if same := scalar[bool](t, db, `SELECT l.created = j.updated
			FROM pgqueuer_log AS l JOIN pgqueuer AS j ON j.id = l.job_id
			WHERE l.job_id = $1 AND l.status = 'picked'`, int64(id)); !same {
			t.Fatal("picked row not dated when the job was claimed")
		}
		if st, err := q.JobStatus(ctx, []pgq.JobID{id}); err != nil || st[id] != pgq.StatusPicked {
			t.Fatalf("status while running: %v, %v", st, err)
		}
		close(release)
		w, err := pgq.NewCompletionWatcher(ctx, db, pgq.WithListenDSN(dsn))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if st, err := w.WaitFor(ctx, id); err != nil || st != pgq.StatusSuccessful {
			t.Fatalf("WaitFor: %v, %v", st, err)
		}
		if log := scalar[string](t, db, "SELECT string_agg(status::text, ',' ORDER BY id) FROM pgqueuer_log WHERE job_id = $1", int64(id)); log != "queued,picked,successful" {
			t.Fatalf("log %s", log)
		}
	})
}

func TestHandlerErrorAndPanic(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		ids, err := q.EnqueueBatch(ctx, []pgq.NewJob{{Entrypoint: "fail"}, {Entrypoint: "boom"}, {Entrypoint: "ok"}})
		if err != nil {
			t.Fatal(err)
		}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("fail", func(ctx context.Context, j *pgq.Job) error { return errors.New("disk full on /var") })
		_ = qm.Entrypoint("boom", func(ctx context.Context, j *pgq.Job) error { panic("nil map write in handler") })
		_ = qm.Entrypoint("ok", func(ctx context.Context, j *pgq.Job) error { return nil })
		drain(t, ctx, qm)
		st, err := q.JobStatus(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		want := []pgq.Status{pgq.StatusException, pgq.StatusException, pgq.StatusSuccessful}
		for i, id := range ids {
			if st[id] != want[i] {
				t.Errorf("job %d: %s, want %s", i, st[id], want[i])
			}
		}
		for i, msg := range []string{"disk full on /var", "panic: nil map write in handler"} {
			var tb string
			if err := db.QueryRow(`SELECT traceback->>'exception_message' FROM pgqueuer_log WHERE job_id = $1 AND status = 'exception'`, int64(ids[i])).Scan(&tb); err != nil {
				t.Fatal(err)
			}
			if tb != msg {
				t.Errorf("traceback message %q, want %q", tb, msg)
			}
		}
		if tb := scalar[string](t, db, `SELECT traceback->>'traceback' FROM pgqueuer_log WHERE job_id = $1 AND status = 'exception'`, int64(ids[1])); !strings.Contains(tb, "goroutine") {
			t.Errorf("panic traceback has no stack: %q", tb)
		}
	})
}

func TestUnregisteredEntrypointStaysQueued(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		orphan, _ := q.Enqueue(ctx, "nobody-handles-this", nil)
		mine, _ := q.Enqueue(ctx, "mine", nil)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("mine", func(ctx context.Context, j *pgq.Job) error { return nil })
		drain(t, ctx, qm)
		st, _ := q.JobStatus(ctx, []pgq.JobID{orphan, mine})
		if st[orphan] != pgq.StatusQueued || st[mine] != pgq.StatusSuccessful {
			t.Fatalf("statuses %v", st)
		}
	})
}

func TestEntrypointAndRunValidation(t *testing.T) {
	db, _ := pgqtest.NewDB(t, "pgx")
	ctx := testCtx(t)
	qm := pgq.NewQueueManager(db)
	if err := qm.Run(ctx); err == nil || !strings.Contains(err.Error(), "no entrypoint") {
		t.Errorf("Run without entrypoints = %v", err)
	}
	if err := qm.Entrypoint("", func(context.Context, *pgq.Job) error { return nil }); err == nil {
		t.Error("empty entrypoint name accepted")
	}
	if err := qm.Entrypoint("x", nil); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("nil handler = %v", err)
	}
	_ = qm.Entrypoint("x", func(context.Context, *pgq.Job) error { return nil })
	if err := qm.Entrypoint("x", func(context.Context, *pgq.Job) error { return nil }); err == nil {
		t.Error("duplicate entrypoint accepted")
	}
	for _, o := range []pgq.RunOption{pgq.WithBatchSize(0), pgq.WithMaxConcurrentTasks(-1), pgq.WithDequeueTimeout(0)} {
		if err := qm.Run(ctx, o); err == nil {
			t.Error("bad run option accepted")
		}
	}
}

func TestRunStopsOnCancelWithoutLeaks(t *testing.T) {
	eachDriverLeakChecked(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		started := make(chan struct{}, 10)
		var finished atomic.Int32
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("slow", func(ctx context.Context, j *pgq.Job) error {
			started <- struct{}{}
			time.Sleep(300 * time.Millisecond) // in flight when ctx ends
			finished.Add(1)
			return nil
		})
		ids, _ := q.EnqueueBatch(ctx, []pgq.NewJob{{Entrypoint: "slow"}, {Entrypoint: "slow"}})
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- qm.Run(runCtx) }()
		<-started
		<-started
		cancelAndWait(t, cancel, done)
		if finished.Load() != 2 {
			t.Fatalf("Run returned before in-flight jobs finished (%d finished)", finished.Load())
		}
		st, _ := q.JobStatus(ctx, ids)
		for _, id := range ids {
			if st[id] != pgq.StatusSuccessful {
				t.Fatalf("in-flight job %d ended %s", id, st[id])
			}
		}
	})
}

// TestRunWhoseCtxEndsAtStartReturnsNil: a worker or scheduler whose ctx
// ends while it starts returns nil, as one stopped later does. A program
// that stopped just after starting a worker (its ctx ended while Run
// checked the schema) got "pgq: verify: context canceled" from it.
func TestRunWhoseCtxEndsAtStartReturnsNil(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ended, cancel := context.WithCancel(testCtx(t))
		cancel()
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("a", func(context.Context, *pgq.Job) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := qm.Run(ended); err != nil {
			t.Errorf("QueueManager.Run with an ended ctx = %v, want nil", err)
		}
		sm := pgq.NewSchedulerManager(db)
		if err := sm.Schedule("tick", "* * * * *", func(context.Context, *pgq.Schedule) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := sm.Run(ended); err != nil {
			t.Errorf("SchedulerManager.Run with an ended ctx = %v, want nil", err)
		}
		// An invalid option is still reported, ctx or no ctx.
		if err := qm.Run(ended, pgq.WithBatchSize(-1)); err == nil {
			t.Error("QueueManager.Run with an invalid option and an ended ctx = nil, want the option's error")
		}
	})
}

func TestShutdownTimeoutCancelsHandlers(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		id, _ := q.Enqueue(ctx, "stuck", nil)
		started := make(chan struct{})
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("stuck", func(ctx context.Context, j *pgq.Job) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		})
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- qm.Run(runCtx, pgq.WithShutdownTimeout(200*time.Millisecond)) }()
		<-started
		t0 := time.Now()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if el := time.Since(t0); el > 5*time.Second {
			t.Fatalf("shutdown took %v", el)
		}
		st, _ := q.JobStatus(ctx, []pgq.JobID{id})
		if st[id] == pgq.StatusPicked || st[id] == "" {
			t.Fatalf("job left %q after shutdown", st[id])
		}
	})
}

// TestWakesOnNotify: with polling pushed out to an hour, a job enqueued while
// the worker idles runs only if the NOTIFY reached the worker, on each
// listener kind.
func TestWakesOnNotify(t *testing.T) {
	cases := []struct {
		driver string
		useDSN bool
	}{{"postgres", true}, {"pgx", true}, {"pgx", false}}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/dsn=%v", c.driver, c.useDSN), func(t *testing.T) {
			t.Parallel()
			db, dsn := pgqtest.NewDB(t, c.driver)
			ctx := testCtx(t)
			var opts []pgq.ManagerOption
			if c.useDSN {
				opts = append(opts, pgq.WithListenDSN(dsn))
			}
			qm := pgq.NewQueueManager(db, opts...)
			ran := make(chan pgq.JobID, 1)
			_ = qm.Entrypoint("n", func(ctx context.Context, j *pgq.Job) error { ran <- j.ID; return nil })
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- qm.Run(runCtx, pgq.WithDequeueTimeout(time.Hour)) }()
			defer func() { cancel(); <-done }()
			for i := range 3 {
				time.Sleep(100 * time.Millisecond) // the worker is idle, listening
				id, err := pgq.NewQueries(db).Enqueue(ctx, "n", nil)
				if err != nil {
					t.Fatal(err)
				}
				select {
				case got := <-ran:
					if got != id {
						t.Fatalf("ran %d, want %d", got, id)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("job %d (round %d) not run: the notification did not wake the worker", id, i)
				}
			}
		})
	}
}

func TestMiddlewareOrder(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		_, _ = pgq.NewQueries(db).Enqueue(ctx, "m", nil)
		var trail []string
		mw := func(name string) pgq.Middleware {
			return func(next pgq.Handler) pgq.Handler {
				return func(ctx context.Context, j *pgq.Job) error {
					trail = append(trail, name+">")
					err := next(ctx, j)
					trail = append(trail, "<"+name)
					return err
				}
			}
		}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn), pgq.WithMiddleware(mw("outer"), mw("inner")))
		_ = qm.Entrypoint("m", func(ctx context.Context, j *pgq.Job) error { trail = append(trail, "handler"); return nil })
		drain(t, ctx, qm)
		if got := strings.Join(trail, " "); got != "outer> inner> handler <inner <outer" {
			t.Fatalf("trail %s", got)
		}
	})
}

// TestDeafListenerFallsBackToPolling: a listener that hears nothing (here:
// listening on another database) fails its health check, and the worker
// then polls often, so jobs still start promptly.
func TestDeafListenerFallsBackToPolling(t *testing.T) {
	db, _ := pgqtest.NewDB(t, "pgx")
	_, otherDSN := pgqtest.NewDB(t, "pgx")
	ctx := testCtx(t)
	qm := pgq.NewQueueManager(db, pgq.WithListenDSN(otherDSN))
	ran := make(chan struct{}, 1)
	_ = qm.Entrypoint("d", func(ctx context.Context, j *pgq.Job) error { ran <- struct{}{}; return nil })
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- qm.Run(runCtx, pgq.WithDequeueTimeout(time.Hour), pgq.WithPollInterval(100*time.Millisecond),
			pgq.WithHealthCheck(200*time.Millisecond, 100*time.Millisecond))
	}()
	defer func() { cancel(); <-done }()
	time.Sleep(500 * time.Millisecond) // the health check has failed by now
	if _, err := pgq.NewQueries(db).Enqueue(ctx, "d", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
	case <-time.After(3 * time.Second):
		t.Fatal("job not run: the worker neither heard nor polled")
	}
}

// TestMaxConcurrentTasksHolds checks that no more handlers run at once than
// WithMaxConcurrentTasks allows, whether the batch is larger than the limit
// (claims are cut to the free slots) or smaller (claims follow each other
// while earlier jobs still run), and that every job runs once.
func TestMaxConcurrentTasksHolds(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		for _, c := range []struct{ batch, limit int }{{8, 5}, {5, 12}} {
			t.Run(fmt.Sprintf("batch %d, limit %d", c.batch, c.limit), func(t *testing.T) {
				ctx := testCtx(t)
				ids := enqueueN(t, ctx, db, "cap", 200)
				g := newHandlerGauge()
				qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
				_ = qm.Entrypoint("cap", g.runFor(3*time.Millisecond))
				drain(t, ctx, qm, pgq.WithBatchSize(c.batch), pgq.WithMaxConcurrentTasks(c.limit))
				if peak := g.peakSince(); peak > c.limit || peak < 2 {
					t.Errorf("at most %d handlers ran at once; want 2..%d", peak, c.limit)
				}
				g.eachRanOnce(t, ids)
			})
		}
	})
}

// TestWithMaxJobs: a run with WithMaxJobs(n) claims n jobs in all, even
// with more queued and a larger batch, and returns once they ran; n < 1
// is refused.
func TestWithMaxJobs(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		for range 10 {
			if _, err := q.Enqueue(ctx, "e", nil); err != nil {
				t.Fatal(err)
			}
		}
		var ran atomic.Int64
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("e", func(context.Context, *pgq.Job) error { ran.Add(1); return nil })
		// Continuous mode: only the limit makes Run return.
		if err := qm.Run(ctx, pgq.WithMaxJobs(3), pgq.WithBatchSize(100)); err != nil {
			t.Fatal(err)
		}
		if n, left := ran.Load(), scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); n != 3 || left != 7 {
			t.Fatalf("ran %d, %d left; want 3 and 7", n, left)
		}
		if err := qm.Run(ctx, pgq.WithMaxJobs(0)); err == nil || !strings.Contains(err.Error(), "max jobs") {
			t.Fatalf("WithMaxJobs(0): %v", err)
		}
	})
}

// TestBlockingHandlersFillEverySlot: handlers that block (as on I/O) each
// keep their slot, and the worker still starts a job in every slot at
// once: a handler goroutine woken for a claim's jobs wakes the next one
// before it runs its own. The 40 handlers each wait for all 40 to have
// started; a worker that started them one after another would leave them
// waiting out their 10 s.
func TestBlockingHandlersFillEverySlot(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const n = 40
		enqueueN(t, ctx, db, "together", n)
		var started sync.WaitGroup
		started.Add(n)
		all := make(chan struct{})
		go func() { started.Wait(); close(all) }()
		var alone atomic.Int64
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("together", func(ctx context.Context, _ *pgq.Job) error {
			started.Done()
			select {
			case <-all:
			case <-time.After(10 * time.Second):
				alone.Add(1)
			}
			return nil
		})
		drain(t, ctx, qm, pgq.WithMaxConcurrentTasks(n), pgq.WithBatchSize(n))
		if k := alone.Load(); k > 0 {
			t.Fatalf("%d of %d blocking handlers waited 10 s for the others to start; want all %d running at once", k, n, n)
		}
	})
}

// goroutineID returns the id of the calling goroutine, from its stack
// trace's first line ("goroutine N [running]:").
func goroutineID() uint64 {
	var buf [64]byte
	s := string(buf[:runtime.Stack(buf[:], false)])
	s = strings.TrimPrefix(s, "goroutine ")
	id, _ := strconv.ParseUint(s[:strings.IndexByte(s, ' ')], 10, 64)
	return id
}

// A worker runs its handlers on goroutines it keeps, never more of them
// than its handler slots: a new goroutine for each job costs its start
// and the growth of its small stack in the handler's call. Once a drain
// returns, the kept goroutines have ended.
func TestHandlerGoroutinesReused(t *testing.T) {
	eachDriverLeakChecked(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const jobs, slots = 400, 4
		enqueueN(t, ctx, db, "reuse", jobs)
		var mu sync.Mutex
		seen := map[uint64]int{}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("reuse", func(context.Context, *pgq.Job) error {
			id := goroutineID()
			mu.Lock()
			seen[id]++
			mu.Unlock()
			return nil
		})
		drain(t, ctx, qm, pgq.WithMaxConcurrentTasks(slots), pgq.WithBatchSize(slots))
		// Right as Run returns, not at the test's end, when its context
		// (which would end goroutines waiting on it) is canceled too.
		buf := make([]byte, 1<<20)
		if n := strings.Count(string(buf[:runtime.Stack(buf, true)]), "pgq.(*executor).work("); n > 0 {
			t.Errorf("%d handler goroutines still running after the drain returned", n)
		}
		ran := 0
		for _, n := range seen {
			ran += n
		}
		if ran != jobs {
			t.Fatalf("handlers ran %d times, want %d", ran, jobs)
		}
		if len(seen) > slots {
			t.Errorf("%d jobs ran on %d goroutines; want at most %d (the handler slots)", jobs, len(seen), slots)
		}
	})
}
