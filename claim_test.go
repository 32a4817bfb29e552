package pgq_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/idruns"
)

// statements returns pgq's generated statements, db as they take it, and
// a new worker id to hold rows with, for tests of single statements.
func statements(db *sql.DB) (*dbgen.Queries, dbgen.DBTX, uuid.NullUUID) {
	return dbgen.New(), pgq.QueryDB(db), uuid.NullUUID{UUID: uuid.New(), Valid: true}
}

// Every statement with which pgq moves a row in or out of 'picked' leaves
// slot NULL: a slot PGQueuer (1.4+) gave the row earlier must not travel
// with it, or the row may collide on pgqueuer_picked_slot_idx with a job
// PGQueuer picked into that slot since.
func TestSlotClearedOnRowsPgqTouches(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q, rdb, holder := statements(db)
		insert := func(status string, slot int, stale bool) int64 {
			t.Helper()
			hb := "now()"
			if stale {
				hb = "now() - interval '1 hour'"
			}
			return scalar[int64](t, db, `INSERT INTO pgqueuer (priority, entrypoint, status, slot, heartbeat, queue_manager_id)
				VALUES (0, 'e', $1, $2, `+hb+`, $3) RETURNING id`, status, slot, holder.UUID.String())
		}
		slotOf := func(id int64) sql.NullInt64 {
			t.Helper()
			return scalar[sql.NullInt64](t, db, "SELECT slot FROM pgqueuer WHERE id = $1", id)
		}

		// A stale job PGQueuer picked into slot 0: released by pgq.
		stale := insert("picked", 0, true)
		if _, err := q.JobsReleaseStale(ctx, rdb, dbgen.JobsReleaseStaleParams{Entrypoints: []string{"e"}, StaleAfterUs: 1e6, MaxJobs: 10}); err != nil {
			t.Fatal(err)
		}
		if s := slotOf(stale); s.Valid {
			t.Fatalf("released job keeps slot %d", s.Int64)
		}
		// Meanwhile PGQueuer picks another job into slot 0; pgq's claim of
		// the released job must not collide with it.
		insert("picked", 0, false)
		// The released row with a leftover slot, as older pgq left it.
		if _, err := db.ExecContext(ctx, "UPDATE pgqueuer SET slot = 0 WHERE id = $1", stale); err != nil {
			t.Fatal(err)
		}
		claimed, err := q.JobsClaim(ctx, rdb, dbgen.JobsClaimParams{Entrypoints: []string{"e"}, Caps: []int32{10}, BatchSize: 10, QueueManagerID: holder})
		if err != nil || len(claimed) != 1 || claimed[0].ID != stale {
			t.Fatalf("claim = %v, %v", claimed, err)
		}
		if s := slotOf(stale); s.Valid {
			t.Fatalf("claimed job has slot %d", s.Int64)
		}

		// Outcomes that keep the row: retry, release, hold; then requeue.
		for _, action := range []string{"retry", "release", "hold"} {
			id := insert("picked", 3, false)
			status := "queued"
			if action == "hold" {
				status = "failed"
			}
			token := scalar[int64](t, db, "SELECT (extract(epoch FROM updated) * 1000000)::bigint FROM pgqueuer WHERE id = $1", id)
			if n, err := q.JobsFinish(ctx, rdb, dbgen.JobsFinishParams{Ids: []int64{id}, Actions: []string{action},
				Statuses: []string{status}, Tracebacks: []string{""}, DelaysUs: []int64{0}, ClaimTokens: []int64{token},
				QueueManagerID: holder}); err != nil || len(n) != 0 {
				t.Fatalf("%s: %v, %v", action, n, err)
			}
			if s := slotOf(id); s.Valid {
				t.Fatalf("%s keeps slot %d", action, s.Int64)
			}
			if action == "hold" {
				if _, err := db.ExecContext(ctx, "UPDATE pgqueuer SET slot = 4 WHERE id = $1", id); err != nil {
					t.Fatal(err)
				}
				if _, err := q.JobsRequeue(ctx, rdb, []int64{id}); err != nil {
					t.Fatal(err)
				}
				if s := slotOf(id); s.Valid {
					t.Fatalf("requeue keeps slot %d", s.Int64)
				}
			}
		}
	})
}

