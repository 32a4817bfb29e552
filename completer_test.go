package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/syncbuf"
)

// TestHeartbeatAndOutcomesDoNotDeadlock runs a worker whose outcome writes
// mix deletions (successes) and updates (retries) while it heartbeats every
// 50 ms: both statements lock the rows the worker holds, and run at once
// they deadlocked (the heartbeat failed with 40P01, and a worker whose
// heartbeats fail has its jobs taken for abandoned).
func TestHeartbeatAndOutcomesDoNotDeadlock(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const n = 3000
		enqueueN(t, ctx, db, "d", n)
		var logs syncbuf.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn), pgq.WithLogger(logger))
		_ = qm.Entrypoint("d", func(ctx context.Context, j *pgq.Job) error {
			time.Sleep(time.Duration(j.ID%3) * time.Millisecond)
			if j.Attempts == 0 && j.ID%2 == 0 {
				return errors.New("once more")
			}
			return nil
		}, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Millisecond, MaxDelay: time.Millisecond}))
		opts := []pgq.RunOption{pgq.WithHeartbeatTimeout(150 * time.Millisecond), pgq.WithBatchSize(200), pgq.WithMaxConcurrentTasks(400)}
		drain(t, ctx, qm, opts...)
		// A drain returns once nothing can run now: retries written by its
		// last outcome batch may not be due yet (CI saw 95). They are
		// second attempts, which succeed: one more drain runs them.
		drain(t, ctx, qm, opts...)
		if strings.Contains(logs.String(), "deadlock") {
			t.Fatalf("the worker's statements deadlocked:\n%s", logs.String())
		}
		if left := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); left != 0 {
			t.Fatalf("%d jobs left", left)
		}
	})
}
