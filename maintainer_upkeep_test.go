package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/pgqtest"
)

// TestWorkerVacuumsJobTable: draining tens of thousands of jobs leaves
// twice as many dead rows; with a short upkeep interval the worker vacuums
// the job table itself (vacuum_count, which counts manual vacuums, grows),
// also under a prefix and schema, and not with WithVacuum(false). Its
// vacuum never starts parallel workers: the database's settings here would
// give every index of the job table one, and slow them enough to be seen
// in pg_stat_activity.
func TestWorkerVacuumsJobTable(t *testing.T) {
	cases := []struct {
		name   string
		naming []pgq.NamingOption
		table  string
		vacuum bool
	}{
		{"default", nil, "public.pgqueuer", true},
		{"prefix_schema", []pgq.NamingOption{pgq.WithPrefix("vac_"), pgq.WithSchema("upkeep")}, "upkeep.vac_pgqueuer", true},
		{"off", nil, "public.pgqueuer", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
				ctx := testCtx(t)
				opts, mopts := installNamed(t, ctx, db, c.naming)
				const n = 30_000
				q := pgq.NewQueries(db, opts...)
				jobs := make([]pgq.NewJob, n)
				for i := range jobs {
					jobs[i] = pgq.NewJob{Entrypoint: "v"}
				}
				if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
					t.Fatal(err)
				}
				// Autovacuum stays out: in a loaded run it could remove the
				// dead rows first and leave the worker nothing to do.
				if _, err := db.ExecContext(ctx, "ALTER TABLE "+c.table+" SET (autovacuum_enabled = false)"); err != nil {
					t.Fatal(err)
				}
				vacuums := func() int64 {
					return scalar[int64](t, db, "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = $1::regclass", c.table)
				}
				before := vacuums()
				// Every index big enough for a parallel vacuum worker, and
				// vacuums paced slowly, for the connections opened from now.
				dbName := scalar[string](t, db, "SELECT current_database()")
				for _, set := range []string{"min_parallel_index_scan_size = 0", "vacuum_cost_delay = 2", "max_parallel_maintenance_workers = 2"} {
					execSQL(t, db, "ALTER DATABASE "+pgx.Identifier{dbName}.Sanitize()+" SET "+set)
				}
				db.SetMaxIdleConns(0)
				db.SetMaxIdleConns(2) // database/sql's default
				var parallel, samples atomic.Int64
				sampling, stopSampling := context.WithCancel(ctx)
				var sampler sync.WaitGroup
				sampler.Go(func() {
					for sampling.Err() == nil {
						var n int64
						err := db.QueryRowContext(sampling, `SELECT count(*) FROM pg_stat_activity
							WHERE backend_type = 'parallel worker' AND datname = current_database()`).Scan(&n)
						if err == nil {
							samples.Add(1)
							parallel.Add(n)
						}
						time.Sleep(time.Millisecond)
					}
				})
				var ran atomic.Int64
				qm := pgq.NewQueueManager(db, append(mopts, pgq.WithListenDSN(dsn))...)
				if err := qm.Entrypoint("v", func(ctx context.Context, j *pgq.Job) error {
					// Slow enough that the drain spans several upkeep ticks.
					if ran.Add(1)%1000 == 0 {
						time.Sleep(50 * time.Millisecond)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				drain(t, ctx, qm, pgq.WithBatchSize(500), pgq.WithMaxConcurrentTasks(500), pgq.WithVacuum(c.vacuum),
					pgq.WithUpkeepInterval(100*time.Millisecond))
				stopSampling()
				sampler.Wait()
				if got := ran.Load(); got != n {
					t.Fatalf("ran %d jobs, want %d", got, n)
				}
				if samples.Load() == 0 {
					t.Error("pg_stat_activity was never read while the worker ran: nothing seen, nothing checked")
				}
				if got := parallel.Load(); got != 0 {
					t.Errorf("parallel workers seen %d times in %d samples while the worker ran", got, samples.Load())
				}
				after := vacuums()
				if c.vacuum && after <= before {
					t.Errorf("vacuum_count of %s stayed %d over a drain of %d jobs", c.table, after, n)
				}
				if !c.vacuum && after != before {
					t.Errorf("WithVacuum(false): vacuum_count of %s went from %d to %d", c.table, before, after)
				}
				t.Logf("%s: manual vacuums %d → %d", c.table, before, after)
			})
		})
	}
}