// pgq folds the log into the statistics only under PGQueuer's advisory
// lock, so a PGQueuer worker folding at the same time never counts a row
// twice; the prune, which folds the rows it deletes, too.
func TestFoldTakesPGQueuerAdvisoryLock(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		if _, err := pgq.NewQueries(db).Enqueue(ctx, "e", nil); err != nil {
			t.Fatal(err)
		}
		// Hold the lock as PGQueuer's aggregation does.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		var got bool
		if err := tx.QueryRowContext(ctx, "SELECT pg_try_advisory_xact_lock(hashtext('pgqueuer_statistics'))").Scan(&got); err != nil || !got {
			t.Fatalf("taking the lock: %v %v", got, err)
		}
		fold := func() int64 {
			r, err := dbgen.New().LogFoldStatistics(ctx, pgq.QueryDB(db), dbgen.LogFoldStatisticsParams{BatchSize: 100})
			if err != nil {
				t.Fatal(err)
			}
			return r.Folded
		}
		// The prune folds the rows it deletes that are not folded yet, and
		// so must leave them while another folds.
		prune := func() int64 {
			r, err := dbgen.New().LogPrune(ctx, pgq.QueryDB(db), dbgen.LogPruneParams{OlderThanS: 0, BatchSize: 100})
			if err != nil {
				t.Fatal(err)
			}
			return r.Pruned
		}
		if n := fold(); n != 0 {
			t.Fatalf("folded %d rows while PGQueuer holds the lock", n)
		}
		if n := prune(); n != 0 {
			t.Fatalf("pruned %d rows not folded yet while PGQueuer holds the lock", n)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if n := prune(); n != 1 {
			t.Fatalf("pruned %d rows after the lock was released, want 1", n)
		}
		if n := scalar[int](t, db, "SELECT coalesce(sum(count), 0) FROM pgqueuer_statistics"); n != 1 {
			t.Fatalf("statistics count %d rows after the prune, want 1", n)
		}
		if n := fold(); n != 0 {
			t.Fatalf("folded %d rows after the prune folded them, want 0", n)
		}
	})
}

