// Package pgqotel traces and measures pgq jobs with OpenTelemetry, by its
// messaging semantic conventions: a producer span per enqueue call whose
// context travels in the jobs' headers, a consumer span per job run as its
// child (or linked to it), and metrics of jobs sent and processed, how long
// handlers take, how long jobs wait in the queue and how deep the queue is.
//
// It is a module of its own so that pgq itself does not depend on
// OpenTelemetry. Three lines wire it, with the global tracer and meter
// providers (or pass WithTracerProvider, WithMeterProvider):
//
//	q := pgq.NewQueries(db, pgq.WithEnqueueHook(pgqotel.EnqueueHook()))
//	qm := pgq.NewQueueManager(db, pgq.WithMiddleware(pgqotel.Middleware()))
//	reg, err := pgqotel.RegisterQueueMetrics(pgq.NewQueries(db)) // reg.Unregister() at the end
//
// Trace context goes into the headers as W3C traceparent and tracestate,
// with W3C baggage, unless WithPropagator says otherwise; a PGQueuer
// producer that writes a traceparent into the headers is picked up the same
// way.
package pgqotel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgq-dev/pgq"
)

// ScopeName is the instrumentation scope of pgqotel's tracer and meter.
const ScopeName = "github.com/pgq-dev/pgq/pgqotel"

// System is the messaging.system attribute of every span and metric.
const System = "pgq"

// Attributes of pgq's own, beside the messaging conventions'.
const (
	// AttemptKey is the job's attempt, 1 for the first run.
	AttemptKey = attribute.Key("pgq.job.attempt")
	// PriorityKey is the job's priority.
	PriorityKey = attribute.Key("pgq.job.priority")
	// OutcomeKey is how a run ended: successful, exception or canceled.
	OutcomeKey = attribute.Key("pgq.job.outcome")
	// StatusKey is the status of the jobs a queue depth counts.
	StatusKey = attribute.Key("pgq.job.status")
)

// Metric names. The first four are the messaging conventions'.
const (
	MetricSent         = "messaging.client.sent.messages"      // counter: jobs enqueued
	MetricSendDuration = "messaging.client.operation.duration" // histogram, s: an enqueue call
	MetricConsumed     = "messaging.client.consumed.messages"  // counter: job runs, by outcome
	MetricProcess      = "messaging.process.duration"          // histogram, s: a handler's run
	MetricQueueWait    = "pgq.job.queue_wait"                  // histogram, s: due → started
	MetricQueueDepth   = "pgq.queue.depth"                     // gauge: jobs in the job table
)

// Option configures EnqueueHook, Middleware and RegisterQueueMetrics.
type Option func(*config)

type config struct {
	tp     trace.TracerProvider
	mp     metric.MeterProvider
	prop   propagation.TextMapPropagator
	linked bool
}

