package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/idruns"
	"github.com/pgq-dev/pgq/pgqtest"
)

// namedQuery returns the statement called name in db/queries/file with its
// sqlc parameters (@name) numbered $1, $2, ... in order of first use, and
// their names in that order.
func namedQuery(t *testing.T, file, name string) (string, []string) {
	t.Helper()
	src, err := os.ReadFile("db/queries/" + file)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)-- name: ` + name + ` :\w+\n(.*?);\n`).FindSubmatch(src)
	if m == nil {
		t.Fatalf("%s not found in db/queries/%s", name, file)
	}
	var params []string
	query := regexp.MustCompile(`@\w+`).ReplaceAllStringFunc(string(m[1]), func(p string) string {
		for i, q := range params {
			if q == p {
				return "$" + strconv.Itoa(i+1)
			}
		}
		params = append(params, p)
		return "$" + strconv.Itoa(len(params))
	})
	return query, params
}

// boundQuery returns namedQuery's statement with its arguments taken from
// values by parameter name ("@ids"); it fails the test when one is missing.
func boundQuery(t *testing.T, file, name string, values map[string]any) (string, []any) {
	t.Helper()
	query, params := namedQuery(t, file, name)
	args := make([]any, len(params))
	for i, p := range params {
		v, ok := values[p]
		if !ok {
			t.Fatalf("%s: no value for %s", name, p)
		}
		args[i] = v
	}
	return query, args
}

// explainGeneric returns the generic plan of query, the plan a prepared
// statement gets when the server finds it no dearer than the custom
// plans of its first five runs: one that knows none of args.
func explainGeneric(t *testing.T, db *sql.DB, query string, args ...any) string {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lits := make([]string, len(args))
	for i, a := range args {
		lits[i] = fmt.Sprintf("'%v'", a)
	}
	for _, s := range []string{"SET plan_cache_mode = force_generic_plan", "PREPARE generic_plan AS " + query} {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	defer func() {
		conn.ExecContext(ctx, "DEALLOCATE generic_plan")
		conn.ExecContext(ctx, "RESET plan_cache_mode")
	}()
	rows, err := conn.QueryContext(ctx, "EXPLAIN EXECUTE generic_plan("+strings.Join(lits, ", ")+")")
	return planLines(t, rows, err, query)
}

// explain returns the plan of query with args, one line per node.
func explain(t *testing.T, db *sql.DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.Query("EXPLAIN "+query, args...)
	return planLines(t, rows, err, query)
}

// planLines reads the rows of an EXPLAIN of query (err: its error) into
// one string, a line per node.
func planLines(t *testing.T, rows *sql.Rows, err error, query string) string {
	t.Helper()
	if err != nil {
		t.Fatalf("EXPLAIN: %v\n%s", err, query)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

// TestHotStatementPlans checks the indexes the worker's statements use on
// a table whose statistics were taken while every job was queued (as after
// a bulk enqueue), with 20,000 queued jobs and 2,000 running: the claim
// reads the queue index only; outcomes and heartbeats find their rows by
// primary key, never by scanning a partial index of running jobs (with a
// per-row search of the id array: quadratic in the batch); the release of
// stale jobs reads the heartbeat index.
func TestHotStatementPlans(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		ids := enqueueN(t, ctx, db, "plan", 22_000)
		if _, err := db.ExecContext(ctx, "ANALYZE pgqueuer"); err != nil {
			t.Fatal(err)
		}
		holder := uuid.New()
		if _, err := db.ExecContext(ctx, `UPDATE pgqueuer SET status = 'picked', queue_manager_id = $1
			WHERE id IN (SELECT id FROM pgqueuer ORDER BY id LIMIT 2000)`, holder.String()); err != nil {
			t.Fatal(err)
		}
		running := make([]int64, 1000)
		for i := range running {
			running[i] = int64(ids[i])
		}
		fill := func(v string) []string {
			s := make([]string, len(running))
			for i := range s {
				s[i] = v
			}
			return s
		}
		delays := make([]int64, len(running))
		low, high := idruns.Largest(running)
		partials := []string{"pgqueuer_picked_heartbeat_idx", "pgqueuer_updated_id_id1_idx", "pgqueuer_queue_manager_id_idx"}
		pkey := regexp.MustCompile(`Index Scan using pgqueuer_pkey on pgqueuer`)
		// The finishes also check each job's claim token in a hashed
		// subplan; the finish of successes reads its batch's ids as a
		// range of the key and = ANY, in a bitmap scan (see
		// TestClaimAndFinishReadRanges).
		pkeyHashed := regexp.MustCompile(`(?s)Index Scan using pgqueuer_pkey on pgqueuer.*hashed SubPlan`)
		pkeyBitmapHashed := regexp.MustCompile(`(?s)Bitmap Heap Scan on pgqueuer j.*hashed SubPlan.*Bitmap Index Scan on pgqueuer_pkey.*Index Cond: \(\(id >= .*Bitmap Index Scan on pgqueuer_pkey.*Index Cond: \(id = ANY`)

		for _, c := range []struct {
			name string
			args map[string]any
			uses *regexp.Regexp
			not  []string
		}{
			{"JobsFinish", map[string]any{
				"@ids": pq.Array(running), "@actions": pq.Array(fill("finish")), "@statuses": pq.Array(fill("successful")),
				"@tracebacks": pq.Array(fill("")), "@delays_us": pq.Array(delays), "@claim_tokens": pq.Array(delays),
				"@queue_manager_id": holder.String(), "@synchronous_outcome": false, "@quiet": true,
			}, pkeyHashed, partials},
			{"JobsFinishSucceeded", map[string]any{
				"@ids": pq.Array(running), "@claim_tokens": pq.Array(delays),
				"@run_low": low, "@run_high": high,
				"@queue_manager_id": holder.String(), "@synchronous_outcome": false, "@quiet": true,
			}, pkeyBitmapHashed, partials},
			{"JobsHeartbeat", map[string]any{"@ids": pq.Array(running), "@queue_manager_id": holder.String(), "@refresh_after_s": 1.25}, pkey, partials},
			{"JobsClaim", map[string]any{
				"@entrypoints": pq.Array([]string{"plan"}), "@caps": pq.Array([]int32{1000}), "@batch_size": 1000,
				"@queue_manager_id": uuid.NewString(), "@synchronous_claim": false, "@fold_statistics": true,
			}, regexp.MustCompile(`Index Scan using pgqueuer_ep_prio_id_idx on pgqueuer`), partials},
			{"JobsReleaseStale", map[string]any{
				"@entrypoints": pq.Array([]string{"plan"}), "@stale_after_us": int64(30_000_000), "@max_jobs": 1000,
				"@queue_manager_id": holder.String(), "@held_ids": pq.Array(running),
			}, regexp.MustCompile(`Index Scan using pgqueuer_picked_heartbeat_idx on pgqueuer`), []string{"Seq Scan on pgqueuer "}},
		} {
			query, args := boundQuery(t, "jobs.sql", c.name, c.args)
			plan := explain(t, db, query, args...)
			if !c.uses.MatchString(plan) {
				t.Errorf("%s does not use %v:\n%s", c.name, c.uses, plan)
			}
			for _, n := range c.not {
				if strings.Contains(plan, n) {
					t.Errorf("%s uses %s:\n%s", c.name, n, plan)
				}
			}
		}
	})
}

// TestLogFoldPlan checks that folding the log into the statistics reads
// its batches by id after a cursor: on a log of 200,000 folded rows and
// 60,000 new ones of which every third is left to fold (the others
// counted as written, as claims and outcomes count theirs), a plan that walks the primary key from its head steps
// over every folded row for each batch of 500, and one that takes the
// batch from the head of pgqueuer_log_not_aggregated steps over the index
// entries of every version folded since the last vacuum. Only the first
// batch of a pass (after_id 0) reads the partial index, to find where to
// start. The batches then fold every row once, in id order. The prune,
// likewise, reads by id after its cursor.
func TestLogFoldPlan(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		// Statistics taken while the fold had caught up, as the log's
		// autovacuum often takes them: they call the partial index empty.
		for _, s := range []string{`INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated)
			SELECT now() - interval '1 hour' + g * interval '10 milliseconds', g, 'successful', 0, 'fold', true
			FROM generate_series(1, 200000) AS g`,
			"VACUUM ANALYZE pgqueuer_log",
			`INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated)
			SELECT now() - interval '1 hour' + g * interval '10 milliseconds', g, 'successful', 0, 'fold', g % 3 <> 0
			FROM generate_series(200001, 260000) AS g`,
		} {
			if _, err := db.ExecContext(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		first := scalar[int64](t, db, "SELECT min(id) FROM pgqueuer_log WHERE NOT aggregated")
		for _, after := range []int64{0, first + 1000} {
			query, args := boundQuery(t, "log.sql", "LogFoldStatistics", map[string]any{"@batch_size": 500, "@after_id": after})
			// As planned for these values, and as the generic plan a
			// prepared statement (pgx caches them) gets after five runs.
			for kind, plan := range map[string]string{
				"plan":         explain(t, db, query, args...),
				"generic plan": explainGeneric(t, db, query, args...),
			} {
				if !regexp.MustCompile(`Index Scan using pgqueuer_log_pkey on pgqueuer_log l .*\n\s+Index Cond: \(id > `).MatchString(plan) {
					t.Errorf("after %d: LogFoldStatistics's %s does not read its batch from the primary key after the cursor:\n%s", after, kind, plan)
				}
				if !regexp.MustCompile(`Index Scan using pgqueuer_log_pkey on pgqueuer_log m .*\n\s+Index Cond: \(id = `).MatchString(plan) {
					t.Errorf("after %d: LogFoldStatistics's %s does not find the rows it marks by primary key:\n%s", after, kind, plan)
				}
				if kind == "plan" {
					if start := strings.Contains(plan, "using pgqueuer_log_not_aggregated on pgqueuer_log n"); start != (after == 0) {
						t.Errorf("after %d: LogFoldStatistics reads the partial index for its start: %v, want %v:\n%s", after, start, after == 0, plan)
					}
				}
			}
		}
		// The prune reads its batch from the primary key too, between its
		// cursor and the first row at or after its cutoff.
		query, args := boundQuery(t, "log.sql", "LogPrune", map[string]any{"@older_than_s": 60.0, "@after_id": first, "@batch_size": 1000})
		for kind, plan := range map[string]string{
			"plan":         explain(t, db, query, args...),
			"generic plan": explainGeneric(t, db, query, args...),
		} {
			if !regexp.MustCompile(
				`Index Scan using pgqueuer_log_pkey on pgqueuer_log o .*\n\s+Index Cond: \(\(id > ('?\d+'?(::bigint)?|\$\d+)\) AND \(id < `).MatchString(plan) {
				t.Errorf("LogPrune's %s does not read its batch from the primary key between the cursor and the cutoff:\n%s", kind, plan)
			}
			if !regexp.MustCompile(`Index Scan using pgqueuer_log_pkey on pgqueuer_log d .*\n\s+Index Cond: \(id = `).MatchString(plan) {
				t.Errorf("LogPrune's %s does not find the rows it deletes by primary key:\n%s", kind, plan)
			}
		}
		var after int64
		for range 100 {
			r, err := dbgen.New().LogFoldStatistics(ctx, pgq.QueryDB(db), dbgen.LogFoldStatisticsParams{AfterID: after, BatchSize: 500})
			if err != nil {
				t.Fatal(err)
			}
			if r.Folded > 0 && r.LastID != after+3*r.Folded && after != 0 {
				t.Fatalf("after %d folded %d rows up to id %d: not the next ids in order", after, r.Folded, r.LastID)
			}
			after = r.LastID
			if r.Folded < 500 {
				break
			}
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer_log WHERE NOT aggregated"); n != 0 {
			t.Errorf("%d rows left to fold", n)
		}
		if n := scalar[int](t, db, "SELECT coalesce(sum(count), 0) FROM pgqueuer_statistics"); n != 20000 {
			t.Errorf("statistics count %d rows, want 20000", n)
		}
	})
}

// TestClaimAndFinishCommitMode checks that the claim and both outcome
// statements turn synchronous_commit off for their own transaction only,
// unless asked to keep the session's setting, and that they claim and
// finish either way: all on one connection, so that a setting leaking out
// of a transaction would show.
func TestClaimAndFinishCommitMode(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		if _, err := pgq.NewQueries(db).EnqueueBatch(ctx, []pgq.NewJob{{Entrypoint: "m"}, {Entrypoint: "m"}, {Entrypoint: "m"}, {Entrypoint: "m"}}); err != nil {
			t.Fatal(err)
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// The test server may run with synchronous_commit off.
		if _, err := conn.ExecContext(ctx, "SET synchronous_commit = on"); err != nil {
			t.Fatal(err)
		}
		setting := func(q interface {
			QueryRowContext(context.Context, string, ...any) *sql.Row
		}) string {
			var v string
			if err := q.QueryRowContext(ctx, "SELECT current_setting('synchronous_commit')").Scan(&v); err != nil {
				t.Fatal(err)
			}
			return v
		}
		// inTx runs query in a transaction of its own on conn and checks
		// the rows it returns and the setting inside and after it.
		inTx := func(what string, sync bool, want string, rowsWant int, query string, args ...any) {
			t.Helper()
			tx, err := conn.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := tx.QueryContext(ctx, query, args...)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for rows.Next() {
				n++
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			rows.Close()
			if n != rowsWant {
				t.Errorf("%s, synchronous %v: %d rows, want %d", what, sync, n, rowsWant)
			}
			if got := setting(tx); got != want {
				t.Errorf("%s, synchronous %v: synchronous_commit in its transaction = %q, want %q", what, sync, got, want)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if got := setting(conn); got != "on" {
				t.Errorf("%s, synchronous %v: synchronous_commit after its transaction = %q, want on", what, sync, got)
			}
		}
		for _, c := range []struct {
			sync bool
			want string
		}{{false, "off"}, {true, "on"}} {
			holder := uuid.NewString()
			query, args := boundQuery(t, "jobs.sql", "JobsClaim", map[string]any{
				"@entrypoints": pq.Array([]string{"m"}), "@caps": pq.Array([]int32{1}), "@batch_size": 1,
				"@queue_manager_id": holder, "@synchronous_claim": c.sync, "@fold_statistics": true})
			inTx("JobsClaim", c.sync, c.want, 1, query, args...)

			var id, token int64
			if err := conn.QueryRowContext(ctx, `SELECT id, (extract(epoch FROM updated) * 1000000)::bigint
				FROM pgqueuer WHERE queue_manager_id = $1`, holder).Scan(&id, &token); err != nil {
				t.Fatal(err)
			}
			query, args = boundQuery(t, "jobs.sql", "JobsFinish", map[string]any{
				"@ids": pq.Array([]int64{id}), "@actions": pq.Array([]string{"finish"}),
				"@statuses": pq.Array([]string{"successful"}), "@tracebacks": pq.Array([]string{""}),
				"@delays_us": pq.Array([]int64{0}), "@claim_tokens": pq.Array([]int64{token}),
				"@queue_manager_id": holder, "@synchronous_outcome": c.sync, "@quiet": !c.sync})
			inTx("JobsFinish", c.sync, c.want, 0, query, args...) // no outcome left unwritten

			query, args = boundQuery(t, "jobs.sql", "JobsClaim", map[string]any{
				"@entrypoints": pq.Array([]string{"m"}), "@caps": pq.Array([]int32{1}), "@batch_size": 1,
				"@queue_manager_id": holder, "@synchronous_claim": c.sync, "@fold_statistics": true})
			inTx("JobsClaim", c.sync, c.want, 1, query, args...)
			if err := conn.QueryRowContext(ctx, `SELECT id, (extract(epoch FROM updated) * 1000000)::bigint
				FROM pgqueuer WHERE queue_manager_id = $1`, holder).Scan(&id, &token); err != nil {
				t.Fatal(err)
			}
			query, args = boundQuery(t, "jobs.sql", "JobsFinishSucceeded", map[string]any{
				"@ids": pq.Array([]int64{id}), "@claim_tokens": pq.Array([]int64{token}),
				"@run_low": id, "@run_high": id,
				"@queue_manager_id": holder, "@synchronous_outcome": c.sync, "@quiet": !c.sync})
			inTx("JobsFinishSucceeded", c.sync, c.want, 0, query, args...)
		}
	})
}

// commitModeCase is a worker's run options and the synchronous_commit its
// transaction should see.
type commitModeCase struct {
	opts []pgq.RunOption
	want string
}

// checkCommitModes runs one job per case through a worker with the case's
// run options and checks the synchronous_commit setting that a row trigger
// on the job table saw inside the job's transaction. event is the
// trigger's event and condition, row the row it records (NEW or OLD).
// Sessions opened for it start with synchronous_commit on (the test
// server runs with it off), so that a transaction that keeps the session's
// setting shows on.
func checkCommitModes(t *testing.T, db *sql.DB, dsn, event, row string, cases []commitModeCase) {
	t.Helper()
	ctx := testCtx(t)
	for _, stmt := range []string{
		`CREATE TABLE commit_mode (job_id bigint, mode text)`,
		`CREATE FUNCTION record_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO commit_mode VALUES (` + row + `.id, current_setting('synchronous_commit'));
			RETURN NULL;
		END $$`,
		`CREATE TRIGGER record_commit_mode ` + event + ` EXECUTE FUNCTION record_commit_mode()`,
		`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = on', current_database()); END $$`,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	db.SetMaxIdleConns(0) // drop the sessions opened before the ALTER
	db.SetMaxIdleConns(2)
	q := pgq.NewQueries(db)
	for _, c := range cases {
		id, err := q.Enqueue(ctx, "mode", nil)
		if err != nil {
			t.Fatal(err)
		}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("mode", func(context.Context, *pgq.Job) error { return nil })
		drain(t, ctx, qm, c.opts...)
		if got := scalar[string](t, db, `SELECT string_agg(mode, ',') FROM commit_mode WHERE job_id = $1`, int64(id)); got != c.want {
			t.Errorf("%d options: job %d: synchronous_commit %q in its transaction (%s), want %q", len(c.opts), id, got, event, c.want)
		}
	}
}

// TestSynchronousClaimsOption checks what a worker's claims commit with, as
// seen from inside the claiming transaction (a trigger on the queued →
// picked update records synchronous_commit): off by default, the session's
// setting with WithSynchronousClaims(true).
func TestSynchronousClaimsOption(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		checkCommitModes(t, db, dsn,
			`AFTER UPDATE ON pgqueuer FOR EACH ROW WHEN (OLD.status = 'queued' AND NEW.status = 'picked')`, "NEW",
			[]commitModeCase{
				{nil, "off"},
				{[]pgq.RunOption{pgq.WithSynchronousClaims(false)}, "off"},
				{[]pgq.RunOption{pgq.WithSynchronousClaims(true)}, "on"},
			})
	})
}

// TestSynchronousOutcomesOption checks what a worker's outcome writes
// commit with, as seen from inside the finishing transaction (a trigger on
// the delete of a finished job records synchronous_commit): off by
// default, the session's setting with WithSynchronousOutcomes(true), and
// not changed by WithSynchronousClaims.
func TestSynchronousOutcomesOption(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		checkCommitModes(t, db, dsn, `AFTER DELETE ON pgqueuer FOR EACH ROW`, "OLD",
			[]commitModeCase{
				{nil, "off"},
				{[]pgq.RunOption{pgq.WithSynchronousOutcomes(false)}, "off"},
				{[]pgq.RunOption{pgq.WithSynchronousOutcomes(true)}, "on"},
				{[]pgq.RunOption{pgq.WithSynchronousClaims(true)}, "off"},
			})
	})
}

// TestAfterSweepPlanReadsNoIndexEnds: planning the dependency sweep does
// not read the job table's id index. A join on the id (NOT EXISTS, planned
// as an anti-join) made the planner read the index's actual lowest and
// highest entries, walking past every dead one: a drain leaves tens of
// thousands at the low end between vacuums, and the sweep, planned afresh
// after each VACUUM, took 50-600 ms under a drain with nothing to settle.
// The planner's reads count as scans of the index in the transaction's
// statistics.
func TestAfterSweepPlanReadsNoIndexEnds(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		ids := enqueueN(t, ctx, db, "sweep", 5000)
		execSQL(t, db, fmt.Sprintf(`INSERT INTO pgqueuer_pgq_after (after_id, job_id, due, hold)
			SELECT g, g + 1, now(), false FROM generate_series(%d, %d) AS g`, ids[0], ids[len(ids)-2]))
		execSQL(t, db, `ANALYZE pgqueuer`)
		execSQL(t, db, `ANALYZE pgqueuer_pgq_after`)
		query, _ := boundQuery(t, "after.sql", "AfterSweep", nil)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		scans := func() (n int64) {
			t.Helper()
			if err := tx.QueryRowContext(ctx, `SELECT pg_stat_get_xact_numscans('pgqueuer_pkey'::regclass)`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		before := scans()
		rows, err := tx.QueryContext(ctx, "EXPLAIN "+query)
		plan := planLines(t, rows, err, query)
		if n := scans() - before; n > 0 {
			t.Errorf("planning the sweep read the id index %d times:\n%s", n, plan)
		}
	})
}

// TestLookupPlans checks the plans of the look-ups that run once per
// enqueue or claim, as planned for the call and as the generic plan a
// prepared statement keeps:
//   - AfterCheck probes the job table's primary key once per id, never
//     a hash of every id in the job table;
//   - JobsNextDue reads one index entry per entrypoint (LIMIT 1 on
//     pgqueuer_ep_ea_idx), not every job of it not due yet;
//   - one keyed job's enqueue, skipping duplicates or not, finds the turn
//     and its key's last rank on their two indexes (a key's few jobs may
//     be read by a bitmap of the second), never on pgqueuer_pgq_keyed_idx
//     or by a scan of the table.
func TestLookupPlans(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		noSeq := "Seq Scan on pgqueuer "
		check := func(name, plan string, uses []*regexp.Regexp, not ...string) {
			t.Helper()
			for _, u := range uses {
				if !u.MatchString(plan) {
					t.Errorf("%s does not match %v:\n%s", name, u, plan)
				}
			}
			for _, n := range not {
				if strings.Contains(plan, n) {
					t.Errorf("%s has %q:\n%s", name, n, plan)
				}
			}
		}
		pkeyProbe := []*regexp.Regexp{regexp.MustCompile(`Index Only Scan using pgqueuer_pkey on pgqueuer j`)}
		enqueueN(t, ctx, db, "plan", 20_000)
		later := make([]pgq.NewJob, 1000)
		keyed := make([]pgq.NewJob, 5000)
		for i := range later {
			later[i] = pgq.NewJob{Entrypoint: "plan", ExecuteAfter: time.Hour + time.Duration(i)*time.Second}
		}
		for i := range keyed {
			keyed[i] = pgq.NewJob{Entrypoint: "keyed", FairnessKey: fmt.Sprint("tenant-", i%100)}
		}
		for _, jobs := range [][]pgq.NewJob{later, keyed} {
			if _, err := pgq.NewQueries(db).EnqueueBatch(ctx, jobs); err != nil {
				t.Fatal(err)
			}
		}
		execSQL(t, db, "ANALYZE pgqueuer")

		afterCheck, _ := namedQuery(t, "after.sql", "AfterCheck")
		check("AfterCheck", explain(t, db, afterCheck, pq.Array([]int64{1, 2, 3})), pkeyProbe, "hashed SubPlan", noSeq)
		check("AfterCheck's generic plan", explainGeneric(t, db, afterCheck, "{1,2,3}"), pkeyProbe, "hashed SubPlan", noSeq)

		nextDue, _ := namedQuery(t, "jobs.sql", "JobsNextDue")
		onePerEntrypoint := []*regexp.Regexp{regexp.MustCompile(`Limit .*\n\s+->  Index (Only )?Scan using pgqueuer_ep_ea_idx on pgqueuer j`)}
		check("JobsNextDue", explain(t, db, nextDue, pq.Array([]string{"plan", "keyed"})), onePerEntrypoint, noSeq)
		check("JobsNextDue's generic plan", explainGeneric(t, db, nextDue, "{plan,keyed}"), onePerEntrypoint, noSeq)

		probes := []*regexp.Regexp{
			regexp.MustCompile(`Index (Only )?Scan using pgqueuer_pgq_fair_rank_idx on pgqueuer f`),
			regexp.MustCompile(`(Index (Only )?Scan Backward using|Bitmap Index Scan on) pgqueuer_pgq_fair_key_rank_idx`),
		}
		for _, name := range []string{"JobsEnqueueKeyedOne", "JobsEnqueueKeyedOneSkipDuplicates"} {
			query, args := boundQuery(t, "keys.sql", name, map[string]any{
				"@priority": 0, "@entrypoint": "keyed", "@payload_null": true, "@payload": "",
				"@execute_after_us": 0, "@dedupe_key": "", "@headers": "", "@fairness_key": "tenant-7", "@serial_key": "",
			})
			check(name, explain(t, db, query, args...), probes, noSeq, "pgqueuer_pgq_keyed_idx")
			check(name+"'s generic plan", explainGeneric(t, db, query, args...), probes, noSeq, "pgqueuer_pgq_keyed_idx")
		}
	})
}