// TestStaleJobReleasedAndLogged: a job left picked by a worker that stopped
// heartbeating is put back in the queue by another worker (logged queued,
// attempts unchanged), then run by it: its log reads queued, picked, queued,
// picked, successful.
func TestStaleJobReleasedAndLogged(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		id, err := q.Enqueue(ctx, "s", []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		// A dead worker's claim: picked, heartbeat long ago.
		if _, err := db.ExecContext(ctx, `WITH c AS (
			UPDATE pgqueuer SET status = 'picked', queue_manager_id = gen_random_uuid(),
			    heartbeat = now() - interval '1 hour' WHERE id = $1 RETURNING id, priority, entrypoint)
			INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint) SELECT id, 'picked', priority, entrypoint FROM c`, id); err != nil {
			t.Fatal(err)
		}
		var got []byte
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("s", func(ctx context.Context, j *pgq.Job) error {
			got = j.Payload
			if j.Attempts != 0 {
				return fmt.Errorf("attempts %d, want 0", j.Attempts)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		drain(t, ctx, qm, pgq.WithHeartbeatTimeout(time.Second))
		if string(got) != "x" {
			t.Fatalf("handler saw payload %q", got)
		}
		var log string
		if err := db.QueryRowContext(ctx, `SELECT string_agg(status::text, ',' ORDER BY id) FROM pgqueuer_log WHERE job_id = $1`, id).Scan(&log); err != nil {
			t.Fatal(err)
		}
		if want := "queued,picked,queued,picked,successful"; log != want {
			t.Fatalf("log of job %d: %s, want %s", id, log, want)
		}
	})
}

// TestVacuumNeedsOwner: the upkeep check asks for VACUUM when dead rows
// pile up, but only of a role with the privileges of the job table's owner
// (a worker of another role would have PostgreSQL skip it with a warning
// every upkeep check).
func TestVacuumNeedsOwner(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		// 30,000 jobs inserted and deleted: 30,000 dead rows.
		if _, err := db.ExecContext(ctx, `INSERT INTO pgqueuer (priority, entrypoint, status)
			SELECT 0, 'dead', 'queued' FROM generate_series(1, 30000)`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `DELETE FROM pgqueuer WHERE entrypoint = 'dead'`); err != nil {
			t.Fatal(err)
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		defer conn.ExecContext(context.Background(), "RESET ROLE") // before it goes back to the pool
		// The statistics of this backend's own changes are flushed at the
		// latest a second after them, or when forced.
		if _, err := conn.ExecContext(ctx, "SELECT pg_stat_force_next_flush()"); err != nil {
			t.Fatal(err)
		}
		var owner bool
		waitFor(t, 10*time.Second, "the dead rows to show in pg_stat_user_tables", func() bool {
			_, owner, err = pgq.JobTableNeeds(ctx, conn)
			return err == nil && owner
		})
		role := fmt.Sprintf("pgq_worker_%d", time.Now().UnixNano())
		for _, q := range []string{
			"CREATE ROLE " + role,
			"GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role,
			"SET ROLE " + role,
		} {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		t.Cleanup(func() {
			for _, q := range []string{"DROP OWNED BY " + role, "DROP ROLE " + role} {
				if _, err := db.Exec(q); err != nil {
					t.Errorf("%s: %v", q, err)
				}
			}
		})
		_, other, err := pgq.JobTableNeeds(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if other {
			t.Errorf("a role that is not the owner is asked to VACUUM the job table")
		}
	})
}

// TestWorkerAnalyzesBeforeTheStatisticsCountersCatchUp: a bulk enqueue
// onto a job table vacuumed while empty, with the statistics counters not
// yet showing it (a backend reports its changes up to 10 s late; here they
// are reset), is analyzed by the worker before its first claim. Left with
// the statistics of the empty table, the planner takes the partial indexes
// for empty and plans each claim as a sort of every queued row (a 100,000
// job drain ran 5× slower until the next ANALYZE). The ANALYZE takes a
// small sample, as the first claim waits for it.
func TestWorkerAnalyzesBeforeTheStatisticsCountersCatchUp(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const n = 3000
		missingStatistics(t, ctx, db, n)
		if got := scalar[float64](t, db, `SELECT reltuples FROM pg_class WHERE oid = 'pgqueuer'::regclass`); got != 0 {
			t.Fatalf("reltuples of the vacuumed empty table: %v, want 0", got)
		}
		if got := scalar[int64](t, db, `SELECT pg_stat_get_mod_since_analyze('pgqueuer'::regclass)`); got != 0 {
			t.Fatalf("rows changed since the last ANALYZE after the reset: %d, want 0", got)
		}

		var ran atomic.Int64
		drain(t, ctx, countingWorker(t, db, dsn, "a", &ran), pgq.WithUpkeepInterval(time.Hour))
		if got := ran.Load(); got != n {
			t.Fatalf("ran %d jobs, want %d", got, n)
		}
		if got := scalar[float64](t, db, `SELECT reltuples FROM pg_class WHERE oid = 'pgqueuer'::regclass`); got < n/2 {
			t.Errorf("reltuples of the job table after the worker started on %d queued jobs: %v: it was not analyzed", n, got)
		}
		// On a sample of a tenth of the usual size (statistics target 10,
		// see JobsAnalyzeSampleSettings): the histogram of the ids, all
		// distinct, has 11 bounds, not the default target's 101.
		if got := scalar[int](t, db, `SELECT coalesce(array_length(histogram_bounds::text::bigint[], 1), 0)
			FROM pg_stats WHERE tablename = 'pgqueuer' AND attname = 'id'`); got == 0 || got > 11 {
			t.Errorf("the ids' histogram after the worker's first ANALYZE has %d bounds, want 1-11 (a statistics target of 10)", got)
		}
		// The sample's setting ended with its transaction: no connection
		// the pool kept (the ANALYZE's among them) has it.
		for _, got := range eachIdleConn(t, ctx, db, "SHOW default_statistics_target") {
			if got != "100" {
				t.Errorf("default_statistics_target on a pool connection after the worker's ANALYZE: %s, want 100", got)
			}
		}
	})
}

// TestLogPrunedWhileJobsKeepComing runs a worker with a log retention while
// producers keep enqueueing: the old log rows must go although the fold
// never finds the log fully folded (a new row always waits). Folding to the
// end before pruning starved the prune: the log grew without bound.
func TestLogPrunedWhileJobsKeepComing(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const old = 20000
		if _, err := db.ExecContext(ctx, `INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint)
			SELECT now() - interval '2 hours', g, 'successful', 0, 'gone' FROM generate_series(1, $1::int) AS g`, old); err != nil {
			t.Fatal(err)
		}
		// Producers: jobs nobody claims, one log row each.
		prodCtx, stopProducers := context.WithCancel(ctx)
		var producers sync.WaitGroup
		for range 4 {
			producers.Go(func() {
				q := pgq.NewQueries(db)
				for prodCtx.Err() == nil {
					_, _ = q.Enqueue(prodCtx, "unclaimed", nil)
				}
			})
		}
		defer func() { stopProducers(); producers.Wait() }()
		waitFor(t, 10*time.Second, "producers to start", func() bool {
			return scalar[int](t, db, "SELECT count(*) FROM pgqueuer") > 100
		})

		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("other", func(ctx context.Context, j *pgq.Job) error { return nil })
		stop := startRun(t, ctx, qm, pgq.WithLogRetention(time.Hour), pgq.WithStatisticsInterval(100*time.Millisecond))
		left := func() int {
			return scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log WHERE entrypoint = 'gone'")
		}
		deadline := time.Now().Add(20 * time.Second)
		for left() != 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		stop()
		stopProducers()
		producers.Wait()
		if n := left(); n != 0 {
			t.Fatalf("%d of %d log rows older than the retention left after 20 s", n, old)
		}
		if n := scalar[int](t, db, "SELECT coalesce(sum(count), 0) FROM pgqueuer_statistics WHERE entrypoint = 'gone'"); n != old {
			t.Fatalf("statistics count %d rows of the pruned entrypoint, want %d (folded before pruned)", n, old)
		}
	})
}

