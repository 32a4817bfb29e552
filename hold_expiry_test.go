package pgq_test

import (
	"context"
	"database/sql"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// TestHoldExpiresWhenHeartbeatsStall: when the worker cannot refresh a
// running job's heartbeat (here a lock on the job table makes the
// heartbeat wait), it ends the job's handler before the heartbeat timeout
// would let another worker release the job and run it too, and puts the
// job back in the queue once it can; the job then runs again. Before, the
// handler ran on through the stall, and another worker could run the job
// at the same time.
func TestHoldExpiresWhenHeartbeatsStall(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		ids, err := pgq.NewQueries(db).EnqueueBatch(ctx, []pgq.NewJob{{Entrypoint: "stall"}})
		if err != nil {
			t.Fatal(err)
		}
		var runs atomic.Int32
		started := make(chan struct{})
		causes := make(chan error, 1)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("stall", func(ctx context.Context, j *pgq.Job) error {
			if runs.Add(1) > 1 {
				return nil
			}
			close(started)
			select {
			case <-ctx.Done():
				causes <- context.Cause(ctx)
			case <-time.After(10 * time.Second):
				causes <- nil
			}
			return ctx.Err()
		})
		const timeout = time.Second
		runWorker(t, ctx, qm, pgq.WithHeartbeatTimeout(timeout))
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatal("the job did not start")
		}

		// The stall: a lock that lets the heartbeat's UPDATE wait.
		locker, err := sql.Open(driverName(db), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer locker.Close()
		tx, err := locker.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, "LOCK TABLE pgqueuer IN SHARE MODE"); err != nil {
			t.Fatal(err)
		}
		locked := time.Now()
		var cause error
		select {
		case cause = <-causes:
		case <-time.After(2 * timeout):
		}
		waited := time.Since(locked)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if cause == nil || !strings.Contains(cause.Error(), "heartbeat not refreshed") {
			t.Fatalf("after %v of stalled heartbeats (timeout %v) the handler's cause is %v, want the hold expired",
				waited.Round(time.Millisecond), timeout, cause)
		}
		t.Logf("handler stopped %v into the stall", waited.Round(time.Millisecond))

		// The job goes back to the queue and runs again, here.
		for {
			st, err := pgq.NewQueries(db).JobStatus(ctx, ids)
			if err != nil {
				t.Fatal(err)
			}
			if st[ids[0]] == pgq.StatusSuccessful {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("job %s after the stall, want successful", st[ids[0]])
			}
			time.Sleep(50 * time.Millisecond)
		}
		if n := runs.Load(); n != 2 {
			t.Fatalf("%d runs, want 2 (the stopped one and the one after the stall)", n)
		}
	})
}