func newConfig(opts []Option) config {
	c := config{}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.prop == nil {
		c.prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return c
}

// WithTracerProvider sets the tracer provider (default: otel's global one).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *config) { c.tp = tp } }

// WithMeterProvider sets the meter provider (default: otel's global one).
func WithMeterProvider(mp metric.MeterProvider) Option { return func(c *config) { c.mp = mp } }

// WithPropagator sets how trace context is written into and read from the
// jobs' headers (default: W3C trace context and baggage).
func WithPropagator(p propagation.TextMapPropagator) Option { return func(c *config) { c.prop = p } }

// WithLinkedSpans makes each job's span the root of a trace of its own,
// linked to the span that enqueued it, instead of that span's child. Use it
// when jobs wait long in the queue: a child that starts hours after its
// parent ended makes the parent's trace misleading.
func WithLinkedSpans() Option { return func(c *config) { c.linked = true } }

// instruments are the metrics a hook or middleware records.
type instruments struct {
	sent, consumed         metric.Int64Counter
	sendDur, process, wait metric.Float64Histogram
}

func newInstruments(m metric.Meter) (instruments, error) {
	var in instruments
	var errs [5]error
	in.sent, errs[0] = m.Int64Counter(MetricSent, metric.WithUnit("{message}"),
		metric.WithDescription("Jobs enqueued."))
	in.sendDur, errs[1] = m.Float64Histogram(MetricSendDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of enqueue calls."))
	in.consumed, errs[2] = m.Int64Counter(MetricConsumed, metric.WithUnit("{message}"),
		metric.WithDescription("Job runs, by outcome."))
	in.process, errs[3] = m.Float64Histogram(MetricProcess, metric.WithUnit("s"),
		metric.WithDescription("Duration of handler runs."))
	in.wait, errs[4] = m.Float64Histogram(MetricQueueWait, metric.WithUnit("s"),
		metric.WithDescription("Time from a job being due (enqueued, or its execute-after) to its run starting."))
	return in, errors.Join(errs[:]...)
}

// EnqueueHook returns a pgq.EnqueueHook (for pgq.WithEnqueueHook) that
// starts a producer span per Enqueue or EnqueueBatch call (one for a batch,
// with its size), writes the span's context into each job's headers,
// and counts the jobs sent. A duplicate dedupe key is recorded as an event,
// not an error.
func EnqueueHook(opts ...Option) pgq.EnqueueHook {
	c := newConfig(opts)
	tracer := c.tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL))
	in, err := newInstruments(c.mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL)))
	if err != nil {
		otel.Handle(err)
	}
	return func(next pgq.EnqueueFunc) pgq.EnqueueFunc {
		return func(ctx context.Context, jobs []pgq.NewJob) ([]pgq.JobID, error) {
			dest := destination(jobs)
			attrs := []attribute.KeyValue{
				semconv.MessagingSystemKey.String(System),
				semconv.MessagingOperationTypeSend,
				semconv.MessagingOperationName("enqueue"),
			}
			if dest != "" {
				attrs = append(attrs, semconv.MessagingDestinationName(dest))
			}
			spanAttrs := attrs
			if len(jobs) > 1 {
				spanAttrs = append(slices.Clip(spanAttrs), semconv.MessagingBatchMessageCount(len(jobs)))
			}
			ctx, span := tracer.Start(ctx, spanName("send", dest),
				trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(spanAttrs...))
			defer span.End()

			withCtx := slices.Clone(jobs)
			for i := range withCtx {
				h := maps.Clone(withCtx[i].Headers)
				if h == nil {
					h = map[string]string{}
				}
				c.prop.Inject(ctx, propagation.MapCarrier(h))
				if len(h) == 0 {
					h = nil
				}
				withCtx[i].Headers = h
			}
			start := time.Now()
			ids, err := next(ctx, withCtx)
			took := time.Since(start).Seconds()

			var sent int64
			for _, id := range ids {
				if id != 0 {
					sent++
				}
			}
			if len(ids) == 1 && ids[0] != 0 {
				span.SetAttributes(semconv.MessagingMessageID(strconv.FormatInt(int64(ids[0]), 10)))
			}
			if skipped := int64(len(ids)) - sent; skipped > 0 {
				span.AddEvent("duplicates skipped", trace.WithAttributes(attribute.Int64("pgq.jobs.skipped", skipped)))
			}
			var dup *pgq.DuplicateJobError
			switch {
			case err == nil:
			case errors.As(err, &dup):
				span.AddEvent("duplicate job", trace.WithAttributes(attribute.String("pgq.job.dedupe_key", dup.DedupeKey)))
				attrs = append(attrs, semconv.ErrorTypeKey.String("duplicate"))
			default:
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
				attrs = append(attrs, semconv.ErrorTypeKey.String(fmt.Sprintf("%T", err)))
			}
			set := metric.WithAttributeSet(attribute.NewSet(attrs...))
			in.sendDur.Record(ctx, took, set)
			if sent > 0 {
				in.sent.Add(ctx, sent, set)
			}
			return ids, err
		}
	}
}

// destination is the jobs' entrypoint when they share one, else "".
func destination(jobs []pgq.NewJob) string {
	if len(jobs) == 0 {
		return ""
	}
	d := jobs[0].Entrypoint
	for _, j := range jobs[1:] {
		if j.Entrypoint != d {
			return ""
		}
	}
	return d
}

func spanName(op, dest string) string {
	if dest == "" {
		return op
	}
	return op + " " + dest
}

