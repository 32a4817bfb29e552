package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// GetJob shows a queued job's row, a running job's holder and heartbeat,
// and, once the job has finished, what its log keeps; JobHistory lists the
// log rows oldest first, with the traceback of the failed attempt.
func TestGetJobAndHistory(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		id, err := q.Enqueue(ctx, "browse", []byte(`{"n":1}`), pgq.WithPriority(4), pgq.WithDedupeKey("b1"),
			pgq.WithHeaders(map[string]string{"h": "v"}))
		if err != nil {
			t.Fatal(err)
		}
		info, err := q.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.ID != id || info.Status != pgq.StatusQueued || info.Finished || info.Priority != 4 ||
			info.DedupeKey != "b1" || string(info.Payload) != `{"n":1}` || info.Headers["h"] != "v" ||
			info.Created.IsZero() || !info.Heartbeat.IsZero() {
			t.Errorf("queued job: %+v", info)
		}

		running := make(chan struct{})
		release := make(chan struct{})
		qm := pgq.NewQueueManager(db)
		var tries atomic.Int32
		if err := qm.Entrypoint("browse", func(ctx context.Context, job *pgq.Job) error {
			if tries.Add(1) == 1 {
				return errors.New("first try fails")
			}
			close(running)
			<-release
			return nil
		}, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Millisecond})); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)) }()
		select {
		case <-running:
		case err := <-done:
			t.Fatalf("Run ended before the second try: %v", err)
		}
		info, err = q.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.Status != pgq.StatusPicked || info.WorkerID != qm.ID() || info.Heartbeat.IsZero() || info.Attempts != 1 {
			t.Errorf("running job: status %s worker %v (want %v) heartbeat %v attempts %d",
				info.Status, info.WorkerID, qm.ID(), info.Heartbeat, info.Attempts)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}

		info, err = q.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !info.Finished || info.Status != pgq.StatusSuccessful || info.Entrypoint != "browse" || info.Priority != 4 {
			t.Errorf("finished job: %+v", info)
		}
		hist, err := q.JobHistory(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var statuses []pgq.Status
		for i, e := range hist {
			statuses = append(statuses, e.Status)
			if i > 0 && e.At.Before(hist[i-1].At) {
				t.Errorf("history out of order: %v", hist)
			}
		}
		want := []pgq.Status{pgq.StatusQueued, pgq.StatusPicked, pgq.StatusQueued, pgq.StatusPicked, pgq.StatusSuccessful}
		if !slices.Equal(statuses, want) {
			t.Fatalf("history %v, want %v", statuses, want)
		}
		if !strings.Contains(string(hist[2].Traceback), "first try fails") || hist[4].Traceback != nil {
			t.Errorf("tracebacks: retried %s, successful %s", hist[2].Traceback, hist[4].Traceback)
		}

		_, err = q.GetJob(ctx, 987654321)
		if !errors.Is(err, pgq.ErrJobNotFound) || !strings.Contains(err.Error(), "987654321") {
			t.Errorf("unknown id: %v", err)
		}
		if hist, err := q.JobHistory(ctx, 987654321); err != nil || len(hist) != 0 {
			t.Errorf("history of an unknown id: %v, %v", hist, err)
		}
	})
}

// JobHistory reads the log through pgqueuer_log_job_id_status, however
// long the log.
func TestJobHistoryPlan(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		if _, err := db.ExecContext(ctx, `INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
			SELECT i / 4, 'queued', 0, 'plan' FROM generate_series(1, 200000) AS i`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "ANALYZE pgqueuer_log"); err != nil {
			t.Fatal(err)
		}
		query, args := boundQuery(t, "browse.sql", "LogJobHistory", map[string]any{"@job_id": int64(4242)})
		plan := explain(t, db, query, args...)
		if !strings.Contains(plan, "pgqueuer_log_job_id_status") || strings.Contains(plan, "Seq Scan") {
			t.Errorf("LogJobHistory plan:\n%s", plan)
		}
		query, args = boundQuery(t, "browse.sql", "JobsGet", map[string]any{"@id": int64(4242)})
		if plan := explain(t, db, query, args...); !strings.Contains(plan, "pgqueuer_pkey") {
			t.Errorf("JobsGet plan:\n%s", plan)
		}
	})
}
