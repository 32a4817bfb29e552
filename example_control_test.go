package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/pgq-dev/pgq"
)

// A handler that waits for a rate-limited API snoozes its job instead of
// failing it (no attempt is used), gives up on input it can never handle
// with Discard, and has a timeout; a job may set its own timeout and
// attempts when it is enqueued.
func ExampleSnooze() {
	var db *sql.DB // your pool
	errBusy := errors.New("busy")
	errBad := errors.New("bad input")
	call := func(ctx context.Context, payload []byte) error { return nil } // your work

	qm := pgq.NewQueueManager(db)
	_ = qm.Entrypoint("sync", func(ctx context.Context, job *pgq.Job) error {
		switch err := call(ctx, job.Payload); {
		case errors.Is(err, errBusy):
			return pgq.Snooze(30 * time.Second) // try again later, same attempt
		case errors.Is(err, errBad):
			return pgq.Discard(err) // no retry will help
		default:
			return err // nil, or a failure for the retry policy
		}
	}, pgq.WithTimeout(time.Minute), pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 5}))

	_, _ = pgq.NewQueries(db).Enqueue(context.Background(), "sync", []byte(`{"account":7}`),
		pgq.WithJobTimeout(5*time.Minute), pgq.WithMaxAttempts(10))
}
