package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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

// TestFinishesShareNotifications: a worker's finishes announce their
// deletes at most once per finishNotifyGap between them (each finish used
// to send one, hundreds a second), and the last of them still reaches a
// watcher that hears of completions from notifications alone.
func TestFinishesShareNotifications(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const n = 3000
		ids := enqueueN(t, ctx, db, "f", n)

		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "LISTEN ch_pgqueuer"); err != nil {
			t.Fatal(err)
		}
		lctx, stopListening := context.WithCancel(ctx)
		var deletes atomic.Int64
		listened := make(chan struct{})
		go func() {
			defer close(listened)
			for {
				msg, err := conn.WaitForNotification(lctx)
				if err != nil {
					return
				}
				if ev, ok := pgq.ParseEvent(msg.Payload); ok && ev.Type == pgq.EventTableChanged && ev.Operation == "delete" {
					deletes.Add(1)
				}
			}
		}()
		t.Cleanup(func() {
			stopListening()
			<-listened
			_ = conn.Close(context.Background())
		})

		// Hears of completions from notifications only: no poll in the
		// test's time, no coalescing.
		w, err := pgq.NewCompletionWatcher(ctx, db, pgq.WithListenDSN(dsn),
			pgq.WithRefreshInterval(time.Hour), pgq.WithDebounce(0))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		waited := make(chan error, 1)
		go func() {
			_, err := w.WaitForAll(ctx, ids)
			waited <- err
		}()

		var finishes atomic.Int64
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("f", func(ctx context.Context, j *pgq.Job) error {
			time.Sleep(time.Millisecond)
			finishes.Add(1)
			return nil
		})
		began := time.Now()
		drain(t, ctx, qm, pgq.WithBatchSize(10), pgq.WithMaxConcurrentTasks(10))
		took := time.Since(began)
		if got := finishes.Load(); got != n {
			t.Fatalf("ran %d jobs, want %d", got, n)
		}
		if err := receive(t, waited, 10*time.Second, "the watcher to see every job finish"); err != nil {
			t.Fatalf("WaitForAll: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // the last notification on its way
		// One per gap, and one more at each end.
		limit := int64(took/pgq.FinishNotifyGap) + 2
		if got := deletes.Load(); got < 1 || got > limit {
			t.Errorf("%d delete notifications in a drain of %d jobs over %v, want 1 to %d (one per %v)",
				got, n, took.Round(time.Millisecond), limit, pgq.FinishNotifyGap)
		}

		// The drain's last finish may have notified itself. Here the
		// second of two jobs claimed together finishes within the gap of
		// the first's notification: quiet, so only the worker's own event
		// tells the watcher.
		pair := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = pair.Entrypoint("pair", func(ctx context.Context, j *pgq.Job) error {
			if string(j.Payload) == "late" {
				time.Sleep(pgq.FinishNotifyGap / 2)
			}
			return nil
		})
		runWorker(t, ctx, pair, pgq.WithBatchSize(2), pgq.WithMaxConcurrentTasks(2))
		q := pgq.NewQueries(db)
		for round := range 3 {
			time.Sleep(3 * pgq.FinishNotifyGap) // the first finish notifies
			ids, err := q.EnqueueBatch(ctx, []pgq.NewJob{{Entrypoint: "pair"}, {Entrypoint: "pair", Payload: []byte("late")}})
			if err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = w.WaitForAll(wctx, ids)
			cancel()
			if err != nil {
				t.Fatalf("round %d: the watcher did not see jobs %v finish: %v", round+1, ids, err)
			}
		}
	})
}

// TestUnwrittenOutcomeIsReported: an outcome batch writes every job still
// held by the claim that ran it and names the ones it could not write. A
// handler moves its own row's claim token (as a rescue and a new claim
// would), so its success changes nothing: the worker logs that one job,
// and no other of the batch, as not written.
func TestUnwrittenOutcomeIsReported(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		ids := enqueueN(t, ctx, db, "u", 20)
		moved := ids[7]
		var logs syncbuf.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn), pgq.WithLogger(logger))
		_ = qm.Entrypoint("u", func(ctx context.Context, j *pgq.Job) error {
			if j.ID != moved {
				return nil
			}
			_, err := db.ExecContext(ctx, "UPDATE pgqueuer SET updated = updated + interval '1 second' WHERE id = $1", int64(j.ID))
			return err
		})
		drain(t, ctx, qm, pgq.WithBatchSize(20), pgq.WithMaxConcurrentTasks(20))
		var reported []string
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "not written") {
				reported = append(reported, line)
			}
		}
		if len(reported) != 1 || !strings.Contains(reported[0], fmt.Sprintf("job_id=%d ", moved)) {
			t.Fatalf("reported as not written: %q, want job %d alone; log:\n%s", reported, moved, logs.String())
		}
		if left := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); left != 1 {
			t.Fatalf("%d jobs left, want the moved one", left)
		}
	})
}