// TestLogUpkeepBehindAndCaughtUp: a pass of log upkeep that runs out of
// its time before it has pruned everything past the retention says so,
// and the next pass, which does not rest between its turns, prunes more
// in the same time; the passes after it prune and count every old row,
// until one catches up and says that instead.
func TestLogUpkeepBehindAndCaughtUp(t *testing.T) {
	db, _ := pgqtest.NewDB(t, "pgx")
	ctx := testCtx(t)
	const old = 200_000
	if _, err := db.ExecContext(ctx, `INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint)
		SELECT now() - interval '2 hours', g, 'successful', 0, 'gone' FROM generate_series(1, $1::int) AS g`, old); err != nil {
		t.Fatal(err)
	}
	// Set the rows' hint bits first, or the first pass pays for that.
	if _, err := db.ExecContext(ctx, "VACUUM (ANALYZE) pgqueuer_log"); err != nil {
		t.Fatal(err)
	}
	// A second a pass: 200 statements of 1,000 rows (and the fold's) do
	// not fit.
	u := pgq.NewLogUpkeep(db, time.Second, time.Hour)
	left := func() int {
		return scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log WHERE entrypoint = 'gone'")
	}
	behind, err := u.Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n1 := left()
	if !behind || n1 == 0 {
		t.Fatalf("first pass: behind %v with %d of %d old rows left, want behind with some left", behind, n1, old)
	}
	// The second pass does not rest: in the same time it prunes about
	// twice as much (a resting one would prune about as much).
	if behind, err = u.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	n2 := left()
	if first, second := old-n1, n1-n2; behind && 2*second < 3*first {
		t.Errorf("the pass after one that fell behind pruned %d rows, the resting one %d: want more", second, first)
	}
	passes := 2
	for behind && passes < 2000 {
		if behind, err = u.Pass(ctx); err != nil {
			t.Fatal(err)
		}
		passes++
	}
	if behind {
		t.Fatalf("still behind after %d passes, %d old rows left", passes, left())
	}
	if n := left(); n != 0 {
		t.Fatalf("caught up after %d passes with %d old rows left", passes, n)
	}
	if n := scalar[int](t, db, "SELECT coalesce(sum(count), 0) FROM pgqueuer_statistics WHERE entrypoint = 'gone'"); n != old {
		t.Fatalf("statistics count %d pruned rows, want %d", n, old)
	}
}

