package pgqotel_test

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqotel"
	"github.com/pgq-dev/pgq/pgqtest"
)

func TestMain(m *testing.M) { pgqtest.Main(m) }

// telemetry is an in-memory tracer and meter provider for one test.
type telemetry struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newTelemetry(t *testing.T) *telemetry {
	tel := &telemetry{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	tel.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tel.spans))
	tel.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(tel.reader))
	t.Cleanup(func() {
		_ = tel.tp.Shutdown(context.Background())
		_ = tel.mp.Shutdown(context.Background())
	})
	return tel
}

func (tel *telemetry) opts(more ...pgqotel.Option) []pgqotel.Option {
	return append([]pgqotel.Option{pgqotel.WithTracerProvider(tel.tp), pgqotel.WithMeterProvider(tel.mp)}, more...)
}

func (tel *telemetry) span(t *testing.T, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	for _, s := range tel.spans.Ended() {
		if s.Name() == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d spans named %q, want 1", len(found), name)
	}
	return found[0]
}

func (tel *telemetry) metrics(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tel.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// drain runs a worker with the middleware until the queue is empty.
func drain(t *testing.T, db *sql.DB, mw pgq.Middleware, handlers map[string]pgq.Handler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	qm := pgq.NewQueueManager(db, pgq.WithMiddleware(mw))
	for name, h := range handlers {
		if err := qm.Entrypoint(name, h, pgq.OnFailure(pgq.Delete)); err != nil {
			t.Fatal(err)
		}
	}
	if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)); err != nil {
		t.Fatal(err)
	}
}

func eachDriver(t *testing.T, f func(t *testing.T, db *sql.DB)) {
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			db, _ := pgqtest.NewDB(t, driver)
			f(t, db)
		})
	}
}

// A job enqueued under a span runs under a consumer span that is the child
// of the enqueue's producer span, itself the child of the caller's span;
// baggage travels with it; the attributes follow the messaging
// conventions.
func TestEnqueueToProcessSpans(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB) {
		tel := newTelemetry(t)
		ctx := context.Background()
		member, _ := baggage.NewMember("tenant", "acme")
		bag, _ := baggage.New(member)
		ctx = baggage.ContextWithBaggage(ctx, bag)
		ctx, request := tel.tp.Tracer("test").Start(ctx, "request")
		q := pgq.NewQueries(db, pgq.WithEnqueueHook(pgqotel.EnqueueHook(tel.opts()...)))
		id, err := q.Enqueue(ctx, "email", []byte("hi"), pgq.WithPriority(3))
		if err != nil {
			t.Fatal(err)
		}
		request.End()

		var gotTenant atomic.Value
		drain(t, db, pgqotel.Middleware(tel.opts()...), map[string]pgq.Handler{
			"email": func(ctx context.Context, job *pgq.Job) error {
				gotTenant.Store(baggage.FromContext(ctx).Member("tenant").Value())
				if !trace.SpanContextFromContext(ctx).IsValid() {
					return errors.New("no span in the handler's ctx")
				}
				return nil
			},
		})

		send := tel.span(t, "send email")
		process := tel.span(t, "process email")
		req := tel.span(t, "request")
		if send.Parent().SpanID() != req.SpanContext().SpanID() || send.SpanKind() != trace.SpanKindProducer {
			t.Errorf("send span: parent %v kind %v; want the request's child, producer", send.Parent(), send.SpanKind())
		}
		if process.Parent().SpanID() != send.SpanContext().SpanID() || process.SpanContext().TraceID() != req.SpanContext().TraceID() {
			t.Errorf("process span's parent %v, want the send span %v", process.Parent(), send.SpanContext())
		}
		if process.SpanKind() != trace.SpanKindConsumer || process.Status().Code == codes.Error {
			t.Errorf("process span kind %v status %v", process.SpanKind(), process.Status())
		}
		wantID := strconv.FormatInt(int64(id), 10)
		for key, want := range map[attribute.Key]string{
			"messaging.system": "pgq", "messaging.operation.type": "process",
			"messaging.destination.name": "email", "messaging.message.id": wantID, "pgq.job.outcome": "successful",
		} {
			if got := attr(process, key).Emit(); got != want {
				t.Errorf("process span %s = %q, want %q", key, got, want)
			}
		}
		if a, p := attr(process, pgqotel.AttemptKey).AsInt64(), attr(process, pgqotel.PriorityKey).AsInt64(); a != 1 || p != 3 {
			t.Errorf("attempt %d priority %d, want 1 and 3", a, p)
		}
		if got := attr(send, "messaging.message.id").Emit(); got != wantID {
			t.Errorf("send span message id %q, want %q", got, wantID)
		}
		if gotTenant.Load() != "acme" {
			t.Errorf("baggage in the handler: tenant %q, want acme", gotTenant)
		}
	})
}

