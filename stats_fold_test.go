package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/syncbuf"
)

// uncounted lists, per second, status, entrypoint and priority, where the
// statistics' count differs from the number of log rows: empty when every
// log row was counted exactly once, in the second of its created.
func uncounted(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`
		WITH logged AS (
			SELECT date_trunc('sec', created) AS sec, status::text, entrypoint, priority, count(*) AS n
			FROM pgqueuer_log GROUP BY 1, 2, 3, 4
		), counted AS (
			SELECT date_trunc('sec', created) AS sec, status::text, entrypoint, priority, sum(count) AS n
			FROM pgqueuer_statistics GROUP BY 1, 2, 3, 4
		)
		SELECT to_char(coalesce(l.sec, c.sec) AT TIME ZONE 'UTC', 'HH24:MI:SS'),
		       coalesce(l.status, c.status), coalesce(l.entrypoint, c.entrypoint),
		       coalesce(l.priority, c.priority), coalesce(l.n, 0), coalesce(c.n, 0)
		FROM logged AS l FULL JOIN counted AS c USING (sec, status, entrypoint, priority)
		WHERE l.n IS DISTINCT FROM c.n
		ORDER BY 1, 2, 3, 4`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var diff []string
	for rows.Next() {
		var sec, status, ep string
		var prio, logged, counted int64
		if err := rows.Scan(&sec, &status, &ep, &prio, &logged, &counted); err != nil {
			t.Fatal(err)
		}
		diff = append(diff, fmt.Sprintf("%s %s %s/%d: %d log rows, %d counted", sec, status, ep, prio, logged, counted))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return diff
}

// foldAll runs pgq's fold until it has caught up.
func foldAll(t *testing.T, ctx context.Context, db *sql.DB) {
	t.Helper()
	var after int64
	for {
		r, err := dbgen.New().LogFoldStatistics(ctx, pgq.QueryDB(db), dbgen.LogFoldStatisticsParams{AfterID: after, BatchSize: 500})
		if err != nil {
			t.Fatal(err)
		}
		if r.Folded < 500 {
			return
		}
		after = r.LastID
	}
}

// mixedJobs enqueues n jobs over three entrypoints and three priorities,
// so that claims and outcome batches count into several statistics rows.
func mixedJobs(t *testing.T, ctx context.Context, db *sql.DB, n int) {
	t.Helper()
	jobs := make([]pgq.NewJob, n)
	for i := range jobs {
		jobs[i] = pgq.NewJob{Entrypoint: fmt.Sprintf("count%d", i%3), Priority: int32(i % 3),
			Payload: []byte(fmt.Sprint(i))}
	}
	if _, err := pgq.NewQueries(db).EnqueueBatch(ctx, jobs); err != nil {
		t.Fatal(err)
	}
}

// mixedHandlers registers on qm a handler for each of mixedJobs's
// entrypoints that fails every seventh job.
func mixedHandlers(t *testing.T, qm *pgq.QueueManager) {
	t.Helper()
	for e := range 3 {
		if err := qm.Entrypoint(fmt.Sprintf("count%d", e), func(_ context.Context, j *pgq.Job) error {
			if j.ID%7 == 0 {
				return errors.New("seventh")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStatisticsCountedAsWritten: a worker's claims and outcomes count
// their log rows into the statistics as they write them (and log them
// aggregated), pgq's fold counts the rest (the enqueues' 'queued' rows),
// and no row is counted twice. First with no fold running at all; then
// with four workers claiming and finishing at once over several
// statistics rows while two of them fold all the while (statements that
// lock statistics rows in different orders would deadlock). Before, every
// log row waited for a fold, whose update of each row cost more than the
// claim (docs/benchmarks.md).
func TestStatisticsCountedAsWritten(t *testing.T) {
	t.Parallel()
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		db.SetMaxIdleConns(500) // four workers of 100 handlers on one pool
		var logs syncbuf.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		run := func(jobs, workers, folding int) {
			t.Helper()
			mixedJobs(t, ctx, db, jobs)
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				qm := pgq.NewQueueManager(db, pgq.WithLogger(logger), pgq.WithListenDSN(dsn))
				mixedHandlers(t, qm)
				opts := []pgq.RunOption{pgq.WithMode(pgq.ModeDrain), pgq.WithBatchSize(20)}
				if w < folding {
					opts = append(opts, pgq.WithStatisticsInterval(10*time.Millisecond))
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- qm.Run(ctx, opts...)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			}
			if s := logs.String(); s != "" {
				t.Fatalf("the workers warned:\n%s", s)
			}
			if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); n != 0 {
				t.Fatalf("%d jobs left", n)
			}
		}

		const jobs = 600
		run(jobs, 2, 0)
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log WHERE status <> 'queued' AND NOT aggregated"); n != 0 {
			t.Fatalf("%d 'picked' or outcome log rows left for a fold, want 0", n)
		}
		failed := scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log WHERE status = 'exception'")
		for status, want := range map[string]int{"picked": jobs, "successful": jobs - failed, "exception": failed, "queued": 0} {
			if n := scalar[int](t, db, "SELECT coalesce(sum(count), 0) FROM pgqueuer_statistics WHERE status = $1", status); n != want {
				t.Errorf("statistics count %d %s before any fold, want %d", n, status, want)
			}
		}
		foldAll(t, ctx, db)
		if diff := uncounted(t, db); len(diff) > 0 {
			t.Fatalf("statistics and log disagree after the fold:\n%s", strings.Join(diff, "\n"))
		}

		run(2*jobs, 4, 2)
		foldAll(t, ctx, db)
		if diff := uncounted(t, db); len(diff) > 0 {
			t.Fatalf("statistics and log disagree after four workers, two folding:\n%s", strings.Join(diff, "\n"))
		}
	})
}

// TestStatisticsUpsertsInKeyOrder: every statement that counts into
// pgqueuer_statistics has one shape, which upserts its rows in the order
// of the table's unique key (priority, second, status, entrypoint). Claims
// and outcomes upsert while folds and prunes do, and two statements that
// lock the same statistics rows in different orders deadlock; no run of
// the workers shows that reliably, so the statements are read here.
func TestStatisticsUpsertsInKeyOrder(t *testing.T) {
	files, err := filepath.Glob("db/queries/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	upsert := regexp.MustCompile(`INSERT INTO pgqueuer_statistics \(created, count, priority, status, entrypoint\)
    SELECT date_trunc\('sec', (\w+)\.created AT TIME ZONE 'UTC'\) AT TIME ZONE 'UTC',
           count\(\*\), (\w+)\.priority, (\w+)\.status, (\w+)\.entrypoint
    FROM (\w+)
(?:    WHERE [^\n]+\n)?    GROUP BY 1, (\w+)\.priority, (\w+)\.status, (\w+)\.entrypoint
    ORDER BY (\w+)\.priority, 1, (\w+)\.status, (\w+)\.entrypoint
    ON CONFLICT \(priority, date_trunc\('sec', created AT TIME ZONE 'UTC'\), status, entrypoint\)
    DO UPDATE SET count = pgqueuer_statistics\.count \+ EXCLUDED\.count`)
	// The same for rows that all fall in one second, given once (a claim's
	// time, a statement's now()): the key's order without the second; and
	// for rows that all have one status too, given as a constant (a
	// claim's 'picked', a finish's 'successful'): without the status.
	oneSecond := func(status, statusKey string) *regexp.Regexp {
		return regexp.MustCompile(`INSERT INTO pgqueuer_statistics \(created, count, priority, status, entrypoint\)
    SELECT (?:date_trunc\('sec', now\(\) AT TIME ZONE 'UTC'\) AT TIME ZONE 'UTC'|\(SELECT date_trunc\('sec', (\w+)\.at AT TIME ZONE 'UTC'\) AT TIME ZONE 'UTC' FROM \w+\)),
           count\(\*\), (\w+)\.priority, ` + status + `, (\w+)\.entrypoint
    FROM (\w+)
(?:    WHERE [^\n]+\n)?    GROUP BY (\w+)\.priority` + statusKey + `, (\w+)\.entrypoint
    ORDER BY (\w+)\.priority` + statusKey + `, (\w+)\.entrypoint
    ON CONFLICT \(priority, date_trunc\('sec', created AT TIME ZONE 'UTC'\), status, entrypoint\)
    DO UPDATE SET count = pgqueuer_statistics\.count \+ EXCLUDED\.count`)
	}
	upsertOneSecond := oneSecond(`(\w+)\.status`, `, (\w+)\.status`)
	upsertOneStatus := oneSecond(`'\w+'::pgqueuer_status`, ``)
	counted := map[string]int{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range strings.Split(string(src), "-- name: ")[1:] {
			name, _, _ := strings.Cut(q, " ")
			inserts := strings.Count(q, "INSERT INTO pgqueuer_statistics")
			if inserts == 0 {
				continue
			}
			ms := upsert.FindAllStringSubmatch(q, -1)
			oneSecond := upsertOneSecond.FindAllStringSubmatch(q, -1)
			oneSecond = append(oneSecond, upsertOneStatus.FindAllStringSubmatch(q, -1)...)
			for _, m := range oneSecond {
				// Without the whole match, the claim time's alias (or "")
				// stands first, where the check below skips the match,
				// and the aliases that must agree follow it.
				ms = append(ms, m[1:])
			}
			if len(ms) != inserts {
				t.Errorf("%s: %d of its %d statistics upserts are not in the shape that locks rows in key order", name, inserts-len(ms), inserts)
			}
			for _, m := range ms {
				for _, alias := range m[2:] {
					if alias != m[1] {
						t.Errorf("%s: its statistics upsert mixes %s and %s", name, m[1], alias)
					}
				}
			}
			counted[name] = len(ms)
		}
	}
	for _, name := range []string{"JobsClaim", "JobsClaimFair", "JobsFinish", "JobsFinishSucceeded", "LogFoldStatistics", "LogPrune"} {
		if counted[name] != 1 {
			t.Errorf("%s: %d statistics upserts in the key-order shape, want 1", name, counted[name])
		}
	}
}

// TestPGQueuerFoldAfterPgqCounts: PGQueuer's own fold (the one its
// log_statistics runs before reading) counts the rows pgq left to fold
// and none that pgq's claims and outcomes counted already.
func TestPGQueuerFoldAfterPgqCounts(t *testing.T) {
	eachPGQueuerDriver(t, func(t *testing.T, ctx context.Context, db *sql.DB, dsn string) {
		mixedJobs(t, ctx, db, 300)
		qm := pgq.NewQueueManager(db)
		mixedHandlers(t, qm)
		drain(t, ctx, qm)
		if diff := uncounted(t, db); len(diff) == 0 {
			t.Fatal("every log row counted before any fold: the 'queued' rows should wait for one")
		}
		runPGQueuer(t, ctx, dsn, false, "-c", pyScript("", `
    print(len(await Queries(driver).log_statistics(1000)))`))
		if diff := uncounted(t, db); len(diff) > 0 {
			t.Fatalf("statistics and log disagree after PGQueuer's fold:\n%s", strings.Join(diff, "\n"))
		}
	})
}