// pgq's claims of an entrypoint with a concurrency limit take capacity
// slots in [0, limit) as PGQueuer 1.4+ does: never a slot another worker's
// picked job holds, and a claim that meets another worker's uncommitted
// claim of the same slot backs off and claims again, instead of running
// more jobs than the limit.
func TestClaimTakesCapacitySlots(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const limit = 3
		other := uuid.New().String()
		pick := `INSERT INTO pgqueuer (priority, entrypoint, status, slot, queue_manager_id) VALUES (0, 'lim', 'picked', $1, $2)`
		// Another worker holds slot 1, and is claiming slot 0 (not
		// committed yet), as a PGQueuer 1.4+ worker does.
		if _, err := db.ExecContext(ctx, pick, 1, other); err != nil {
			t.Fatal(err)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, pick, 0, other); err != nil {
			t.Fatal(err)
		}
		var jobs []pgq.NewJob
		for range 5 {
			jobs = append(jobs, pgq.NewJob{Entrypoint: "lim"})
		}
		if _, err := pgq.NewQueries(db).EnqueueBatch(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		release := make(chan struct{})
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("lim", func(ctx context.Context, _ *pgq.Job) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}, pgq.WithConcurrencyLimit(limit)); err != nil {
			t.Fatal(err)
		}
		runWorker(t, ctx, qm, pgq.WithDequeueTimeout(50*time.Millisecond))

		// pgq counted one held job, claimed two and wants slots 0 and 2:
		// slot 0 waits for the other worker's claim.
		deadline := time.Now().Add(10 * time.Second)
		for scalar[int](t, db, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("pgq's claim never waited for the slot the other worker is claiming")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		mine := func() []int64 {
			t.Helper()
			rows, err := db.QueryContext(ctx, `SELECT slot FROM pgqueuer WHERE entrypoint = 'lim' AND status = 'picked' AND queue_manager_id <> $1 ORDER BY slot`, other)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var slots []int64
			for rows.Next() {
				var s sql.NullInt64
				if err := rows.Scan(&s); err != nil {
					t.Fatal(err)
				}
				if !s.Valid {
					t.Fatal("pgq picked a limited job without a slot")
				}
				slots = append(slots, s.Int64)
			}
			return slots
		}
		// The lost race rolled back; the claim again finds one free slot.
		deadline = time.Now().Add(10 * time.Second)
		for len(mine()) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // time to overshoot, if it would
		if got := mine(); len(got) != 1 || got[0] != 2 {
			t.Fatalf("pgq holds slots %v beside the other worker's 0 and 1, want [2]", got)
		}
		if n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer WHERE status = 'picked'`); n != limit {
			t.Fatalf("%d jobs picked fleet-wide, limit %d", n, limit)
		}

		// The other worker finishes: pgq takes the slots it freed.
		if _, err := db.ExecContext(ctx, `DELETE FROM pgqueuer WHERE queue_manager_id = $1`, other); err != nil {
			t.Fatal(err)
		}
		for len(mine()) < limit && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := mine(); len(got) != limit || got[0] != 0 || got[1] != 1 || got[2] != 2 {
			t.Fatalf("pgq holds slots %v, want [0 1 2]", got)
		}
		close(release)
		for scalar[int](t, db, `SELECT count(*) FROM pgqueuer`) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer_log WHERE entrypoint = 'lim' AND status = 'successful'`); n != 5 {
			t.Fatalf("%d of 5 jobs successful", n)
		}
	})
}