// TestClaimAndFinishReadRanges checks how the claim's update and the
// finish of successes find their rows: a claim of jobs that lie close
// together, and a finish of such a batch, read one range of the primary
// key and the table page by page (a bitmap scan; = ANY(ids) alone descends
// the key and reads the table once a job); jobs far apart (every tenth
// due, the rest scheduled later) are each found alone, with no row between
// them read. The generic plans, which a connection keeps, do the same.
// Either way exactly the right jobs are claimed and finished.
func TestClaimAndFinishReadRanges(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		ids := enqueueN(t, ctx, db, "range", 5_000)
		if _, err := db.ExecContext(ctx, `UPDATE pgqueuer SET execute_after = now() + interval '1 day'
			WHERE id > $1 AND id % 10 <> 0`, int64(ids[1999])); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "VACUUM ANALYZE pgqueuer"); err != nil {
			t.Fatal(err)
		}
		// walks runs query with EXPLAIN ANALYZE in a transaction rolled
		// back and returns, of its bitmap scan of the job table (as j),
		// the rows it found and the rows it read past in its range of
		// the primary key, and the key entries of its ids apart (= ANY).
		type walk struct{ found, readPast, apart int }
		heapRE := regexp.MustCompile(`Bitmap Heap Scan on pgqueuer j \(actual rows=(\d+) loops=1\)(\n\s+(Recheck Cond|Filter|Heap Blocks|Rows Removed by Filter: (\d+)).*)*`)
		rangeRE := regexp.MustCompile(`Bitmap Index Scan on pgqueuer_pkey \(actual rows=\d+ loops=1\)\n\s+Index Cond: \(\(id >= `)
		apartRE := regexp.MustCompile(`Bitmap Index Scan on pgqueuer_pkey \(actual rows=(\d+) loops=1\)\n\s+Index Cond: \(id = ANY`)
		walks := func(t *testing.T, query string, args ...any) walk {
			t.Helper()
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			rows, err := tx.QueryContext(ctx, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "+query, args...)
			plan := planLines(t, rows, err, query)
			heap, apart := heapRE.FindAllStringSubmatch(plan, -1), apartRE.FindAllStringSubmatch(plan, -1)
			if len(heap) != 1 || len(rangeRE.FindAllString(plan, -1)) != 1 || len(apart) != 1 {
				t.Fatalf("want one bitmap scan of pgqueuer as j, by a range of the key and by = ANY:\n%s", plan)
			}
			var w walk
			w.found, _ = strconv.Atoi(heap[0][1])
			w.readPast, _ = strconv.Atoi(heap[0][4])
			w.apart, _ = strconv.Atoi(apart[0][1])
			return w
		}
		q := dbgen.New()
		qm := uuid.NullUUID{UUID: uuid.New(), Valid: true}
		claimArgs := func(n int) map[string]any {
			return map[string]any{"@entrypoints": pq.Array([]string{"range"}), "@caps": pq.Array([]int32{int32(n)}),
				"@batch_size": n, "@queue_manager_id": qm.UUID.String(), "@synchronous_claim": false, "@fold_statistics": true}
		}
		claim := func(t *testing.T, n int, want func(i int) int64) []*dbgen.JobsClaimRow {
			t.Helper()
			rows, err := q.JobsClaim(ctx, pgq.QueryDB(db), dbgen.JobsClaimParams{Entrypoints: []string{"range"},
				Caps: []int32{int32(n)}, BatchSize: int32(n), QueueManagerID: qm, FoldStatistics: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != n {
				t.Fatalf("claimed %d jobs, want %d", len(rows), n)
			}
			for i, r := range rows {
				if r.ID != want(i) {
					t.Fatalf("claimed job %d is %d, want %d", i, r.ID, want(i))
				}
			}
			return rows
		}
		finish := func(t *testing.T, rows []*dbgen.JobsClaimRow, explainOnly bool) walk {
			t.Helper()
			ids, tokens := make([]int64, len(rows)), make([]int64, len(rows))
			for i, r := range rows {
				ids[i], tokens[i] = r.ID, r.ClaimToken
			}
			p := idruns.Finish(dbgen.JobsFinishSucceededParams{Ids: ids, ClaimTokens: tokens, QueueManagerID: qm, Quiet: true})
			if explainOnly {
				query, args := boundQuery(t, "jobs.sql", "JobsFinishSucceeded", map[string]any{
					"@ids": pq.Array(ids), "@claim_tokens": pq.Array(tokens), "@run_low": p.RunLow, "@run_high": p.RunHigh,
					"@queue_manager_id": qm.UUID.String(), "@synchronous_outcome": false, "@quiet": true})
				return walks(t, query, args...)
			}
			unwritten, err := q.JobsFinishSucceeded(ctx, pgq.QueryDB(db), p)
			if err != nil || len(unwritten) != 0 {
				t.Fatalf("finish: %d outcomes unwritten, err %v", len(unwritten), err)
			}
			return walk{}
		}
		// The generic plans, which a connection keeps after five runs,
		// read a range of the key too, and never scan the table.
		rangeScan := regexp.MustCompile(`Bitmap Index Scan on pgqueuer_pkey .*\n\s+Index Cond: \(\(id >= `)
		for _, c := range []struct {
			name string
			args map[string]any
		}{
			// Literals: explainGeneric writes its values into the query.
			{"JobsClaim", map[string]any{"@entrypoints": "{range}", "@caps": "{1000}", "@batch_size": 1000,
				"@queue_manager_id": qm.UUID.String(), "@synchronous_claim": false, "@fold_statistics": true}},
			{"JobsFinishSucceeded", map[string]any{"@ids": "{1,2}", "@claim_tokens": "{1,2}",
				"@run_low": 1, "@run_high": 2, "@queue_manager_id": qm.UUID.String(),
				"@synchronous_outcome": false, "@quiet": true}},
		} {
			query, args := boundQuery(t, "jobs.sql", c.name, c.args)
			if plan := explainGeneric(t, db, query, args...); !rangeScan.MatchString(plan) || strings.Contains(plan, "Seq Scan on pgqueuer ") {
				t.Errorf("%s's generic plan does not walk a range of the key:\n%s", c.name, plan)
			}
		}

		// Close together: the first 2,000 jobs.
		query, args := boundQuery(t, "jobs.sql", "JobsClaim", claimArgs(1000))
		if w := walks(t, query, args...); w != (walk{1000, 0, 0}) {
			t.Errorf("a claim of 1,000 jobs close together: %+v, want all in one range", w)
		}
		rows := claim(t, 1000, func(i int) int64 { return int64(ids[i]) })
		if w := finish(t, rows, true); w != (walk{1000, 0, 0}) {
			t.Errorf("a finish of 1,000 jobs close together: %+v, want all in one range", w)
		}
		// Every other job of the batch: ids two apart, still one range,
		// which reads the 499 jobs between them.
		var alternate []*dbgen.JobsClaimRow
		for i := 0; i < len(rows); i += 2 {
			alternate = append(alternate, rows[i])
		}
		if w := finish(t, alternate, true); w != (walk{500, 499, 0}) {
			t.Errorf("a finish of every other job of 1,000: %+v, want all in one range", w)
		}
		finish(t, rows, false)
		claim(t, 1000, func(i int) int64 { return int64(ids[1000+i]) })

		// Far apart: every tenth job after the first 2,000 is due.
		spread := func(i int) int64 { return (int64(ids[1999])/10 + 1 + int64(i)) * 10 }
		query, args = boundQuery(t, "jobs.sql", "JobsClaim", claimArgs(100))
		if w := walks(t, query, args...); w != (walk{100, 0, 100}) {
			t.Errorf("a claim of 100 jobs far apart: %+v, want each found alone", w)
		}
		rows = claim(t, 100, spread)
		// (Each of their ids apart has two entries in the key: the
		// claim's update wrote one more.)
		if w := finish(t, rows, true); w.found != 100 || w.readPast != 0 || w.apart < 99 {
			t.Errorf("a finish of 100 jobs far apart: %+v, want each found alone (the first as a range of one)", w)
		}
		finish(t, rows, false)
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer WHERE status = 'picked'"); n != 1000 {
			t.Errorf("%d jobs picked, want the 1,000 not finished", n)
		}
	})
}

