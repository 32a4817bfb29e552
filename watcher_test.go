package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// watchEnv is one driver's fresh database for a watcher test.
type watchEnv struct {
	driver string
	db     *sql.DB
	dsn    string
	ctx    context.Context
	q      *pgq.Queries
}

// watchDrivers runs f as a parallel subtest per driver.
func watchDrivers(t *testing.T, f func(t *testing.T, e *watchEnv)) {
	t.Helper()
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			f(t, newWatchEnv(t, d))
		})
	}
}

func newWatchEnv(t testing.TB, driver string) *watchEnv {
	db, dsn := pgqtest.NewDB(t, driver)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return &watchEnv{driver: driver, db: db, dsn: dsn, ctx: ctx, q: pgq.NewQueries(db)}
}

// listen returns the options that make a watcher listen: a lib/pq pool
// needs a DSN; a pgx pool lends it a connection.
func (e *watchEnv) listen() []pgq.WatcherOption {
	if e.driver == "postgres" {
		return []pgq.WatcherOption{pgq.WithListenDSN(e.dsn)}
	}
	return nil
}

// watcher starts a listening watcher, closed when the test ends.
func (e *watchEnv) watcher(t testing.TB, opts ...pgq.WatcherOption) *pgq.CompletionWatcher {
	t.Helper()
	return e.watcherRaw(t, append(e.listen(), opts...)...)
}

// watcherRaw starts a watcher with exactly opts.
func (e *watchEnv) watcherRaw(t testing.TB, opts ...pgq.WatcherOption) *pgq.CompletionWatcher {
	t.Helper()
	w, err := pgq.NewCompletionWatcher(e.ctx, e.db, opts...)
	if err != nil {
		t.Fatalf("NewCompletionWatcher: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return w
}

func (e *watchEnv) enqueue(t testing.TB, entrypoint string, n int) []pgq.JobID {
	t.Helper()
	jobs := make([]pgq.NewJob, n)
	for i := range jobs {
		jobs[i] = pgq.NewJob{Entrypoint: entrypoint}
	}
	ids, err := e.q.EnqueueBatch(e.ctx, jobs)
	if err != nil {
		t.Fatalf("EnqueueBatch: %v", err)
	}
	return ids
}

// deleteJobs finishes jobs the way PGQueuer deletes them: the job rows go
// and 'deleted' log rows come, in one statement. The job table's trigger
// announces the delete unless it is disabled.
func (e *watchEnv) deleteJobs(t testing.TB, ids ...pgq.JobID) {
	t.Helper()
	raw := make([]int64, len(ids))
	for i, id := range ids {
		raw[i] = int64(id)
	}
	_, err := e.db.ExecContext(e.ctx, `
		WITH d AS (DELETE FROM pgqueuer WHERE id = ANY($1::bigint[]) RETURNING id, priority, entrypoint)
		INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
		SELECT id, 'deleted', priority, entrypoint FROM d`, pq.Array(raw))
	if err != nil {
		t.Fatalf("delete jobs %v: %v", ids, err)
	}
}

// startWorker runs a QueueManager with handlers until the test ends.
func (e *watchEnv) startWorker(t testing.TB, handlers map[string]pgq.Handler, opts ...pgq.RunOption) {
	t.Helper()
	qm := pgq.NewQueueManager(e.db, pgq.WithListenDSN(e.dsn))
	for name, h := range handlers {
		if err := qm.Entrypoint(name, h); err != nil {
			t.Fatal(err)
		}
	}
	runWorker(t, e.ctx, qm, opts...)
}

// waitResult is the outcome of one WaitFor.
type waitResult struct {
	id     pgq.JobID
	status pgq.Status
	err    error
}

// waitAsync runs WaitFor(id) in a goroutine that the test waits for.
func waitAsync(t testing.TB, ctx context.Context, w *pgq.CompletionWatcher, id pgq.JobID) <-chan waitResult {
	ch := make(chan waitResult, 1)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		st, err := w.WaitFor(ctx, id)
		ch <- waitResult{id, st, err}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ch
}

// receive returns the result of a wait, failing the test if it takes
// longer than d (a bound for hangs, not a speed check).
func receive[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: no result within %v", what, d)
		panic("unreachable")
	}
}

// notWithin checks that ch yields nothing for d.
func notWithin[T any](t testing.TB, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s: returned early with %+v", what, v)
	case <-time.After(d):
	}
}

// eventually polls cond until it holds or 20 s have passed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitsPending waits until the watcher holds n waits.
func waitsPending(t testing.TB, w *pgq.CompletionWatcher, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d pending waits", n), func() bool {
		_, waits := pgq.WatcherPending(w)
		return waits == n
	})
}