// A claim that runs in a transaction (as claims of an entrypoint with a
// concurrency limit do) which began before another worker released the
// job logs 'picked' after that release's 'queued': the latest log row is
// the job's status for every watcher, PGQueuer's too.
func TestClaimLogsAfterAConcurrentRelease(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := dbgen.New()
		id, err := pgq.NewQueries(db).Enqueue(ctx, "e", nil)
		if err != nil {
			t.Fatal(err)
		}
		// Picked by a worker that died an hour ago.
		if _, err := db.ExecContext(ctx, `UPDATE pgqueuer SET status = 'picked', queue_manager_id = gen_random_uuid(),
			heartbeat = now() - interval '1 hour' WHERE id = $1`, int64(id)); err != nil {
			t.Fatal(err)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, "SELECT now()"); err != nil { // the transaction has begun
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		released, err := q.JobsReleaseStale(ctx, pgq.QueryDB(db), dbgen.JobsReleaseStaleParams{Entrypoints: []string{"e"}, StaleAfterUs: 1e6, MaxJobs: 10})
		if err != nil || len(released) != 1 {
			t.Fatalf("release: %v, %v", released, err)
		}
		holder := uuid.NullUUID{UUID: uuid.New(), Valid: true}
		claimed, err := q.JobsClaim(ctx, pgq.QueryDB(tx), dbgen.JobsClaimParams{Entrypoints: []string{"e"}, Caps: []int32{10}, BatchSize: 10, QueueManagerID: holder})
		if err != nil || len(claimed) != 1 {
			t.Fatalf("claim: %v, %v", claimed, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if seq := logSequence(t, db, id); seq != "queued,queued,picked" {
			t.Fatalf("log of the released and claimed job: %s, want queued,queued,picked", seq)
		}
	})
}

// TestDrainGoesOnAfterASlowClaimsJobsWereReleased: a claim slower than a
// quarter of the heartbeat timeout has its jobs confirmed before they run,
// and jobs released as stale meanwhile are dropped, not run. A drain took
// the dropped batch for an empty queue and returned with every job left
// (under -race and load, with a 150 ms heartbeat timeout, the worker's own
// maintenance released the slow claim's jobs).
func TestDrainGoesOnAfterASlowClaimsJobsWereReleased(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const n = 300
		enqueueN(t, ctx, db, "d", n)
		// The first statement that marks rows picked (the first claim)
		// waits, in its trigger, for the advisory lock the test holds.
		for _, stmt := range []string{
			`CREATE TABLE slow_once (x int)`,
			`INSERT INTO slow_once VALUES (1)`,
			`CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				IF EXISTS (SELECT 1 FROM picked_rows WHERE status = 'picked') THEN
					DELETE FROM slow_once;
					IF FOUND THEN PERFORM pg_advisory_xact_lock(4242); END IF;
				END IF;
				RETURN NULL;
			END $$`,
			`CREATE TRIGGER slow_claim AFTER UPDATE ON pgqueuer REFERENCING NEW TABLE AS picked_rows
				FOR EACH STATEMENT EXECUTE FUNCTION slow_claim()`,
		} {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				t.Fatalf("%s: %v", stmt, err)
			}
		}
		gate, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer gate.Close()
		if _, err := gate.ExecContext(ctx, `SELECT pg_advisory_lock(4242)`); err != nil {
			t.Fatal(err)
		}

		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("d", func(context.Context, *pgq.Job) error { return nil })
		const timeout = time.Second
		drained := make(chan error, 1)
		go func() {
			drained <- qm.Run(ctx, pgq.WithMode(pgq.ModeDrain), pgq.WithHeartbeatTimeout(timeout),
				pgq.WithBatchSize(100), pgq.WithMaxConcurrentTasks(100))
		}()
		waitAdvisoryLockWait(t, db, "the claim waits for the gate")
		time.Sleep(timeout / 2) // slow enough to be confirmed

		// Another worker releases the claim's jobs as stale the moment it
		// commits: its table lock waits behind the claim, and the claim's
		// confirmation behind the lock.
		released := make(chan error, 1)
		go func() {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				released <- err
				return
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(ctx, `LOCK TABLE pgqueuer IN SHARE ROW EXCLUSIVE MODE`); err != nil {
				released <- err
				return
			}
			if _, err := tx.ExecContext(ctx, `UPDATE pgqueuer SET status = 'queued', queue_manager_id = NULL, updated = now()
				WHERE status = 'picked'`); err != nil {
				released <- err
				return
			}
			released <- tx.Commit()
		}()
		eventually(t, "the release waits for the claim", func() bool {
			return scalar[int](t, db, `SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND NOT granted
				AND mode = 'ShareRowExclusiveLock' AND relation = 'pgqueuer'::regclass`) > 0
		})
		if _, err := gate.ExecContext(ctx, `SELECT pg_advisory_unlock(4242)`); err != nil {
			t.Fatal(err)
		}
		if err := <-released; err != nil {
			t.Fatalf("releasing the claim's jobs: %v", err)
		}
		if err := <-drained; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if left := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); left != 0 {
			t.Fatalf("the drain returned with %d of %d jobs left", left, n)
		}
	})
}

