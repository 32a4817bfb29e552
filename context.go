package pgq

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// scopeKey keys the one value a handler's ctx carries: its jobScope.
type scopeKey struct{}

// jobScope is what a handler's ctx knows about its job. The job's logger
// is built on first use: most handlers never log.
type jobScope struct {
	job       *Job
	resources any
	progress  *progressWriter // where ReportProgress goes
	base      *slog.Logger
	once      sync.Once
	logger    *slog.Logger
}

// jobContext is a handler's ctx: its parent with the jobScope attached, in
// one allocation where context.WithValue and the scope took two.
type jobContext struct {
	context.Context
	scope jobScope
}

// Value returns the job's scope for scopeKey and asks the parent for
// every other key.
func (c *jobContext) Value(key any) any {
	if _, ok := key.(scopeKey); ok {
		return &c.scope
	}
	return c.Context.Value(key)
}

// String names the context for debugging, as the context package's own do.
func (c *jobContext) String() string { return "pgq.jobContext" }

func scopeFrom(ctx context.Context) *jobScope {
	s, _ := ctx.Value(scopeKey{}).(*jobScope)
	return s
}

// JobFromContext returns the job a handler's ctx belongs to, or nil
// outside a handler.
func JobFromContext(ctx context.Context) *Job {
	if s := scopeFrom(ctx); s != nil {
		return s.job
	}
	return nil
}

// LoggerFromContext returns the worker's logger (see WithLogger) with the
// job's id and entrypoint attached, or a logger that discards everything
// outside a handler.
func LoggerFromContext(ctx context.Context) *slog.Logger {
	s := scopeFrom(ctx)
	if s == nil {
		return slog.New(slog.DiscardHandler)
	}
	s.once.Do(func() { s.logger = s.base.With("job_id", s.job.ID, "entrypoint", s.job.Entrypoint) })
	return s.logger
}

// Resources returns the value given to WithResources, as a T, in a
// handler's ctx; ok is false when there is none or it is not a T.
func Resources[T any](ctx context.Context) (v T, ok bool) {
	if s := scopeFrom(ctx); s != nil {
		v, ok = s.resources.(T)
	}
	return v, ok
}

type resourcesOption struct{ v any }

func (o resourcesOption) applyManager(c *managerConfig) { c.resources = o.v }

// WithResources hands v (a struct of clients, pools, caches… that handlers
// share) to every handler of the QueueManager; handlers get it back with
// Resources[T](ctx).
func WithResources(v any) ManagerOption { return resourcesOption{v} }

// outlive returns a context that ends grace after ctx ends (with ctx's
// cause), or when stop is called: for a statement that should not be cut
// off midway when Run stops, but not wait forever either. (A timer left
// running by stop cancels a context already canceled.)
func outlive(ctx context.Context, grace time.Duration) (_ context.Context, stop func()) {
	c, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stopAfter := context.AfterFunc(ctx, func() {
		time.AfterFunc(grace, func() { cancel(context.Cause(ctx)) })
	})
	return c, func() {
		stopAfter()
		cancel(context.Canceled)
	}
}