// assertNothingPending checks that no wait is left in the watcher.
func assertNothingPending(t testing.TB, w *pgq.CompletionWatcher) {
	t.Helper()
	if ids, waits := pgq.WatcherPending(w); ids != 0 || waits != 0 {
		t.Fatalf("watcher still holds %d waits on %d ids", waits, ids)
	}
}

// settle waits until the watcher has run no query for a while: the
// look-ups of new waits are done.
func settle(t testing.TB, w *pgq.CompletionWatcher) {
	t.Helper()
	last, since := w.Refreshes(), time.Now()
	eventually(t, "the watcher to settle", func() bool {
		if r := w.Refreshes(); r != last {
			last, since = r, time.Now()
		}
		return last > 0 && time.Since(since) > 150*time.Millisecond
	})
}

func TestWatcherTerminalStatuses(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		// No safety poll: every completion must arrive by notification.
		w := e.watcher(t, pgq.WithRefreshInterval(time.Hour))
		ok := e.enqueue(t, "ok", 1)[0]
		fail := e.enqueue(t, "fail", 1)[0]
		held := e.enqueue(t, "held", 2)
		canceled, deleted := held[0], held[1]

		results := map[pgq.JobID]<-chan waitResult{}
		for _, id := range []pgq.JobID{ok, fail, canceled, deleted} {
			results[id] = waitAsync(t, e.ctx, w, id)
		}
		waitsPending(t, w, 4)
		settle(t, w)

		e.startWorker(t, map[string]pgq.Handler{
			"ok":   func(ctx context.Context, j *pgq.Job) error { return nil },
			"fail": func(ctx context.Context, j *pgq.Job) error { return errors.New("boom") },
		})
		if err := e.q.MarkJobAsCancelled(e.ctx, []pgq.JobID{canceled}); err != nil {
			t.Fatal(err)
		}
		e.deleteJobs(t, deleted)

		want := map[pgq.JobID]pgq.Status{
			ok: pgq.StatusSuccessful, fail: pgq.StatusException,
			canceled: pgq.StatusCanceled, deleted: pgq.StatusDeleted,
		}
		for id, st := range want {
			r := receive(t, results[id], 20*time.Second, fmt.Sprintf("WaitFor(%d)", id))
			if r.err != nil || r.status != st {
				t.Errorf("WaitFor(%d) = %q, %v; want %q", id, r.status, r.err, st)
			}
		}
		assertNothingPending(t, w)
	})
}

// TestWatcherFailedIsNotTerminal: a job held as 'failed' is still waited
// for; it ends when it is canceled.
func TestWatcherFailedIsNotTerminal(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		w := e.watcher(t, pgq.WithRefreshInterval(time.Hour))
		id := e.enqueue(t, "held", 1)[0]
		if _, err := e.db.ExecContext(e.ctx, `
			WITH u AS (UPDATE pgqueuer SET status = 'failed' WHERE id = $1 RETURNING id, priority, entrypoint)
			INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
			SELECT id, 'failed', priority, entrypoint FROM u`, int64(id)); err != nil {
			t.Fatal(err)
		}
		res := waitAsync(t, e.ctx, w, id)
		waitsPending(t, w, 1)
		settle(t, w)
		notWithin(t, res, 200*time.Millisecond, "WaitFor on a failed job")
		if err := e.q.MarkJobAsCancelled(e.ctx, []pgq.JobID{id}); err != nil {
			t.Fatal(err)
		}
		if r := receive(t, res, 20*time.Second, "WaitFor"); r.err != nil || r.status != pgq.StatusCanceled {
			t.Fatalf("WaitFor = %q, %v; want canceled", r.status, r.err)
		}
	})
}

// TestWatcherAlreadyFinished: jobs that finished before the wait began are
// reported by the look-up at the start of the wait, without a notification
// or the safety poll, and one query looks them all up.
func TestWatcherAlreadyFinished(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		ids := e.enqueue(t, "done", 100)
		e.deleteJobs(t, ids...)
		w := e.watcher(t, pgq.WithRefreshInterval(time.Hour))

		start := time.Now()
		st, err := w.WaitFor(e.ctx, ids[0])
		if err != nil || st != pgq.StatusDeleted {
			t.Fatalf("WaitFor = %q, %v", st, err)
		}
		t.Logf("already finished job reported after %v", time.Since(start))
		if got := w.Refreshes(); got != 1 {
			t.Errorf("%d status queries for one finished job, want 1", got)
		}

		time.Sleep(pgq.DefaultDebounce) // a quiet window
		all, err := w.WaitForAll(e.ctx, ids)
		if err != nil || len(all) != len(ids) {
			t.Fatalf("WaitForAll: %d results, %v", len(all), err)
		}
		for _, id := range ids {
			if all[id] != pgq.StatusDeleted {
				t.Fatalf("job %d: %q", id, all[id])
			}
		}
		if got := w.Refreshes(); got != 2 {
			t.Errorf("%d status queries in all, want 2 (one per wait)", got)
		}
		assertNothingPending(t, w)
	})
}