// TestHeartbeatLeavesFreshRowsAlone: a heartbeat rewrites the rows whose
// heartbeat is older than refresh_after_s and reports, without a write
// (the row version stays), the ones a claim or heartbeat set lately; both
// come back with their claim tokens, and a row no longer held does not.
func TestHeartbeatLeavesFreshRowsAlone(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q, rdb := dbgen.New(), pgq.QueryDB(db)
		holder := uuid.NullUUID{UUID: uuid.New(), Valid: true}
		insert := func(age string) int64 {
			t.Helper()
			return scalar[int64](t, db, `INSERT INTO pgqueuer (priority, entrypoint, status, heartbeat, updated, queue_manager_id)
				VALUES (0, 'e', 'picked', now() - $1::interval, now() - $1::interval, $2) RETURNING id`, age, holder.UUID.String())
		}
		version := func(id int64) string {
			t.Helper()
			return scalar[string](t, db, "SELECT ctid::text || '/' || xmin::text FROM pgqueuer WHERE id = $1", id)
		}
		old, fresh := insert("1 minute"), insert("0.2 seconds")
		gone := insert("0 seconds")
		if _, err := db.ExecContext(ctx, "UPDATE pgqueuer SET queue_manager_id = gen_random_uuid() WHERE id = $1", gone); err != nil {
			t.Fatal(err)
		}
		freshWas, oldWas := version(fresh), version(old)
		rows, err := q.JobsHeartbeat(ctx, rdb, dbgen.JobsHeartbeatParams{
			Ids: []int64{old, fresh, gone}, QueueManagerID: holder, RefreshAfterS: 5,
		})
		if err != nil {
			t.Fatal(err)
		}
		got := map[int64]int64{}
		for _, r := range rows {
			got[r.ID] = r.ClaimToken
		}
		if len(got) != 2 || got[old] == 0 || got[fresh] == 0 {
			t.Fatalf("heartbeat reported %v, want jobs %d and %d with their tokens", got, old, fresh)
		}
		if v := version(fresh); v != freshWas {
			t.Errorf("the fresh row was rewritten: %s, was %s", v, freshWas)
		}
		if v := version(old); v == oldWas {
			t.Errorf("the old row was not rewritten (%s)", v)
		}
		if age := scalar[float64](t, db, "SELECT extract(epoch FROM now() - heartbeat) FROM pgqueuer WHERE id = $1", old); age > 5 {
			t.Errorf("the old row's heartbeat is %.1f s old after the heartbeat", age)
		}
	})
}

// TestFinishChecksEachJobsToken: an outcome changes its job only with the
// token of the claim that holds the job, matched job by job. Two picked
// jobs with the tokens swapped (each token valid for the other job) are
// left alone by every action, in JobsFinish and JobsFinishSucceeded; with
// their own tokens both change. A check that only asked whether a row's
// token is among the batch's would let the swapped batch through.
func TestFinishChecksEachJobsToken(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q, rdb, holder := statements(db)
		pair := func(t *testing.T) (ids, tokens, swapped []int64) {
			t.Helper()
			for _, age := range []string{"1 second", "2 seconds"} {
				id := scalar[int64](t, db, `INSERT INTO pgqueuer (priority, entrypoint, status, updated, heartbeat, queue_manager_id)
					VALUES (0, 'e', 'picked', now() - $1::interval, now(), $2) RETURNING id`, age, holder.UUID.String())
				ids = append(ids, id)
				tokens = append(tokens, scalar[int64](t, db,
					"SELECT (extract(epoch FROM updated) * 1000000)::bigint FROM pgqueuer WHERE id = $1", id))
			}
			return ids, tokens, []int64{tokens[1], tokens[0]}
		}
		held := func(t *testing.T, ids []int64) int {
			t.Helper()
			return scalar[int](t, db, "SELECT count(*) FROM pgqueuer WHERE id = ANY($1) AND status = 'picked'", pq.Array(ids))
		}
		check := func(t *testing.T, write func(tokens []int64) ([]int64, error), ids, tokens, swapped []int64) {
			t.Helper()
			if missed, err := write(swapped); err != nil || len(missed) != 2 || held(t, ids) != 2 {
				t.Fatalf("swapped tokens: not written %v, err %v, %d of 2 still picked", missed, err, held(t, ids))
			}
			if missed, err := write(tokens); err != nil || len(missed) != 0 || held(t, ids) != 0 {
				t.Fatalf("own tokens: not written %v, err %v, %d of 2 still picked", missed, err, held(t, ids))
			}
		}

		t.Run("JobsFinishSucceeded", func(t *testing.T) {
			ids, tokens, swapped := pair(t)
			check(t, func(tok []int64) ([]int64, error) {
				return q.JobsFinishSucceeded(ctx, rdb, idruns.Finish(dbgen.JobsFinishSucceededParams{Ids: ids, ClaimTokens: tok,
					QueueManagerID: holder}))
			}, ids, tokens, swapped)
		})
		for _, c := range []struct{ action, status string }{
			{"finish", "successful"}, {"finish", "exception"}, {"retry", "queued"},
			{"release", "queued"}, {"snooze", "queued"}, {"hold", "failed"},
		} {
			t.Run("JobsFinish "+c.action+" "+c.status, func(t *testing.T) {
				ids, tokens, swapped := pair(t)
				two := func(s string) []string { return []string{s, s} }
				check(t, func(tok []int64) ([]int64, error) {
					return q.JobsFinish(ctx, rdb, dbgen.JobsFinishParams{Ids: ids, Actions: two(c.action),
						Statuses: two(c.status), Tracebacks: two(""), DelaysUs: []int64{0, 0}, ClaimTokens: tok,
						QueueManagerID: holder})
				}, ids, tokens, swapped)
			})
		}
	})
}

