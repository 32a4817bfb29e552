package pgq_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// BenchmarkWatchLatency measures, one job at a time, the time from a no-op
// handler's return to WaitFor returning in the waiting goroutine (p50/p99
// in ms), and the part of it before the job table's delete notification
// reached a separate listener (notify-p50: the worker's outcome write and
// commit). "idle" leaves a quiet debounce window before each job, so the
// completion is served on the leading edge; "back-to-back" does not, so
// the debounce window holds the refresh back.
func BenchmarkWatchLatency(b *testing.B) {
	for _, d := range pgqtest.Drivers() {
		for _, mode := range []struct {
			name string
			gap  time.Duration
		}{{"idle", pgq.DefaultDebounce + 10*time.Millisecond}, {"back-to-back", 0}} {
			b.Run(d+"/"+mode.name, func(b *testing.B) { benchWatchLatency(b, d, mode.gap) })
		}
	}
}

func benchWatchLatency(b *testing.B, driver string, gap time.Duration) {
	e := newWatchEnv(b, driver)
	w := e.watcher(b)
	notified := deleteNotifications(b, e)

	var mu sync.Mutex
	ended := map[pgq.JobID]time.Time{}
	e.startWorker(b, map[string]pgq.Handler{"noop": func(ctx context.Context, j *pgq.Job) error {
		now := time.Now()
		mu.Lock()
		ended[j.ID] = now
		mu.Unlock()
		return nil
	}})
	time.Sleep(100 * time.Millisecond) // listeners up

	lat := make([]time.Duration, 0, b.N)
	toNotify := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		if gap > 0 {
			b.StopTimer()
			time.Sleep(gap)
			b.StartTimer()
		}
		id, err := e.q.Enqueue(e.ctx, "noop", nil)
		if err != nil {
			b.Fatal(err)
		}
		st, err := w.WaitFor(e.ctx, id)
		done := time.Now()
		if err != nil || st != pgq.StatusSuccessful {
			b.Fatalf("WaitFor(%d) = %q, %v", id, st, err)
		}
		mu.Lock()
		end, ok := ended[id]
		mu.Unlock()
		if !ok {
			b.Fatalf("job %d: handler end not recorded", id)
		}
		lat = append(lat, done.Sub(end))
		select {
		case at := <-notified:
			toNotify = append(toNotify, at.Sub(end))
		case <-time.After(5 * time.Second):
			b.Fatalf("job %d: no delete notification", id)
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 99)), "p99-ms")
	b.ReportMetric(ms(percentile(toNotify, 50)), "notify-p50-ms")
	b.ReportMetric(float64(w.Refreshes())/float64(b.N), "queries/op")
}

// deleteNotifications listens on the queue's channel on a connection of
// its own and sends the arrival time of every delete announcement.
func deleteNotifications(b *testing.B, e *watchEnv) <-chan time.Time {
	conn, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(e.ctx, "LISTEN ch_pgqueuer"); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	out := make(chan time.Time, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				return
			}
			at := time.Now()
			var ev struct{ Operation string }
			if json.Unmarshal([]byte(n.Payload), &ev) == nil && ev.Operation == "delete" {
				select {
				case out <- at:
				default:
				}
			}
		}
	})
	b.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = conn.Close(context.Background())
	})
	return out
}

// BenchmarkWatchBurst finishes b.N jobs as fast as a worker can (batches
// of 100) while waits on all of them are pending, and reports the status
// queries the watcher ran per second of the burst and per completion.
// Use a b.N of 10,000 or more (-benchtime 20000x) for a burst that lasts.
func BenchmarkWatchBurst(b *testing.B) {
	for _, d := range pgqtest.Drivers() {
		b.Run(d, func(b *testing.B) {
			e := newWatchEnv(b, d)
			w := e.watcher(b)
			var ids []pgq.JobID
			for len(ids) < b.N {
				ids = append(ids, e.enqueue(b, "burst", min(1000, b.N-len(ids)))...)
			}
			var wg sync.WaitGroup
			errs := make(chan error, len(ids)/100+1)
			for chunk := range slices.Chunk(ids, 100) {
				wg.Go(func() {
					_, err := w.WaitForAll(e.ctx, chunk)
					errs <- err
				})
			}
			waitsPending(b, w, (len(ids)+99)/100)
			settle(b, w)
			before := w.Refreshes()

			b.ResetTimer()
			start := time.Now()
			e.startWorker(b, map[string]pgq.Handler{"burst": func(ctx context.Context, j *pgq.Job) error { return nil }},
				pgq.WithBatchSize(100), pgq.WithMaxConcurrentTasks(100))
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
			queries := float64(w.Refreshes() - before)
			b.ReportMetric(queries/elapsed.Seconds(), "queries/s")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "completions/s")
			b.ReportMetric(queries, "queries")
		})
	}
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