func TestWatcherManyWaiters(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		const n = 1000
		w := e.watcher(t, pgq.WithRefreshInterval(time.Hour))
		ids := e.enqueue(t, "many", n)
		start := time.Now()
		results := make(chan waitResult, n)
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Go(func() {
				st, err := w.WaitFor(e.ctx, id)
				results <- waitResult{id, st, err}
			})
		}
		waitsPending(t, w, n)
		e.startWorker(t, map[string]pgq.Handler{"many": func(ctx context.Context, j *pgq.Job) error { return nil }})
		wg.Wait()
		elapsed := time.Since(start)
		close(results)
		got := map[pgq.JobID]bool{}
		for r := range results {
			if r.err != nil || r.status != pgq.StatusSuccessful {
				t.Fatalf("WaitFor(%d) = %q, %v", r.id, r.status, r.err)
			}
			got[r.id] = true
		}
		if len(got) != n {
			t.Fatalf("%d distinct jobs reported, want %d", len(got), n)
		}
		// Refreshes and look-ups are each at most one per debounce window.
		queries := w.Refreshes()
		limit := 2 * (uint64(elapsed/pgq.DefaultDebounce) + 1)
		t.Logf("%d waiters released in %v with %d status queries (limit %d)", n, elapsed, queries, limit)
		if queries > limit {
			t.Errorf("%d status queries for %d waiters in %v; want at most %d", queries, n, elapsed, limit)
		}
		assertNothingPending(t, w)
	})
}

func TestWatcherWaitForAll(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		w := e.watcher(t, pgq.WithRefreshInterval(time.Hour), pgq.WithDebounce(0))
		ids := e.enqueue(t, "held", 3)
		other := e.enqueue(t, "other", 2)
		type all struct {
			res map[pgq.JobID]pgq.Status
			err error
		}
		done := make(chan all, 1)
		go func() {
			res, err := w.WaitForAll(e.ctx, append(ids, ids[0])) // a repeated id counts once
			done <- all{res, err}
		}()
		waitsPending(t, w, 1)
		if err := e.q.MarkJobAsCancelled(e.ctx, ids[:1]); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the first job's outcome", func() bool { ids, _ := pgq.WatcherPending(w); return ids == 2 })
		// Refreshes after the first job finished must not count it again.
		for _, o := range other {
			before := w.Refreshes()
			e.deleteJobs(t, o)
			eventually(t, "a refresh", func() bool { return w.Refreshes() > before })
		}
		notWithin(t, done, 100*time.Millisecond, "WaitForAll with two jobs still queued")
		if ids, _ := pgq.WatcherPending(w); ids != 2 {
			t.Errorf("watcher waits on %d ids, want the 2 unfinished", ids)
		}
		e.deleteJobs(t, ids[1:]...)
		r := receive(t, done, 20*time.Second, "WaitForAll")
		want := map[pgq.JobID]pgq.Status{ids[0]: pgq.StatusCanceled, ids[1]: pgq.StatusDeleted, ids[2]: pgq.StatusDeleted}
		if r.err != nil || fmt.Sprint(r.res) != fmt.Sprint(want) {
			t.Fatalf("WaitForAll = %v, %v; want %v", r.res, r.err, want)
		}
		assertNothingPending(t, w)

		if res, err := w.WaitForAll(e.ctx, nil); err != nil || len(res) != 0 {
			t.Fatalf("WaitForAll(nil) = %v, %v", res, err)
		}
	})
}

func TestWatcherWaitForFirst(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		w := e.watcher(t, pgq.WithRefreshInterval(time.Hour))
		ids := e.enqueue(t, "held", 3)
		type first struct {
			id  pgq.JobID
			st  pgq.Status
			err error
		}
		done := make(chan first, 1)
		go func() {
			id, st, err := w.WaitForFirst(e.ctx, ids)
			done <- first{id, st, err}
		}()
		waitsPending(t, w, 1)
		if err := e.q.MarkJobAsCancelled(e.ctx, ids[1:2]); err != nil {
			t.Fatal(err)
		}
		r := receive(t, done, 20*time.Second, "WaitForFirst")
		if r.err != nil || r.id != ids[1] || r.st != pgq.StatusCanceled {
			t.Fatalf("WaitForFirst = %d, %q, %v; want %d canceled", r.id, r.st, r.err, ids[1])
		}
		// The waits on the other two ended with it.
		assertNothingPending(t, w)

		// One of them finished already: it is returned.
		id, st, err := w.WaitForFirst(e.ctx, []pgq.JobID{ids[0], ids[1], ids[2]})
		if err != nil || id != ids[1] || st != pgq.StatusCanceled {
			t.Fatalf("WaitForFirst with a finished job = %d, %q, %v", id, st, err)
		}
		assertNothingPending(t, w)

		if _, _, err := w.WaitForFirst(e.ctx, nil); err == nil {
			t.Fatal("WaitForFirst(nil) returned no error")
		}
	})
}