// TestNextDue: JobsNextDue gives the seconds until the earliest queued job
// of the given entrypoints that is not due yet becomes due (-1 for none),
// ignoring due jobs, other entrypoints and picked jobs; and a pgx
// connection keeps its generic plan, as it runs after nearly every claim
// under a steady load (planned on each call it cost ten times its run).
func TestNextDue(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		qs, qdb, qm := statements(db)
		next := func(eps ...string) float64 {
			t.Helper()
			s, err := qs.JobsNextDue(ctx, qdb, eps)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		if s := next("a", "b"); s != -1 {
			t.Fatalf("empty queue: %v, want -1", s)
		}
		for _, j := range []struct {
			ep    string
			after time.Duration
		}{{"a", time.Hour}, {"a", 0}, {"a", 3 * time.Hour}, {"b", 2 * time.Hour}, {"c", 10 * time.Minute}, {"d", 5 * time.Minute}} {
			if _, err := q.Enqueue(ctx, j.ep, nil, pgq.WithExecuteAfter(j.after)); err != nil {
				t.Fatal(err)
			}
		}
		// d's job is picked: not queued, so not waited for.
		execSQL(t, db, "UPDATE pgqueuer SET status = 'picked', queue_manager_id = $1 WHERE entrypoint = 'd'", qm)
		for _, c := range []struct {
			eps  []string
			want float64 // seconds, give or take 30
		}{{[]string{"a", "b"}, 3600}, {[]string{"b"}, 7200}, {[]string{"c", "a"}, 600}, {[]string{"d"}, -1}, {[]string{"e"}, -1}, {nil, -1}} {
			got := next(c.eps...)
			if (c.want < 0 && got != -1) || (c.want >= 0 && (got > c.want || got < c.want-30)) {
				t.Errorf("JobsNextDue(%q) = %v, want %v", c.eps, got, c.want)
			}
		}

		if !strings.HasSuffix(t.Name(), "/pgx") {
			return
		}
		// On statistics of a queue in use (on none, every plan is priced
		// alike and the generic one wins anyway).
		due := make([]pgq.NewJob, 2000)
		for i := range due {
			due[i].Entrypoint = "a"
		}
		if _, err := q.EnqueueBatch(ctx, due); err != nil {
			t.Fatal(err)
		}
		execSQL(t, db, "ANALYZE pgqueuer")
		requireGenericPlans(t, dsn, func(single *sql.DB) {
			for range 8 {
				if _, err := qs.JobsNextDue(ctx, pgq.QueryDB(single), []string{"a", "b"}); err != nil {
					t.Fatal(err)
				}
			}
		}, "JobsNextDue")
	})
}
