package pgq_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"slices"
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
// WaitFor returns within 100 ms of the handler's end for jobs enqueued one
// after another: the watcher is woken by notifications, not by its 5 s
// safety poll. (With lib/pq opened by sql.Open, as before pgq.Open, waits
// took 4.9 s and this test fails.) On a loaded machine with -race a single
// sample can exceed 100 ms (a new pool connection, a slow fsync), so the
// median of five must be within 100 ms and each within 1 s, both far
// below the poll; one job first warms the pool's connections up.
func TestQuickStartRealTime(t *testing.T) {
	const (
		jobs  = 5
		bound = 100 * time.Millisecond
		worst = time.Second
	)
	eachDriver(t, func(t *testing.T, _ *sql.DB, dsn string) {
		ctx := testCtx(t)
		db := quickStartDB(t, t.Name()[strings.LastIndex(t.Name(), "/")+1:], dsn)
		var log syncbuf.Buffer
		logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))

		ends := make(chan time.Time, jobs+1)
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
		var lags []time.Duration
		for i := range jobs + 1 {
			id, err := q.Enqueue(ctx, "quick", nil)
			if err != nil {
				t.Fatal(err)
			}
			st, err := w.WaitFor(ctx, id)
			returned := time.Now()
			if err != nil || st != pgq.StatusSuccessful {
				t.Fatalf("WaitFor(%d) = %q, %v", id, st, err)
			}
			lag := returned.Sub(<-ends)
			t.Logf("job %d: WaitFor returned %v after the handler's end", i, lag)
			if i > 0 { // job 0 warms up
				lags = append(lags, lag)
			}
		}
		slices.Sort(lags)
		if med := lags[len(lags)/2]; med > bound {
			t.Errorf("median: WaitFor returned %v after the handler's end, want within %v", med, bound)
		}
		if lags[len(lags)-1] > worst {
			t.Errorf("slowest: WaitFor returned %v after the handler's end, want within %v", lags[len(lags)-1], worst)
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

// TestStatsWorkers: Stats lists each worker, idle (by its claim
// connection, named in pg_stat_activity) or holding jobs, with whether it
// listens (its listener connection is named too), and
// counts the listening watchers. A lib/pq pool from sql.Open polls: its
// worker shows as not listening. A borrowed pgx connection gets its
// application_name back when the worker stops.
func TestStatsWorkers(t *testing.T) {
	cases := []struct {
		name, driver string
		quickStart   bool // pgq.Open for lib/pq, as the README does
		listening    bool
	}{
		{"pgx", "pgx", true, true},
		{"postgres", "postgres", true, true},
		{"postgres/sql.Open", "postgres", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			base, dsn := pgqtest.NewDB(t, c.driver)
			db := base
			if c.quickStart {
				db = quickStartDB(t, c.driver, dsn)
			}
			ctx := testCtx(t)
			release := make(chan struct{})
			started := make(chan struct{}, 1)
			qm := pgq.NewQueueManager(db)
			if err := qm.Entrypoint("hold", func(ctx context.Context, _ *pgq.Job) error {
				started <- struct{}{}
				<-release
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- qm.Run(runCtx, pgq.WithPollInterval(20*time.Millisecond)) }()
			w, err := pgq.NewCompletionWatcher(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			// Idle, the worker is seen too, by its claim connection.
			idle := pgq.WorkerState{ID: qm.ID(), Listening: c.listening}
			eventually(t, fmt.Sprintf("Workers = [%+v]", idle), func() bool {
				s, err := pgq.NewQueries(base).Stats(ctx)
				return err == nil && len(s.Workers) == 1 && s.Workers[0] == idle
			})
			if _, err := pgq.NewQueries(db).Enqueue(ctx, "hold", nil); err != nil {
				t.Fatal(err)
			}
			<-started
			s, err := pgq.NewQueries(base).Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := []pgq.WorkerState{{ID: qm.ID(), Running: 1, Listening: c.listening}}
			if len(s.Workers) == 1 {
				if hb := s.Workers[0].LastHeartbeat; time.Since(hb) > time.Minute || time.Since(hb) < -time.Minute {
					t.Errorf("LastHeartbeat %v, now %v", hb, time.Now())
				}
				want[0].LastHeartbeat = s.Workers[0].LastHeartbeat
			}
			if len(s.Workers) != 1 || s.Workers[0] != want[0] {
				t.Errorf("Workers = %+v, want %+v", s.Workers, want)
			}
			if wantW := map[bool]int64{true: 1, false: 0}[c.listening]; s.Watchers != wantW {
				t.Errorf("Watchers = %d, want %d", s.Watchers, wantW)
			}
			close(release)
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			w.Close()
			// Listener connections are gone, or back in the pool under
			// their own name.
			eventually(t, "no connection named by pgq", func() bool {
				return scalar[int](t, base, `SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND application_name LIKE 'pgq %'`) == 0
			})
			if s, err := pgq.NewQueries(base).Stats(ctx); err != nil || len(s.Workers) != 0 || s.Watchers != 0 {
				t.Errorf("after the stop: Workers %+v, Watchers %d, err %v", s.Workers, s.Watchers, err)
			}
		})
	}
}
