package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// seedStats fills a database with jobs, log rows and statistics whose
// Stats are known exactly (see TestStats). Times are relative to now().
func seedStats(t *testing.T, db *sql.DB) {
	t.Helper()
	for _, s := range []string{
		// Job table. email/5: three due (waiting 30 s, 20 s, 10 s) and one
		// delayed by an hour; email/0: one running; report/1: two due (one
		// waiting for its retry) and one held.
		`INSERT INTO pgqueuer (id, priority, entrypoint, status, created, execute_after, attempts) VALUES
			(101, 5, 'email', 'queued', now() - interval '30 s', now() - interval '30 s', 0),
			(102, 5, 'email', 'queued', now() - interval '20 s', now() - interval '20 s', 0),
			(103, 5, 'email', 'queued', now() - interval '10 s', now() - interval '10 s', 0),
			(104, 5, 'email', 'queued', now(), now() + interval '1 hour', 0),
			(105, 0, 'email', 'picked', now() - interval '5 s', now() - interval '5 s', 0),
			(106, 1, 'report', 'queued', now() - interval '5 s', now() - interval '5 s', 0),
			(107, 1, 'report', 'queued', now() - interval '2 min', now() - interval '4 s', 1),
			(108, 1, 'report', 'failed', now() - interval '2 min', now() - interval '2 min', 1)`,
		// Statistics: two seconds in the window, one before it.
		`INSERT INTO pgqueuer_statistics (created, count, priority, status, entrypoint) VALUES
			(date_trunc('sec', now()) - interval '10 s', 7, 0, 'successful', 'email'),
			(date_trunc('sec', now()) - interval '20 s', 2, 5, 'exception', 'email'),
			(date_trunc('sec', now()) - interval '5 min', 4, 1, 'successful', 'report')`,
		// The log rows folded into those statistics (aggregated: they must
		// not be counted again), and rows not folded yet: three in the window,
		// one before it.
		`INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated)
			SELECT date_trunc('sec', now()) - interval '10 s', g, 'successful', 0, 'email', true FROM generate_series(1, 7) g`,
		`INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated, traceback) VALUES
			(date_trunc('sec', now()) - interval '20 s', 8, 'exception', 5, 'email', true, '{"exception_message": "boom"}'),
			(date_trunc('sec', now()) - interval '20 s', 9, 'exception', 5, 'email', true, '{"exception_message": "bang"}'),
			(date_trunc('sec', now()) - interval '5 min', 10, 'successful', 1, 'report', true, NULL),
			(now() - interval '1 s', 11, 'successful', 0, 'email', false, NULL),
			(now() - interval '1 s', 12, 'successful', 0, 'email', false, NULL),
			(now() - interval '2 s', 13, 'canceled', 1, 'report', false, NULL),
			(now() - interval '3 min', 14, 'successful', 1, 'report', false, NULL)`,
		// Errors: held job 108, the retry of job 107 (and an older one of
		// it), a retry error of a job that has finished since (not listed),
		// and an old exception.
		`INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated, traceback) VALUES
			(now() - interval '2 min', 108, 'failed', 1, 'report', false, '{"exception_message": "held"}'),
			(now() - interval '40 s', 107, 'queued', 1, 'report', false, '{"exception_message": "older retry"}'),
			(now() - interval '4 s', 107, 'queued', 1, 'report', false, '{"exception_message": "retry me"}'),
			(now() - interval '35 s', 15, 'queued', 1, 'report', false, '{"exception_message": "gone"}'),
			(now() - interval '2 hours', 16, 'exception', 1, 'report', false, '{"exception_message": "old"}')`,
	} {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("seeding: %v\n%s", err, s)
		}
	}
}

func TestStats(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		seedStats(t, db)
		s, err := pgq.NewQueries(db).Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checkSeededStats(t, s)

		// The picture is the same once a worker has folded every log row
		// into the statistics: nothing is counted twice or lost.
		foldByWorker(t, ctx, db)
		s2, err := pgq.NewQueries(db).Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(s2.Recent, s.Recent) || s2.Finished != s.Finished {
			t.Errorf("after folding: Recent %v (%d finished), before %v (%d)", s2.Recent, s2.Finished, s.Recent, s.Finished)
		}
	})
}

