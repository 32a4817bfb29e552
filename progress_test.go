package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// TestReportProgress: what a handler reports reaches GetJob, Progress and
// a WatchProgress live, while the job runs, and its last report is written
// before its outcome, so that it is readable once the job has finished.
func TestReportProgress(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		step := steppedWork(qm)
		w, id := watchedJob(t, ctx, db, dsn)
		if p, err := w.Progress(ctx, id); err != nil || !p.Updated.IsZero() || p.JobID != id {
			t.Fatalf("Progress before any report = %+v, %v; want none", p, err)
		}
		runWorker(t, ctx, qm)

		var (
			mu   sync.Mutex
			seen []pgq.Progress
		)
		got := make(chan pgq.Progress, 10)
		var watch sync.WaitGroup
		var st pgq.Status
		var werr error
		watch.Go(func() {
			st, werr = w.WatchProgress(ctx, id, func(p pgq.Progress) {
				mu.Lock()
				seen = append(seen, p)
				mu.Unlock()
				got <- p
			})
		})
		// The refresh interval is a minute: each report arrives by its
		// notification.
		for _, want := range []float64{0.25, 0.5} {
			select {
			case p := <-got:
				if p.Fraction != want || p.JobID != id {
					t.Fatalf("WatchProgress got %+v, want fraction %v", p, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no progress %v within 10 s", want)
			}
			info, err := q.GetJob(ctx, id)
			if err != nil || info.Progress == nil || info.Progress.Fraction != want || info.Status != pgq.StatusPicked {
				t.Fatalf("GetJob = %+v (progress %+v), %v; want picked at %v", info, info.Progress, err, want)
			}
			step <- struct{}{}
		}
		watch.Wait()
		if werr != nil || st != pgq.StatusSuccessful {
			t.Fatalf("WatchProgress = %v, %v", st, werr)
		}
		mu.Lock()
		last := seen[len(seen)-1]
		mu.Unlock()
		if last.Fraction != 1 || last.Note != "done" {
			t.Fatalf("last progress seen %+v, want 1 done", last)
		}
		info, err := q.GetJob(ctx, id)
		if err != nil || !info.Finished || info.Progress == nil || info.Progress.Fraction != 1 {
			t.Fatalf("GetJob after the end = %+v, %v; want finished with progress 1", info, err)
		}
	})
}

