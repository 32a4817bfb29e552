package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/syncbuf"
	"github.com/pgq-dev/pgq/pgqtest"
)

// resultsTable is where the CompleteTx tests' handlers write their side
// effect, in the same transaction as CompleteTx.
const resultsTable = `CREATE TABLE IF NOT EXISTS complete_results (job_id bigint NOT NULL, note text)`

// completeInTx is a handler's work with CompleteTx: it writes a result row
// and completes the job in one transaction, which it commits or rolls
// back as commit says, then returns ret.
func completeInTx(ctx context.Context, db *sql.DB, job *pgq.Job, commit bool) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "INSERT INTO complete_results (job_id) VALUES ($1)", int64(job.ID)); err != nil {
		return err
	}
	if err := pgq.CompleteTx(ctx, tx, job); err != nil {
		return err
	}
	if !commit {
		return tx.Rollback()
	}
	return tx.Commit()
}

// TestCompleteTxCommit: a handler that completes its job in its own
// transaction and commits gets exactly one successful log row, written by
// that transaction (the worker writes no second outcome, even when the
// handler then returns an error), and a CompletionWatcher hears of it.
// With default names and with a prefix and schema.
func TestCompleteTxCommit(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		for _, named := range []bool{false, true} {
			t.Run(fmt.Sprintf("prefixed=%v", named), func(t *testing.T) {
				ctx := testCtx(t)
				var opts []pgq.NamingOption
				log := "pgqueuer_log"
				if named {
					opts = []pgq.NamingOption{pgq.WithPrefix("app_"), pgq.WithSchema("jobs")}
					if err := pgq.Install(ctx, db, opts[0], opts[1]); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = pgq.Uninstall(context.Background(), db, opts[0], opts[1]) })
					log = "jobs.app_pgqueuer_log"
				}
				if _, err := db.ExecContext(ctx, resultsTable+"; TRUNCATE complete_results"); err != nil {
					t.Fatal(err)
				}
				var qopts []pgq.Option
				var mopts []pgq.ManagerOption
				var wopts []pgq.WatcherOption
				for _, o := range opts {
					qopts, mopts, wopts = append(qopts, o), append(mopts, o), append(wopts, o)
				}
				q := pgq.NewQueries(db, qopts...)
				w, err := pgq.NewCompletionWatcher(ctx, db, append(wopts, pgq.WithListenDSN(dsn))...)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()

				var logs syncbuf.Buffer
				qm := pgq.NewQueueManager(db, append(mopts, pgq.WithListenDSN(dsn),
					pgq.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))...)
				_ = qm.Entrypoint("ok", func(ctx context.Context, j *pgq.Job) error {
					return completeInTx(ctx, db, j, true)
				})
				// Committed, then the handler fails: the success stands.
				_ = qm.Entrypoint("fails_after", func(ctx context.Context, j *pgq.Job) error {
					if err := completeInTx(ctx, db, j, true); err != nil {
						return err
					}
					return errors.New("failed after its commit")
				}, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Millisecond}))
				// Lingers after its commit for longer than a heartbeat
				// period: the heartbeat, which no longer finds the row, must
				// not take the job for lost and end the handler's ctx.
				lingered := make(chan error, 1)
				_ = qm.Entrypoint("lingers", func(ctx context.Context, j *pgq.Job) error {
					if err := completeInTx(ctx, db, j, true); err != nil {
						return err
					}
					select {
					case <-ctx.Done():
						lingered <- context.Cause(ctx)
					case <-time.After(completeTxHeartbeat * 3 / 2): // four and a half heartbeats
						lingered <- nil
					}
					return nil
				})
				// Not 1 s: under CI's load a slow heartbeat used up the
				// grace of a 1 s timeout, and the worker released jobs 2
				// and 4 itself (their logs: queued picked queued picked
				// successful).
				stop := startRun(t, ctx, qm, pgq.WithHeartbeatTimeout(completeTxHeartbeat))

				ids := make([]pgq.JobID, 0, 4)
				for _, ep := range []string{"ok", "ok", "fails_after", "fails_after", "lingers"} {
					id, err := q.Enqueue(ctx, ep, nil)
					if err != nil {
						t.Fatal(err)
					}
					ids = append(ids, id)
				}
				st, err := w.WaitForAll(ctx, ids)
				if err != nil {
					t.Fatal(err)
				}
				for _, id := range ids {
					if st[id] != pgq.StatusSuccessful {
						t.Errorf("job %d: watcher saw %q, want successful", id, st[id])
					}
				}
				if err := receive(t, lingered, 10*time.Second, "the lingering handler"); err != nil {
					t.Errorf("a handler whose job was completed by its commit lost its ctx: %v", err)
				}
				// Run returns once every outcome is written: then count.
				stop()
				for _, id := range ids {
					got := scalar[string](t, db, `SELECT coalesce(string_agg(status::text, ' ' ORDER BY id), '')
						FROM `+log+` WHERE job_id = $1`, int64(id))
					if got != "queued picked successful" {
						t.Errorf("job %d: log %q, want %q", id, got, "queued picked successful")
					}
					if n := scalar[int](t, db, "SELECT count(*) FROM complete_results WHERE job_id = $1", int64(id)); n != 1 {
						t.Errorf("job %d: %d result rows, want 1", id, n)
					}
				}
				if s := logs.String(); strings.Contains(s, "no longer held") || strings.Contains(s, "lost") {
					t.Errorf("the worker took a completed job for a lost one:\n%s", s)
				}
			})
		}
	})
}