// TestWorkersStartingTogetherAnalyzeOnce: workers that start together on
// a job table whose statistics are missing run one ANALYZE between them.
// Each used to run its own, in turn behind the others' (ANALYZE waits for
// the table's lock), before its first claim: 4 processes starting a drain
// of 100,000 jobs spent up to 1.3 s each so.
func TestWorkersStartingTogetherAnalyzeOnce(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const n, workers = 30000, 4
		missingStatistics(t, ctx, db, n)

		var ran atomic.Int64
		start := make(chan struct{})
		errs := make(chan error, workers)
		for range workers {
			qm := countingWorker(t, db, dsn, "a", &ran)
			go func() {
				<-start
				errs <- qm.Run(ctx, pgq.WithMode(pgq.ModeDrain), pgq.WithUpkeepInterval(time.Hour))
			}()
		}
		close(start)
		for range workers {
			if err := <-errs; err != nil {
				t.Fatalf("Run: %v", err)
			}
		}
		if got := ran.Load(); got != n {
			t.Fatalf("ran %d jobs, want %d", got, n)
		}
		if got := analyzeCount(t, db); got != 1 {
			t.Errorf("%d workers starting together on missing statistics ran ANALYZE %d times, want 1", workers, got)
		}
	})
}

// TestFirstAnalyzeReadsAgainUnderTheLock: a worker that read the job
// table's statistics as missing just before another session's ANALYZE
// ended runs no ANALYZE of its own: it reads them again once it holds the
// table's lock. Read only before, they sent it to a second ANALYZE: under
// load, 4 workers starting together ran 3.
func TestFirstAnalyzeReadsAgainUnderTheLock(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const n = 3000
		missingStatistics(t, ctx, db, n)

		// Another session's ANALYZE, run and ended between the worker's
		// read of the statistics and its own ANALYZE.
		var calls atomic.Int64
		var otherErr error
		other := func() {
			if calls.Add(1) == 1 {
				_, otherErr = db.ExecContext(ctx, `ANALYZE pgqueuer`)
			}
		}
		var ran atomic.Int64
		drain(t, ctx, countingWorker(t, db, dsn, "a", &ran), pgq.WithUpkeepInterval(time.Hour), pgq.WithBeforeFirstAnalyze(other))
		if otherErr != nil {
			t.Fatalf("the other session's ANALYZE: %v", otherErr)
		}
		if got := calls.Load(); got != 1 {
			t.Fatalf("the worker was about to analyze %d times, want 1", got)
		}
		if got := ran.Load(); got != n {
			t.Fatalf("ran %d jobs, want %d", got, n)
		}
		if got := analyzeCount(t, db); got != 1 {
			t.Errorf("ANALYZE ran %d times, the other session's and the worker's, want 1 (the other session's)", got)
		}
	})
}