// With WithLinkedSpans a job's span starts a trace of its own, linked to
// the enqueue's span; a batch gets one producer span with its size; a
// failing run records the exception; a duplicate is an event, not an
// error.
func TestLinkedSpansBatchesFailures(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB) {
		tel := newTelemetry(t)
		ctx := context.Background()
		q := pgq.NewQueries(db, pgq.WithEnqueueHook(pgqotel.EnqueueHook(tel.opts()...)))
		if _, err := q.EnqueueBatch(ctx, []pgq.NewJob{
			{Entrypoint: "report", DedupeKey: "r1"}, {Entrypoint: "report", DedupeKey: "r2"},
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Enqueue(ctx, "report", nil, pgq.WithDedupeKey("r1")); !errors.Is(err, pgq.ErrDuplicateJob) {
			t.Fatalf("duplicate: %v", err)
		}
		drain(t, db, pgqotel.Middleware(tel.opts(pgqotel.WithLinkedSpans())...), map[string]pgq.Handler{
			"report": func(ctx context.Context, job *pgq.Job) error {
				if job.DedupeKey == "r2" {
					return errors.New("printer on fire")
				}
				return nil
			},
		})
		var sends, processes []sdktrace.ReadOnlySpan
		for _, s := range tel.spans.Ended() {
			switch s.Name() {
			case "send report":
				sends = append(sends, s)
			case "process report":
				processes = append(processes, s)
			}
		}
		if len(sends) != 2 || len(processes) != 2 {
			t.Fatalf("%d send and %d process spans, want 2 and 2", len(sends), len(processes))
		}
		batch, dup := sends[0], sends[1]
		if n := attr(batch, "messaging.batch.message_count").AsInt64(); n != 2 {
			t.Errorf("batch span message count %d, want 2", n)
		}
		if dup.Status().Code == codes.Error || len(dup.Events()) != 1 || dup.Events()[0].Name != "duplicate job" {
			t.Errorf("duplicate's span: status %v events %v; want an event and no error", dup.Status(), dup.Events())
		}
		failed := 0
		for _, p := range processes {
			if p.Parent().IsValid() || len(p.Links()) != 1 || p.Links()[0].SpanContext.SpanID() != batch.SpanContext().SpanID() {
				t.Errorf("process span: parent %v links %v; want a root linked to the batch span", p.Parent(), p.Links())
			}
			if p.Status().Code == codes.Error {
				failed++
				if len(p.Events()) == 0 || p.Events()[0].Name != "exception" || attr(p, pgqotel.OutcomeKey).AsString() != "exception" {
					t.Errorf("failed run's span: events %v outcome %v", p.Events(), attr(p, pgqotel.OutcomeKey))
				}
			}
		}
		if failed != 1 {
			t.Errorf("%d failed process spans, want 1", failed)
		}
	})
}

// A job that a PGQueuer producer (or anyone) enqueued with a traceparent in
// its headers runs in that trace.
func TestForeignTraceparent(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB) {
		tel := newTelemetry(t)
		const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
		_, err := pgq.NewQueries(db).Enqueue(context.Background(), "py", nil,
			pgq.WithHeaders(map[string]string{"traceparent": "00-" + traceID + "-" + spanID + "-01"}))
		if err != nil {
			t.Fatal(err)
		}
		drain(t, db, pgqotel.Middleware(tel.opts()...), map[string]pgq.Handler{
			"py": func(context.Context, *pgq.Job) error { return nil },
		})
		p := tel.span(t, "process py")
		if p.Parent().TraceID().String() != traceID || p.Parent().SpanID().String() != spanID || !p.Parent().IsRemote() {
			t.Errorf("process span's parent %v, want the remote %s/%s", p.Parent(), traceID, spanID)
		}
	})
}

