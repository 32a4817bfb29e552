package pgq_test

import (
	"context"
	"database/sql"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/syncbuf"
)

// TestHeartbeatsDoNotQueueForThePool runs a worker whose handlers hold
// the pool's connections (SetMaxOpenConns(6)) for longer than the
// heartbeat timeout, while a second worker on a pool of its own releases
// stale jobs: the first worker's heartbeats, on a connection of its own,
// must keep every job it runs held, so no job runs twice. (With the
// heartbeat on the pool, it waited behind the handlers and the second
// worker ran their jobs again.)
func TestHeartbeatsDoNotQueueForThePool(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const n = 8
		enqueueN(t, ctx, db, "hold", n)
		var mu sync.Mutex
		runs := map[pgq.JobID]int{}
		record := func(id pgq.JobID) {
			mu.Lock()
			runs[id]++
			mu.Unlock()
		}
		timeout := 600 * time.Millisecond
		driver := "pgx"
		if strings.HasSuffix(t.Name(), "/postgres") {
			driver = "postgres"
		}

		free, err := sql.Open(driver, dsn) // the rescuer's pool, and the test's
		if err != nil {
			t.Fatal(err)
		}
		defer free.Close()

		// The starved worker: its handlers take the pool's connections and
		// hold them for 1.5 s each, 2.5 heartbeat timeouts; those that get
		// none wait for one.
		db.SetMaxOpenConns(6)
		starved := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = starved.Entrypoint("hold", func(ctx context.Context, j *pgq.Job) error {
			record(j.ID)
			c, err := db.Conn(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			time.Sleep(1500 * time.Millisecond)
			return c.PingContext(ctx)
		})
		runWorker(t, ctx, starved, pgq.WithHeartbeatTimeout(timeout), pgq.WithMaxConcurrentTasks(n), pgq.WithBatchSize(n))
		for deadline := time.Now().Add(10 * time.Second); ; {
			if scalar[int](t, free, "SELECT count(*) FROM pgqueuer WHERE status = 'picked'") == n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the starved worker did not claim every job")
			}
			time.Sleep(20 * time.Millisecond)
		}

		// The rescuer, on a pool of its own, runs the jobs of stale
		// heartbeats again.
		rescuer := pgq.NewQueueManager(free, pgq.WithListenDSN(dsn))
		_ = rescuer.Entrypoint("hold", func(ctx context.Context, j *pgq.Job) error { record(j.ID); return nil })
		runWorker(t, ctx, rescuer, pgq.WithHeartbeatTimeout(timeout))

		for deadline := time.Now().Add(20 * time.Second); ; {
			var left int
			if err := free.QueryRowContext(ctx, "SELECT count(*) FROM pgqueuer").Scan(&left); err != nil {
				t.Fatal(err)
			}
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d jobs left", left)
			}
			time.Sleep(50 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(runs) != n {
			t.Fatalf("%d of %d jobs ran", len(runs), n)
		}
		for id, k := range runs {
			if k != 1 {
				t.Errorf("job %d ran %d times", id, k)
			}
		}
	})
}

// TestPoolChurnRaisesIdleLimit runs handlers that each use the worker's
// pool, at database/sql's default of 2 idle connections, so that the pool
// closes and opens a connection per handler: Run raises the idle limit and
// says so once at WARN; with WithPoolTuning(false) it only says, once,
// what to do.
func TestPoolChurnRaisesIdleLimit(t *testing.T) {
	for _, tuning := range []bool{true, false} {
		name := map[bool]string{true: "tuning", false: "no tuning"}[tuning]
		t.Run(name, func(t *testing.T) {
			eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
				ctx := testCtx(t)
				// Enough jobs that the churn outlasts the pool check's
				// half second on a fast machine (120 drained in 0.7 s, and
				// 600 in 0.8 s in CI, before it had looked often enough).
				enqueueN(t, ctx, db, "q", 2000)
				var logs syncbuf.Buffer
				qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn),
					pgq.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
				_ = qm.Entrypoint("q", func(ctx context.Context, j *pgq.Job) error {
					_, err := db.ExecContext(ctx, "SELECT pg_sleep(0.01)")
					return err
				})
				before := db.Stats().MaxIdleClosed
				drain(t, ctx, qm, pgq.WithMaxConcurrentTasks(50), pgq.WithBatchSize(50), pgq.WithPoolTuning(tuning))
				closed := db.Stats().MaxIdleClosed - before
				raised := strings.Count(logs.String(), "raised it to connections_wanted")
				advised := strings.Count(logs.String(), "call db.SetMaxIdleConns")
				t.Logf("%d connections closed over the idle limit; log:\n%s", closed, logs.String())
				if tuning && (raised != 1 || advised != 0) {
					t.Fatalf("tuning: %d raise and %d advice messages, want 1 and 0", raised, advised)
				}
				if !tuning && (raised != 0 || advised != 1) {
					t.Fatalf("no tuning: %d raise and %d advice messages, want 0 and 1", raised, advised)
				}
				if !strings.Contains(logs.String(), "connections_wanted=52") {
					t.Fatalf("log does not name 52 connections (50 handlers + 2)")
				}
				if tuning && closed > 1000 { // of 2000 handlers, each closing one while unraised
					t.Fatalf("%d connections closed over the idle limit after raising it", closed)
				}
			})
		})
	}
}

// TestTerminatedConnectionsReplaced terminates every other backend of the
// database (pg_terminate_backend) while a worker drains: the worker's own
// connections die mid-run and must be replaced, so that every job
// completes, and each runs once (no job had a stale heartbeat).
func TestTerminatedConnectionsReplaced(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const n = 3000
		ids := enqueueN(t, ctx, db, "t", n)
		admin, err := sql.Open(map[bool]string{true: "postgres", false: "pgx"}[strings.HasSuffix(t.Name(), "/postgres")], dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		var mu sync.Mutex
		runs := map[pgq.JobID]int{}
		terminated := make(chan int, 1)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("t", func(_ context.Context, j *pgq.Job) error {
			mu.Lock()
			runs[j.ID]++
			k := len(runs)
			mu.Unlock()
			if k == n/4 {
				go func() {
					var killed int
					err := admin.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&killed)
					if err != nil {
						t.Error(err)
					}
					terminated <- killed
				}()
			}
			time.Sleep(200 * time.Microsecond)
			return nil
		})
		drain(t, ctx, qm, pgq.WithHeartbeatTimeout(5*time.Second), pgq.WithBatchSize(50))
		killed := <-terminated
		st, err := pgq.NewQueries(admin).JobStatus(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if st[id] != pgq.StatusSuccessful {
				t.Fatalf("job %d is %q after the backends were terminated", id, st[id])
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for id, k := range runs {
			if k != 1 {
				t.Errorf("job %d ran %d times", id, k)
			}
		}
		t.Logf("terminated %d backends; %d jobs ran once each", killed, len(runs))
	})
}