// startRun runs qm until the returned stop is called (or the test ends);
// stop returns once Run has, with every outcome written.
func startRun(t *testing.T, ctx context.Context, qm *pgq.QueueManager, opts ...pgq.RunOption) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- qm.Run(ctx, opts...) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestCompleteTxRollback: when the handler's transaction rolls back after
// CompleteTx, the job is still held and the worker records the handler's
// return value as usual: success for nil, a retry for an error.
func TestCompleteTxRollback(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		if _, err := db.ExecContext(ctx, resultsTable); err != nil {
			t.Fatal(err)
		}
		q := pgq.NewQueries(db)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("nil", func(ctx context.Context, j *pgq.Job) error {
			return completeInTx(ctx, db, j, false)
		})
		_ = qm.Entrypoint("err", func(ctx context.Context, j *pgq.Job) error {
			if err := completeInTx(ctx, db, j, false); err != nil {
				return err
			}
			if j.Attempts == 0 {
				return errors.New("rolled back; try again")
			}
			return nil
		}, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Millisecond}))
		a, err := q.Enqueue(ctx, "nil", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := q.Enqueue(ctx, "err", nil)
		if err != nil {
			t.Fatal(err)
		}
		drain(t, ctx, qm)
		for id, want := range map[pgq.JobID]string{
			a: "queued picked successful",
			b: "queued picked queued picked successful",
		} {
			if got := logOf(t, db, id); got != want {
				t.Errorf("job %d: log %q, want %q", id, got, want)
			}
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM complete_results"); n != 0 {
			t.Errorf("%d result rows survived their rollback", n)
		}
	})
}