// TestClaimAndFinishKeepTheirPlans checks that a connection keeps the
// generic plans of the claim and the finish of successes after their
// first five runs (pgx prepares them), for claims of 100 as the library's
// defaults make: planned again for each call's values, the claim cost
// 5,500 instructions a job, and with its range reads both statements
// 19,300 (docs/benchmarks.md). 26 runs: with its batch size as a value,
// the claim kept its generic plan for a dozen runs, then went back to
// custom ones as the table changed.
func TestClaimAndFinishKeepTheirPlans(t *testing.T) {
	db, dsn := pgqtest.NewDB(t, "pgx")
	ctx := testCtx(t)
	enqueueN(t, ctx, db, "plans", 30_000)
	execSQL(t, db, "VACUUM ANALYZE pgqueuer")
	single := planCountingConn(t, dsn)
	q, qdb := dbgen.New(), pgq.QueryDB(single)
	qm := uuid.NullUUID{UUID: uuid.New(), Valid: true}
	const runs = 26
	for i := range runs {
		rows, err := q.JobsClaim(ctx, qdb, dbgen.JobsClaimParams{Entrypoints: []string{"plans"}, Caps: []int32{100},
			BatchSize: 100, QueueManagerID: qm, FoldStatistics: true})
		if err != nil || len(rows) != 100 {
			t.Fatalf("claim %d: %d jobs, err %v", i, len(rows), err)
		}
		ids, tokens := make([]int64, len(rows)), make([]int64, len(rows))
		for j, r := range rows {
			ids[j], tokens[j] = r.ID, r.ClaimToken
		}
		unwritten, err := q.JobsFinishSucceeded(ctx, qdb, idruns.Finish(dbgen.JobsFinishSucceededParams{Ids: ids, ClaimTokens: tokens,
			QueueManagerID: qm, Quiet: true}))
		if err != nil || len(unwritten) != 0 {
			t.Fatalf("finish %d: %d unwritten, err %v", i, len(unwritten), err)
		}
	}
	for _, name := range []string{"JobsClaim", "JobsFinishSucceeded"} {
		var custom, generic int64
		if err := single.QueryRowContext(ctx, `SELECT coalesce(sum(custom_plans), 0)::bigint, coalesce(sum(generic_plans), 0)::bigint
			FROM pg_prepared_statements WHERE statement LIKE '-- name: '||$1||' %'`, name).Scan(&custom, &generic); err != nil {
			t.Fatal(err)
		}
		if custom > 5 || generic < runs-5 {
			t.Errorf("%s in %d runs on one connection: %d custom plans, %d generic; want at most the first 5 custom", name, runs, custom, generic)
		}
	}
}
