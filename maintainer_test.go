package pgq_test

import (
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
)

// TestOwnJobsNotReleasedWhenHeartbeatsFail makes every heartbeat of a
// worker fail (a trigger refuses heartbeat-only updates) while its handler
// runs past the heartbeat timeout: the worker is alive, so its own release
// of stale jobs must leave the job alone (before, it put it back in the
// queue and claimed it again, so the job ran twice on one live worker).
func TestOwnJobsNotReleasedWhenHeartbeatsFail(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		execSQL(t, db, `CREATE FUNCTION refuse_heartbeat() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN RAISE EXCEPTION 'heartbeat refused by the test'; END $$`)
		execSQL(t, db, `CREATE TRIGGER refuse_heartbeat BEFORE UPDATE ON pgqueuer FOR EACH ROW
			WHEN (OLD.status = 'picked' AND NEW.status = 'picked' AND NEW.heartbeat IS DISTINCT FROM OLD.heartbeat)
			EXECUTE FUNCTION refuse_heartbeat()`)
		id, err := pgq.NewQueries(db).Enqueue(ctx, "slow", nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("slow", func(ctx context.Context, j *pgq.Job) error {
			defer close(done)
			time.Sleep(3 * time.Second) // three heartbeat timeouts
			return nil
		})
		// A timeout a loaded machine's stalls stay under (300 ms once
		// was not: the claim itself outlasted it).
		runWorker(t, ctx, qm, pgq.WithHeartbeatTimeout(time.Second))
		receive(t, done, 20*time.Second, "the handler to return")
		deadline := time.Now().Add(10 * time.Second)
		for scalar[int](t, db, "SELECT count(*) FROM pgqueuer") != 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := logOf(t, db, id); got != "queued picked successful" {
			t.Fatalf("log of job %d: %q, want %q", id, got, "queued picked successful")
		}
	})
}

// TestNothingStaleRightAfterServerStart checks that jobs are not released
// as stale while the server has been up for less than the heartbeat
// timeout: while it was down no worker could heartbeat, so every heartbeat
// looks old after a restart.
func TestNothingStaleRightAfterServerStart(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		id := scalar[int64](t, db, `INSERT INTO pgqueuer (priority, entrypoint, status, heartbeat, queue_manager_id)
			VALUES (0, 'e', 'picked', now() - interval '30 days', $1) RETURNING id`, uuid.NewString())
		uptime := scalar[float64](t, db, "SELECT extract(epoch FROM now() - pg_postmaster_start_time())")
		release := func(after time.Duration) []int64 {
			t.Helper()
			ids, err := dbgen.New().JobsReleaseStale(ctx, db, dbgen.JobsReleaseStaleParams{
				Entrypoints: []string{"e"}, StaleAfterUs: after.Microseconds(), MaxJobs: 10,
			})
			if err != nil {
				t.Fatal(err)
			}
			return ids
		}
		// A timeout longer than the server's uptime (but far shorter than
		// the heartbeat's age): not stale yet.
		if got := release(time.Duration(uptime*float64(time.Second)) + 24*time.Hour); len(got) != 0 {
			t.Fatalf("released %v with a timeout longer than the server's uptime", got)
		}
		if got := release(time.Second); len(got) != 1 || got[0] != id {
			t.Fatalf("released %v, want [%d]", got, id)
		}
	})
}

func execSQL(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatal(err)
	}
}

// TestHeartbeatNotHeldUpByOutcomeWrite blocks a worker's outcome write (a
// trigger waits on the job table's deletes) while another of its jobs
// runs: its heartbeats must go on meanwhile, so that a second worker does
// not take the running job for abandoned and run it again. Before, the
// heartbeat waited for the outcome write to end (the two were serialized
// against a deadlock that the heartbeat's SKIP LOCKED rules out), so a
// slow outcome write made the worker's every running job stale: a repeat
// with no crash anywhere, seen under pgq chaos after a server restart.
func TestHeartbeatNotHeldUpByOutcomeWrite(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		var longRuns atomic.Int32
		longStarted := make(chan struct{}, 2)
		handlers := func(qm *pgq.QueueManager) {
			_ = qm.Entrypoint("long", func(ctx context.Context, j *pgq.Job) error {
				longRuns.Add(1)
				longStarted <- struct{}{}
				select {
				case <-ctx.Done():
				case <-time.After(4 * time.Second):
				}
				return nil
			})
			_ = qm.Entrypoint("quick", func(ctx context.Context, j *pgq.Job) error { return nil })
		}
		const hb = 500 * time.Millisecond
		q := pgq.NewQueries(db)
		long, err := q.Enqueue(ctx, "long", nil)
		if err != nil {
			t.Fatal(err)
		}
		a := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		handlers(a)
		runWorker(t, ctx, a, pgq.WithHeartbeatTimeout(hb), pgq.WithDequeueTimeout(50*time.Millisecond))
		receive(t, longStarted, 10*time.Second, "the long job to start")
		unblock := blockOutcomes(t, ctx, db)
		if _, err := q.Enqueue(ctx, "quick", nil); err != nil {
			t.Fatal(err)
		}
		waitBlockedOutcome(t, db) // a's write of quick's outcome waits
		b := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		handlers(b)
		runWorker(t, ctx, b, pgq.WithHeartbeatTimeout(hb), pgq.WithDequeueTimeout(50*time.Millisecond))
		time.Sleep(6 * hb) // b looks for stale jobs every hb/3
		unblock()
		waitFinished(t, db, long)
		if n := longRuns.Load(); n != 1 {
			t.Fatalf("the long job ran %d times (log: %s), want once: its worker's heartbeat waited for the outcome write",
				n, logOf(t, db, long))
		}
	})
}