func TestWatcherContextEnds(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		w := e.watcher(t)
		ids := e.enqueue(t, "held", 2)
		ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
		defer cancel()
		if st, err := w.WaitFor(ctx, ids[0]); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitFor = %q, %v; want DeadlineExceeded", st, err)
		}
		assertNothingPending(t, w)

		ctx, cancel = context.WithCancel(e.ctx)
		res := make(chan error, 1)
		go func() {
			_, err := w.WaitForAll(ctx, ids)
			res <- err
		}()
		waitsPending(t, w, 1)
		cancel()
		if err := receive(t, res, 10*time.Second, "WaitForAll"); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitForAll = %v; want Canceled", err)
		}
		assertNothingPending(t, w)

		// An ended ctx fails at once.
		if _, _, err := w.WaitForFirst(ctx, ids); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitForFirst with canceled ctx = %v", err)
		}
		assertNothingPending(t, w)
	})
}

func TestWatcherUnknownJob(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		w := e.watcher(t, pgq.WithRefreshInterval(time.Hour))
		const unknown = pgq.JobID(987654321)
		_, err := w.WaitFor(e.ctx, unknown)
		if !errors.Is(err, pgq.ErrJobNotFound) || !strings.Contains(err.Error(), "987654321") {
			t.Fatalf("WaitFor(unknown) = %v; want ErrJobNotFound naming the id", err)
		}
		assertNothingPending(t, w)

		known := e.enqueue(t, "held", 1)[0]
		if _, err := w.WaitForAll(e.ctx, []pgq.JobID{known, unknown}); !errors.Is(err, pgq.ErrJobNotFound) {
			t.Fatalf("WaitForAll with an unknown id = %v", err)
		}
		assertNothingPending(t, w)

		// A job row without any log row (inserted by hand) exists: it is
		// waited for, not reported missing.
		var bare int64
		if err := e.db.QueryRowContext(e.ctx,
			`INSERT INTO pgqueuer (priority, entrypoint, status) VALUES (0, 'bare', 'queued') RETURNING id`).Scan(&bare); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
		defer cancel()
		if _, err := w.WaitFor(ctx, pgq.JobID(bare)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitFor(job without log rows) = %v; want DeadlineExceeded", err)
		}
	})
}

// listenerPID returns the backend of the watcher's listener: the session
// of this database, other than the test's own, whose last statement was
// LISTEN (no worker runs in these tests). It waits for one to appear that
// is not old.
func listenerPID(t testing.TB, e *watchEnv, old int) int {
	t.Helper()
	var pid int
	eventually(t, "a listening backend", func() bool {
		err := e.db.QueryRowContext(e.ctx, `
			SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'
			ORDER BY backend_start DESC LIMIT 1`).Scan(&pid)
		if errors.Is(err, sql.ErrNoRows) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return pid != old
	})
	return pid
}

// TestWatcherListenerReconnects kills the listener's connection during a
// wait. With the safety poll an hour away, the wait ends only if the
// listener reconnects and the watcher refreshes.
func TestWatcherListenerReconnects(t *testing.T) {
	cases := []struct {
		driver string
		dsn    bool
	}{{"postgres", true}, {"pgx", false}, {"pgx", true}}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/dsn=%v", c.driver, c.dsn), func(t *testing.T) {
			t.Parallel()
			e := newWatchEnv(t, c.driver)
			opts := []pgq.WatcherOption{pgq.WithRefreshInterval(time.Hour)}
			if c.dsn {
				opts = append(opts, pgq.WithListenDSN(e.dsn))
			}
			w := e.watcherRaw(t, opts...)
			pid := listenerPID(t, e, 0)
			ids := e.enqueue(t, "held", 2)
			res := waitAsync(t, e.ctx, w, ids[0])
			waitsPending(t, w, 1)
			settle(t, w)

			// Finished while the listener is down: found by the refresh
			// after reconnecting.
			if _, err := e.db.ExecContext(e.ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
				t.Fatal(err)
			}
			e.deleteJobs(t, ids[0])
			if r := receive(t, res, 20*time.Second, "WaitFor across a reconnect"); r.err != nil || r.status != pgq.StatusDeleted {
				t.Fatalf("WaitFor = %q, %v", r.status, r.err)
			}
			newPID := listenerPID(t, e, pid)
			t.Logf("listener backend %d replaced by %d", pid, newPID)

			// The new connection listens: a later completion arrives by
			// notification.
			res = waitAsync(t, e.ctx, w, ids[1])
			waitsPending(t, w, 1)
			settle(t, w)
			e.deleteJobs(t, ids[1])
			if r := receive(t, res, 20*time.Second, "WaitFor after the reconnect"); r.err != nil || r.status != pgq.StatusDeleted {
				t.Fatalf("WaitFor = %q, %v", r.status, r.err)
			}
		})
	}
}