// TestFirstAnalyzeWaitsForAnotherWorkers: while another worker runs its
// first ANALYZE (holds JobsTryAnalyzeLock's lock), a worker starting on
// the same missing statistics runs none of its own: it waits, reading
// them again, until the other's ANALYZE has made them fresh.
func TestFirstAnalyzeWaitsForAnotherWorkers(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const n = 3000
		missingStatistics(t, ctx, db, n)
		other, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Rollback()
		if locked, err := dbgen.New().JobsTryAnalyzeLock(ctx, pgq.QueryDB(other)); err != nil || !locked {
			t.Fatalf("the other worker's lock: %v, %v", locked, err)
		}

		var calls atomic.Int64
		var ran atomic.Int64
		done := make(chan error, 1)
		go func() {
			done <- countingWorker(t, db, dsn, "a", &ran).Run(ctx, pgq.WithMode(pgq.ModeDrain),
				pgq.WithUpkeepInterval(time.Hour), pgq.WithBeforeFirstAnalyze(func() { calls.Add(1) }))
		}()
		// Twice about to analyze (the first try found the lock held), or
		// done without waiting.
		waitFor(t, 10*time.Second, "the worker to try again", func() bool { return calls.Load() >= 2 || len(done) > 0 })
		if _, err := other.ExecContext(ctx, `ANALYZE pgqueuer`); err != nil {
			t.Fatal(err)
		}
		if err := other.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := receive(t, done, 30*time.Second, "Run"); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if got := ran.Load(); got != n {
			t.Fatalf("ran %d jobs, want %d", got, n)
		}
		if got := analyzeCount(t, db); got != 1 {
			t.Errorf("ANALYZE ran %d times, the other worker's and this one's, want 1 (the other's)", got)
		}
	})
}

// missingStatistics enqueues n jobs of entrypoint "a" onto the job table
// vacuumed while empty (its statistics then say 0 rows), autovacuum off,
// and resets the table's counters: what a worker sees when the counters
// lag (a backend reports its changes up to 10 s late), no change since
// the last ANALYZE. The analyze count starts at 0.
func missingStatistics(t *testing.T, ctx context.Context, db *sql.DB, n int) {
	t.Helper()
	execSQL(t, db, `ALTER TABLE pgqueuer SET (autovacuum_enabled = off)`)
	execSQL(t, db, `VACUUM pgqueuer`)
	enqueueN(t, ctx, db, "a", n)
	execSQL(t, db, `SELECT pg_stat_reset_single_table_counters('pgqueuer'::regclass)`)
}

// analyzeCount returns how many times the job table was analyzed (not by
// autovacuum) since its counters were last reset.
func analyzeCount(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	return scalar[int64](t, db, `SELECT pg_stat_get_analyze_count('pgqueuer'::regclass)`)
}

// countingWorker is a QueueManager on db whose entrypoint's handler only
// counts the jobs it runs in ran.
func countingWorker(t *testing.T, db *sql.DB, dsn, entrypoint string, ran *atomic.Int64) *pgq.QueueManager {
	t.Helper()
	qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
	if err := qm.Entrypoint(entrypoint, func(context.Context, *pgq.Job) error {
		ran.Add(1)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return qm
}

// TestUpkeepCheckReadsOnlyTheCatalog: the worker's once-a-second upkeep
// check reads the job table's counters, not the table, while the
// statistics say it holds 1000 rows or more: it does not wait for a lock
// another session holds on the table. A statement that reads the table is
// planned again after each VACUUM or ANALYZE of it, which took up to 10 ms
// under handlers that saturate the server.
func TestUpkeepCheckReadsOnlyTheCatalog(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		enqueueN(t, ctx, db, "a", 2000)
		execSQL(t, db, `ANALYZE pgqueuer`)
		lockedTx(t, ctx, db, `LOCK TABLE pgqueuer IN ACCESS EXCLUSIVE MODE`)
		checkCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, _, err := pgq.JobTableNeeds(checkCtx, db); err != nil {
			t.Fatalf("the upkeep check with the job table locked: %v", err)
		}
	})
}

