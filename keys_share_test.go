package pgq_test

import (
	"database/sql"
	"testing"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
)

// TestKeyedClaimTopUp runs one JobsClaimKeyed (cap and batch 10) on
// queues where some keys have fewer jobs than their share: what they
// leave goes to the keys that filled theirs, within the same statement
// (before, one statement took A 5 and B 1 and left the rest to another),
// in equal parts and within WithKeyConcurrencyLimit.
func TestKeyedClaimTopUp(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		cases := []struct {
			name     string
			jobs     map[string]int // key -> queued jobs
			running  int            // picked jobs of key a
			keyLimit int32
			want     map[string][2]int // key -> least and most claimed
		}{
			{"one big key", map[string]int{"a": 50, "b": 1}, 0, 0, map[string][2]int{"a": {9, 9}, "b": {1, 1}}},
			{"two big keys share the rest", map[string]int{"a": 50, "b": 1, "c": 50}, 0, 0,
				map[string][2]int{"a": {4, 5}, "b": {1, 1}, "c": {4, 5}}},
			{"uneven: ties go to priority then id", map[string]int{"a": 5, "b": 1, "c": 50}, 0, 0,
				map[string][2]int{"a": {5, 5}, "b": {1, 1}, "c": {4, 4}}},
			{"key limit", map[string]int{"a": 50, "b": 1}, 1, 3, map[string][2]int{"a": {2, 2}, "b": {1, 1}}},
		}
		for _, c := range cases {
			if _, err := db.ExecContext(ctx, "TRUNCATE pgqueuer, pgqueuer_log"); err != nil {
				t.Fatal(err)
			}
			var jobs []pgq.NewJob
			for _, k := range []string{"a", "b", "c"} {
				for range c.jobs[k] {
					jobs = append(jobs, pgq.NewJob{Entrypoint: "top", FairnessKey: k})
				}
			}
			for range c.running {
				jobs = append(jobs, pgq.NewJob{Entrypoint: "top", FairnessKey: "a", Payload: []byte("running")})
			}
			if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, `UPDATE pgqueuer SET status = 'picked', fair_limited = true WHERE payload = 'running'`); err != nil {
				t.Fatal(err)
			}
			rows, err := dbgen.New().JobsClaimKeyed(ctx, pgq.QueryDB(db), dbgen.JobsClaimKeyedParams{
				Entrypoints: []string{"top"}, Caps: []int32{10}, FairCursors: []string{""}, SerialCursors: []string{""},
				KeyLimits: []int32{c.keyLimit}, ByPriority: []bool{false}, HeldBlocks: []bool{true}, BatchSize: 10,
				QueueManagerID: uuid.NullUUID{UUID: uuid.New(), Valid: true},
			})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			got := map[string]int{}
			for _, r := range rows {
				if r.ID != 0 {
					got[r.FairnessKey.String]++
				}
			}
			for k, w := range c.want {
				if got[k] < w[0] || got[k] > w[1] {
					t.Errorf("%s: claimed %v, want per key %v", c.name, got, c.want)
					break
				}
			}
			picked := scalar[int](t, db, `SELECT count(*) FROM pgqueuer WHERE status = 'picked' AND payload IS DISTINCT FROM 'running'`)
			if n := got["a"] + got["b"] + got["c"]; picked != n {
				t.Errorf("%s: %d rows picked, %d returned", c.name, picked, n)
			}
		}
	})
}
