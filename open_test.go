package pgq_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/syncbuf"
	"github.com/pgq-dev/pgq/pgqtest"
)

// quickStartDB opens dsn as the README's quick start does for driver:
// sql.Open for pgx, pgq.Open for lib/pq.
func quickStartDB(t *testing.T, driver, dsn string) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	if driver == "postgres" {
		db, err = pgq.Open(driver, dsn)
	} else {
		db, err = sql.Open(driver, dsn)
	}
	if err != nil {
		t.Fatalf("open %s: %v", driver, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestQuickStartRealTime builds a worker and a watcher as the README's
// quick start does, with each driver and default options, and checks that
// WaitFor returns within 100 ms of the handler's end, for jobs enqueued one
// after another: the watcher is woken by notifications, not by its 5 s
// safety poll. (With lib/pq opened by sql.Open, as before pgq.Open, waits
// took up to 5 s and this test fails.)
func TestQuickStartRealTime(t *testing.T) {
	const (
		jobs  = 3
		bound = 100 * time.Millisecond
	)
	eachDriver(t, func(t *testing.T, _ *sql.DB, dsn string) {
		ctx := testCtx(t)
		db := quickStartDB(t, t.Name()[strings.LastIndex(t.Name(), "/")+1:], dsn)
		var log syncbuf.Buffer
		logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))

		ends := make(chan time.Time, jobs)
		qm := pgq.NewQueueManager(db, pgq.WithLogger(logger))
		if err := qm.Entrypoint("quick", func(context.Context, *pgq.Job) error {
			ends <- time.Now()
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		runWorker(t, ctx, qm)
		w, err := pgq.NewCompletionWatcher(ctx, db, pgq.WithLogger(logger))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		q := pgq.NewQueries(db)
		for i := range jobs {
			id, err := q.Enqueue(ctx, "quick", nil)
			if err != nil {
				t.Fatal(err)
			}
			st, err := w.WaitFor(ctx, id)
			returned := time.Now()
			if err != nil || st != pgq.StatusSuccessful {
				t.Fatalf("WaitFor(%d) = %q, %v", id, st, err)
			}
			ended := <-ends
			if d := returned.Sub(ended); d > bound {
				t.Errorf("job %d of %d: WaitFor returned %v after the handler's end, want within %v", i+1, jobs, d, bound)
			} else {
				t.Logf("job %d: WaitFor returned %v after the handler's end", i+1, d)
			}
		}
		if !qm.Listening() || !w.Listening() {
			t.Errorf("Listening: worker %v, watcher %v; want both true", qm.Listening(), w.Listening())
		}
		if s := log.String(); s != "" {
			t.Errorf("warnings logged:\n%s", s)
		}
	})
}

// TestNoListenerWarns: a lib/pq pool from sql.Open cannot listen; the
// worker and the watcher each say so once at WARN, naming the fix, and
// report Listening false.
func TestNoListenerWarns(t *testing.T) {
	db, _ := pgqtest.NewDB(t, "postgres")
	ctx := testCtx(t)
	var log syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))

	qm := pgq.NewQueueManager(db, pgq.WithLogger(logger))
	if err := qm.Entrypoint("quick", func(context.Context, *pgq.Job) error { return nil }); err != nil {
		t.Fatal(err)
	}
	runWorker(t, ctx, qm, pgq.WithPollInterval(20*time.Millisecond))
	w, err := pgq.NewCompletionWatcher(ctx, db, pgq.WithLogger(logger), pgq.WithRefreshInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Jobs still run and waits still end, by polling.
	for range 3 {
		id, err := pgq.NewQueries(db).Enqueue(ctx, "quick", nil)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := w.WaitFor(ctx, id); err != nil || st != pgq.StatusSuccessful {
			t.Fatalf("WaitFor(%d) = %q, %v", id, st, err)
		}
	}
	if qm.Listening() || w.Listening() {
		t.Errorf("Listening: worker %v, watcher %v; want both false", qm.Listening(), w.Listening())
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	want := map[string]int{"the worker cannot LISTEN": 0, "the completion watcher cannot LISTEN": 0}
	for _, l := range lines {
		for k := range want {
			if strings.Contains(l, k) {
				want[k]++
				for _, s := range []string{"level=WARN", "pgq.Open", "pgq.WithListenDSN", "*pq.Driver"} {
					if !strings.Contains(l, s) {
						t.Errorf("warning %q does not say %q", l, s)
					}
				}
			}
		}
	}
	for k, n := range want {
		if n != 1 {
			t.Errorf("%q logged %d times, want once; log:\n%s", k, n, log.String())
		}
	}
}

// TestOpen: pgq.Open's pool works like sql.Open's, with the driver's own
// connections; its Driver unwraps to the registered driver; Listening is
// true with lib/pq; an unknown driver name is an error naming it.
func TestOpen(t *testing.T) {
	eachDriver(t, func(t *testing.T, _ *sql.DB, dsn string) {
		name := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
		ctx := testCtx(t)
		db, err := pgq.Open(name, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
		u, ok := db.Driver().(interface{ Unwrap() driver.Driver })
		if !ok {
			t.Fatalf("Driver() is %T, without Unwrap", db.Driver())
		}
		switch d := u.Unwrap(); name {
		case "postgres":
			if _, ok := d.(*pq.Driver); !ok {
				t.Errorf("Unwrap() = %T, want *pq.Driver", d)
			}
		case "pgx":
			if _, ok := d.(*stdlib.Driver); !ok {
				t.Errorf("Unwrap() = %T, want *stdlib.Driver", d)
			}
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.Raw(func(dc any) error {
			if name == "pgx" {
				if _, ok := dc.(*stdlib.Conn); !ok {
					t.Errorf("raw connection is %T, want *stdlib.Conn", dc)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		w, err := pgq.NewCompletionWatcher(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		eventually(t, "the watcher listening", w.Listening)
	})
	if _, err := pgq.Open("no-such-driver", ""); err == nil || !strings.Contains(err.Error(), "no-such-driver") {
		t.Errorf("Open(no-such-driver) = %v, want an error naming it", err)
	}
}

// TestListenerDownWarnsOnce: a listener that cannot connect says so once
// at WARN while it retries, and the watcher reports Listening false.
func TestListenerDownWarnsOnce(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, _ string) {
		ctx := testCtx(t)
		var log syncbuf.Buffer
		logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))
		// Nothing listens on port 1.
		down := "host=127.0.0.1 port=1 user=nobody dbname=nothing sslmode=disable connect_timeout=1"
		w, err := pgq.NewCompletionWatcher(ctx, db, pgq.WithLogger(logger), pgq.WithListenDSN(down),
			pgq.WithRefreshInterval(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		time.Sleep(3 * time.Second) // several retries (the backoff grows to 2 s)
		if w.Listening() {
			t.Error("Listening() = true with the listener's server down")
		}
		if n := strings.Count(log.String(), "listener cannot connect"); n != 1 {
			t.Errorf("%q logged %d times, want once; log:\n%s", "listener cannot connect", n, log.String())
		}
	})
}
