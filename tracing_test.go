package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/pgq-dev/pgq"
)

// traceKey holds a traceparent in a context, as a tracing library keeps its
// span context.
type traceKey struct{}

func withTraceparent(ctx context.Context, tp string) context.Context {
	return context.WithValue(ctx, traceKey{}, tp)
}

func traceparentFrom(ctx context.Context) string {
	tp, _ := ctx.Value(traceKey{}).(string)
	return tp
}

// ctxPropagator is a pgq.Propagator that carries the traceparent of a
// context in the "traceparent" header, as W3C trace context does.
type ctxPropagator struct{}

func (ctxPropagator) Inject(ctx context.Context, carrier map[string]string) {
	if tp := traceparentFrom(ctx); tp != "" {
		carrier["traceparent"] = tp
	}
}

func (ctxPropagator) Extract(ctx context.Context, carrier map[string]string) context.Context {
	if tp := carrier["traceparent"]; tp != "" {
		return withTraceparent(ctx, tp)
	}
	return ctx
}

const (
	traceA = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	traceB = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	traceP = "00-11111111111111111111111111111111-2222222222222222-01"
)

// TestTraceContextSurvivesTheQueue checks that a trace context on the
// enqueuer's ctx reaches the handler's ctx through the job's headers, from
// Enqueue, EnqueueBatch and a PGQueuer producer's raw JSON headers.
func TestTraceContextSurvivesTheQueue(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		prop := ctxPropagator{}
		q := pgq.NewQueries(db)

		a, err := q.Enqueue(ctx, "traced", nil, pgq.WithHeaders(pgq.TraceHeaders(withTraceparent(ctx, traceA), prop)))
		if err != nil {
			t.Fatal(err)
		}
		h := pgq.TraceHeaders(withTraceparent(ctx, traceB), prop)
		h["tenant"] = "acme"
		batch, err := q.EnqueueBatch(ctx, []pgq.NewJob{
			{Entrypoint: "traced", Headers: h},
			{Entrypoint: "traced", Headers: pgq.TraceHeaders(ctx, prop)}, // no trace: no headers
		})
		if err != nil {
			t.Fatal(err)
		}
		// A PGQueuer producer writes the headers column as JSON itself, with
		// values of any JSON type.
		var p int64
		err = db.QueryRowContext(ctx, `WITH j AS (
				INSERT INTO pgqueuer (priority, entrypoint, payload, status, headers)
				VALUES (0, 'traced', NULL, 'queued', $1::jsonb) RETURNING id, priority, entrypoint)
			INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
			SELECT id, 'queued', priority, entrypoint FROM j RETURNING job_id`,
			`{"traceparent": "`+traceP+`", "retries": 3}`).Scan(&p)
		if err != nil {
			t.Fatal(err)
		}

		type seen struct {
			trace   string
			headers map[string]string
		}
		var mu sync.Mutex
		got := map[pgq.JobID]seen{}
		qm := pgq.NewQueueManager(db, pgq.WithMiddleware(pgq.TraceMiddleware(prop)))
		_ = qm.Entrypoint("traced", func(ctx context.Context, j *pgq.Job) error {
			mu.Lock()
			defer mu.Unlock()
			got[j.ID] = seen{traceparentFrom(ctx), j.Headers}
			return nil
		})
		drain(t, ctx, qm)

		want := map[pgq.JobID]seen{
			a:            {traceA, map[string]string{"traceparent": traceA}},
			batch[0]:     {traceB, map[string]string{"traceparent": traceB, "tenant": "acme"}},
			batch[1]:     {"", nil},
			pgq.JobID(p): {traceP, map[string]string{"traceparent": traceP, "retries": "3"}},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("handlers saw %v,\nwant %v", got, want)
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"); n != 4 {
			t.Errorf("%d jobs successful, want 4", n)
		}
	})
}

func TestTraceNilPropagator(t *testing.T) {
	t.Parallel()
	if h := pgq.TraceHeaders(withTraceparent(context.Background(), traceA), nil); h != nil {
		t.Errorf("TraceHeaders(nil propagator) = %v", h)
	}
	ctx := withTraceparent(context.Background(), traceA)
	h := pgq.TraceMiddleware(nil)(func(ctx context.Context, j *pgq.Job) error {
		if traceparentFrom(ctx) != traceA {
			t.Errorf("ctx changed")
		}
		return nil
	})
	_ = h(ctx, &pgq.Job{Headers: map[string]string{"traceparent": traceB}})
}

// A trace context crosses the queue in the job's headers: TraceHeaders on
// the enqueuing side, TraceMiddleware on the worker's. ctxPropagator stands
// in for a tracing library's propagator (see Propagator for
// OpenTelemetry's).
func ExampleTraceMiddleware() {
	prop := ctxPropagator{}

	// The enqueuing side: the request's ctx carries its trace.
	ctx := withTraceparent(context.Background(), traceA)
	headers := pgq.TraceHeaders(ctx, prop)
	fmt.Println(headers)
	// q.Enqueue(ctx, "email", payload, pgq.WithHeaders(headers))

	// The worker: pgq.NewQueueManager(db, pgq.WithMiddleware(pgq.TraceMiddleware(prop)))
	// wraps every handler like this.
	h := pgq.TraceMiddleware(prop)(func(ctx context.Context, job *pgq.Job) error {
		fmt.Println("handler's trace:", traceparentFrom(ctx))
		return nil
	})
	_ = h(context.Background(), &pgq.Job{ID: 1, Entrypoint: "email", Headers: headers})
	// Output:
	// map[traceparent:00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01]
	// handler's trace: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
}