// TestWatcherWithoutNotifications: with the job table's trigger disabled,
// or with a lib/pq pool and no listen DSN, the safety poll still ends the
// wait.
func TestWatcherWithoutNotifications(t *testing.T) {
	cases := []struct {
		name, driver   string
		disableTrigger bool
	}{
		{"postgres/no-trigger", "postgres", true},
		{"pgx/no-trigger", "pgx", true},
		{"postgres/poll-only", "postgres", false}, // no WithListenDSN: no listener
	}
	const refresh = 500 * time.Millisecond
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newWatchEnv(t, c.driver)
			opts := []pgq.WatcherOption{pgq.WithRefreshInterval(refresh)}
			if c.disableTrigger {
				if _, err := e.db.ExecContext(e.ctx, "ALTER TABLE pgqueuer DISABLE TRIGGER tg_pgqueuer_changed"); err != nil {
					t.Fatal(err)
				}
				opts = append(opts, e.listen()...)
			}
			w := e.watcherRaw(t, opts...)
			id := e.enqueue(t, "held", 1)[0]
			res := waitAsync(t, e.ctx, w, id)
			waitsPending(t, w, 1)
			settle(t, w)
			start := time.Now()
			e.deleteJobs(t, id)
			r := receive(t, res, 20*time.Second, "WaitFor without notifications")
			if r.err != nil || r.status != pgq.StatusDeleted {
				t.Fatalf("WaitFor = %q, %v", r.status, r.err)
			}
			t.Logf("seen %v after the delete (refresh interval %v)", time.Since(start), refresh)
		})
	}
}

// TestWatcherLeadingEdge: with a debounce window of an hour, the first
// notification after a quiet period is served at once, and the next one
// within the window is held back.
func TestWatcherLeadingEdge(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		w := e.watcher(t, pgq.WithDebounce(time.Hour), pgq.WithRefreshInterval(time.Hour))
		// Let the refresh that follows the listener's connection pass
		// (it finds nothing to look up, so it opens no window).
		listenerPID(t, e, 0)
		time.Sleep(100 * time.Millisecond)
		ids := e.enqueue(t, "held", 3)
		// A wait that stays pending throughout, so that the windows stay
		// open (they close when no wait is left).
		kept := waitAsync(t, e.ctx, w, ids[2])
		waitsPending(t, w, 1)
		eventually(t, "the look-up of the kept wait", func() bool { return w.Refreshes() == 1 })
		first := waitAsync(t, e.ctx, w, ids[0])
		waitsPending(t, w, 2)
		e.deleteJobs(t, ids[0])
		if r := receive(t, first, 20*time.Second, "first completion"); r.err != nil || r.status != pgq.StatusDeleted {
			t.Fatalf("WaitFor = %q, %v", r.status, r.err)
		}
		if got := w.Refreshes(); got != 2 {
			t.Fatalf("%d status queries, want 2 (look-up and refresh)", got)
		}

		// Both windows are open now: a new wait is not looked up and a
		// completion is not refreshed for an hour.
		second := waitAsync(t, e.ctx, w, ids[1])
		waitsPending(t, w, 2)
		e.deleteJobs(t, ids[1])
		notWithin(t, second, 300*time.Millisecond, "second completion within the debounce window")
		if got := w.Refreshes(); got != 2 {
			t.Fatalf("%d status queries, want still 2", got)
		}
		notWithin(t, kept, 0, "the kept wait")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		for _, ch := range []<-chan waitResult{second, kept} {
			if r := receive(t, ch, 10*time.Second, "wait after Close"); !errors.Is(r.err, pgq.ErrClosed) {
				t.Fatalf("WaitFor after Close = %q, %v; want ErrClosed", r.status, r.err)
			}
		}
	})
}