// foldByWorker runs a worker that folds the log into the statistics until
// no log row is left to fold.
func foldByWorker(t *testing.T, ctx context.Context, db *sql.DB) {
	t.Helper()
	qm := pgq.NewQueueManager(db)
	_ = qm.Entrypoint("none", func(context.Context, *pgq.Job) error { return nil })
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- qm.Run(rctx, pgq.WithStatisticsInterval(5*time.Millisecond)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	for scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log WHERE NOT aggregated") > 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the worker did not fold the log")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func checkSeededStats(t *testing.T, s pgq.Stats) {
	t.Helper()
	if age := time.Since(s.At); age < -time.Minute || age > time.Minute {
		t.Errorf("At = %v, %v from this clock", s.At, age)
	}
	if got := s.At.Sub(s.Since); got < time.Minute || got > time.Minute+time.Second || s.Since.Nanosecond() != 0 {
		t.Errorf("Since = %v, At = %v: want the start of the second a minute before", s.Since, s.At)
	}
	var depth []string
	for _, d := range s.Queue {
		depth = append(depth, d.Entrypoint+"/"+itoa(int64(d.Priority))+"/"+string(d.Status)+"="+itoa(d.Count))
	}
	want := []string{"email/5/queued=4", "email/0/picked=1", "report/1/queued=2", "report/1/failed=1"}
	if !reflect.DeepEqual(depth, want) {
		t.Errorf("Queue = %v, want %v", depth, want)
	}
	if len(s.Queue) == 4 {
		for i, lo := range []time.Duration{30 * time.Second, 0, 5 * time.Second, 0} {
			w := s.Queue[i].OldestWait
			if (lo == 0 && w != 0) || (lo > 0 && (w < lo || w > lo+30*time.Second)) {
				t.Errorf("Queue[%d] (%s) OldestWait = %v, want %v (+ the test's time)", i, depth[i], w, lo)
			}
		}
	}
	if s.OldestQueued < 30*time.Second || s.OldestQueued > time.Minute {
		t.Errorf("OldestQueued = %v, want 30s (+ the test's time)", s.OldestQueued)
	}
	wantRecent := []pgq.StatusCount{
		{Entrypoint: "email", Status: pgq.StatusSuccessful, Count: 9},
		{Entrypoint: "email", Status: pgq.StatusException, Count: 2},
		{Entrypoint: "report", Status: pgq.StatusQueued, Count: 3}, // the retries 4 s, 35 s and 40 s ago
		{Entrypoint: "report", Status: pgq.StatusCanceled, Count: 1},
	}
	if !reflect.DeepEqual(s.Recent, wantRecent) {
		t.Errorf("Recent = %+v,\n want %+v", s.Recent, wantRecent)
	}
	if s.Finished != 12 {
		t.Errorf("Finished = %d, want 12", s.Finished)
	}
	if span := s.At.Sub(s.Since).Seconds(); s.JobsPerSecond != 12/span {
		t.Errorf("JobsPerSecond = %v, want 12/%v", s.JobsPerSecond, span)
	}
	var errs []string
	for _, e := range s.Errors {
		errs = append(errs, itoa(int64(e.JobID))+" "+e.Entrypoint+" "+string(e.Status)+" "+e.Message)
	}
	wantErrs := []string{"107 report queued retry me", "9 email exception bang", "8 email exception boom",
		"108 report failed held", "16 report exception old"}
	// 8 and 9 were logged in the same microsecond: newest id first.
	if !reflect.DeepEqual(errs, wantErrs) {
		t.Errorf("Errors =\n%s\nwant\n%s", strings.Join(errs, "\n"), strings.Join(wantErrs, "\n"))
	}
	for _, e := range s.Errors {
		if e.Time.IsZero() || e.Time.After(s.At) || e.Time.Location() != time.UTC {
			t.Errorf("error of job %d at %v", e.JobID, e.Time)
		}
	}
}

func TestStatsOptions(t *testing.T) {
	t.Parallel()
	db, _ := pgqtest.NewDB(t, "pgx")
	ctx := testCtx(t)
	seedStats(t, db)
	q := pgq.NewQueries(db)

	s, err := q.Stats(ctx, pgq.WithStatsErrors(2), pgq.WithStatsWindow(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Errors) != 2 || s.Errors[0].JobID != 107 || s.Errors[1].JobID != 9 {
		t.Errorf("Errors = %+v, want jobs 107 and 9", s.Errors)
	}
	// In the last 15 s: email 7 + 2 successful, report 1 canceled, 1 retry.
	if s.Finished != 10 || len(s.Recent) != 3 {
		t.Errorf("15 s window: Finished %d, Recent %+v", s.Finished, s.Recent)
	}
	s, err = q.Stats(ctx, pgq.WithStatsErrors(0))
	if err != nil || s.Errors != nil || len(s.Queue) != 4 {
		t.Errorf("WithStatsErrors(0): errors %v, queue %v, %v", s.Errors, s.Queue, err)
	}
	for _, o := range []pgq.StatsOption{
		pgq.WithStatsErrors(-1), pgq.WithStatsErrors(pgq.MaxStatsErrors + 1),
		pgq.WithStatsWindow(0), pgq.WithStatsWindow(1500 * time.Millisecond), pgq.WithStatsWindow(25 * time.Hour),
	} {
		if _, err := q.Stats(ctx, o); err == nil || !strings.HasPrefix(err.Error(), "pgq: stats ") {
			t.Errorf("bad option: err = %v", err)
		}
	}

	// An empty queue.
	empty, _ := pgqtest.NewDB(t, "pgx")
	s, err = pgq.NewQueries(empty).Stats(ctx)
	if err != nil || len(s.Queue) != 0 || len(s.Recent) != 0 || len(s.Errors) != 0 || s.OldestQueued != 0 || s.JobsPerSecond != 0 {
		t.Errorf("empty queue: %+v, %v", s, err)
	}
	// No schema.
	bare, _ := pgqtest.NewDB(t, "pgx", pgqtest.Bare())
	if _, err := pgq.NewQueries(bare).Stats(ctx); !errors.Is(err, pgq.ErrSchemaMissing) {
		t.Errorf("no schema: %v", err)
	}
	// A prefix and a schema.
	if err := pgq.Install(ctx, bare, pgq.WithPrefix("app_"), pgq.WithSchema("jobs")); err != nil {
		t.Fatal(err)
	}
	pq := pgq.NewQueries(bare, pgq.WithPrefix("app_"), pgq.WithSchema("jobs"))
	if _, err := pq.Enqueue(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}
	s, err = pq.Stats(ctx)
	if err != nil || len(s.Queue) != 1 || s.Queue[0].Count != 1 || len(s.Recent) != 1 || s.Recent[0].Count != 1 {
		t.Errorf("prefixed: %+v, %v", s, err)
	}
}

// TestStatsUsesIndexes checks that every statement Stats sends to the log
// and statistics tables has an index path: with sequential scans disabled
// the planner takes one whenever there is one.
func TestStatsUsesIndexes(t *testing.T) {
	t.Parallel()
	db, _ := pgqtest.NewDB(t, "pgx")
	ctx := testCtx(t)
	seedStats(t, db)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	ex := &explainer{conn: conn}
	if _, err := pgq.NewQueries(ex).Stats(ctx); err != nil {
		t.Fatal(err)
	}
	// Clock, depth, recent, workers, watchers, paused, errors.
	if len(ex.plans) != 7 {
		t.Fatalf("explained %d statements, want 7", len(ex.plans))
	}
	perPriority := false
	for q, plan := range ex.plans {
		perPriority = perPriority || strings.Contains(plan, "Index Cond: ((priority = prios.priority)")
		if strings.Contains(plan, "Seq Scan on pgqueuer_log") || strings.Contains(plan, "Seq Scan on pgqueuer_statistics") {
			t.Errorf("sequential scan of the log or statistics:\n%s\n%s", q, plan)
		}
	}
	if !perPriority {
		t.Errorf("the statistics are not read per priority from their unique index:\n%v", ex.plans)
	}
}

// explainer is a pgq.DBTX that EXPLAINs each query before running it.
type explainer struct {
	conn  *sql.Conn
	mu    sync.Mutex
	plans map[string]string
}

func (e *explainer) explain(ctx context.Context, q string, args ...any) {
	rows, err := e.conn.QueryContext(ctx, "EXPLAIN "+q, args...)
	if err != nil {
		panic(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			panic(err)
		}
		b.WriteString(line + "\n")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.plans == nil {
		e.plans = map[string]string{}
	}
	e.plans[q] = b.String()
}

func (e *explainer) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return e.conn.ExecContext(ctx, q, args...)
}

func (e *explainer) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	e.explain(ctx, q, args...)
	return e.conn.QueryContext(ctx, q, args...)
}

func (e *explainer) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	e.explain(ctx, q, args...)
	return e.conn.QueryRowContext(ctx, q, args...)
}

func (e *explainer) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return e.conn.PrepareContext(ctx, q)
}