// TestCompleteTxLostJob: a handler whose job was taken from its worker (its
// heartbeat went stale: released, then claimed by another worker) gets an
// error from CompleteTx that names the job and matches ErrJobLost, and its
// side effect rolls back with the transaction; the other worker's claim is
// untouched.
func TestCompleteTxLostJob(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		if _, err := db.ExecContext(ctx, resultsTable); err != nil {
			t.Fatal(err)
		}
		q := pgq.NewQueries(db)
		proceed := make(chan struct{})
		var proceeded sync.Once
		letGo := func() { proceeded.Do(func() { close(proceed) }) }
		t.Cleanup(letGo) // a failed check must not leave the handler blocked
		started := make(chan struct{}, 1)
		result := make(chan error, 1)
		// One task at a time: while its handler waits, this worker cannot
		// claim the released job again before the other worker does.
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("lost", func(ctx context.Context, j *pgq.Job) error {
			started <- struct{}{}
			<-proceed
			err := completeInTx(ctx, db, j, true)
			result <- err
			return err
		})
		// A long heartbeat timeout: the worker does not find out by itself
		// before the handler tries to complete the job.
		runWorker(t, ctx, qm, pgq.WithHeartbeatTimeout(time.Minute), pgq.WithDequeueTimeout(time.Minute),
			pgq.WithMaxConcurrentTasks(1))
		id, err := q.Enqueue(ctx, "lost", nil)
		if err != nil {
			t.Fatal(err)
		}
		receive(t, started, 10*time.Second, "the handler to start")
		if got := releaseAsStale(t, ctx, db, "lost"); len(got) != 1 {
			t.Fatalf("released %v, want [%d]", got, id)
		}
		other := uuid.New()
		claimed, err := dbgen.New().JobsClaim(ctx, db, dbgen.JobsClaimParams{
			Entrypoints: []string{"lost"}, Caps: []int32{1}, BatchSize: 1,
			QueueManagerID: uuid.NullUUID{UUID: other, Valid: true},
		})
		if err != nil || len(claimed) != 1 {
			t.Fatalf("the other worker's claim: %v, %v", claimed, err)
		}
		letGo()
		err = receive(t, result, 10*time.Second, "CompleteTx")
		if !errors.Is(err, pgq.ErrJobLost) || !strings.Contains(err.Error(), fmt.Sprint(id)) {
			t.Fatalf("CompleteTx of a lost job: %v; want an error naming job %d that matches ErrJobLost", err, id)
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM complete_results"); n != 0 {
			t.Errorf("%d result rows survived the rollback", n)
		}
		holder := scalar[string](t, db, "SELECT queue_manager_id::text || ' ' || status FROM pgqueuer WHERE id = $1", int64(id))
		if holder != other.String()+" picked" {
			t.Errorf("job %d is %q, want still picked by the other worker", id, holder)
		}
		if got := logOf(t, db, id); strings.Contains(got, "successful") {
			t.Errorf("job %d: log %q", id, got)
		}
	})
}

// TestCompleteTxNotFromAWorker: CompleteTx refuses a Job no worker handed
// out, naming it, and a nil job or tx, without panicking.
func TestCompleteTxNotFromAWorker(t *testing.T) {
	db, _ := pgqtest.NewDB(t, "pgx")
	ctx := testCtx(t)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := pgq.CompleteTx(ctx, tx, &pgq.Job{ID: 77}); err == nil || !strings.Contains(err.Error(), "77") {
		t.Errorf("CompleteTx of a made-up job: %v", err)
	}
	if err := pgq.CompleteTx(ctx, tx, nil); err == nil {
		t.Error("CompleteTx of a nil job: no error")
	}
	if err := pgq.CompleteTx(ctx, nil, &pgq.Job{ID: 78}); err == nil || !strings.Contains(err.Error(), "78") {
		t.Errorf("CompleteTx with a nil tx: %v", err)
	}
}

// TestCompleteTxCrashAfterCommit: a worker process SIGKILLed right after
// its handler's transaction with CompleteTx committed (the handler has not
// returned) leaves the job done: another worker, which rescues the jobs of
// dead workers, never runs it again, and its log says successful once.
func TestCompleteTxCrashAfterCommit(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		if _, err := db.ExecContext(ctx, "CREATE TABLE crash_marks (job_id bigint, pid int)"); err != nil {
			t.Fatal(err)
		}
		driver := "postgres"
		if strings.Contains(fmt.Sprintf("%T", db.Driver()), "stdlib") {
			driver = "pgx"
		}
		q := pgq.NewQueries(db)
		first := startWorker(t, driver, dsn, workerEnvMode+"=completetx")
		id, err := q.Enqueue(ctx, "crash", nil)
		if err != nil {
			t.Fatal(err)
		}
		// The mark is written in the handler's transaction with CompleteTx:
		// once it shows, that transaction has committed.
		waitMark(t, db, id, first.Process.Pid)
		if err := first.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = first.Wait()

		second := startWorker(t, driver, dsn, workerEnvMode+"=completetx")
		// The second worker is up and claiming: a job enqueued now runs
		// there; by then it has released whatever the first one left
		// stale (heartbeat timeout completeTxHeartbeat).
		time.Sleep(completeTxHeartbeat + time.Second)
		probe, err := q.Enqueue(ctx, "crash", nil)
		if err != nil {
			t.Fatal(err)
		}
		waitMark(t, db, probe, second.Process.Pid)
		time.Sleep(1500 * time.Millisecond)
		if n := scalar[int](t, db, "SELECT count(*) FROM crash_marks WHERE job_id = $1", int64(id)); n != 1 {
			t.Errorf("job %d ran %d times, want once", id, n)
		}
		if got := logOf(t, db, id); got != "queued picked successful" {
			t.Errorf("job %d: log %q, want %q", id, got, "queued picked successful")
		}
	})
}