// TestWatcherQuietWindow: a caller that waits for one job after another is
// answered at once each time, even with a debounce window of an hour: when
// a query ends the last wait the windows close, so the next wait's look-up
// and first refresh run at once. A second refresh within one wait's window
// is held back.
func TestWatcherQuietWindow(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		w := e.watcher(t, pgq.WithDebounce(time.Hour), pgq.WithRefreshInterval(time.Hour))
		listenerPID(t, e, 0)
		time.Sleep(100 * time.Millisecond)
		ids := e.enqueue(t, "seq", 5)
		for i, id := range ids[:3] {
			before := w.Refreshes()
			res := waitAsync(t, e.ctx, w, id)
			waitsPending(t, w, 1)
			eventually(t, "the look-up", func() bool { return w.Refreshes() == before+1 })
			e.deleteJobs(t, id)
			if r := receive(t, res, 10*time.Second, fmt.Sprintf("wait %d", i)); r.err != nil || r.status != pgq.StatusDeleted {
				t.Fatalf("wait %d: WaitFor = %q, %v", i, r.status, r.err)
			}
			if got := w.Refreshes() - before; got != 2 {
				t.Fatalf("wait %d: %d status queries, want 2 (look-up and refresh)", i, got)
			}
		}
		// Within one wait, the refresh after another job's end opens the
		// window, and the waited job's end waits for it.
		before := w.Refreshes()
		res := waitAsync(t, e.ctx, w, ids[4])
		waitsPending(t, w, 1)
		eventually(t, "the look-up", func() bool { return w.Refreshes() == before+1 })
		e.deleteJobs(t, ids[3])
		eventually(t, "the leading refresh", func() bool { return w.Refreshes() == before+2 })
		e.deleteJobs(t, ids[4])
		notWithin(t, res, 300*time.Millisecond, "a second refresh within the window")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if r := receive(t, res, 10*time.Second, "wait after Close"); !errors.Is(r.err, pgq.ErrClosed) {
			t.Fatalf("WaitFor after Close = %q, %v; want ErrClosed", r.status, r.err)
		}
	})
}

// TestWatcherCoalescesBurst finishes 2,000 jobs in about a second, in 200
// statements (so 200 notifications): the watcher runs about one refresh
// per 50 ms window.
func TestWatcherCoalescesBurst(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		const n, per = 2000, 10
		w := e.watcher(t, pgq.WithRefreshInterval(time.Hour))
		ids := e.enqueue(t, "burst", n)
		var wg sync.WaitGroup
		errs := make(chan error, n/100)
		for i := 0; i < n; i += 100 {
			wg.Go(func() {
				res, err := w.WaitForAll(e.ctx, ids[i:i+100])
				if err == nil && len(res) != 100 {
					err = fmt.Errorf("WaitForAll: %d results", len(res))
				}
				for id, st := range res {
					if st != pgq.StatusDeleted {
						err = fmt.Errorf("job %d: %q", id, st)
					}
				}
				errs <- err
			})
		}
		waitsPending(t, w, n/100)
		settle(t, w)
		before := w.Refreshes()
		start := time.Now()
		tick := time.NewTicker(5 * time.Millisecond)
		for i := 0; i < n; i += per {
			<-tick.C
			e.deleteJobs(t, ids[i:i+per]...)
		}
		tick.Stop()
		wg.Wait()
		elapsed := time.Since(start)
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		queries := w.Refreshes() - before
		limit := uint64(elapsed/pgq.DefaultDebounce) + 2
		t.Logf("%d completions in %d statements over %v: %d status queries (limit %d)", n, n/per, elapsed, queries, limit)
		if queries > limit {
			t.Errorf("%d status queries for a burst of %v; want at most %d (one per %v window)",
				queries, elapsed, limit, pgq.DefaultDebounce)
		}
		assertNothingPending(t, w)
	})
}

