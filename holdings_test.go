package pgq_test

import (
	"context"
	"database/sql"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
)

// Tests of the paths by which a job could be lost, logged canceled though
// nobody canceled it, or run twice by a live worker: a worker that loses a
// job's claim (its heartbeat went stale and another worker put it back in
// the queue) and claims it again must keep the two claims apart.

// heldAttempt is one run of a handler that blocks until released, as work
// that cannot stop at once does, whatever its ctx says.
type heldAttempt struct {
	ctx     context.Context
	release chan struct{}
}

// blockingHandler returns a handler that reports each run on starts and
// returns nil once the run is released, or once end is closed.
func blockingHandler(starts chan<- *heldAttempt, end <-chan struct{}) pgq.Handler {
	return func(ctx context.Context, j *pgq.Job) error {
		a := &heldAttempt{ctx: ctx, release: make(chan struct{})}
		starts <- a
		select {
		case <-a.release:
		case <-end:
		}
		return nil
	}
}

// releaseAsStale puts the running jobs of entrypoint back in the queue as a
// worker that finds their heartbeat stale does (JobsReleaseStale), and
// returns their ids.
func releaseAsStale(t *testing.T, ctx context.Context, db *sql.DB, entrypoint string) []int64 {
	t.Helper()
	ids, err := dbgen.New().JobsReleaseStale(ctx, db, dbgen.JobsReleaseStaleParams{
		Entrypoints: []string{entrypoint}, StaleAfterUs: -time.Hour.Microseconds(), MaxJobs: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// logOf returns the statuses of a job's log rows, oldest first.
func logOf(t *testing.T, db *sql.DB, id pgq.JobID) string {
	t.Helper()
	return scalar[string](t, db, `SELECT coalesce(string_agg(status::text, ' ' ORDER BY id), '')
		FROM pgqueuer_log WHERE job_id = $1`, int64(id))
}

// blockOutcomes makes every statement that deletes from the job table (the
// worker's outcome writes; claims, heartbeats and releases only update it)
// wait until the returned function is called.
func blockOutcomes(t *testing.T, ctx context.Context, db *sql.DB) (unblock func()) {
	t.Helper()
	for _, stmt := range []string{
		`CREATE FUNCTION test_block_deletes() RETURNS trigger LANGUAGE plpgsql AS
		 $$ BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$`,
		`CREATE TRIGGER test_block_deletes BEFORE DELETE ON pgqueuer
		 FOR EACH STATEMENT EXECUTE FUNCTION test_block_deletes()`,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(4242)"); err != nil {
		t.Fatal(err)
	}
	done := false
	unblock = func() {
		if !done {
			done = true
			_, _ = conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock(4242)")
			_ = conn.Close()
		}
	}
	t.Cleanup(unblock)
	return unblock
}

// stallHeartbeats makes the worker's heartbeats (and claims, and outcome
// writes: every statement that changes the job table) wait, by a lock on
// the table, until the returned function is called.
func stallHeartbeats(t *testing.T, ctx context.Context, db *sql.DB) (unstall func()) {
	t.Helper()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "LOCK TABLE pgqueuer IN SHARE MODE"); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	done := false
	unstall = func() {
		if !done {
			done = true
			if err := tx.Commit(); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(unstall)
	return unstall
}

// runShortJobs runs n no-op jobs of entrypoint through the worker and
// waits until they are finished, so that the worker knows its handlers
// to be short (it claims ahead of free slots only then).
func runShortJobs(t *testing.T, ctx context.Context, db *sql.DB, entrypoint string, n int) {
	t.Helper()
	q := pgq.NewQueries(db)
	for range n {
		if _, err := q.Enqueue(ctx, entrypoint, nil); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the short jobs to finish", func() bool {
		return scalar[int](t, db, `SELECT count(*) FROM pgqueuer WHERE entrypoint = $1`, entrypoint) == 0
	})
}

// waitFinished waits until the job's row is gone (its outcome written).
// (JobStatus is not used: it takes the log row created last, and a write
// that waited has an early creation time.)
func waitFinished(t *testing.T, db *sql.DB, id pgq.JobID) {
	t.Helper()
	eventually(t, "job finished", func() bool {
		return scalar[int](t, db, "SELECT count(*) FROM pgqueuer WHERE id = $1", int64(id)) == 0
	})
}

// waitBlockedOutcome waits until an outcome write waits in blockOutcomes.
func waitBlockedOutcome(t *testing.T, db *sql.DB) {
	t.Helper()
	waitAdvisoryLockWait(t, db, "an outcome write blocked")
}

// waitAdvisoryLockWait waits until a session of db's database waits for
// an advisory lock (what says which).
func waitAdvisoryLockWait(t *testing.T, db *sql.DB, what string) {
	t.Helper()
	eventually(t, what, func() bool {
		return scalar[int](t, db, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`) > 0
	})
}

// TestReclaimedJobNotCanceledByItsEarlierRun: a worker whose heartbeat no
// longer finds a running job held (another worker released it as stale)
// and then claims the job again must not let the first run's end touch the
// second: before, the first run was canceled with the cancellation cause,
// and when it returned its outcome, "canceled", was written on the second
// claim (deleting the job as canceled: lost, though nobody canceled it), and
// the second run's context was canceled too.
func TestReclaimedJobNotCanceledByItsEarlierRun(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		starts, end := make(chan *heldAttempt, 4), make(chan struct{})
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("lost", blockingHandler(starts, end))
		_ = qm.Entrypoint("wake", func(context.Context, *pgq.Job) error { return nil })
		runWorker(t, ctx, qm, pgq.WithHeartbeatTimeout(600*time.Millisecond), pgq.WithDequeueTimeout(time.Minute))
		t.Cleanup(func() { close(end) }) // runs before runWorker's

		id, err := q.Enqueue(ctx, "lost", nil)
		if err != nil {
			t.Fatal(err)
		}
		first := receive(t, starts, 10*time.Second, "first run")
		if got := releaseAsStale(t, ctx, db, "lost"); len(got) != 1 {
			t.Fatalf("released %v, want [%d]", got, id)
		}
		// The worker's heartbeat finds the job no longer held and ends the
		// first run's context: not as a cancellation.
		receive(t, first.ctx.Done(), 5*time.Second, "first run's context to end")
		if cause := context.Cause(first.ctx); !strings.Contains(cause.Error(), "no longer held") {
			t.Errorf("first run ended with %v, want the job no longer held", cause)
		}
		// A notification makes the worker claim again: the job too.
		if _, err := q.Enqueue(ctx, "wake", nil); err != nil {
			t.Fatal(err)
		}
		second := receive(t, starts, 10*time.Second, "second run")
		close(first.release)
		for range 20 {
			time.Sleep(50 * time.Millisecond)
			if l := logOf(t, db, id); strings.Contains(l, "canceled") || strings.Contains(l, "successful") {
				t.Fatalf("the first run's end finished the job held by the second run: log %q", l)
			}
		}
		if err := context.Cause(second.ctx); err != nil {
			t.Fatalf("the second run's context ended (%v) when the first run returned", err)
		}
		close(second.release)
		waitFinished(t, db, id)
		if l := logOf(t, db, id); l != "queued picked queued picked successful" {
			t.Fatalf("log %q", l)
		}
	})
}

// TestStaleOutcomeNotWrittenOnNewClaim: an outcome on its way to the
// database when its job is released and claimed again by the same worker
// must not be written on the new claim. Before, the outcome of the first
// run deleted the job (successful) while the second run was running.
func TestStaleOutcomeNotWrittenOnNewClaim(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		starts, end := make(chan *heldAttempt, 4), make(chan struct{})
		var runs atomic.Int32
		hold := blockingHandler(starts, end)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("lost", func(ctx context.Context, j *pgq.Job) error {
			if runs.Add(1) == 1 {
				return nil // the first run ends at once
			}
			return hold(ctx, j)
		})
		_ = qm.Entrypoint("wake", func(context.Context, *pgq.Job) error { return nil })
		runWorker(t, ctx, qm, pgq.WithDequeueTimeout(time.Minute))
		t.Cleanup(func() { close(end) }) // runs before runWorker's

		unblock := blockOutcomes(t, ctx, db)
		id, err := q.Enqueue(ctx, "lost", nil)
		if err != nil {
			t.Fatal(err)
		}
		waitBlockedOutcome(t, db) // the first run's outcome is being written
		if got := releaseAsStale(t, ctx, db, "lost"); len(got) != 1 {
			t.Fatalf("released %v, want [%d]", got, id)
		}
		wake, err := q.Enqueue(ctx, "wake", nil)
		if err != nil {
			t.Fatal(err)
		}
		second := receive(t, starts, 10*time.Second, "second run")
		unblock()
		// The wake job's outcome is written after the first run's.
		eventually(t, "wake job successful", func() bool {
			st, _ := q.JobStatus(ctx, []pgq.JobID{wake})
			return st[wake] == pgq.StatusSuccessful
		})
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer WHERE id = $1 AND status = 'picked'", int64(id)); n != 1 {
			t.Fatalf("job not held while its second run runs: log %q", logOf(t, db, id))
		}
		close(second.release)
		waitFinished(t, db, id)
		if l := logOf(t, db, id); l != "queued picked queued picked successful" {
			t.Fatalf("log %q", l)
		}
	})
}

// TestJobHeldUntilOutcomeWritten: a job whose handler has returned stays
// held (heartbeated) until its outcome is written. Before, a write delayed
// past the heartbeat timeout (a lock, a slow or restarting server) let the
// job be released as stale and run again, by a live worker.
func TestJobHeldUntilOutcomeWritten(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		var runs atomic.Int32
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("lost", func(context.Context, *pgq.Job) error { runs.Add(1); return nil })
		runWorker(t, ctx, qm, pgq.WithHeartbeatTimeout(900*time.Millisecond), pgq.WithDequeueTimeout(200*time.Millisecond))

		unblock := blockOutcomes(t, ctx, db)
		id, err := q.Enqueue(ctx, "lost", nil)
		if err != nil {
			t.Fatal(err)
		}
		waitBlockedOutcome(t, db)
		time.Sleep(2500 * time.Millisecond) // well over the heartbeat timeout
		unblock()
		waitFinished(t, db, id)
		time.Sleep(100 * time.Millisecond) // a second run's outcome, if any
		if n := runs.Load(); n != 1 {
			t.Fatalf("job ran %d times (log %q), want once", n, logOf(t, db, id))
		}
		if l := logOf(t, db, id); l != "queued picked successful" {
			t.Fatalf("log %q", l)
		}
	})
}

// TestJobHeldDuringShutdownGrace: a worker keeps heartbeating its running
// jobs during the shutdown grace period. Before, heartbeats stopped with
// Run's ctx, so a handler still running after the heartbeat timeout had
// its job released and run again by another worker.
func TestJobHeldDuringShutdownGrace(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		starts, end := make(chan *heldAttempt, 1), make(chan struct{})
		defer close(end)
		a := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = a.Entrypoint("lost", blockingHandler(starts, end))
		// The grace period outlasts several heartbeat timeouts. The
		// timeout leaves room for the stalls of a loaded machine running
		// every package's tests with -race (600 ms once was not enough).
		const hb = 1500 * time.Millisecond
		opts := []pgq.RunOption{pgq.WithHeartbeatTimeout(hb), pgq.WithDequeueTimeout(200 * time.Millisecond)}
		aCtx, stopA := context.WithCancel(ctx)
		defer stopA()
		aDone := make(chan error, 1)
		go func() { aDone <- a.Run(aCtx, append(opts, pgq.WithShutdownTimeout(10*time.Second))...) }()

		id, err := q.Enqueue(ctx, "lost", nil)
		if err != nil {
			t.Fatal(err)
		}
		run := receive(t, starts, 10*time.Second, "run")
		var elsewhere atomic.Int32
		b := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = b.Entrypoint("lost", func(context.Context, *pgq.Job) error { elsewhere.Add(1); return nil })
		runWorker(t, ctx, b, opts...)

		stopA() // the grace period begins; the handler goes on
		time.Sleep(3 * hb)
		if n := elsewhere.Load(); n != 0 {
			t.Fatalf("the job ran again on another worker while its handler ran in the grace period (log %q)", logOf(t, db, id))
		}
		close(run.release)
		if err := receive(t, aDone, 10*time.Second, "Run to return"); err != nil {
			t.Fatal(err)
		}
		if l := logOf(t, db, id); l != "queued picked successful" {
			t.Fatalf("log %q", l)
		}
	})
}

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

		unstall := stallHeartbeats(t, ctx, db)
		locked := time.Now()
		var cause error
		select {
		case cause = <-causes:
		case <-time.After(2 * timeout):
		}
		waited := time.Since(locked)
		unstall()
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