// completeTxHeartbeat is the heartbeat timeout of completeTxProcess. Not
// less: under a loaded test run a 1 s timeout let a slow heartbeat miss
// its grace, and the worker stopped the handler before its commit and ran
// the job again, which the test's log check takes for a fault.
const completeTxHeartbeat = 3 * time.Second

// completeTxProcess is the worker process of TestCompleteTxCrashAfterCommit:
// its "crash" handler records its run in crash_marks in the transaction in
// which it completes the job, commits, and then blocks until its ctx ends.
func completeTxProcess(ctx context.Context, db *sql.DB, dsn string) int {
	qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
	_ = qm.Entrypoint("crash", func(ctx context.Context, j *pgq.Job) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, "INSERT INTO crash_marks (job_id, pid) VALUES ($1, $2)", int64(j.ID), os.Getpid()); err != nil {
			return err
		}
		if err := pgq.CompleteTx(ctx, tx, j); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	})
	fmt.Println("ready")
	err := qm.Run(ctx, pgq.WithHeartbeatTimeout(completeTxHeartbeat), pgq.WithShutdownTimeout(200*time.Millisecond),
		pgq.WithDequeueTimeout(200*time.Millisecond))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestHeartbeatSkipsLockedRows: a handler's transaction that has completed
// its job but not committed yet holds the job's row locked; the worker's
// heartbeat must not wait for it, or the heartbeats of the worker's other
// jobs stop meanwhile and another worker takes them for abandoned and runs
// them again. The heartbeat timeout is 3 s, not less: under a loaded
// test run (-race, every package at once) a 1 s timeout let a slow but
// working heartbeat miss its 750 ms of grace, and the worker stopped the
// handlers itself (errHoldExpired), which this test cannot tell apart.
// A heartbeat that waited for the lock would still be caught: the lock is
// held for 1.5 timeouts, well past the 0.75 after which the worker stops
// the other job's handler and the 1 after which the other worker rescues it.
func TestHeartbeatSkipsLockedRows(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		if _, err := db.ExecContext(ctx, resultsTable); err != nil {
			t.Fatal(err)
		}
		const hb = 3 * time.Second
		runs := make(chan pgq.JobID, 8)
		slowCommit := func(ctx context.Context, j *pgq.Job) error {
			runs <- j.ID
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if err := pgq.CompleteTx(ctx, tx, j); err != nil {
				return err
			}
			time.Sleep(hb * 3 / 2) // the row stays locked
			return tx.Commit()
		}
		other := func(ctx context.Context, j *pgq.Job) error {
			runs <- j.ID
			time.Sleep(2 * hb)
			return nil
		}
		q := pgq.NewQueries(db)
		var logs syncbuf.Buffer
		a := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn), pgq.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
		defer func() {
			if t.Failed() {
				t.Logf("worker a's log:\n%s", logs.String())
			}
		}()
		_ = a.Entrypoint("slow_commit", slowCommit)
		_ = a.Entrypoint("other", other)
		stopA := startRun(t, ctx, a, pgq.WithHeartbeatTimeout(hb))
		x, err := q.Enqueue(ctx, "slow_commit", nil)
		if err != nil {
			t.Fatal(err)
		}
		y, err := q.Enqueue(ctx, "other", nil)
		if err != nil {
			t.Fatal(err)
		}
		receive(t, runs, 10*time.Second, "first run")
		receive(t, runs, 10*time.Second, "second run")
		// A second worker that rescues stale jobs of both entrypoints.
		b := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = b.Entrypoint("slow_commit", slowCommit)
		_ = b.Entrypoint("other", other)
		stopB := startRun(t, ctx, b, pgq.WithHeartbeatTimeout(hb))
		time.Sleep(2*hb + hb/2)
		stopA()
		stopB()
		close(runs)
		for id := range runs {
			t.Errorf("job %d ran again (x = %d, y = %d)", id, x, y)
		}
		for _, id := range []pgq.JobID{x, y} {
			if got := logOf(t, db, id); got != "queued picked successful" {
				t.Errorf("job %d: log %q", id, got)
			}
		}
	})
}