func TestWatcherClose(t *testing.T) {
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		w := e.watcher(t)
		ids := e.enqueue(t, "held", 3)
		res := make(chan error, 3)
		go func() { _, err := w.WaitFor(e.ctx, ids[0]); res <- err }()
		go func() { _, err := w.WaitForAll(e.ctx, ids); res <- err }()
		go func() { _, _, err := w.WaitForFirst(e.ctx, ids[1:]); res <- err }()
		waitsPending(t, w, 3)
		closed := make(chan error, 1)
		go func() { closed <- w.Close() }()
		if err := receive(t, closed, 10*time.Second, "Close"); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for range 3 {
			if err := receive(t, res, 10*time.Second, "wait"); !errors.Is(err, pgq.ErrClosed) {
				t.Fatalf("pending wait after Close = %v; want ErrClosed", err)
			}
		}
		if _, err := w.WaitFor(e.ctx, ids[0]); !errors.Is(err, pgq.ErrClosed) {
			t.Fatalf("WaitFor after Close = %v; want ErrClosed", err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}

		// A watcher whose ctx ends stops the same way, with an error that
		// matches ErrClosed and the ctx's; a wait whose ctx is the
		// watcher's, or derived from it, matches context.Canceled whether
		// it sees its own ctx's end or the watcher's first (repeated, as
		// the order varies; a ctx derived from the watcher's that the
		// cancellation has not reached yet forces the second order).
		for _, c := range []struct {
			name string
			ctx  string // the wait's: "other", "shared" (the watcher's), "lagging" (derived, not yet ended)
			want []error
			runs int
		}{
			{"wait after the watcher's ctx ended", "other", []error{pgq.ErrClosed, context.Canceled}, 1},
			{"wait whose ctx (the watcher's too) ended", "shared", []error{context.Canceled}, 10},
			{"wait whose ctx, derived from the watcher's, has yet to end", "lagging", []error{pgq.ErrClosed, context.Canceled}, 1},
		} {
			for range c.runs {
				ctx, cancel := context.WithCancel(e.ctx)
				w2, err := pgq.NewCompletionWatcher(ctx, e.db, e.listen()...)
				if err != nil {
					t.Fatal(err)
				}
				var waitCtx context.Context
				lag := &laggingCtx{Context: ctx, done: make(chan struct{})}
				switch c.ctx {
				case "other":
					waitCtx = e.ctx
				case "shared":
					waitCtx = ctx
				case "lagging":
					waitCtx = lag
				}
				r := waitAsync(t, waitCtx, w2, ids[0])
				waitsPending(t, w2, 1)
				cancel()
				got := receive(t, r, 10*time.Second, c.name).err
				for _, want := range c.want {
					if !errors.Is(got, want) {
						t.Fatalf("%s = %v; want an error matching %v", c.name, got, want)
					}
				}
				close(lag.done)
				if _, err := w2.WaitFor(e.ctx, ids[0]); !errors.Is(err, pgq.ErrClosed) || !errors.Is(err, context.Canceled) {
					t.Fatalf("%s: a later wait = %v; want an error matching ErrClosed and context.Canceled", c.name, err)
				}
				if err := w2.Close(); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// laggingCtx is a ctx derived from Context whose own end shows only once
// done is closed: a ctx derived from a watcher's that its cancellation has
// not reached yet (context.WithCancel cancels a parent's children one by
// one).
type laggingCtx struct {
	context.Context
	done chan struct{}
}

func (c *laggingCtx) Done() <-chan struct{} { return c.done }

func (c *laggingCtx) Err() error {
	select {
	case <-c.done:
		return c.Context.Err()
	default:
		return nil
	}
}

// unreachableDSN is a listen DSN where no server answers.
const unreachableDSN = "host=127.0.0.1 port=1 user=nobody dbname=nothing sslmode=disable connect_timeout=1"

// TestWatcherNoLeak runs every kind of listener, a reconnect and Close, and
// checks that no goroutine is left. It does not run in parallel, so other
// tests' goroutines do not disturb the count. A listen DSN where no server
// answers leaves the watcher polling, and Close still returns.
func TestWatcherNoLeak(t *testing.T) {
	cases := []struct {
		driver, listen string // listen: "" (none or borrowed), "dsn" or "unreachable"
	}{
		{"postgres", "dsn"}, {"postgres", ""}, {"pgx", ""}, {"pgx", "dsn"},
		{"postgres", "unreachable"}, {"pgx", "unreachable"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/listen=%s", c.driver, c.listen), func(t *testing.T) {
			checkLeaks(t) // first, so that it checks after the db is closed
			e := newWatchEnv(t, c.driver)
			opts := []pgq.WatcherOption{pgq.WithRefreshInterval(200 * time.Millisecond)}
			switch c.listen {
			case "dsn":
				opts = append(opts, pgq.WithListenDSN(e.dsn))
			case "unreachable":
				opts = append(opts, pgq.WithListenDSN(unreachableDSN))
			}
			w, err := pgq.NewCompletionWatcher(e.ctx, e.db, opts...)
			if err != nil {
				t.Fatal(err)
			}
			ids := e.enqueue(t, "held", 2)
			if c.driver == "pgx" && c.listen != "unreachable" || c.listen == "dsn" {
				pid := listenerPID(t, e, 0)
				if _, err := e.db.ExecContext(e.ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
					t.Fatal(err)
				}
				listenerPID(t, e, pid)
			}
			res := waitAsync(t, e.ctx, w, ids[0])
			waitsPending(t, w, 1)
			e.deleteJobs(t, ids[0])
			if r := receive(t, res, 20*time.Second, "WaitFor"); r.err != nil || r.status != pgq.StatusDeleted {
				t.Fatalf("WaitFor = %q, %v", r.status, r.err)
			}
			res = waitAsync(t, e.ctx, w, ids[1])
			waitsPending(t, w, 1)
			closed := make(chan error, 1)
			go func() { closed <- w.Close() }()
			if err := receive(t, closed, 10*time.Second, "Close"); err != nil {
				t.Fatal(err)
			}
			if r := receive(t, res, 10*time.Second, "pending wait"); !errors.Is(r.err, pgq.ErrClosed) {
				t.Fatalf("pending wait after Close = %v", r.err)
			}
		})
	}
}

// TestWatcherPrefix: a watcher on prefixed tables listens on the prefixed
// channel.
func TestWatcherPrefix(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			db, dsn := pgqtest.NewDB(t, d, pgqtest.Bare())
			e := &watchEnv{driver: d, db: db, dsn: dsn}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			e.ctx = ctx
			prefix := pgq.WithPrefix("acme_")
			if err := pgq.Install(ctx, db, prefix); err != nil {
				t.Fatal(err)
			}
			q := pgq.NewQueries(db, prefix)
			id, err := q.Enqueue(ctx, "p", nil)
			if err != nil {
				t.Fatal(err)
			}
			w := e.watcher(t, prefix, pgq.WithRefreshInterval(time.Hour))
			res := waitAsync(t, ctx, w, id)
			waitsPending(t, w, 1)
			settle(t, w)
			qm := pgq.NewQueueManager(db, prefix, pgq.WithListenDSN(dsn))
			if err := qm.Entrypoint("p", func(context.Context, *pgq.Job) error { return nil }); err != nil {
				t.Fatal(err)
			}
			if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)); err != nil {
				t.Fatal(err)
			}
			if r := receive(t, res, 20*time.Second, "WaitFor"); r.err != nil || r.status != pgq.StatusSuccessful {
				t.Fatalf("WaitFor = %q, %v", r.status, r.err)
			}
		})
	}
}

