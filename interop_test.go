package pgq_test

// These tests act out the other side of a shared queue with SQL of the
// shapes PGQueuer (v1.x) runs, to check that a PGQueuer producer feeds pgq
// workers and that pgq's jobs and outcomes are what PGQueuer expects.

import (
	"context"
	"database/sql"
	"strconv"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// A PGQueuer producer: unnest of int[], text[], bytea[], interval[] and
// jsonb[] into the job table, with the queued log rows.
const pgqueuerEnqueue = `
WITH inserted AS (
    INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, dedupe_key, headers, status)
    VALUES (unnest($1::int[]), unnest($2::text[]), unnest($3::bytea[]), unnest($4::interval[]) + now(),
            unnest($5::text[]), unnest($6::jsonb[]), 'queued')
    RETURNING id, entrypoint, status, priority)
INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority)
SELECT id, 'queued', entrypoint, priority FROM inserted
RETURNING job_id`

// A PGQueuer worker: claim by priority with SKIP LOCKED, mark picked, log.
const pgqueuerDequeue = `
WITH next AS (
    SELECT id FROM pgqueuer
    WHERE entrypoint = ANY($1) AND status = 'queued' AND execute_after < now()
    ORDER BY priority DESC, id ASC
    FOR UPDATE SKIP LOCKED LIMIT $2),
updated AS (
    UPDATE pgqueuer SET status = 'picked', updated = now(), heartbeat = now(), queue_manager_id = $3
    WHERE id = ANY(SELECT id FROM next) RETURNING *),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority)
    SELECT id, status, entrypoint, priority FROM updated)
SELECT id, payload, headers::text FROM updated ORDER BY priority DESC, id ASC`

// A PGQueuer worker logging outcomes: delete the row, log the status.
const pgqueuerLogJobs = `
WITH job_status AS (
    SELECT unnest($1::bigint[]) AS id, unnest($2::pgqueuer_status[]) AS status),
deleted AS (
    DELETE FROM pgqueuer WHERE id = ANY(SELECT id FROM job_status) RETURNING id, entrypoint, priority)
INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority)
SELECT d.id, s.status, d.entrypoint, d.priority FROM deleted d JOIN job_status s ON s.id = d.id`

// PGQueuer's completion look-up: the latest status per job.
const pgqueuerJobStatus = `
SELECT DISTINCT ON (job_id) job_id, status::text FROM pgqueuer_log
WHERE job_id = ANY($1) ORDER BY job_id, created DESC`

func TestPGQueuerProducerPgqWorker(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		var id int64
		err := db.QueryRowContext(ctx, pgqueuerEnqueue, "{3}", "{py_task}", `{"\\x7b7d"}`, "{0 seconds}", "{py-key}",
			`{"{\"traceparent\": \"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\", \"n\": 1}"}`).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		var got *pgq.Job
		_ = qm.Entrypoint("py_task", func(ctx context.Context, j *pgq.Job) error { got = j; return nil })
		drain(t, ctx, qm)
		if got == nil || int64(got.ID) != id || string(got.Payload) != "{}" || got.Priority != 3 || got.DedupeKey != "py-key" ||
			got.Headers["traceparent"] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" || got.Headers["n"] != "1" {
			t.Fatalf("job %+v", got)
		}
		// PGQueuer's own status look-up sees the outcome pgq logged.
		var st string
		if err := db.QueryRowContext(ctx, pgqueuerJobStatus, "{"+itoa(id)+"}").Scan(&id, &st); err != nil || st != "successful" {
			t.Fatalf("PGQueuer sees %q, %v", st, err)
		}
	})
}

func TestPgqProducerPGQueuerWorker(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		ids, err := q.EnqueueBatch(ctx, []pgq.NewJob{
			{Entrypoint: "go_task", Payload: []byte("a"), Priority: 1, Headers: map[string]string{"k": "v"}},
			{Entrypoint: "go_task", Payload: []byte("b"), Priority: 9},
		})
		if err != nil {
			t.Fatal(err)
		}
		w, err := pgq.NewCompletionWatcher(ctx, db, pgq.WithListenDSN(dsn))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		waited := make(chan map[pgq.JobID]pgq.Status, 1)
		go func() {
			st, err := w.WaitForAll(ctx, ids)
			if err != nil {
				t.Error(err)
			}
			waited <- st
		}()
		// The PGQueuer worker claims both, highest priority first.
		rows, err := db.QueryContext(ctx, pgqueuerDequeue, "{go_task}", 10, "5b7f4f4e-1b7e-4c55-9a50-8ef1f0f0a001")
		if err != nil {
			t.Fatal(err)
		}
		var order []string
		var headers []sql.NullString
		var claimed []string
		for rows.Next() {
			var id int64
			var p []byte
			var h sql.NullString
			if err := rows.Scan(&id, &p, &h); err != nil {
				t.Fatal(err)
			}
			order = append(order, string(p))
			headers = append(headers, h)
			claimed = append(claimed, itoa(id))
		}
		rows.Close()
		if len(order) != 2 || order[0] != "b" || order[1] != "a" || headers[1].String != `{"k": "v"}` || headers[0].Valid {
			t.Fatalf("PGQueuer claimed %v with headers %v", order, headers)
		}
		time.Sleep(50 * time.Millisecond)
		if _, err := db.ExecContext(ctx, pgqueuerLogJobs, "{"+claimed[0]+","+claimed[1]+"}", "{successful,exception}"); err != nil {
			t.Fatal(err)
		}
		select {
		case st := <-waited:
			if st[ids[1]] != pgq.StatusSuccessful || st[ids[0]] != pgq.StatusException {
				t.Fatalf("pgq watcher saw %v", st)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("the pgq watcher did not see PGQueuer's completions")
		}
	})
}

func TestParsePGQueuerEvents(t *testing.T) {
	cases := map[string]pgq.Event{
		`{"channel": "ch_pgqueuer", "operation": "insert", "sent_at": "2026-11-26T10:00:00.123456+00:00", "table": "pgqueuer", "type": "table_changed_event"}`: {
			Channel: "ch_pgqueuer", Type: pgq.EventTableChanged, Operation: "insert", Table: "pgqueuer"},
		`{"channel": "ch_pgqueuer", "ids": [4, 5], "sent_at": "2026-11-26T10:00:00.123456+00:00", "type": "cancellation_event", "received_at": "2026-11-26T10:00:00.2+00:00"}`: {
			Channel: "ch_pgqueuer", Type: pgq.EventCancellation, IDs: []pgq.JobID{4, 5}},
		`{"channel": "ch_pgqueuer", "id": "5b7f4f4e-1b7e-4c55-9a50-8ef1f0f0a001", "sent_at": "not a time", "type": "health_check_event"}`: {
			Channel: "ch_pgqueuer", Type: pgq.EventHealthCheck},
	}
	for payload, want := range cases {
		ev, ok := pgq.ParseEvent(payload)
		if !ok || ev.Type != want.Type || ev.Operation != want.Operation || ev.Table != want.Table || len(ev.IDs) != len(want.IDs) {
			t.Errorf("ParseEvent(%s) = %+v, %v", payload, ev, ok)
		}
		if want.Type != pgq.EventHealthCheck && ev.SentAt.IsZero() {
			t.Errorf("ParseEvent(%s): sent_at not parsed", payload)
		}
	}
	for _, bad := range []string{``, `not json`, `{"type": "something_new"}`, `[1,2]`} {
		if _, ok := pgq.ParseEvent(bad); ok {
			t.Errorf("ParseEvent(%q) accepted", bad)
		}
	}
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
