package pgq

import (
	"context"
	"log/slog"
)

type (
	jobKey       struct{}
	loggerKey    struct{}
	resourcesKey struct{}
)

// JobFromContext returns the job a handler's ctx belongs to, or nil
// outside a handler.
func JobFromContext(ctx context.Context) *Job {
	j, _ := ctx.Value(jobKey{}).(*Job)
	return j
}

// LoggerFromContext returns the worker's logger (see WithLogger) with the
// job's id and entrypoint attached, or a logger that discards everything
// outside a handler.
func LoggerFromContext(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// Resources returns the value given to WithResources, as a T, in a
// handler's ctx; ok is false when there is none or it is not a T.
func Resources[T any](ctx context.Context) (v T, ok bool) {
	v, ok = ctx.Value(resourcesKey{}).(T)
	return v, ok
}

type resourcesOption struct{ v any }

func (o resourcesOption) applyManager(c *managerConfig) { c.resources = o.v }

// WithResources hands v (a struct of clients, pools, caches… that handlers
// share) to every handler of the QueueManager; handlers get it back with
// Resources[T](ctx).
func WithResources(v any) ManagerOption { return resourcesOption{v} }