// TestLogVacuumMigration: migration 12 has autovacuum take the log once
// 100,000 rows plus 5 % of its live rows are dead, where migration 2 (for a
// log that only grows) waited for a million plus 95 %, at five times the
// default cost limit; its Down puts migration 2's settings back. The
// settings are checked by what they mean: autovacuum's rule (dead rows over
// threshold + scale factor × live rows) calls a log of 100,000 live rows
// and 150,000 dead due under migration 12's settings and not under
// migration 2's.
func TestLogVacuumMigration(t *testing.T) {
	eachBareProvider(t, func(t *testing.T, ctx context.Context, db *sql.DB, p *goose.Provider) {
		if _, err := p.Up(ctx); err != nil {
			t.Fatal(err)
		}
		// option is the log's storage parameter name, "" when unset.
		option := func(name string) string {
			return scalar[string](t, db, `SELECT coalesce((SELECT split_part(o, '=', 2) FROM pg_class AS c, unnest(c.reloptions) AS o
				WHERE c.oid = 'pgqueuer_log'::regclass AND split_part(o, '=', 1) = $1), '')`, name)
		}
		// orDefault reads option name as a number, def when unset.
		orDefault := func(name string, def float64) float64 {
			v := option(name)
			if v == "" {
				return def
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s = %q: %v", name, v, err)
			}
			return f
		}
		// due says whether autovacuum's rule calls a log of live rows
		// with dead dead rows due, under the log's settings now
		// (the server's defaults: threshold 50, scale factor 0.2).
		due := func(live, dead float64) bool {
			return dead > orDefault("autovacuum_vacuum_threshold", 50)+orDefault("autovacuum_vacuum_scale_factor", 0.2)*live
		}
		if !due(100_000, 150_000) {
			t.Errorf("version 12: a log of 100,000 live rows and 150,000 dead is not due for autovacuum")
		}
		if got := option("autovacuum_vacuum_cost_limit"); got != "1000" {
			t.Errorf("version 12: the log's autovacuum_vacuum_cost_limit is %q, want 1000", got)
		}
		if due(100_000, 99_000) {
			t.Errorf("version 12: a log of 100,000 live rows and 99,000 dead is due for autovacuum")
		}
		if _, err := p.DownTo(ctx, 11); err != nil {
			t.Fatal(err)
		}
		if due(100_000, 150_000) {
			t.Errorf("after down to 11: a log of 100,000 live rows and 150,000 dead is due (migration 2 waits for a million)")
		}
		if got := option("autovacuum_vacuum_cost_limit"); got != "" {
			t.Errorf("after down to 11: the log's autovacuum_vacuum_cost_limit is %q, want the server's", got)
		}
		if _, err := p.Up(ctx); err != nil {
			t.Fatal(err)
		}
		if !due(100_000, 150_000) {
			t.Errorf("after down and up: a log of 100,000 live rows and 150,000 dead is not due for autovacuum")
		}
		if err := pgq.Verify(ctx, db); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})
}

