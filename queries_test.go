package pgq_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

func TestEnqueueFields(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		id, err := q.Enqueue(ctx, "fields", []byte{0, 1, 2, 255},
			pgq.WithPriority(7), pgq.WithExecuteAfter(time.Hour), pgq.WithDedupeKey("dk"),
			pgq.WithHeaders(map[string]string{"traceparent": "00-abc-def-01"}))
		if err != nil {
			t.Fatal(err)
		}
		var (
			prio       int
			payload    []byte
			status, ep string
			dk         string
			headers    string
			delay      float64
		)
		err = db.QueryRow(`SELECT priority, payload, status::text, entrypoint, dedupe_key, headers::text,
			extract(epoch from execute_after - now()) FROM pgqueuer WHERE id = $1`, int64(id)).
			Scan(&prio, &payload, &status, &ep, &dk, &headers, &delay)
		if err != nil {
			t.Fatal(err)
		}
		if prio != 7 || !bytes.Equal(payload, []byte{0, 1, 2, 255}) || status != "queued" || ep != "fields" ||
			dk != "dk" || !strings.Contains(headers, `"traceparent": "00-abc-def-01"`) || delay < 3500 || delay > 3700 {
			t.Fatalf("row: prio %d payload %v status %s ep %s dk %s headers %s delay %v", prio, payload, status, ep, dk, headers, delay)
		}
		// The queued log row was written with it.
		if st, err := q.JobStatus(ctx, []pgq.JobID{id}); err != nil || st[id] != pgq.StatusQueued {
			t.Fatalf("JobStatus = %v, %v", st, err)
		}
		// A nil payload is stored as NULL, an empty one as empty.
		idNil, _ := q.Enqueue(ctx, "fields", nil)
		idEmpty, _ := q.Enqueue(ctx, "fields", []byte{})
		if !scalar[bool](t, db, "SELECT payload IS NULL FROM pgqueuer WHERE id = $1", int64(idNil)) {
			t.Error("nil payload not NULL")
		}
		if scalar[bool](t, db, "SELECT payload IS NULL FROM pgqueuer WHERE id = $1", int64(idEmpty)) {
			t.Error("empty payload stored as NULL")
		}
	})
}

func TestEnqueueBatchOrder(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		var jobs []pgq.NewJob
		for i := range 500 {
			jobs = append(jobs, pgq.NewJob{Entrypoint: "b", Payload: []byte{byte(i % 251)}, Priority: int32(i % 3)})
		}
		ids, err := q.EnqueueBatch(ctx, jobs)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != len(jobs) {
			t.Fatalf("%d ids", len(ids))
		}
		for i, id := range ids {
			var p []byte
			var prio int32
			if err := db.QueryRow("SELECT payload, priority FROM pgqueuer WHERE id = $1", int64(id)).Scan(&p, &prio); err != nil {
				t.Fatal(err)
			}
			if p[0] != byte(i%251) || prio != int32(i%3) {
				t.Fatalf("id %d at %d holds job %d/%d", id, i, p[0], prio)
			}
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log WHERE status = 'queued'"); n != 500 {
			t.Fatalf("%d queued log rows", n)
		}
	})
}

func TestEnqueueRolledBackTx(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		q := pgq.NewQueries(tx)
		if _, err := q.Enqueue(ctx, "tx", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := q.EnqueueBatch(ctx, []pgq.NewJob{{Entrypoint: "tx"}, {Entrypoint: "tx"}}); err != nil {
			t.Fatal(err)
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); n != 0 {
			t.Fatalf("uncommitted jobs visible: %d", n)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer") + scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log"); n != 0 {
			t.Fatalf("rolled-back enqueue left %d rows", n)
		}
		// And a committed one is there.
		tx, _ = db.BeginTx(ctx, nil)
		if _, err := pgq.NewQueries(tx).Enqueue(ctx, "tx", nil); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); n != 1 {
			t.Fatalf("committed jobs: %d", n)
		}
	})
}

