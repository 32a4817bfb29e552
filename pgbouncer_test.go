package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/pgcluster"
	"github.com/pgq-dev/pgq/internal/syncbuf"
)

// startBouncer starts a throwaway PgBouncer in pool mode in front of the
// test server and returns it; the test skips, in one line, when PgBouncer
// cannot be found or installed.
func startBouncer(t *testing.T, serverDSN, mode string, settings map[string]string) *pgcluster.PgBouncer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // may install it
	defer cancel()
	b, err := pgcluster.StartPgBouncer(ctx, pgcluster.PgBouncerOptions{Server: serverDSN, PoolMode: mode, Settings: settings})
	if errors.Is(err, pgcluster.ErrNoPgBouncer) {
		t.Skipf("skipping: no PgBouncer (%v)", strings.SplitN(err.Error(), "\n", 2)[0])
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("PgBouncer log:\n%s", b.LogTail())
		}
		if err := b.Stop(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// bouncerDSN returns serverDSN through b, with extra appended (settings
// for the driver).
func bouncerDSN(t *testing.T, b *pgcluster.PgBouncer, serverDSN, extra string) string {
	t.Helper()
	d, err := b.DSN(serverDSN)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(d + " " + extra)
}

// transactionModeDSN is what a pool through a transaction-mode PgBouncer
// (1.18, without protocol-level prepared statements) needs, per driver:
// lib/pq must send each query in one round trip, pgx must not cache
// prepared statements (see docs/pgbouncer.md).
var transactionModeDSN = map[string]string{
	"postgres": "binary_parameters=yes",
	"pgx":      "default_query_exec_mode=cache_describe",
}

// TestPgBouncer runs a producer, a worker and a completion watcher through
// PgBouncer, on both drivers: in transaction mode with LISTEN going to the
// server directly (WithListenDSN), and in session mode with nothing extra
// (the quick start's way of opening the pool). Every job runs, once, and
// WaitFor returns within a second of the handler's end (the watcher is
// woken by notifications, not by its 5 s refresh); the worker and the
// watcher listen; nothing is logged at WARN. The server pool is small, so
// that the clients' transactions move between server connections.
func TestPgBouncer(t *testing.T) {
	for _, mode := range []string{pgcluster.PoolTransaction, pgcluster.PoolSession} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			eachDriver(t, func(t *testing.T, _ *sql.DB, dsn string) {
				driver := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
				ctx := testCtx(t)
				var log syncbuf.Buffer
				logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))
				var db *sql.DB
				listen := "" // WithListenDSN's
				switch mode {
				case pgcluster.PoolTransaction:
					b := startBouncer(t, dsn, mode, map[string]string{"default_pool_size": "3"})
					var err error
					if db, err = sql.Open(driver, bouncerDSN(t, b, dsn, transactionModeDSN[driver])); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = db.Close() })
					listen = dsn
				default:
					b := startBouncer(t, dsn, mode, nil)
					db = quickStartDB(t, driver, bouncerDSN(t, b, dsn, ""))
				}
				testThroughBouncer(t, ctx, db, listen, logger, &log)
			})
		})
	}
}

