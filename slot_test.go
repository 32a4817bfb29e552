package pgq_test

import (
	"database/sql"
	"testing"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
)

// Every statement with which pgq moves a row in or out of 'picked' leaves
// slot NULL: a slot PGQueuer (1.4+) gave the row earlier must not travel
// with it, or the row may collide on pgqueuer_picked_slot_idx with a job
// PGQueuer picked into that slot since.
func TestSlotClearedOnRowsPgqTouches(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q, rdb := dbgen.New(), pgq.QueryDB(db)
		holder := uuid.NullUUID{UUID: uuid.New(), Valid: true}
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
				QueueManagerID: holder}); err != nil || len(n) != 1 {
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
// twice.
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
			n, err := dbgen.New().LogFoldStatistics(ctx, pgq.QueryDB(db), 100)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := fold(); n != 0 {
			t.Fatalf("folded %d rows while PGQueuer holds the lock", n)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if n := fold(); n != 1 {
			t.Fatalf("folded %d rows after the lock was released, want 1", n)
		}
	})
}