func TestDedupe(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		first, err := q.Enqueue(ctx, "d", nil, pgq.WithDedupeKey("order-42"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = q.Enqueue(ctx, "d", nil, pgq.WithDedupeKey("order-42"))
		var de *pgq.DuplicateJobError
		if !errors.Is(err, pgq.ErrDuplicateJob) || !errors.As(err, &de) || de.DedupeKey != "order-42" ||
			!strings.Contains(err.Error(), "order-42") {
			t.Fatalf("duplicate = %v", err)
		}
		// A batch with a duplicate fails whole.
		_, err = q.EnqueueBatch(ctx, []pgq.NewJob{{Entrypoint: "d", DedupeKey: "new"}, {Entrypoint: "d", DedupeKey: "order-42"}})
		if !errors.Is(err, pgq.ErrDuplicateJob) {
			t.Fatalf("batch duplicate = %v", err)
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); n != 1 {
			t.Fatalf("failed batch left rows: %d", n)
		}
		// Skipping: duplicates get id 0, the rest are added.
		ids, err := q.EnqueueBatch(ctx, []pgq.NewJob{
			{Entrypoint: "d", DedupeKey: "order-42"},
			{Entrypoint: "d"},
			{Entrypoint: "d", DedupeKey: "order-43"},
			{Entrypoint: "d", DedupeKey: "order-43"},
		}, pgq.WithSkipDuplicates())
		if err != nil {
			t.Fatal(err)
		}
		if ids[0] != 0 || ids[1] == 0 || ids[2] == 0 || ids[3] != 0 {
			t.Fatalf("skip ids = %v", ids)
		}
		if got := scalar[string](t, db, "SELECT dedupe_key FROM pgqueuer WHERE id = $1", int64(ids[2])); got != "order-43" {
			t.Fatalf("id %d has key %s", ids[2], got)
		}
		id, err := q.Enqueue(ctx, "d", nil, pgq.WithDedupeKey("order-42"), pgq.WithSkipDuplicates())
		if err != nil || id != 0 {
			t.Fatalf("single skip = %d, %v", id, err)
		}
		// Once the first job is finished, its key is free again.
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("d", func(ctx context.Context, j *pgq.Job) error { return nil })
		drain(t, ctx, qm)
		if st, _ := q.JobStatus(ctx, []pgq.JobID{first}); st[first] != pgq.StatusSuccessful {
			t.Fatalf("first job %v", st)
		}
		if _, err := q.Enqueue(ctx, "d", nil, pgq.WithDedupeKey("order-42")); err != nil {
			t.Fatalf("key not freed: %v", err)
		}
	})
}

func TestEnqueueBadInput(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		cases := []struct {
			name string
			job  pgq.NewJob
			want string
		}{
			{"empty entrypoint", pgq.NewJob{}, "empty entrypoint"},
			{"negative delay", pgq.NewJob{Entrypoint: "x", ExecuteAfter: -time.Second}, "-1s is negative"},
			{"absurd delay", pgq.NewJob{Entrypoint: "x", ExecuteAfter: 200 * 365 * 24 * time.Hour}, "more than MaxExecuteAfter"},
			{"huge payload", pgq.NewJob{Entrypoint: "x", Payload: make([]byte, pgq.MaxPayloadSize+1)}, "larger than MaxPayloadSize"},
		}
		for _, c := range cases {
			_, err := q.EnqueueBatch(ctx, []pgq.NewJob{c.job})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
			}
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); n != 0 {
			t.Fatalf("bad input inserted %d rows", n)
		}
		// A large payload (16 MiB) round-trips.
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20)
		id, err := q.Enqueue(ctx, "big", big)
		if err != nil {
			t.Fatal(err)
		}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		var got []byte
		_ = qm.Entrypoint("big", func(ctx context.Context, j *pgq.Job) error { got = j.Payload; return nil })
		drain(t, ctx, qm)
		if !bytes.Equal(got, big) {
			t.Fatalf("payload of %d bytes came back as %d bytes", len(big), len(got))
		}
		if st, _ := q.JobStatus(ctx, []pgq.JobID{id}); st[id] != pgq.StatusSuccessful {
			t.Fatalf("big job %v", st)
		}
	})
}

func TestSchemaNotInstalled(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			db, _ := pgqtest.NewDB(t, d, pgqtest.Bare())
			_, err := pgq.NewQueries(db).Enqueue(ctx, "x", nil)
			if !errors.Is(err, pgq.ErrSchemaMissing) || !strings.Contains(err.Error(), "pgq install") {
				t.Errorf("Enqueue = %v", err)
			}
			qm := pgq.NewQueueManager(db)
			_ = qm.Entrypoint("x", func(ctx context.Context, j *pgq.Job) error { return nil })
			if err := qm.Run(ctx); !errors.Is(err, pgq.ErrSchemaMissing) || !strings.Contains(err.Error(), "pgq upgrade") {
				t.Errorf("Run = %v", err)
			}
			if _, err := pgq.NewCompletionWatcher(ctx, db); !errors.Is(err, pgq.ErrSchemaMissing) {
				t.Errorf("NewCompletionWatcher = %v", err)
			}
		})
	}
}