// TestJobTableVacuumTruncate: migration 13 turns vacuum_truncate off for
// the job table, so that a VACUUM that does not say otherwise (autovacuum's)
// leaves the table's empty end, as the worker's own vacuum does, rather
// than take an exclusive lock on a busy queue table to cut it off. A table
// emptied and vacuumed keeps its pages under version 13 and loses them
// under version 12; down and up again restores the setting.
func TestJobTableVacuumTruncate(t *testing.T) {
	eachBareProvider(t, func(t *testing.T, ctx context.Context, db *sql.DB, p *goose.Provider) {
		if _, err := p.Up(ctx); err != nil {
			t.Fatal(err)
		}
		// emptied fills the job table, deletes every row, runs a plain
		// VACUUM and returns the table's pages before and after it.
		emptied := func() (before, after int64) {
			enqueueN(t, ctx, db, "trunc", 5000)
			execSQL(t, db, "DELETE FROM pgqueuer")
			before = scalar[int64](t, db, "SELECT pg_relation_size('pgqueuer') / 8192")
			execSQL(t, db, "VACUUM pgqueuer")
			return before, scalar[int64](t, db, "SELECT pg_relation_size('pgqueuer') / 8192")
		}
		if before, after := emptied(); before == 0 || after != before {
			t.Errorf("version 13: VACUUM of the emptied job table left %d of its %d pages, want all", after, before)
		}
		if _, err := p.DownTo(ctx, 12); err != nil {
			t.Fatal(err)
		}
		if before, after := emptied(); before == 0 || after != 0 {
			t.Errorf("after down to 12: VACUUM of the emptied job table left %d of its %d pages, want none", after, before)
		}
		if _, err := p.Up(ctx); err != nil {
			t.Fatal(err)
		}
		if got := scalar[string](t, db, "SELECT coalesce(array_to_string(reloptions, ','), '') FROM pg_class WHERE oid = 'pgqueuer'::regclass"); !strings.Contains(got, "vacuum_truncate=false") {
			t.Errorf("after down and up: the job table's options are %q, want vacuum_truncate=false among them", got)
		}
		if err := pgq.Verify(ctx, db); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})
}

// TestVacuumGapIgnoresAutovacuum: the worker's vacuum waits 2 s after
// another worker's vacuum of the job table, but not after autovacuum's.
// Under load autovacuum ran 1-2 s, removing only the rows dead when it
// started, and waiting out the gap after it left the table without a
// vacuum for twice the usual time, its indexes growing to hold the dead
// rows. The test has autovacuum vacuum the table once, makes dead rows
// again, and asks the worker's check with a gap of an hour: the table
// needs a vacuum. It makes the server's autovacuum wake every second for
// a while, so it needs a superuser.
func TestVacuumGapIgnoresAutovacuum(t *testing.T) {
	ctx := testCtx(t)
	db, _ := pgqtest.NewDB(t, "pgx")
	if !scalar[bool](t, db, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") {
		t.Skip("skipped: the test sets autovacuum_naptime, which needs a superuser")
	}
	// deadRows leaves 20,000 dead rows in the job table and waits until
	// the statistics count over 10,000 of them (the worker's threshold),
	// once autovacuum is off.
	deadRows := func() {
		enqueueN(t, ctx, db, "gap", 20_000)
		execSQL(t, db, "DELETE FROM pgqueuer")
		for deadline := time.Now().Add(30 * time.Second); scalar[int64](t, db, "SELECT pg_stat_get_dead_tuples('pgqueuer'::regclass)") <= 10_000; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the statistics did not count the deleted rows within 30 s")
			}
		}
	}
	execSQL(t, db, "ALTER TABLE pgqueuer SET (autovacuum_enabled = true, autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0)")
	enqueueN(t, ctx, db, "gap", 20_000)
	execSQL(t, db, "DELETE FROM pgqueuer")
	execSQL(t, db, "ALTER SYSTEM SET autovacuum_naptime = '1s'")
	execSQL(t, db, "SELECT pg_reload_conf()")
	naptime := true
	resetNaptime := func() {
		if naptime {
			naptime = false
			execSQL(t, db, "ALTER SYSTEM RESET autovacuum_naptime")
			execSQL(t, db, "SELECT pg_reload_conf()")
		}
	}
	defer resetNaptime()
	autovacuumed := func() bool {
		return scalar[bool](t, db, "SELECT pg_stat_get_last_autovacuum_time('pgqueuer'::regclass) IS NOT NULL")
	}
	for deadline := time.Now().Add(90 * time.Second); !autovacuumed(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("autovacuum did not vacuum the job table within 90 s")
		}
	}
	execSQL(t, db, "ALTER TABLE pgqueuer SET (autovacuum_enabled = false)")
	resetNaptime()
	if got := scalar[int64](t, db, "SELECT pg_stat_get_vacuum_count('pgqueuer'::regclass)"); got != 0 {
		t.Fatalf("the job table has had %d manual vacuums, want none", got)
	}

	deadRows()
	need, err := pgq.JobTableNeedsVacuumAfter(ctx, db, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !need {
		t.Errorf("20,000 dead rows, an autovacuum and no manual vacuum within the hour: the worker's check says no vacuum")
	}
	// A manual vacuum (a worker's) still counts.
	execSQL(t, db, "VACUUM pgqueuer")
	deadRows()
	if need, err = pgq.JobTableNeedsVacuumAfter(ctx, db, time.Hour); err != nil {
		t.Fatal(err)
	}
	if need {
		t.Errorf("20,000 dead rows and a manual vacuum within the hour: the worker's check says vacuum")
	}
}

