package pgq_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/pgcluster"
	"github.com/pgq-dev/pgq/pgqtest"
)

// eachDriver runs f as a parallel subtest per driver, with a fresh database.
func eachDriver(t *testing.T, f func(t *testing.T, db *sql.DB, dsn string)) {
	t.Helper()
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			db, dsn := pgqtest.NewDB(t, d)
			f(t, db, dsn)
		})
	}
}

// eachDriverLeakChecked runs f as a subtest per driver, one after the
// other, with a fresh database, failing the subtest if it leaves goroutines
// behind (see checkLeaks; checked after the database is closed).
func eachDriverLeakChecked(t *testing.T, f func(t *testing.T, db *sql.DB, dsn string)) {
	t.Helper()
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			checkLeaks(t)
			db, dsn := pgqtest.NewDB(t, d)
			f(t, db, dsn)
		})
	}
}

// cancelAndWait cancels a Run and fails the test unless it returns nil on
// done within 10 s.
func cancelAndWait(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// ownServer starts a PostgreSQL server for t alone (fsync off), for tests
// that restart it or change its settings, and stops it when t ends: after
// the clean-ups registered later, such as runWorker's.
func ownServer(t *testing.T, ctx context.Context) *pgcluster.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts its own PostgreSQL")
	}
	cl, err := pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{"fsync": "off"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Stop() })
	return cl
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// drain runs a QueueManager in drain mode until the queue is empty.
func drain(t *testing.T, ctx context.Context, qm *pgq.QueueManager, opts ...pgq.RunOption) {
	t.Helper()
	opts = append([]pgq.RunOption{pgq.WithMode(pgq.ModeDrain)}, opts...)
	if err := qm.Run(ctx, opts...); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// runWorker runs qm until the test ends; the cleanup stops it and fails
// the test if Run returned an error.
func runWorker(t testing.TB, ctx context.Context, qm *pgq.QueueManager, opts ...pgq.RunOption) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- qm.Run(ctx, opts...) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func scalar[T any](t *testing.T, db *sql.DB, query string, args ...any) T {
	t.Helper()
	var v T
	if err := db.QueryRow(query, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return v
}

// enqueueN enqueues n jobs of entrypoint with no payload, in one batch,
// and returns their ids.
func enqueueN(t testing.TB, ctx context.Context, db *sql.DB, entrypoint string, n int) []pgq.JobID {
	t.Helper()
	jobs := make([]pgq.NewJob, n)
	for i := range jobs {
		jobs[i] = pgq.NewJob{Entrypoint: entrypoint}
	}
	ids, err := pgq.NewQueries(db).EnqueueBatch(ctx, jobs)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// lockedTx begins a transaction on db that takes lock (a LOCK TABLE
// statement) and holds it until the caller commits or rolls back, or the
// test ends.
func lockedTx(t testing.TB, ctx context.Context, db *sql.DB, lock string) *sql.Tx {
	t.Helper()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.ExecContext(ctx, lock); err != nil {
		t.Fatalf("%s: %v", lock, err)
	}
	return tx
}

// handlerGauge counts a test's handlers running at once, the most seen,
// and how often each job ran.
type handlerGauge struct {
	mu      sync.Mutex
	running int
	peak    int
	ran     map[pgq.JobID]int
}

func newHandlerGauge() *handlerGauge { return &handlerGauge{ran: map[pgq.JobID]int{}} }

// enter counts job's handler in and returns how many ran before it did.
func (g *handlerGauge) enter(job pgq.JobID) (before int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	before = g.running
	g.running++
	g.peak = max(g.peak, g.running)
	g.ran[job]++
	return before
}

// leave counts a handler out.
func (g *handlerGauge) leave() {
	g.mu.Lock()
	g.running--
	g.mu.Unlock()
}

// runFor is a handler that holds its slot for d.
func (g *handlerGauge) runFor(d time.Duration) pgq.Handler {
	return func(ctx context.Context, j *pgq.Job) error {
		g.enter(j.ID)
		time.Sleep(d)
		g.leave()
		return nil
	}
}

// peakSince returns the most handlers that ran at once since the last
// call (or the start), and starts counting again from those running now.
func (g *handlerGauge) peakSince() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.peak
	g.peak = g.running
	return p
}

// waitPeak starts counting as peakSince does, and waits until want
// handlers run at once or within has passed; it returns the most seen.
func (g *handlerGauge) waitPeak(want int, within time.Duration) int {
	g.peakSince()
	deadline := time.Now().Add(within)
	for {
		g.mu.Lock()
		p := g.peak
		g.mu.Unlock()
		if p >= want || time.Now().After(deadline) {
			return g.peakSince()
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// eachRanOnce fails t unless every one of ids ran once and no other job ran.
func (g *handlerGauge) eachRanOnce(t *testing.T, ids []pgq.JobID) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range ids {
		if g.ran[id] != 1 {
			t.Errorf("job %d ran %d times", id, g.ran[id])
		}
	}
	if len(g.ran) != len(ids) {
		t.Errorf("%d distinct jobs ran, want %d", len(g.ran), len(ids))
	}
}

// checkLeaks makes the test fail if it leaves goroutines behind that were
// not running when it called checkLeaks. Call it before anything the test
// cleans up (a database), so that its check runs last.
func checkLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// requireGenericPlans runs run on a pgx pool of one connection to dsn,
// then fails the test unless each of statements (sqlc names) ran its
// generic plan there at least once: PostgreSQL plans a prepared statement
// anew for its first five runs, then keeps its generic plan unless a
// custom plan is priced cheaper. It skips before PostgreSQL 14, whose
// pg_prepared_statements does not count plans.
func requireGenericPlans(t *testing.T, dsn string, run func(single *sql.DB), statements ...string) {
	t.Helper()
	single := planCountingConn(t, dsn)
	run(single)
	for _, name := range statements {
		if generic := scalar[int64](t, single, `SELECT coalesce(sum(generic_plans), 0)::bigint FROM pg_prepared_statements
			WHERE statement LIKE '-- name: '||$1||' %'`, name); generic == 0 {
			t.Errorf("no generic plan of %s on one pgx connection", name)
		}
	}
}

// planCountingConn returns a pool of one pgx connection to dsn, closed
// when the test ends; it skips the test on a server older than
// PostgreSQL 14, whose pg_prepared_statements does not count plans.
func planCountingConn(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	single, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { single.Close() })
	single.SetMaxOpenConns(1)
	if scalar[int](t, single, "SELECT current_setting('server_version_num')::int") < 140000 {
		t.Skip("pg_prepared_statements counts plans from PostgreSQL 14")
	}
	return single
}

// eachIdleConn runs query, which returns one text value, on every
// connection db holds idle (and on fresh ones up to the default idle
// count, if it holds fewer), holding them all at once so that each is a
// different one, and returns the values.
func eachIdleConn(t *testing.T, ctx context.Context, db *sql.DB, query string) []string {
	t.Helper()
	n := max(db.Stats().Idle, 2)
	var got []string
	for range n {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var v string
		if err := c.QueryRowContext(ctx, query).Scan(&v); err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	return got
}
