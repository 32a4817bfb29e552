package pgq_test

// This file only has to compile: it pins the public names and signatures
// that code outside the repository builds against (shared/API.md).

import (
	"context"
	"database/sql"
	"io/fs"
	"time"

	"github.com/pgq-dev/pgq"
)

var (
	_ pgq.JobID  = 0
	_ pgq.Status = pgq.StatusQueued
	_            = []pgq.Status{pgq.StatusQueued, pgq.StatusPicked, pgq.StatusSuccessful, pgq.StatusException,
		pgq.StatusCanceled, pgq.StatusDeleted, pgq.StatusFailed}
	_ pgq.DBTX = (*sql.DB)(nil)
	_ pgq.DBTX = (*sql.Conn)(nil)
	_ pgq.DBTX = (*sql.Tx)(nil)

	_ func(context.Context, *sql.DB, ...pgq.SchemaOption) error = pgq.Install
	_ func(context.Context, *sql.DB, ...pgq.SchemaOption) error = pgq.Upgrade
	_ func(context.Context, *sql.DB, ...pgq.SchemaOption) error = pgq.Uninstall
	_ func(context.Context, *sql.DB, ...pgq.SchemaOption) error = pgq.Verify
	_ func() fs.FS                                              = pgq.Migrations
	_ pgq.SchemaOption                                          = pgq.WithPrefix("")
	_ pgq.SchemaOption                                          = pgq.WithSchema("")
	_ pgq.SchemaOption                                          = pgq.WithDurability(pgq.Durable)

	_ func(pgq.DBTX, ...pgq.Option) *pgq.Queries                                                   = pgq.NewQueries
	_ func(*pgq.Queries, context.Context, string, []byte, ...pgq.EnqueueOption) (pgq.JobID, error) = (*pgq.Queries).Enqueue
	_ func(*pgq.Queries, context.Context, []pgq.NewJob, ...pgq.BatchOption) ([]pgq.JobID, error)   = (*pgq.Queries).EnqueueBatch
	_                                                                                              = pgq.NewJob{Entrypoint: "", Payload: nil, Priority: 0, ExecuteAfter: time.Second, DedupeKey: "", Headers: map[string]string{}}
	_ error                                                                                        = pgq.ErrDuplicateJob
	_ pgq.EnqueueOption                                                                            = pgq.WithPriority(0)
	_ pgq.EnqueueOption                                                                            = pgq.WithExecuteAfter(0)
	_ pgq.EnqueueOption                                                                            = pgq.WithDedupeKey("")
	_ pgq.EnqueueOption                                                                            = pgq.WithHeaders(nil)
	_ func(*pgq.Queries, context.Context, []pgq.JobID) error                                       = (*pgq.Queries).MarkJobAsCancelled
	_ func(*pgq.Queries, context.Context, []pgq.JobID) (map[pgq.JobID]pgq.Status, error)           = (*pgq.Queries).JobStatus
	_ func(*pgq.Queries, context.Context) ([]pgq.QueueCount, error)                                = (*pgq.Queries).QueueSize

	_ func(*sql.DB, ...pgq.ManagerOption) *pgq.QueueManager                       = pgq.NewQueueManager
	_ pgq.ManagerOption                                                           = pgq.WithListenDSN("")
	_ pgq.ManagerOption                                                           = pgq.WithLogger(nil)
	_ pgq.Handler                                                                 = func(ctx context.Context, job *pgq.Job) error { return nil }
	_ func(*pgq.QueueManager, string, pgq.Handler, ...pgq.EntrypointOption) error = (*pgq.QueueManager).Entrypoint
	_ pgq.EntrypointOption                                                        = pgq.WithConcurrencyLimit(1)
	_ pgq.EntrypointOption                                                        = pgq.WithRetry(pgq.RetryPolicy{})
	_ func(*pgq.QueueManager, context.Context, ...pgq.RunOption) error            = (*pgq.QueueManager).Run
	_                                                                             = []pgq.RunOption{pgq.WithBatchSize(1), pgq.WithDequeueTimeout(1),
		pgq.WithMaxConcurrentTasks(1), pgq.WithHeartbeatTimeout(1), pgq.WithMode(pgq.ModeContinuous), pgq.WithMode(pgq.ModeDrain),
		pgq.WithVacuum(false)}
	_ func(context.Context, *sql.Tx, *pgq.Job) error = pgq.CompleteTx
	_ error                                          = pgq.ErrJobLost
	_                                                = pgq.Job{ID: 0, Priority: 0, Entrypoint: "", Payload: nil, Headers: nil, Attempts: 0, Created: time.Time{}, ExecuteAfter: time.Time{}}

	_ func(context.Context, *sql.DB, ...pgq.WatcherOption) (*pgq.CompletionWatcher, error)         = pgq.NewCompletionWatcher
	_ pgq.WatcherOption                                                                            = pgq.WithListenDSN("")
	_ pgq.WatcherOption                                                                            = pgq.WithRefreshInterval(time.Second)
	_ pgq.WatcherOption                                                                            = pgq.WithDebounce(time.Second)
	_ func(*pgq.CompletionWatcher, context.Context, pgq.JobID) (pgq.Status, error)                 = (*pgq.CompletionWatcher).WaitFor
	_ func(*pgq.CompletionWatcher, context.Context, []pgq.JobID) (map[pgq.JobID]pgq.Status, error) = (*pgq.CompletionWatcher).WaitForAll
	_ func(*pgq.CompletionWatcher, context.Context, []pgq.JobID) (pgq.JobID, pgq.Status, error)    = (*pgq.CompletionWatcher).WaitForFirst
	_ func(*pgq.CompletionWatcher) error                                                           = (*pgq.CompletionWatcher).Close
	_ error                                                                                        = pgq.ErrJobNotFound
)
