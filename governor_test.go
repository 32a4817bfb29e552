package pgq_test

import (
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// TestGovernorLimitHoldsHandlers: the limit the governor sets is what the
// worker runs at once. Lowered, handlers that finish give up their slots
// until no more than the limit run (no job claimed ahead starts in a slot
// over it), and claims stop while it is reached; raised again, the jobs
// claimed ahead start at once, before any handler finishes. Every job runs
// once throughout.
func TestGovernorLimitHoldsHandlers(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const jobs, most, low = 1500, 20, 4
		g := newHandlerGauge()
		var (
			lowered   atomic.Int64 // when the limit was lowered (unix ns), 0 while it is not
			overLimit atomic.Int64 // handlers that started over it since
			done      atomic.Int64
		)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("g", func(ctx context.Context, j *pgq.Job) error {
			before := g.enter(j.ID)
			// A start decided before the limit fell may still come within
			// a few milliseconds of it.
			if at := lowered.Load(); at != 0 && time.Since(time.Unix(0, at)) > 5*time.Millisecond && before >= low {
				overLimit.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
			g.leave()
			done.Add(1)
			return nil
		})
		ids := enqueueN(t, ctx, db, "g", jobs)
		peakAfter := func(settle, watch time.Duration) int {
			time.Sleep(settle)
			g.peakSince()
			time.Sleep(watch)
			return g.peakSince()
		}
		// The governor's own decisions are off: the test sets the limit.
		runWorker(t, ctx, qm, pgq.WithMaxConcurrentTasks(most), pgq.WithConcurrencyTuning(false))
		// A loaded machine may take seconds to start the worker.
		if p := g.waitPeak(most, 10*time.Second); p != most {
			t.Fatalf("%d handlers at once at the start, want %d", p, most)
		}
		lowered.Store(time.Now().UnixNano())
		if !pgq.SetConcurrencyLimit(qm, low) {
			t.Fatal("the worker is not running")
		}
		// Handlers running when the limit fell finish within 20 ms (and a
		// loaded machine's delays).
		if p := peakAfter(300*time.Millisecond, 300*time.Millisecond); p > low || p == 0 {
			t.Fatalf("%d handlers at once under a limit of %d", p, low)
		}
		lowered.Store(0)
		if n := overLimit.Load(); n > 0 {
			t.Fatalf("%d handlers started with %d or more running, after the limit fell to %d", n, low, low)
		}
		pgq.SetConcurrencyLimit(qm, most)
		// Raised, the jobs claimed ahead start at once (executor.fill);
		// without it the handlers stay at the lowered limit, as each one
		// that finishes starts one other.
		if p := g.waitPeak(most, time.Second); p != most {
			t.Fatalf("%d handlers at once after the limit went back to %d", p, most)
		}
		for done.Load() < jobs {
			if ctx.Err() != nil {
				t.Fatalf("%d of %d jobs ran", done.Load(), jobs)
			}
			time.Sleep(20 * time.Millisecond)
		}
		g.eachRanOnce(t, ids)
	})
}
