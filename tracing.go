package pgq

import "context"

// Propagator carries trace context (W3C traceparent and tracestate, or
// whatever format it speaks) between a context and a job's headers. pgq has
// no tracing dependency of its own: give it your tracing library's
// propagator through this interface.
//
// OpenTelemetry's propagation.TextMapPropagator fits with a two-method
// adapter, since propagation.MapCarrier is a map[string]string:
//
//	type otelPropagator struct{ p propagation.TextMapPropagator }
//
//	func (o otelPropagator) Inject(ctx context.Context, c map[string]string) {
//		o.p.Inject(ctx, propagation.MapCarrier(c))
//	}
//
//	func (o otelPropagator) Extract(ctx context.Context, c map[string]string) context.Context {
//		return o.p.Extract(ctx, propagation.MapCarrier(c))
//	}
//
//	prop := otelPropagator{otel.GetTextMapPropagator()}
//	id, err := q.Enqueue(ctx, "email", payload, pgq.WithHeaders(pgq.TraceHeaders(ctx, prop)))
//	qm := pgq.NewQueueManager(db, pgq.WithMiddleware(pgq.TraceMiddleware(prop)))
//
// A handler then starts its span from ctx, which carries the enqueuer's
// span context as its remote parent.
type Propagator interface {
	// Inject writes the trace context of ctx into carrier.
	Inject(ctx context.Context, carrier map[string]string)
	// Extract returns ctx with the trace context read from carrier.
	Extract(ctx context.Context, carrier map[string]string) context.Context
}

// TraceHeaders returns the headers that carry the trace context of ctx, for
// WithHeaders or NewJob.Headers (add your own headers to the map if you
// have any). It returns nil when p is nil or ctx carries no trace context,
// so that jobs without one get no headers.
func TraceHeaders(ctx context.Context, p Propagator) map[string]string {
	if p == nil {
		return nil
	}
	h := map[string]string{}
	p.Inject(ctx, h)
	if len(h) == 0 {
		return nil
	}
	return h
}

// TraceMiddleware returns a Middleware that gives each handler a ctx with
// the trace context p extracts from the job's headers: the one TraceHeaders
// put there, or the traceparent a PGQueuer producer (or any other) wrote
// into the headers column. A nil p leaves ctx as it is.
func TraceMiddleware(p Propagator) Middleware {
	return func(next Handler) Handler {
		if p == nil {
			return next
		}
		return func(ctx context.Context, job *Job) error {
			h := job.Headers
			if h == nil {
				h = map[string]string{}
			}
			return next(p.Extract(ctx, h), job)
		}
	}
}