// Middleware returns a pgq.Middleware (for pgq.WithMiddleware) that runs
// each job's handler under a consumer span: the child of the span that
// enqueued the job, read from the job's headers (or linked to it, with
// WithLinkedSpans). A failed run records the error; a run that asks for a
// retry (pgq.RetryAfter) gets an event with the delay, a snooze
// (pgq.Snooze) an event and the outcome "snoozed" with no error; a panic is recorded
// and passed on. It counts runs by outcome and records how long each took
// and how long the job waited in the queue.
func Middleware(opts ...Option) pgq.Middleware {
	c := newConfig(opts)
	tracer := c.tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL))
	in, err := newInstruments(c.mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL)))
	if err != nil {
		otel.Handle(err)
	}
	return func(next pgq.Handler) pgq.Handler {
		return func(ctx context.Context, job *pgq.Job) (err error) {
			started := time.Now()
			remote := ctx
			if len(job.Headers) > 0 {
				remote = c.prop.Extract(ctx, propagation.MapCarrier(job.Headers))
			}
			base := []attribute.KeyValue{
				semconv.MessagingSystemKey.String(System),
				semconv.MessagingOperationTypeProcess,
				semconv.MessagingOperationName("process"),
				semconv.MessagingDestinationName(job.Entrypoint),
			}
			spanOpts := []trace.SpanStartOption{
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(base...),
				trace.WithAttributes(
					semconv.MessagingMessageID(strconv.FormatInt(int64(job.ID), 10)),
					semconv.MessagingMessageBodySize(len(job.Payload)),
					AttemptKey.Int64(int64(job.Attempts)+1),
					PriorityKey.Int64(int64(job.Priority)),
				),
			}
			if c.linked {
				// A root of its own, linked to the enqueuer's span; the
				// baggage in remote still travels.
				if sc := trace.SpanContextFromContext(remote); sc.IsValid() {
					spanOpts = append(spanOpts, trace.WithLinks(trace.Link{SpanContext: sc}), trace.WithNewRoot())
				}
			}
			ctx, span := tracer.Start(remote, "process "+job.Entrypoint, spanOpts...)
			due := job.Created
			if job.ExecuteAfter.After(due) {
				due = job.ExecuteAfter
			}
			if !due.IsZero() {
				in.wait.Record(ctx, max(started.Sub(due), 0).Seconds(),
					metric.WithAttributeSet(attribute.NewSet(base...)))
			}

			defer func() {
				outcome := "successful"
				attrs := slices.Clip(base)
				if r := recover(); r != nil {
					perr := fmt.Errorf("panic: %v", r)
					span.RecordError(perr, trace.WithStackTrace(true))
					span.SetStatus(codes.Error, perr.Error())
					attrs = append(attrs, semconv.ErrorTypeKey.String("panic"), OutcomeKey.String("exception"))
					span.SetAttributes(OutcomeKey.String("exception"))
					in.record(ctx, started, attrs)
					span.End()
					panic(r)
				}
				failed := err // what the span records: a snooze is not a failure
				var snooze *pgq.SnoozeError
				if errors.As(err, &snooze) {
					// The job runs again later, no attempt used.
					outcome = "snoozed"
					span.AddEvent("snooze", trace.WithAttributes(attribute.String("pgq.snooze.delay", snooze.Delay.String())))
					failed = nil
				}
				if failed != nil {
					outcome = "exception"
					if ctx.Err() != nil && errors.Is(failed, ctx.Err()) {
						outcome = "canceled"
					}
					var ra *pgq.RetryAfterError
					if errors.As(failed, &ra) {
						span.AddEvent("retry requested", trace.WithAttributes(attribute.String("pgq.retry.delay", ra.Delay.String())))
					}
					span.RecordError(failed)
					span.SetStatus(codes.Error, failed.Error())
					attrs = append(attrs, semconv.ErrorTypeKey.String(fmt.Sprintf("%T", failed)))
				}
				span.SetAttributes(OutcomeKey.String(outcome))
				attrs = append(attrs, OutcomeKey.String(outcome))
				in.record(ctx, started, attrs)
				span.End()
			}()
			return next(ctx, job)
		}
	}
}

func (in instruments) record(ctx context.Context, started time.Time, attrs []attribute.KeyValue) {
	set := metric.WithAttributeSet(attribute.NewSet(attrs...))
	in.consumed.Add(ctx, 1, set)
	in.process.Record(ctx, time.Since(started).Seconds(), set)
}

// QueueReadTimeout bounds the read of the queue's depth at each collection.
const QueueReadTimeout = 5 * time.Second

// RegisterQueueMetrics registers an observable gauge, pgq.queue.depth, of
// the jobs in q's job table by entrypoint and status (queued, picked,
// failed), read with one query (Queries.QueueSize) per collection.
// Unregister the returned registration when done. A read that fails is
// reported to otel.Handle and leaves the gauge without points.
func RegisterQueueMetrics(q *pgq.Queries, opts ...Option) (metric.Registration, error) {
	if q == nil {
		return nil, errors.New("pgqotel: RegisterQueueMetrics: nil *pgq.Queries")
	}
	c := newConfig(opts)
	m := c.mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
	depth, err := m.Int64ObservableGauge(MetricQueueDepth, metric.WithUnit("{job}"),
		metric.WithDescription("Jobs in the job table, by entrypoint and status."))
	if err != nil {
		return nil, fmt.Errorf("pgqotel: %w", err)
	}
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, QueueReadTimeout)
		defer cancel()
		counts, err := q.QueueSize(ctx)
		if err != nil {
			return fmt.Errorf("pgqotel: reading the queue depth: %w", err)
		}
		type key struct {
			entrypoint string
			status     pgq.Status
		}
		sums := map[key]int64{}
		for _, qc := range counts {
			sums[key{qc.Entrypoint, qc.Status}] += qc.Count
		}
		for k, n := range sums {
			o.ObserveInt64(depth, n, metric.WithAttributes(
				semconv.MessagingSystemKey.String(System),
				semconv.MessagingDestinationName(k.entrypoint),
				StatusKey.String(string(k.status))))
		}
		return nil
	}, depth)
}