func testThroughBouncer(t *testing.T, ctx context.Context, db *sql.DB, listen string, logger *slog.Logger, log *syncbuf.Buffer) {
	const batch = 200
	mopts := []pgq.ManagerOption{pgq.WithLogger(logger)}
	wopts := []pgq.WatcherOption{pgq.WithLogger(logger)}
	if listen != "" {
		mopts = append(mopts, pgq.WithListenDSN(listen))
		wopts = append(wopts, pgq.WithListenDSN(listen))
	}
	ends := make(chan time.Time, 16)
	var runs atomic.Int64
	qm := pgq.NewQueueManager(db, mopts...)
	if err := qm.Entrypoint("one", func(context.Context, *pgq.Job) error {
		ends <- time.Now()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := qm.Entrypoint("many", func(context.Context, *pgq.Job) error {
		runs.Add(1)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	runWorker(t, ctx, qm)
	w, err := pgq.NewCompletionWatcher(ctx, db, wopts...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	q := pgq.NewQueries(db)

	// A batch, waited for as a whole.
	jobs := make([]pgq.NewJob, batch)
	for i := range jobs {
		jobs[i] = pgq.NewJob{Entrypoint: "many", Payload: fmt.Appendf(nil, "%d", i), Headers: map[string]string{"n": fmt.Sprint(i)}}
	}
	ids, err := q.EnqueueBatch(ctx, jobs)
	if err != nil {
		t.Fatal(err)
	}
	sts, err := w.WaitForAll(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	for id, st := range sts {
		if st != pgq.StatusSuccessful {
			t.Errorf("job %d: %s", id, st)
		}
	}
	if n := runs.Load(); n != batch {
		t.Errorf("%d runs of %d jobs", n, batch)
	}

	// Jobs one after another: each wait ends in real time.
	var lags []time.Duration
	for i := range 6 {
		id, err := q.Enqueue(ctx, "one", []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		st, err := w.WaitFor(ctx, id)
		returned := time.Now()
		if err != nil || st != pgq.StatusSuccessful {
			t.Fatalf("WaitFor(%d) = %q, %v", id, st, err)
		}
		if i > 0 { // the first warms up
			lags = append(lags, returned.Sub(<-ends))
		} else {
			<-ends
		}
	}
	slices.Sort(lags)
	t.Logf("WaitFor after the handler's end: %v", lags)
	if lags[len(lags)-1] > time.Second {
		t.Errorf("WaitFor returned %v after the handler's end, want within 1 s (real time, not the 5 s refresh)", lags[len(lags)-1])
	}
	if !qm.Listening() || !w.Listening() {
		t.Errorf("Listening: worker %v, watcher %v; want both true", qm.Listening(), w.Listening())
	}
	if s := log.String(); s != "" {
		t.Errorf("logged at WARN:\n%s", s)
	}
}

// TestPgBouncerPreparedStatements: through PgBouncer 1.18 in transaction
// mode, with a server pool of two so that the clients' transactions move
// between server connections, a producer (concurrent enqueues), a worker
// and a watcher run without a single error when the DSN carries the
// driver's setting (transactionModeDSN). Without it, pgx's cached
// statements collide on the server connections (already exists) and
// lib/pq's two round trips bind to another client's unnamed statement;
// the errors pgq returns then name the fix.
func TestPgBouncerPreparedStatements(t *testing.T) {
	for _, fixed := range []bool{true, false} {
		t.Run(map[bool]string{true: "set", false: "default"}[fixed], func(t *testing.T) {
			eachDriver(t, func(t *testing.T, _ *sql.DB, dsn string) {
				driver := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
				if !fixed && driver == "postgres" {
					// Not run: lib/pq may then decode another client's
					// result as its own and panic inside the driver,
					// which ends the whole test binary.
					t.Skip("lib/pq without binary_parameters=yes in transaction mode is unsafe (docs/pgbouncer.md)")
				}
				ctx := testCtx(t)
				b := startBouncer(t, dsn, pgcluster.PoolTransaction, map[string]string{"default_pool_size": "2"})
				extra := ""
				if fixed {
					extra = transactionModeDSN[driver]
				}
				db, err := sql.Open(driver, bouncerDSN(t, b, dsn, extra))
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				db.SetMaxIdleConns(20) // the producers' connections stay open
				var log syncbuf.Buffer
				logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))
				if !fixed {
					// Failed claims leave jobs queued: waits end with ctx.
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
				}
				errs := preparedStatementLoad(t, ctx, db, dsn, logger)
				if fixed {
					for _, err := range errs {
						t.Error(err)
					}
					if s := log.String(); s != "" {
						t.Errorf("logged at WARN:\n%s", s)
					}
					return
				}
				// pgx's errors name the fix, returned or logged. lib/pq's
				// do when the server refuses the Bind; when the other
				// client's statement takes as many parameters, it runs
				// instead of ours (seen: pgq's schema check got another
				// query's rows and reported a schema incomplete).
				hinted := strings.Count(log.String(), "docs/pgbouncer.md")
				for _, err := range errs {
					switch {
					case strings.Contains(err.Error(), "docs/pgbouncer.md"):
						hinted++
					case driver == "pgx" && !errors.Is(err, context.DeadlineExceeded): // a job whose claim failed
						t.Errorf("error without the hint: %v", err)
					}
				}
				t.Logf("%d errors returned, %d naming the fix (returned or logged); log:\n%s", len(errs), hinted, log.String())
				if hinted == 0 && driver == "pgx" {
					// lib/pq's failures depend on timing; pgx's do not.
					t.Error("no error names the fix")
				}
			})
		})
	}
}

// preparedStatementLoad runs four producers enqueueing jobs one by one
// while a worker runs them and a watcher waits for each, and returns the
// errors they met (a producer stops at its first).
func preparedStatementLoad(t *testing.T, ctx context.Context, db *sql.DB, listenDSN string, logger *slog.Logger) []error {
	t.Helper()
	qm := pgq.NewQueueManager(db, pgq.WithLogger(logger), pgq.WithListenDSN(listenDSN))
	if err := qm.Entrypoint("p", func(context.Context, *pgq.Job) error { return nil }); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- qm.Run(runCtx) }()
	var errs []error
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	w, err := pgq.NewCompletionWatcher(ctx, db, pgq.WithLogger(logger), pgq.WithListenDSN(listenDSN))
	if err != nil {
		fail(err)
	} else {
		defer w.Close()
	}
	q := pgq.NewQueries(db)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range 50 {
				id, err := q.Enqueue(ctx, "p", fmt.Appendf(nil, "%d", i), pgq.WithPriority(int32(i%3)))
				if err != nil {
					fail(err)
					return
				}
				if w == nil {
					continue
				}
				if st, err := w.WaitFor(ctx, id); err != nil || st != pgq.StatusSuccessful {
					fail(fmt.Errorf("WaitFor(%d) = %q, %w", id, st, err))
					return
				}
				if _, err := q.QueueSize(ctx); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	stop()
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) { // stopped in its start
		fail(err)
	}
	return errs
}

// TestPgBouncerDeafListener: through PgBouncer in transaction mode without
// WithListenDSN, LISTEN succeeds on the pool's side (a borrowed pgx
// connection, or lib/pq's listener on the DSN pgq.Open remembered), but the
// server connection that ran it goes back to PgBouncer's pool, and
// notifications never arrive. The worker and the watcher find out by their
// listener's echo, each warn once naming the fix, report Listening false,
// and poll: jobs still run and waits still end. (Before the echo they
// reported Listening true and waited for the 5 s refresh.)
func TestPgBouncerDeafListener(t *testing.T) {
	eachDriver(t, func(t *testing.T, _ *sql.DB, dsn string) {
		driver := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
		ctx := testCtx(t)
		b := startBouncer(t, dsn, pgcluster.PoolTransaction, map[string]string{"default_pool_size": "3"})
		// The quick start's way: pgq.Open for lib/pq, sql.Open for pgx.
		db := quickStartDB(t, driver, bouncerDSN(t, b, dsn, transactionModeDSN[driver]))
		var log syncbuf.Buffer
		logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))
		qm := pgq.NewQueueManager(db, pgq.WithLogger(logger))
		if err := qm.Entrypoint("deaf", func(context.Context, *pgq.Job) error { return nil }); err != nil {
			t.Fatal(err)
		}
		runWorker(t, ctx, qm, pgq.WithPollInterval(50*time.Millisecond))
		w, err := pgq.NewCompletionWatcher(ctx, db, pgq.WithLogger(logger), pgq.WithRefreshInterval(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		q := pgq.NewQueries(db)
		for range 3 {
			id, err := q.Enqueue(ctx, "deaf", nil)
			if err != nil {
				t.Fatal(err)
			}
			if st, err := w.WaitFor(ctx, id); err != nil || st != pgq.StatusSuccessful {
				t.Fatalf("WaitFor(%d) = %q, %v", id, st, err)
			}
		}
		eventually(t, "both warnings", func() bool { return strings.Count(log.String(), "notifications do not arrive") >= 2 })
		time.Sleep(100 * time.Millisecond) // any further warning
		if qm.Listening() || w.Listening() {
			t.Errorf("Listening: worker %v, watcher %v; want both false", qm.Listening(), w.Listening())
		}
		var deaf []string
		for _, l := range strings.Split(strings.TrimSpace(log.String()), "\n") {
			switch {
			case strings.Contains(l, "notifications do not arrive"):
				deaf = append(deaf, l)
			case strings.Contains(l, "watcher's listener not connected yet"):
				// NewCompletionWatcher waits for its listener for at
				// most the refresh interval, here shorter than the echo's
				// timeout.
			default:
				t.Errorf("unexpected warning: %s", l)
			}
		}
		if len(deaf) != 2 || strings.Contains(deaf[0], "queue_manager_id") == strings.Contains(deaf[1], "queue_manager_id") {
			t.Errorf("want one warning from the worker, one from the watcher:\n%s", strings.Join(deaf, "\n"))
		}
		for _, l := range deaf {
			for _, s := range []string{"transaction-mode pooler", "pgq.WithListenDSN", "session-mode", "level=WARN"} {
				if !strings.Contains(l, s) {
					t.Errorf("warning does not say %q: %s", s, l)
				}
			}
		}
	})
}
