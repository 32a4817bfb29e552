package pgq_test

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// TestPauseResume: a paused entrypoint's jobs (plain and under a
// concurrency limit) are enqueued but not claimed while other entrypoints'
// jobs enqueued after the pause run; the pause shows in Paused and Stats
// and outlives the worker; Resume wakes an idle worker whose poll is an
// hour away, so its notification, not the poll, brings the jobs out.
func TestPauseResume(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		for _, ep := range []string{"p", "pl"} {
			if err := q.Pause(ctx, ep); err != nil {
				t.Fatalf("Pause(%q): %v", ep, err)
			}
		}
		if err := q.Pause(ctx, "p"); err != nil { // twice: no error
			t.Fatalf("Pause again: %v", err)
		}
		enqueue := func(ep string, n int) {
			t.Helper()
			for range n {
				if _, err := q.Enqueue(ctx, ep, nil); err != nil {
					t.Fatalf("Enqueue(%q) while paused: %v", ep, err)
				}
			}
		}
		left := func(ep string) int {
			return scalar[int](t, db, `SELECT count(*) FROM pgqueuer WHERE entrypoint = $1`, ep)
		}
		picked := func(ep string) int {
			return scalar[int](t, db, `SELECT count(*) FROM pgqueuer_log WHERE entrypoint = $1 AND status = 'picked'`, ep)
		}
		newWorker := func() *pgq.QueueManager {
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			ok := func(context.Context, *pgq.Job) error { return nil }
			for _, ep := range []string{"p", "other"} {
				if err := qm.Entrypoint(ep, ok); err != nil {
					t.Fatal(err)
				}
			}
			if err := qm.Entrypoint("pl", ok, pgq.WithConcurrencyLimit(2)); err != nil {
				t.Fatal(err)
			}
			return qm
		}
		enqueue("p", 5)
		enqueue("pl", 5)

		// Two runs, one after the other: the pause is in the database, not
		// in a worker.
		for round := range 2 {
			wctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- newWorker().Run(wctx) }()
			enqueue("other", 3)
			waitFor(t, 20*time.Second, "the other entrypoint's jobs to run", func() bool { return left("other") == 0 })
			for _, ep := range []string{"p", "pl"} {
				if n, c := left(ep), picked(ep); n != 5 || c != 0 {
					t.Fatalf("round %d: paused %q: %d jobs left, %d claims; want 5 and 0", round, ep, n, c)
				}
			}
			stop()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
		}

		paused, err := q.Paused(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(paused) != 2 || paused[0].Entrypoint != "p" || paused[1].Entrypoint != "pl" || paused[0].Since.IsZero() {
			t.Fatalf("Paused = %+v, want p and pl with their times", paused)
		}
		st, err := q.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(st.Paused, paused, func(a, b pgq.PausedEntrypoint) bool { return a.Entrypoint == b.Entrypoint }) {
			t.Fatalf("Stats.Paused = %+v, want %+v", st.Paused, paused)
		}

		// An idle worker that would not poll for an hour: only Resume's
		// notification can wake it in time.
		runWorker(t, ctx, newWorker(), pgq.WithDequeueTimeout(time.Hour))
		enqueue("other", 1) // and wait until it is idle, listening
		waitFor(t, 20*time.Second, "the worker to be idle", func() bool { return left("other") == 0 })
		for _, ep := range []string{"p", "pl"} {
			if err := q.Resume(ctx, ep); err != nil {
				t.Fatalf("Resume(%q): %v", ep, err)
			}
		}
		waitFor(t, 20*time.Second, "the resumed jobs to run", func() bool { return left("p")+left("pl") == 0 })
		if err := q.Resume(ctx, "p"); err != nil { // not paused: no error
			t.Fatalf("Resume again: %v", err)
		}
		if paused, err := q.Paused(ctx); err != nil || len(paused) != 0 {
			t.Fatalf("Paused after Resume = %+v, %v; want none", paused, err)
		}
	})
}

// TestPauseLetsRunningJobsFinish: pausing an entrypoint while one of its
// jobs runs lets that job finish successfully, and the next one waits.
func TestPauseLetsRunningJobsFinish(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		started, release := make(chan struct{}, 1), make(chan struct{})
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("p", func(ctx context.Context, j *pgq.Job) error {
			select {
			case started <- struct{}{}:
			default:
			}
			<-release
			return nil
		})
		_ = qm.Entrypoint("other", func(context.Context, *pgq.Job) error { return nil })
		runWorker(t, ctx, qm, pgq.WithBatchSize(1), pgq.WithMaxConcurrentTasks(4))
		first, err := q.Enqueue(ctx, "p", nil)
		if err != nil {
			t.Fatal(err)
		}
		<-started
		if err := q.Pause(ctx, "p"); err != nil {
			t.Fatal(err)
		}
		second, err := q.Enqueue(ctx, "p", nil)
		if err != nil {
			t.Fatal(err)
		}
		close(release)
		if _, err := q.Enqueue(ctx, "other", nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "the running job and the other entrypoint's to finish", func() bool {
			return scalar[int](t, db, `SELECT count(*) FROM pgqueuer WHERE entrypoint = 'other' OR id = $1`, first) == 0
		})
		st, err := q.JobStatus(ctx, []pgq.JobID{first, second})
		if err != nil {
			t.Fatal(err)
		}
		if st[first] != pgq.StatusSuccessful || st[second] != pgq.StatusQueued {
			t.Fatalf("statuses %v: want the running job successful, the next queued", st)
		}
	})
}

// TestPauseBadInput: an empty entrypoint is refused; one that nothing
// uses may be paused.
func TestPauseBadInput(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		if err := q.Pause(ctx, ""); err == nil || !strings.Contains(err.Error(), "empty entrypoint") {
			t.Errorf("Pause(\"\") = %v, want an empty entrypoint error", err)
		}
		if err := q.Resume(ctx, ""); err == nil || !strings.Contains(err.Error(), "empty entrypoint") {
			t.Errorf("Resume(\"\") = %v, want an empty entrypoint error", err)
		}
		if err := q.Pause(ctx, "nobody.uses.this"); err != nil {
			t.Fatalf("Pause of an unknown entrypoint: %v", err)
		}
		if p, err := q.Paused(ctx); err != nil || len(p) != 1 || p[0].Entrypoint != "nobody.uses.this" {
			t.Fatalf("Paused = %+v, %v", p, err)
		}
	})
}