func TestMarkJobAsCancelledQueued(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		ids, err := q.EnqueueBatch(ctx, []pgq.NewJob{{Entrypoint: "c"}, {Entrypoint: "c"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := q.MarkJobAsCancelled(ctx, ids[:1]); err != nil {
			t.Fatal(err)
		}
		st, err := q.JobStatus(ctx, ids)
		if err != nil || st[ids[0]] != pgq.StatusCanceled || st[ids[1]] != pgq.StatusQueued {
			t.Fatalf("statuses %v %v", st, err)
		}
		sizes, err := q.QueueSize(ctx)
		if err != nil || len(sizes) != 1 || sizes[0] != (pgq.QueueCount{Entrypoint: "c", Status: pgq.StatusQueued, Count: 1}) {
			t.Fatalf("QueueSize = %+v, %v", sizes, err)
		}
	})
}

// Enqueue hooks see each call once, with all of a batch's jobs, in order
// (the first outermost); the jobs a hook passes on are what is stored; an
// error from the insert comes back through them, and the caller's jobs are
// left as they were.
func TestEnqueueHooks(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		var calls []string
		tag := func(name string) pgq.EnqueueHook {
			return func(next pgq.EnqueueFunc) pgq.EnqueueFunc {
				return func(ctx context.Context, jobs []pgq.NewJob) ([]pgq.JobID, error) {
					calls = append(calls, fmt.Sprintf("%s:%d", name, len(jobs)))
					tagged := slices.Clone(jobs)
					for i := range tagged {
						h := maps.Clone(tagged[i].Headers)
						if h == nil {
							h = map[string]string{}
						}
						h["seen-by"] += name
						tagged[i].Headers = h
					}
					ids, err := next(ctx, tagged)
					if err != nil {
						calls = append(calls, name+":err")
					}
					return ids, err
				}
			}
		}
		q := pgq.NewQueries(db, pgq.WithEnqueueHook(tag("a"), nil, tag("b")))
		id, err := q.Enqueue(ctx, "hooked", nil, pgq.WithHeaders(map[string]string{"mine": "1"}))
		if err != nil {
			t.Fatal(err)
		}
		batch := []pgq.NewJob{{Entrypoint: "hooked"}, {Entrypoint: "hooked", DedupeKey: "k"}}
		ids, err := q.EnqueueBatch(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		if batch[0].Headers != nil {
			t.Errorf("the caller's jobs were changed: %v", batch[0].Headers)
		}
		for _, id := range append([]pgq.JobID{id}, ids...) {
			h := scalar[string](t, db, "SELECT headers->>'seen-by' FROM pgqueuer WHERE id = $1", int64(id))
			if h != "ab" {
				t.Errorf("job %d: seen-by %q, want ab", id, h)
			}
		}
		if mine := scalar[string](t, db, "SELECT headers->>'mine' FROM pgqueuer WHERE id = $1", int64(id)); mine != "1" {
			t.Errorf("the caller's own header: %q", mine)
		}
		if _, err := q.Enqueue(ctx, "hooked", nil, pgq.WithDedupeKey("k")); !errors.Is(err, pgq.ErrDuplicateJob) {
			t.Fatalf("duplicate through hooks: %v", err)
		}
		want := []string{"a:1", "b:1", "a:2", "b:2", "a:1", "b:1", "b:err", "a:err"}
		if !slices.Equal(calls, want) {
			t.Errorf("calls %q, want %q", calls, want)
		}
	})
}

// TestJobStatusKeepsItsPlan: the look-up of jobs' latest statuses
// (LogLatestStatus, which JobStatus and every CompletionWatcher run)
// keeps its generic plan on a pgx connection, on a log with statistics.
// Planned for each call, it spent four times as long planning as running.
func TestJobStatusKeepsItsPlan(t *testing.T) {
	db, dsn := pgqtest.NewDB(t, "pgx")
	ctx := testCtx(t)
	ids := enqueueN(t, ctx, db, "status", 2000)
	execSQL(t, db, "ANALYZE pgqueuer_log")
	requireGenericPlans(t, dsn, func(single *sql.DB) {
		q := pgq.NewQueries(single)
		for i := range 8 {
			st, err := q.JobStatus(ctx, ids[i:i+2])
			if err != nil {
				t.Fatal(err)
			}
			if st[ids[i]] != pgq.StatusQueued || len(st) != 2 {
				t.Fatalf("JobStatus(%v) = %v, want both queued", ids[i:i+2], st)
			}
		}
	}, "LogLatestStatus")
}