// TestWorkerAnalyzesWhenKeyedJobsAppear: keyed jobs enqueued onto a job
// table whose statistics were taken when it held none get the table
// analyzed by a running worker (here one of another entrypoint) within its
// upkeep interval, not once a fifth of the table has changed; also under a
// prefix and schema. Planned on statistics that count no keyed job, the
// keyed enqueue's look-ups of each key's last turn read every keyed job of
// the entrypoint: a batch of 1,000 jobs with distinct keys took 1 s at
// 10,000 keyed jobs, and more after.
func TestWorkerAnalyzesWhenKeyedJobsAppear(t *testing.T) {
	cases := []struct {
		name         string
		naming       []pgq.NamingOption
		table, index string
	}{
		{"default", nil, "public.pgqueuer", "public.pgqueuer_pgq_keyed_idx"},
		{"prefix_schema", []pgq.NamingOption{pgq.WithPrefix("k_"), pgq.WithSchema("keyed")},
			"keyed.k_pgqueuer", "keyed.k_pgqueuer_pgq_keyed_idx"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
				ctx := testCtx(t)
				opts, mopts := installNamed(t, ctx, db, c.naming)
				execSQL(t, db, `ALTER TABLE `+c.table+` SET (autovacuum_enabled = off)`)
				execSQL(t, db, `INSERT INTO `+c.table+` (priority, entrypoint, status) SELECT 0, 'plain', 'queued' FROM generate_series(1, 50000)`)
				execSQL(t, db, `ANALYZE `+c.table)
				// The rows changed since the last ANALYZE, which the INSERT's
				// backend may report seconds late, can make a worker analyze
				// too, but not before 10 s from this one (analyzeGap): the
				// wait below ends before then.
				analyzed := time.Now()
				keyedRows := func() float64 {
					return scalar[float64](t, db, `SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)`, c.index)
				}
				if got := keyedRows(); got != 0 {
					t.Fatalf("keyed jobs in the statistics before any was enqueued: %v, want 0", got)
				}

				qm := pgq.NewQueueManager(db, append(mopts, pgq.WithListenDSN(dsn))...)
				if err := qm.Entrypoint("other", func(context.Context, *pgq.Job) error { return nil }); err != nil {
					t.Fatal(err)
				}
				startRun(t, ctx, qm, pgq.WithUpkeepInterval(100*time.Millisecond))

				// 5,000 keyed jobs, a tenth of the table: under the fifth of
				// it that makes the statistics stale by the count of changed
				// rows.
				q := pgq.NewQueries(db, opts...)
				for b := range 10 {
					jobs := make([]pgq.NewJob, 500)
					for i := range jobs {
						jobs[i] = pgq.NewJob{Entrypoint: "keyed", FairnessKey: fmt.Sprintf("tenant-%d", (b*len(jobs)+i)%50)}
					}
					if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
						t.Fatal(err)
					}
				}
				waitFor(t, max(time.Until(analyzed.Add(9*time.Second)), 2*time.Second),
					"the job table's statistics to count keyed jobs", func() bool { return keyedRows() > 0 })
			})
		})
	}
}

// installNamed installs pgq's schema under naming (a prefix, a schema)
// when it is given, the default install being the test database's, and
// returns naming as the options of Queries and of a QueueManager.
func installNamed(t *testing.T, ctx context.Context, db *sql.DB, naming []pgq.NamingOption) ([]pgq.Option, []pgq.ManagerOption) {
	t.Helper()
	var schemaOpts []pgq.SchemaOption
	var opts []pgq.Option
	var mopts []pgq.ManagerOption
	for _, o := range naming {
		schemaOpts, opts, mopts = append(schemaOpts, o), append(opts, o), append(mopts, o)
	}
	if naming != nil {
		if err := pgq.Install(ctx, db, schemaOpts...); err != nil {
			t.Fatalf("Install: %v", err)
		}
	}
	return opts, mopts
}
