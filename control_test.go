package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// logTrail returns a job's log statuses, oldest first, and the text of
// its tracebacks.
func logTrail(t *testing.T, db *sql.DB, id pgq.JobID) (statuses []string, tracebacks string) {
	t.Helper()
	rows, err := db.Query(`SELECT status::text, coalesce(traceback::text, '') FROM pgqueuer_log WHERE job_id = $1 ORDER BY id`, int64(id))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var st, tb string
		if err := rows.Scan(&st, &tb); err != nil {
			t.Fatal(err)
		}
		statuses, tracebacks = append(statuses, st), tracebacks+tb
	}
	return statuses, tracebacks
}

// waitStatus waits, up to ctx, for the job's latest log status to be want.
func waitStatus(t *testing.T, ctx context.Context, q *pgq.Queries, id pgq.JobID, want pgq.Status) {
	t.Helper()
	for {
		st, err := q.JobStatus(ctx, []pgq.JobID{id})
		if err != nil {
			t.Fatal(err)
		}
		if st[id] == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %d: status %q, want %q", id, st[id], want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestTimeoutAbandonsHandler: a handler that ignores its context, on an
// entrypoint with a concurrency limit of 1 and a timeout: its job fails as
// timed out after the timeout and grace, the slot is freed so the next
// job of the entrypoint runs, and the abandoned goroutine is counted until
// it returns.
func TestTimeoutAbandonsHandler(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		stuck, err := q.Enqueue(ctx, "slow", []byte("stuck"), pgq.WithPriority(1))
		if err != nil {
			t.Fatal(err)
		}
		next, err := q.Enqueue(ctx, "slow", []byte("next"))
		if err != nil {
			t.Fatal(err)
		}
		release := make(chan struct{})
		var once sync.Once
		defer once.Do(func() { close(release) })
		started := make(chan time.Time, 2)
		var causeOfStuck error
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		const timeout = 300 * time.Millisecond
		if err := qm.Entrypoint("slow", func(ctx context.Context, j *pgq.Job) error {
			started <- time.Now()
			if string(j.Payload) == "stuck" {
				<-release // ignores ctx
				causeOfStuck = context.Cause(ctx)
			}
			return nil
		}, pgq.WithConcurrencyLimit(1), pgq.WithTimeout(timeout)); err != nil {
			t.Fatal(err)
		}
		runWorker(t, ctx, qm)
		first := <-started
		var second time.Time
		select {
		case second = <-started:
		case <-ctx.Done():
			t.Fatal("the next job never started")
		}
		// 300 ms timeout + 100 ms grace (a tenth, at least 100 ms).
		if wait := second.Sub(first); wait < timeout+100*time.Millisecond {
			t.Errorf("next job started %v after the stuck one, before its timeout and grace", wait)
		}
		waitStatus(t, ctx, q, stuck, pgq.StatusException)
		waitStatus(t, ctx, q, next, pgq.StatusSuccessful)
		statuses, tb := logTrail(t, db, stuck)
		if strings.Join(statuses, ",") != "queued,picked,exception" || !strings.Contains(tb, "timed out after 300ms") {
			t.Errorf("stuck job log %v, traceback %s", statuses, tb)
		}
		if n := qm.AbandonedHandlers(); n != 1 {
			t.Errorf("AbandonedHandlers = %d while the stuck handler runs, want 1", n)
		}
		once.Do(func() { close(release) })
		eventually(t, "the abandoned handler counted out", func() bool { return qm.AbandonedHandlers() == 0 })
		if !errors.Is(causeOfStuck, pgq.ErrJobTimeout) {
			t.Errorf("cause of the stuck handler's context: %v, want ErrJobTimeout", causeOfStuck)
		}
		if n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer_log WHERE job_id = $1 AND status = 'successful'`, int64(stuck)); n != 0 {
			t.Errorf("the abandoned handler's late result was written (%d successful rows)", n)
		}
	})
}

// TestTimeoutRetriesAndJobOverride: a handler that honours its context
// sees ErrJobTimeout as the cause, and the retry policy applies; a job's
// own WithJobTimeout overrides its entrypoint's (none here).
func TestTimeoutRetriesAndJobOverride(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		id, err := q.Enqueue(ctx, "t", nil, pgq.WithJobTimeout(150*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var causes []error
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("t", func(ctx context.Context, j *pgq.Job) error {
			if j.Attempts > 0 {
				return nil
			}
			<-ctx.Done()
			mu.Lock()
			causes = append(causes, context.Cause(ctx))
			mu.Unlock()
			return ctx.Err()
		}, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Millisecond})); err != nil {
			t.Fatal(err)
		}
		runWorker(t, ctx, qm) // a drain may end while the retry waits out its delay
		waitStatus(t, ctx, q, id, pgq.StatusSuccessful)
		mu.Lock()
		defer mu.Unlock()
		statuses, tb := logTrail(t, db, id)
		if strings.Join(statuses, ",") != "queued,picked,queued,picked,successful" || !strings.Contains(tb, "timed out after 150ms") {
			t.Errorf("log %v, traceback %s", statuses, tb)
		}
		if len(causes) != 1 || !errors.Is(causes[0], pgq.ErrJobTimeout) {
			t.Errorf("causes %v, want one ErrJobTimeout", causes)
		}
	})
}

// TestSnooze: a snooze puts the job back without using an attempt, logged
// queued with the reason, and counts in the job's headers; past
// WithMaxSnoozes a snooze is a failed attempt.
func TestSnooze(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		once, err := q.Enqueue(ctx, "once", nil)
		if err != nil {
			t.Fatal(err)
		}
		loop, err := q.Enqueue(ctx, "loop", nil)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		seen := map[string][]string{} // entrypoint: attempts/snoozes of each run
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		record := func(j *pgq.Job) {
			mu.Lock()
			defer mu.Unlock()
			seen[j.Entrypoint] = append(seen[j.Entrypoint], string(rune('0'+j.Attempts))+"/"+j.Headers[pgq.HeaderSnoozes])
		}
		if err := qm.Entrypoint("once", func(ctx context.Context, j *pgq.Job) error {
			record(j)
			if j.Headers[pgq.HeaderSnoozes] == "" {
				return pgq.Snooze(50 * time.Millisecond)
			}
			return nil
		}, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 1})); err != nil {
			t.Fatal(err)
		}
		if err := qm.Entrypoint("loop", func(ctx context.Context, j *pgq.Job) error {
			record(j)
			return pgq.Snooze(-time.Second) // counts as 0
		}, pgq.WithMaxSnoozes(2)); err != nil {
			t.Fatal(err)
		}
		// Not a drain: a drain may end while the snoozed job waits out
		// its delay (it is not runnable then).
		runWorker(t, ctx, qm)
		waitStatus(t, ctx, q, once, pgq.StatusSuccessful)
		waitStatus(t, ctx, q, loop, pgq.StatusException)
		mu.Lock()
		defer mu.Unlock()
		if got := strings.Join(seen["once"], " "); got != "0/ 0/1" {
			t.Errorf("runs of the snoozed job (attempts/snoozes): %s, want 0/ 0/1", got)
		}
		statuses, tb := logTrail(t, db, once)
		if strings.Join(statuses, ",") != "queued,picked,queued,picked,successful" || !strings.Contains(tb, "snoozed for 50ms") {
			t.Errorf("log %v, traceback %s", statuses, tb)
		}
		if got := strings.Join(seen["loop"], " "); got != "0/ 0/1 0/2" {
			t.Errorf("runs of the looping job: %s, want 0/ 0/1 0/2", got)
		}
		statuses, tb = logTrail(t, db, loop)
		if statuses[len(statuses)-1] != "exception" || !strings.Contains(tb, "snoozed 2 times") {
			t.Errorf("looping job log %v, traceback %s", statuses, tb)
		}
	})
}

// TestMaxAttemptsAndDiscard: WithMaxAttempts at enqueue overrides the
// entrypoint's retry policy; Discard stops retries at once, even on an
// entrypoint that holds failed jobs.
func TestMaxAttemptsAndDiscard(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		three, err := q.Enqueue(ctx, "fail", []byte("3"), pgq.WithMaxAttempts(3))
		if err != nil {
			t.Fatal(err)
		}
		discarded, err := q.Enqueue(ctx, "fail", []byte("discard"))
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		runs := map[string]int{}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("fail", func(ctx context.Context, j *pgq.Job) error {
			mu.Lock()
			runs[string(j.Payload)]++
			mu.Unlock()
			if string(j.Payload) == "discard" {
				return pgq.Discard(errors.New("bad input"))
			}
			return errors.New("boom")
		}, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 5, InitialDelay: time.Millisecond}), pgq.OnFailure(pgq.Hold)); err != nil {
			t.Fatal(err)
		}
		runWorker(t, ctx, qm)                          // a drain may end while a retry waits out its delay
		waitStatus(t, ctx, q, three, pgq.StatusFailed) // held, as its entrypoint says
		waitStatus(t, ctx, q, discarded, pgq.StatusException)
		mu.Lock()
		defer mu.Unlock()
		if runs["3"] != 3 || runs["discard"] != 1 {
			t.Errorf("runs %v, want 3 for WithMaxAttempts(3) and 1 for Discard", runs)
		}
		statuses, tb := logTrail(t, db, discarded)
		if strings.Join(statuses, ",") != "queued,picked,exception" || !strings.Contains(tb, "bad input") {
			t.Errorf("discarded job log %v, traceback %s", statuses, tb)
		}
	})
}

// TestControlBadInput: invalid timeouts, attempts and snoozes are refused
// where they are given, naming the value.
func TestControlBadInput(t *testing.T) {
	qm := pgq.NewQueueManager(nil)
	h := func(context.Context, *pgq.Job) error { return nil }
	for _, c := range []struct {
		opt  pgq.EntrypointOption
		want string
	}{
		{pgq.WithTimeout(0), "timeout 0s"},
		{pgq.WithTimeout(-time.Second), "timeout -1s"},
		{pgq.WithTimeout(pgq.MaxTimeout + 1), "timeout 168h0m0.000000001s"},
		{pgq.WithMaxSnoozes(-1), "max snoozes must not be negative, got -1"},
	} {
		if err := qm.Entrypoint("e", h, c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Entrypoint with a bad option: %v, want it to say %q", err, c.want)
		}
	}
	q := pgq.NewQueries(nil)
	for _, c := range []struct {
		opt  pgq.EnqueueOption
		want string
	}{
		{pgq.WithJobTimeout(-time.Millisecond), "timeout -1ms"},
		{pgq.WithJobTimeout(8 * 24 * time.Hour), "timeout 192h0m0s"},
		{pgq.WithMaxAttempts(-2), "max attempts -2"},
	} {
		if _, err := q.Enqueue(context.Background(), "e", nil, c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Enqueue with a bad option: %v, want it to say %q", err, c.want)
		}
	}
	var se *pgq.SnoozeError
	if err := pgq.Snooze(-time.Second); !errors.As(err, &se) || se.Delay != 0 {
		t.Errorf("Snooze(-1s) = %v, want a zero delay", err)
	}
}