// TestWatchProgressWhileItsListenerConnects: a report written while the
// watcher's progress listener is not yet listening (after WatchProgress's
// first read), or is reconnecting, reaches fn as soon as the LISTEN is in
// place, not at the next refresh (a minute here). The listener reaches the
// server through a proxy that holds its connections while closed.
func TestWatchProgressWhileItsListenerConnects(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		proxied, g := gatedProxy(t, dsn)
		q := pgq.NewQueries(db)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		step := steppedWork(qm)
		w, id := watchedJob(t, ctx, db, proxied)
		written := func(want float64) {
			t.Helper()
			eventually(t, fmt.Sprintf("progress %v written", want), func() bool {
				info, err := q.GetJob(ctx, id)
				return err == nil && info.Progress != nil && info.Progress.Fraction == want
			})
		}
		arrives := func(got <-chan pgq.Progress, want float64) {
			t.Helper()
			select {
			case p := <-got:
				if p.Fraction != want {
					t.Fatalf("WatchProgress got %+v, want fraction %v", p, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("progress %v not seen within 10 s of the listener's connection", want)
			}
		}

		// The first WatchProgress starts the progress listener, whose
		// connection waits at the closed gate; its first read finds nothing.
		g.Close()
		got := make(chan pgq.Progress, 10)
		var watch sync.WaitGroup
		var st pgq.Status
		var werr error
		watch.Go(func() {
			st, werr = w.WatchProgress(ctx, id, func(p pgq.Progress) { got <- p })
		})
		eventually(t, "the progress listener at the gate", func() bool { return g.Held() > 0 })
		runWorker(t, ctx, qm)
		written(0.25)
		g.Open()
		arrives(got, 0.25)

		// The listener's connection ends; it reconnects, through the
		// closed gate, while the next report is written.
		g.Close()
		if _, err := db.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name LIKE 'pgq progress %'`); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the progress listener back at the gate", func() bool { return g.Held() > 0 })
		step <- struct{}{}
		written(0.5)
		g.Open()
		arrives(got, 0.5)

		step <- struct{}{}
		watch.Wait()
		if werr != nil || st != pgq.StatusSuccessful {
			t.Fatalf("WatchProgress = %v, %v", st, werr)
		}
	})
}

// steppedWork registers entrypoint "work" on qm, whose handler reports
// 0.25 ("step a") and 0.5 ("step b"), each time waiting for a value on the
// returned channel before going on, then 1 ("done") and returns.
func steppedWork(qm *pgq.QueueManager) chan<- struct{} {
	step := make(chan struct{})
	_ = qm.Entrypoint("work", func(ctx context.Context, job *pgq.Job) error {
		for i, f := range []float64{0.25, 0.5} {
			if err := pgq.ReportProgress(ctx, f, "step "+string(rune('a'+i))); err != nil {
				return err
			}
			select {
			case <-step:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return pgq.ReportProgress(ctx, 1, "done")
	})
	return step
}

// watchedJob enqueues a "work" job and returns it with a CompletionWatcher
// listening on listenDSN that polls only every minute, closed with t.
func watchedJob(t *testing.T, ctx context.Context, db *sql.DB, listenDSN string) (*pgq.CompletionWatcher, pgq.JobID) {
	t.Helper()
	w, err := pgq.NewCompletionWatcher(ctx, db, pgq.WithListenDSN(listenDSN), pgq.WithRefreshInterval(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	id, err := pgq.NewQueries(db).Enqueue(ctx, "work", nil)
	if err != nil {
		t.Fatal(err)
	}
	return w, id
}

// TestReportProgressBadInput: a fraction outside [0, 1], a bad note, or a
// call outside a handler is an error naming what is wrong.
func TestReportProgressBadInput(t *testing.T) {
	if err := pgq.ReportProgress(context.Background(), 0.5, ""); !errors.Is(err, pgq.ErrNotInHandler) {
		t.Errorf("outside a handler: %v", err)
	}
	for _, c := range []struct {
		f    float64
		note string
		want string
	}{
		{-0.1, "", "progress -0.1 is outside [0, 1]"},
		{1.5, "", "progress 1.5 is outside [0, 1]"},
		{math.NaN(), "", "progress NaN is outside [0, 1]"},
		{math.Inf(1), "", "progress +Inf is outside [0, 1]"},
		{0.5, strings.Repeat("x", pgq.MaxProgressNote+1), "note of 1025 bytes is longer than MaxProgressNote"},
		{0.5, "a\x00b", "contains a NUL byte"},
		{0.5, "\xff", "not valid UTF-8"},
	} {
		err := pgq.ReportProgress(context.Background(), c.f, c.note)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReportProgress(%v, %.20q) = %v, want %q", c.f, c.note, err, c.want)
		}
	}
}

// TestProgressCoalesced: handlers that report in a tight loop get their
// progress written at most every ProgressInterval per job, many jobs per
// statement, counted by triggers on the progress table.
func TestProgressCoalesced(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		for _, s := range []string{
			`CREATE TABLE progress_rows (at timestamptz DEFAULT clock_timestamp())`,
			`CREATE TABLE progress_statements (at timestamptz DEFAULT clock_timestamp())`,
			`CREATE FUNCTION count_progress_row() RETURNS trigger AS $$
			 BEGIN INSERT INTO progress_rows DEFAULT VALUES; RETURN NULL; END $$ LANGUAGE plpgsql`,
			`CREATE FUNCTION count_progress_statement() RETURNS trigger AS $$
			 BEGIN INSERT INTO progress_statements DEFAULT VALUES; RETURN NULL; END $$ LANGUAGE plpgsql`,
			`CREATE TRIGGER r AFTER INSERT OR UPDATE ON pgqueuer_pgq_progress FOR EACH ROW EXECUTE FUNCTION count_progress_row()`,
			`CREATE TRIGGER s AFTER INSERT ON pgqueuer_pgq_progress FOR EACH STATEMENT EXECUTE FUNCTION count_progress_statement()`,
		} {
			if _, err := db.ExecContext(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		const jobs, runFor = 20, 2 * time.Second
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		var reports sync.Map
		_ = qm.Entrypoint("busy", func(ctx context.Context, job *pgq.Job) error {
			n := 0
			for start := time.Now(); time.Since(start) < runFor; n++ {
				if err := pgq.ReportProgress(ctx, float64(time.Since(start))/float64(runFor), "busy"); err != nil {
					return err
				}
				time.Sleep(time.Millisecond)
			}
			reports.Store(job.ID, n)
			return pgq.ReportProgress(ctx, 1, "done")
		})
		q := pgq.NewQueries(db)
		ids := make([]pgq.JobID, jobs)
		for i := range ids {
			id, err := q.Enqueue(ctx, "busy", nil)
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = id
		}
		drain(t, ctx, qm, pgq.WithMaxConcurrentTasks(jobs))
		rows := scalar[int](t, db, `SELECT count(*) FROM progress_rows`)
		statements := scalar[int](t, db, `SELECT count(*) FROM progress_statements`)
		total := 0
		reports.Range(func(_, v any) bool { total += v.(int); return true })
		// Per job: one write per interval while it runs, the first at
		// once, and its last report when it returns.
		perJob := int(runFor/pgq.ProgressInterval) + 3
		t.Logf("%d reports, %d rows written in %d statements (at most %d rows per job)", total, rows, statements, perJob)
		if rows > jobs*perJob {
			t.Errorf("%d progress rows written for %d jobs; want at most %d per job", rows, jobs, perJob)
		}
		if statements > perJob+jobs {
			t.Errorf("%d write statements; want writes batched across jobs (at most %d)", statements, perJob+jobs)
		}
		for _, id := range ids {
			p, err := q.Progress(ctx, id)
			if err != nil || p.Fraction != 1 || p.Note != "done" {
				t.Errorf("job %d: progress %+v, %v; want its last report", id, p, err)
			}
		}
	})
}
