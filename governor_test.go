package pgq_test

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// TestGovernorLimitHoldsHandlers: the limit the governor sets is what the
// worker runs at once. Lowered, handlers that finish give up their slots
// until no more than the limit run, and claims stop while it is reached;
// raised again, the jobs claimed ahead start at once, before any handler
// finishes. Every job runs once throughout.
func TestGovernorLimitHoldsHandlers(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const jobs, most, low = 1500, 20, 4
		var (
			mu      sync.Mutex
			running int
			peak    int
			ran     = map[pgq.JobID]int{}
			done    atomic.Int64
		)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("g", func(ctx context.Context, j *pgq.Job) error {
			mu.Lock()
			running++
			peak = max(peak, running)
			ran[j.ID]++
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			running--
			mu.Unlock()
			done.Add(1)
			return nil
		})
		enqueueN(t, ctx, db, "g", jobs)
		peakAfter := func(settle, watch time.Duration) int {
			time.Sleep(settle)
			mu.Lock()
			peak = running
			mu.Unlock()
			time.Sleep(watch)
			mu.Lock()
			defer mu.Unlock()
			return peak
		}
		// The governor's own decisions are off: the test sets the limit.
		runWorker(t, ctx, qm, pgq.WithMaxConcurrentTasks(most), pgq.WithConcurrencyTuning(false))
		if p := peakAfter(300*time.Millisecond, 200*time.Millisecond); p != most {
			t.Fatalf("%d handlers at once at the start, want %d", p, most)
		}
		if !pgq.SetConcurrencyLimit(qm, low) {
			t.Fatal("the worker is not running")
		}
		// Handlers running when the limit fell finish within 20 ms.
		if p := peakAfter(100*time.Millisecond, 300*time.Millisecond); p > low || p == 0 {
			t.Fatalf("%d handlers at once under a limit of %d", p, low)
		}
		pgq.SetConcurrencyLimit(qm, most)
		// Raised, the jobs claimed ahead start at once (the claim loop
		// sees the raise within a claim's time).
		if p := peakAfter(50*time.Millisecond, 200*time.Millisecond); p != most {
			t.Fatalf("%d handlers at once after the limit went back to %d", p, most)
		}
		for done.Load() < jobs {
			if ctx.Err() != nil {
				t.Fatalf("%d of %d jobs ran", done.Load(), jobs)
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		for id, n := range ran {
			if n != 1 {
				t.Errorf("job %d ran %d times", id, n)
			}
		}
		if len(ran) != jobs {
			t.Errorf("%d jobs ran, want %d", len(ran), jobs)
		}
	})
}
