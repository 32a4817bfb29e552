package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/dsn"
	"github.com/pgq-dev/pgq/internal/syncbuf"
)

// Tests of the limits that protect the server: a flood of notifications,
// statements that block on someone else's lock or hit statement_timeout,
// and the largest payload.

// floodNotifications sends n distinct job-table insert events on the
// default channel in one transaction, as n enqueues by n producers would,
// delivered together when it commits.
func floodNotifications(t *testing.T, ctx context.Context, db *sql.DB, n int) {
	t.Helper()
	_, err := db.ExecContext(ctx, `SELECT count(pg_notify('ch_pgqueuer', json_build_object(
		'channel', 'ch_pgqueuer', 'operation', 'insert', 'sent_at', now(),
		'table', 'pgqueuer', 'type', 'table_changed_event', 'n', i)::text))
		FROM generate_series(1, $1::int) AS i`, n)
	if err != nil {
		t.Fatal(err)
	}
}

// TestNotifyFloodBoundsClaims: 100,000 notifications in one second (each
// an enqueue elsewhere, of an entrypoint these workers do not run) must
// not make idle workers claim 100,000 times: wake-ups that come while the
// last claim found nothing are coalesced, so an idle worker claims at most
// about 1/wakeGap times a second however many notifications arrive. Then,
// 100,000 real enqueues in 100 batches from 4 producers, with a job of
// theirs among them: it still runs.
func TestNotifyFloodBoundsClaims(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const workers = 3
		ran := make(chan pgq.JobID, 16)
		var qms []*pgq.QueueManager
		for range workers {
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			_ = qm.Entrypoint("idle", func(ctx context.Context, j *pgq.Job) error { ran <- j.ID; return nil })
			runWorker(t, ctx, qm, pgq.WithDequeueTimeout(time.Minute))
			qms = append(qms, qm)
		}
		eventually(t, "workers listening", func() bool {
			for _, qm := range qms {
				if !qm.Listening() {
					return false
				}
			}
			return true
		})
		claims := func() (n int64) {
			for _, qm := range qms {
				n += pgq.ClaimCount(qm)
			}
			return n
		}
		// Synthetic: 100,000 notifications in one commit.
		before := claims()
		begin := time.Now()
		floodNotifications(t, ctx, db, 100_000)
		sent := time.Since(begin)
		time.Sleep(3 * time.Second) // the listeners read them all meanwhile
		flood := claims() - before
		window := time.Since(begin)
		t.Logf("100,000 notifications sent in %v: %d claims by %d idle workers in %v (%.0f claims/s per worker)",
			sent.Round(time.Millisecond), flood, workers, window.Round(time.Millisecond),
			float64(flood)/window.Seconds()/workers)

		// Real: 100,000 enqueues in batches of 1000 from 4 producers, one
		// of them a job of the workers.
		q := pgq.NewQueries(db)
		before = claims()
		begin = time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for p := range 4 {
			wg.Go(func() {
				for b := range 25 {
					jobs := make([]pgq.NewJob, 1000)
					for i := range jobs {
						jobs[i].Entrypoint = "elsewhere"
					}
					if p == 0 && b == 12 {
						jobs[500].Entrypoint = "idle"
					}
					if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		enqueued := time.Since(begin)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		receive(t, ran, 10*time.Second, "the workers' job among the enqueues")
		time.Sleep(time.Second)
		real := claims() - before
		window = time.Since(begin)
		t.Logf("100,000 enqueues (100 batches) in %v: %d claims by %d workers in %v",
			enqueued.Round(time.Millisecond), real, workers, window.Round(time.Millisecond))

		// At most 1/wakeGap claims a second per worker, with slack for
		// the polls and the claim of the one job.
		limit := int64(float64(workers)*window.Seconds()/pgq.WakeGap.Seconds()) + 3*workers
		if flood > int64(float64(workers)*4/pgq.WakeGap.Seconds()) {
			t.Errorf("%d claims after a flood of 100,000 notifications; want at most %d per worker per second",
				flood, int(1/pgq.WakeGap.Seconds()))
		}
		if real > limit {
			t.Errorf("%d claims during 100,000 enqueues; want at most %d", real, limit)
		}
	})
}

// dsnWith returns connString with a run-time parameter added (both
// drivers send unknown keys to the server as settings).
func dsnWith(t *testing.T, connString, key, value string) string {
	t.Helper()
	if dsn.IsURL(connString) {
		u, err := url.Parse(connString)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	pairs, err := dsn.ParseKeywordValue(connString)
	if err != nil {
		t.Fatal(err)
	}
	return dsn.Join(append(pairs, dsn.Pair{Key: key, Value: value}))
}

// TestBlockedStatementsBackOff: while another connection holds the job
// table locked, every statement of a worker whose connections have a small
// statement_timeout fails after it; the worker must keep running, back off
// (notifications arriving meanwhile must not make it retry at once), and
// once the lock is gone write the outcome of the job it ran and run the
// next: the job intact, run once, logged once.
func TestBlockedStatementsBackOff(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		driver := "postgres"
		if strings.Contains(fmt.Sprintf("%T", db.Driver()), "stdlib") {
			driver = "pgx"
		}
		timeoutDSN := dsnWith(t, dsn, "statement_timeout", "100")
		wdb, err := sql.Open(driver, timeoutDSN)
		if err != nil {
			t.Fatal(err)
		}
		defer wdb.Close()
		if got := scalar[string](t, wdb, "SHOW statement_timeout"); got != "100ms" {
			t.Fatalf("statement_timeout %q on the worker's connections", got)
		}
		var logs syncbuf.Buffer
		qm := pgq.NewQueueManager(wdb, pgq.WithListenDSN(timeoutDSN),
			pgq.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		starts, end := make(chan *heldAttempt, 4), make(chan struct{})
		var runs atomic.Int32
		_ = qm.Entrypoint("held", func(ctx context.Context, j *pgq.Job) error {
			runs.Add(1)
			return blockingHandler(starts, end)(ctx, j)
		})
		ran := make(chan pgq.JobID, 1)
		_ = qm.Entrypoint("next", func(ctx context.Context, j *pgq.Job) error { ran <- j.ID; return nil })
		stop := startRun(t, ctx, qm, pgq.WithDequeueTimeout(100*time.Millisecond), pgq.WithHeartbeatTimeout(3*time.Second))
		t.Cleanup(func() { close(end) })

		q := pgq.NewQueries(db)
		a, err := q.Enqueue(ctx, "held", nil)
		if err != nil {
			t.Fatal(err)
		}
		first := receive(t, starts, 10*time.Second, "the held job to start")

		// Someone else locks the job table for 3 s.
		locker, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer locker.Rollback()
		if _, err := locker.ExecContext(ctx, "LOCK TABLE pgqueuer IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		before := pgq.ClaimCount(qm)
		close(first.release) // its outcome write now waits for the lock
		locked := time.Now()
		// Notifications keep coming meanwhile (every 10 ms).
		for time.Since(locked) < 3*time.Second {
			floodNotifications(t, ctx, db, 1)
			time.Sleep(10 * time.Millisecond)
		}
		claims := pgq.ClaimCount(qm) - before
		if err := locker.Commit(); err != nil {
			t.Fatal(err)
		}
		held := time.Since(locked)

		waitFinished(t, db, a)
		b, err := q.Enqueue(ctx, "next", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := receive(t, ran, 10*time.Second, "the next job"); got != b {
			t.Fatalf("ran %d, want %d", got, b)
		}
		stop()
		out := logs.String()
		claimFails := strings.Count(out, "claiming jobs failed")
		writeFails := strings.Count(out, "writing job outcomes failed")
		t.Logf("table locked for %v with statement_timeout 100ms: %d claims tried (%d failed), %d outcome writes failed",
			held.Round(time.Millisecond), claims, claimFails, writeFails)
		if !strings.Contains(out, "statement timeout") {
			t.Errorf("no statement timeout seen: the lock did not block the worker?\n%s", out)
		}
		// Backing off from 50 ms, doubling: about 7 tries in 3 s (without
		// it, one every statement_timeout or notification: 30).
		if claims > 12 {
			t.Errorf("%d claims tried in %v while the table was locked; want a backoff (at most 12)", claims, held)
		}
		if writeFails > 12 {
			t.Errorf("%d outcome writes tried while the table was locked; want a backoff (at most 12)", writeFails)
		}
		if got := logOf(t, db, a); got != "queued picked successful" {
			t.Errorf("job %d: log %q, want %q", a, got, "queued picked successful")
		}
		if n := runs.Load(); n != 1 {
			t.Errorf("the held job ran %d times", n)
		}
	})
}

// TestCancelManyFitsNotify: cancelling more jobs than one notification
// can name (PostgreSQL refuses NOTIFY payloads of 8000 bytes or more)
// sends several events, and succeeds: before, 2000 ids made the NOTIFY
// fail after the jobs were already deleted.
func TestCancelManyFitsNotify(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		ids, err := q.EnqueueBatch(ctx, make([]pgq.NewJob, 2000))
		if err == nil {
			t.Fatal("jobs without an entrypoint accepted")
		}
		jobs := make([]pgq.NewJob, 2000)
		for i := range jobs {
			jobs[i].Entrypoint = "many"
		}
		if ids, err = q.EnqueueBatch(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		if err := q.MarkJobAsCancelled(ctx, ids); err != nil {
			t.Fatalf("cancel 2000 jobs: %v", err)
		}
		st, err := q.JobStatus(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if st[id] != pgq.StatusCanceled {
				t.Fatalf("job %d: %s", id, st[id])
			}
		}
	})
}