// The metrics: jobs sent and processed by outcome, one queue-wait and one
// duration observation per run, and the queue depth read at collection.
func TestMetrics(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB) {
		tel := newTelemetry(t)
		ctx := context.Background()
		q := pgq.NewQueries(db, pgq.WithEnqueueHook(pgqotel.EnqueueHook(tel.opts()...)))
		jobs := make([]pgq.NewJob, 5)
		for i := range jobs {
			jobs[i] = pgq.NewJob{Entrypoint: "m"}
		}
		jobs[4].Entrypoint = "later"
		jobs[4].ExecuteAfter = time.Hour
		if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		reg, err := pgqotel.RegisterQueueMetrics(pgq.NewQueries(db), tel.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Unregister()
		var n atomic.Int32
		drain(t, db, pgqotel.Middleware(tel.opts()...), map[string]pgq.Handler{
			"m": func(context.Context, *pgq.Job) error {
				if n.Add(1) == 1 {
					return errors.New("first one fails")
				}
				return nil
			},
		})
		ms := tel.metrics(t)
		sent := ms[pgqotel.MetricSent].Data.(metricdata.Sum[int64])
		if len(sent.DataPoints) != 1 || sent.DataPoints[0].Value != 5 {
			t.Errorf("sent: %+v, want one point of 5", sent.DataPoints)
		}
		byOutcome := map[string]int64{}
		for _, dp := range ms[pgqotel.MetricConsumed].Data.(metricdata.Sum[int64]).DataPoints {
			o, _ := dp.Attributes.Value(pgqotel.OutcomeKey)
			byOutcome[o.AsString()] += dp.Value
		}
		if byOutcome["successful"] != 3 || byOutcome["exception"] != 1 {
			t.Errorf("consumed by outcome %v, want 3 successful and 1 exception", byOutcome)
		}
		var waits, durations uint64
		for _, dp := range ms[pgqotel.MetricQueueWait].Data.(metricdata.Histogram[float64]).DataPoints {
			waits += dp.Count
		}
		for _, dp := range ms[pgqotel.MetricProcess].Data.(metricdata.Histogram[float64]).DataPoints {
			durations += dp.Count
		}
		if waits != 4 || durations != 4 {
			t.Errorf("queue wait observations %d, durations %d; want 4 each", waits, durations)
		}
		depth := map[string]int64{}
		for _, dp := range ms[pgqotel.MetricQueueDepth].Data.(metricdata.Gauge[int64]).DataPoints {
			ep, _ := dp.Attributes.Value("messaging.destination.name")
			st, _ := dp.Attributes.Value(pgqotel.StatusKey)
			depth[ep.AsString()+"/"+st.AsString()] = dp.Value
		}
		if len(depth) != 1 || depth["later/queued"] != 1 {
			t.Errorf("queue depth %v, want later/queued 1 only", depth)
		}
	})
}

func TestRegisterQueueMetricsNil(t *testing.T) {
	if _, err := pgqotel.RegisterQueueMetrics(nil); err == nil {
		t.Error("RegisterQueueMetrics(nil) succeeded")
	}
}

// A snooze is not a failure: its run's span has a "snooze" event with the
// delay, the outcome "snoozed" and no error status; the job's next run has
// a span of its own, and the worker still snoozes the job (the middleware
// passes the handler's error on).
func TestSnoozeSpan(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB) {
		tel := newTelemetry(t)
		ctx := context.Background()
		if _, err := pgq.NewQueries(db).Enqueue(ctx, "nap", nil); err != nil {
			t.Fatal(err)
		}
		// Snoozed for no time, the job is due again at once, so one
		// drain runs it twice (a drain returns once nothing is runnable
		// now: a longer snooze may outlast it).
		drain(t, db, pgqotel.Middleware(tel.opts()...), map[string]pgq.Handler{
			"nap": func(ctx context.Context, job *pgq.Job) error {
				if job.Headers[pgq.HeaderSnoozes] == "" {
					return pgq.Snooze(0)
				}
				return nil
			},
		})
		var outcomes []string
		for _, s := range tel.spans.Ended() {
			if s.Name() != "process nap" {
				continue
			}
			outcomes = append(outcomes, attr(s, pgqotel.OutcomeKey).AsString())
			if s.Status().Code == codes.Error {
				t.Errorf("span with outcome %s has an error status", attr(s, pgqotel.OutcomeKey).AsString())
			}
			if attr(s, pgqotel.OutcomeKey).AsString() == "snoozed" &&
				(len(s.Events()) != 1 || s.Events()[0].Name != "snooze") {
				t.Errorf("snoozed span's events %v, want one snooze event", s.Events())
			}
		}
		if strings.Join(outcomes, ",") != "snoozed,successful" {
			t.Errorf("process spans' outcomes %v, want snoozed then successful", outcomes)
		}
	})
}
