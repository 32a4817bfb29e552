package pgq_test

import (
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// A worker with a fleet-wide concurrency limit never claims ahead: its
// waiting jobs would hold the limit's slots.
func TestNoClaimsAheadUnderALimit(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		var block atomic.Bool
		started := make(chan pgq.JobID, 100)
		release := make(chan struct{})
		defer close(release)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("limited", func(ctx context.Context, j *pgq.Job) error {
			started <- j.ID
			if block.Load() {
				<-release
			}
			return nil
		}, pgq.WithConcurrencyLimit(10))
		runWorker(t, ctx, qm, pgq.WithMaxConcurrentTasks(2), pgq.WithBatchSize(2))
		for range 6 {
			if _, err := q.Enqueue(ctx, "limited", nil); err != nil {
				t.Fatal(err)
			}
		}
		for range 6 {
			receive(t, started, 10*time.Second, "a short job")
		}
		block.Store(true)
		for range 10 {
			if _, err := q.Enqueue(ctx, "limited", nil); err != nil {
				t.Fatal(err)
			}
		}
		receive(t, started, 10*time.Second, "run 1")
		receive(t, started, 10*time.Second, "run 2")
		time.Sleep(500 * time.Millisecond)
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer WHERE status = 'picked' AND entrypoint = 'limited'"); n != 2 {
			t.Fatalf("%d jobs picked with 2 slots under a concurrency limit, want 2", n)
		}
	})
}

// A claim that stalls after it marked its jobs picked (here its log row
// waits for another transaction's row with the same id, longer than the
// heartbeat timeout) must not run jobs whose heartbeat went stale before
// they were handed over: another worker may have released them already
// and run them too. (pgq chaos found it: a claim slowed down by a server
// just restarted, 3.4 s against a 3 s heartbeat timeout.)
func TestSlowClaimNotRunTwice(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		if err := q.Pause(ctx, "slowclaim"); err != nil {
			t.Fatal(err)
		}
		id, err := q.Enqueue(ctx, "slowclaim", nil)
		if err != nil {
			t.Fatal(err)
		}
		var runs atomic.Int32
		handler := func(context.Context, *pgq.Job) error { runs.Add(1); return nil }
		const hb = 900 * time.Millisecond
		for range 2 {
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			_ = qm.Entrypoint("slowclaim", handler)
			runWorker(t, ctx, qm, pgq.WithHeartbeatTimeout(hb), pgq.WithDequeueTimeout(100*time.Millisecond))
		}

		// The next log row's id is taken by an open transaction: the
		// claim's 'picked' row waits for it, its job already picked.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		var next int64
		if err := tx.QueryRowContext(ctx, `SELECT nextval(pg_get_serial_sequence('pgqueuer_log', 'id')) + 1`).Scan(&next); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO pgqueuer_log (id, job_id, status, priority, entrypoint)
			VALUES ($1, 0, 'queued', 0, 'blocker')`, next); err != nil {
			t.Fatal(err)
		}
		if err := q.Resume(ctx, "slowclaim"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * hb)
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, ctx, q, id, pgq.StatusSuccessful)
		time.Sleep(2 * hb)
		if n := runs.Load(); n != 1 {
			t.Fatalf("the job ran %d times (log %q)", n, logOf(t, db, id))
		}
	})
}