func TestWatcherOptions(t *testing.T) {
	e := newWatchEnv(t, "pgx")
	for _, o := range []pgq.WatcherOption{pgq.WithRefreshInterval(0), pgq.WithDebounce(-time.Millisecond), pgq.WithPrefix("Bad-Prefix")} {
		if w, err := pgq.NewCompletionWatcher(e.ctx, e.db, o); err == nil {
			w.Close()
			t.Errorf("option %T accepted", o)
		}
	}
	if _, err := pgq.NewCompletionWatcher(e.ctx, nil); err == nil {
		t.Error("nil db accepted")
	}
	bare, _ := pgqtest.NewDB(t, "pgx", pgqtest.Bare())
	if _, err := pgq.NewCompletionWatcher(e.ctx, bare); !errors.Is(err, pgq.ErrSchemaMissing) {
		t.Errorf("watcher without schema: %v; want ErrSchemaMissing", err)
	}
}

// TestWatcherStatusQueryUsesIndex checks that the status query (read from
// db/queries/log.sql) is served by pgqueuer_log_job_id_status.
func TestWatcherStatusQueryUsesIndex(t *testing.T) {
	query, params := namedQuery(t, "log.sql", "LogLatestStatus")
	// An index scan, index-only scan or bitmap index scan of the index.
	usesIndex := regexp.MustCompile(`Index (Only )?Scan (using|on) pgqueuer_log_job_id_status\b`)
	if len(params) != 1 || params[0] != "@ids" {
		t.Fatalf("LogLatestStatus takes %v, not just @ids:\n%s", params, query)
	}
	watchDrivers(t, func(t *testing.T, e *watchEnv) {
		// 20,000 jobs with 3 log rows each, as a busy log looks.
		if _, err := e.db.ExecContext(e.ctx, `
			INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, created)
			SELECT j, s::pgqueuer_status, 0, 'x', now() - (20000 - j) * interval '1 ms'
			FROM generate_series(1, 20000) AS j, unnest(ARRAY['queued', 'picked', 'successful']) AS s`); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.ExecContext(e.ctx, "VACUUM ANALYZE pgqueuer_log"); err != nil {
			t.Fatal(err)
		}
		// The id counts of typical refreshes. (Over a log this small, a
		// refresh of 1,000 ids is cheaper as a sequential scan, and the
		// planner rightly picks one.)
		for _, n := range []int{1, 100, 1000} {
			ids := make([]int64, n)
			for i := range ids {
				ids[i] = int64(1 + i*7)
			}
			text := explain(t, e.db, query, pq.Array(ids))
			if !usesIndex.MatchString(text) || strings.Contains(text, "Seq Scan") {
				t.Errorf("status query over %d ids does not use pgqueuer_log_job_id_status:\n%s", n, text)
			}
		}
	})
}
