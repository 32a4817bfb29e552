package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
)

// TestFairClaimRoundRobin runs JobsClaimFair by hand on ranks given at
// enqueue: keys that arrive while another key's backlog is half claimed
// start at its current turn (not behind its backlog, not ahead of it), a
// key takes one job per turn, a key whose queue emptied starts again at
// the current turn, and priority orders one key's jobs within a batch.
func TestFairClaimRoundRobin(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		enqueue := func(key string, n int, priorities ...int32) {
			t.Helper()
			jobs := make([]pgq.NewJob, n)
			for i := range jobs {
				jobs[i] = pgq.NewJob{Entrypoint: "rr", FairnessKey: key}
				if i < len(priorities) {
					jobs[i].Priority = priorities[i]
				}
			}
			if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
				t.Fatal(err)
			}
		}
		claimRows := func(n int32) []*dbgen.JobsClaimFairRow {
			t.Helper()
			rows, err := dbgen.New().JobsClaimFair(ctx, pgq.QueryDB(db), dbgen.JobsClaimFairParams{
				Entrypoints: []string{"rr"}, Caps: []int32{n}, BatchSize: n,
				QueueManagerID: uuid.NullUUID{UUID: uuid.New(), Valid: true},
				RecordTurn:     true,
			})
			if err != nil {
				t.Fatal(err)
			}
			return rows
		}
		claim := func(n int32) string { // the claimed jobs' keys, in claim order
			t.Helper()
			var b strings.Builder
			for _, r := range claimRows(n) {
				b.WriteString(r.FairnessKey.String)
			}
			return b.String()
		}
		enqueue("a", 100)
		if got := claim(20); got != strings.Repeat("a", 20) {
			t.Fatalf("first claim took %q, want 20 of a", got)
		}
		// The claim recorded the highest rank it took (migration 9),
		// where the enqueue looks for the current turn from.
		if turn := scalar[int64](t, db, "SELECT turn FROM pgqueuer_pgq_fair_turn WHERE entrypoint = 'rr'"); turn != 19 {
			t.Fatalf("recorded turn %d after claiming ranks 0-19, want 19", turn)
		}
		// a's next turn is 20: b and c start there, one job a turn each.
		enqueue("b", 10)
		enqueue("c", 10)
		if got, want := claim(30), strings.Repeat("abc", 10); got != want {
			t.Fatalf("claim after b and c arrived took %q, want %q", got, want)
		}
		if turn := scalar[int64](t, db, "SELECT turn FROM pgqueuer_pgq_fair_turn WHERE entrypoint = 'rr'"); turn != 29 {
			t.Fatalf("recorded turn %d after claiming ranks 20-29, want 29", turn)
		}
		// b's and c's queues are empty: their next jobs start at the
		// current turn (30), a's.
		enqueue("b", 1)
		enqueue("c", 2)
		if got, want := claim(5), "abcac"; got != want {
			t.Fatalf("claim took %q, want %q", got, want)
		}
		// Within a batch, one key's jobs take their turns by priority.
		if _, err := db.ExecContext(ctx, "TRUNCATE pgqueuer"); err != nil {
			t.Fatal(err)
		}
		enqueue("d", 3, 0, 5, 1)
		var got []int32
		for _, r := range claimRows(3) {
			got = append(got, r.Priority)
		}
		if fmt.Sprint(got) != "[5 1 0]" {
			t.Fatalf("priorities in claim order %v, want [5 1 0]", got)
		}
		// The enqueue looks for the current turn from the recorded one
		// only: queued jobs ranked before it (a retried job, say) are not
		// the turn, and with none ranked at or after it the recorded turn
		// is where a new key starts.
		enqueue("e", 1)
		if _, err := db.ExecContext(ctx, "UPDATE pgqueuer_pgq_fair_turn SET turn = 1000 WHERE entrypoint = 'rr'"); err != nil {
			t.Fatal(err)
		}
		enqueue("f", 1)
		if rank := scalar[int64](t, db, "SELECT fair_rank FROM pgqueuer WHERE fairness_key = 'f'"); rank != 1000 {
			t.Fatalf("a new key's first rank %d with the turn recorded at 1000, want 1000", rank)
		}
	})
}

// TestFairClaimMixedEntrypoint: an entrypoint whose fairness-keyed jobs
// share it with jobs without a key and a serial key is claimed by
// JobsClaimKeyed (jobs without a key share as one more key), then, once
// only fairness keys are left, by JobsClaimFair; every job runs once.
func TestFairClaimMixedEntrypoint(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		var jobs []pgq.NewJob
		for range 1000 {
			jobs = append(jobs, pgq.NewJob{Entrypoint: "mix", FairnessKey: "a"})
		}
		for range 10 {
			jobs = append(jobs, pgq.NewJob{Entrypoint: "mix", Priority: 5, Payload: []byte("plain")})
		}
		jobs = append(jobs, pgq.NewJob{Entrypoint: "mix", SerialKey: "s"})
		if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		seen := map[pgq.JobID]int{}
		var order []string
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("mix", func(_ context.Context, j *pgq.Job) error {
			mu.Lock()
			defer mu.Unlock()
			seen[j.ID]++
			order = append(order, string(j.Payload))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		drain(t, ctx, qm, pgq.WithBatchSize(10), pgq.WithMaxConcurrentTasks(10))
		if len(seen) != len(jobs) {
			t.Fatalf("%d jobs ran, want %d", len(seen), len(jobs))
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("job %d ran %d times", id, n)
			}
		}
		last := 0
		for i, p := range order {
			if p == "plain" {
				last = i
			}
		}
		if last >= 60 {
			t.Fatalf("the last job without a key started as number %d of %d, want within the first claims", last+1, len(order))
		}
	})
}

// TestFairClaimTakesEnqueueOrder: a worker claims an entrypoint whose
// queued keyed jobs all have fairness keys with JobsClaimFair, whose
// order within a key is enqueue order (priority only within a batch):
// a key's first batch (priority 0) is claimed before its second
// (priority 5). JobsClaimKeyed orders a key's jobs by priority, so a
// worker that did not route the entrypoint to the fair claim claims the
// second batch first. The order is the claims' (their 'picked' log rows),
// not the handlers' starts, which the Go scheduler may swap across two
// claims that follow each other closely.
func TestFairClaimTakesEnqueueOrder(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		first := map[int64]bool{}
		for _, b := range []struct {
			payload  string
			priority int32
		}{{"first", 0}, {"second", 5}} {
			jobs := make([]pgq.NewJob, 30)
			for i := range jobs {
				jobs[i] = pgq.NewJob{Entrypoint: "order", FairnessKey: "a", Priority: b.priority, Payload: []byte(b.payload)}
			}
			ids, err := q.EnqueueBatch(ctx, jobs)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				if b.payload == "first" {
					first[int64(id)] = true
				}
			}
		}
		var ran atomic.Int64
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("order", func(_ context.Context, j *pgq.Job) error {
			ran.Add(1)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		drain(t, ctx, qm, pgq.WithBatchSize(10), pgq.WithMaxConcurrentTasks(10))
		if got := ran.Load(); got != 60 {
			t.Fatalf("%d jobs ran, want 60", got)
		}
		rows, err := db.QueryContext(ctx, `SELECT job_id FROM pgqueuer_log WHERE status = 'picked' ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var picked []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			picked = append(picked, id)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if len(picked) != 60 {
			t.Fatalf("%d picked log rows, want 60", len(picked))
		}
		for i, id := range picked[:30] {
			if !first[id] {
				t.Fatalf("job %d claimed (id %d) was of the second batch, want the first 30 from the first batch (enqueue order)", i+1, id)
			}
		}
	})
}

// TestKeyedEnqueueOfOneMatchesBatch: Enqueue of one keyed job (its own
// statement, JobsEnqueueKeyedOne) writes the row and the log row that
// EnqueueBatch writes for it: the same ranks for keys new and queued, at
// a recorded turn and after a claim, and the same columns for payloads
// nil and not, priorities, delays, dedupe keys, headers and serial keys;
// with WithSkipDuplicates (JobsEnqueueKeyedOneSkipDuplicates), the same
// jobs skipped, with id 0.
func TestKeyedEnqueueOfOneMatchesBatch(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		execSQL(t, db, "INSERT INTO pgqueuer_pgq_fair_turn (entrypoint, turn) VALUES ('one', 5), ('many', 5)")
		// Rounds of jobs, at most one per fairness key a round, so that a
		// round's batch takes the same turns as its jobs one by one.
		rounds := [][]pgq.NewJob{
			{{FairnessKey: "a"}, {FairnessKey: "b", Priority: 3}, {SerialKey: "s"}},
			{{FairnessKey: "a", Payload: []byte("x")}, {FairnessKey: "c"}, {SerialKey: "s2", Priority: -1}, {}},
			{{FairnessKey: "a", DedupeKey: "d1"}, {FairnessKey: "b", ExecuteAfter: time.Hour}},
			{{FairnessKey: "c", Headers: map[string]string{"h": "v"}, MaxAttempts: 3}, {FairnessKey: "d", Payload: []byte{}}},
			// Skipping duplicates (the last round): d1 is queued from round
			// 2, and d2's second job repeats its first.
			{{FairnessKey: "a", DedupeKey: "d1"}, {FairnessKey: "e", DedupeKey: "d2"}, {SerialKey: "s3", DedupeKey: "d2"}, {FairnessKey: "b", DedupeKey: "d3"}},
		}
		skipRound := len(rounds) - 1
		for r, round := range rounds {
			var opts []pgq.BatchOption
			if r == skipRound {
				opts = append(opts, pgq.WithSkipDuplicates())
			}
			one, many := make([]pgq.NewJob, len(round)), make([]pgq.NewJob, len(round))
			for i, j := range round {
				one[i], many[i] = j, j
				one[i].Entrypoint, many[i].Entrypoint = "one", "many"
				if j.DedupeKey != "" {
					one[i].DedupeKey, many[i].DedupeKey = "one-"+j.DedupeKey, "many-"+j.DedupeKey
				}
				ids, err := q.EnqueueBatch(ctx, one[i:i+1], opts...)
				if err != nil {
					t.Fatalf("round %d, job %d alone: %v", r, i, err)
				}
				if skipped := r == skipRound && (i == 0 || i == 2); (ids[0] == 0) != skipped {
					t.Fatalf("round %d, job %d alone: id %d, want it skipped: %v", r, i, ids[0], skipped)
				}
			}
			ids, err := q.EnqueueBatch(ctx, many, opts...)
			if err != nil {
				t.Fatalf("round %d as a batch: %v", r, err)
			}
			if r == skipRound && (ids[0] != 0 || ids[1] == 0 || ids[2] != 0 || ids[3] == 0) {
				t.Fatalf("round %d as a batch: ids %v, want the first and third skipped", r, ids)
			}
			if r == 1 { // a claim of each moves its turn on
				for _, ep := range []string{"one", "many"} {
					if _, err := dbgen.New().JobsClaimFair(ctx, pgq.QueryDB(db), dbgen.JobsClaimFairParams{
						Entrypoints: []string{ep}, Caps: []int32{2}, BatchSize: 2,
						QueueManagerID: uuid.NullUUID{UUID: uuid.New(), Valid: true}, RecordTurn: true,
					}); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		rows := func(ep string) string {
			t.Helper()
			r, err := db.QueryContext(ctx, `SELECT j.status, j.priority, j.payload IS NULL, coalesce(encode(j.payload, 'hex'), ''),
				       round(extract(epoch FROM j.execute_after - j.created)), coalesce(substr(j.dedupe_key, strpos(j.dedupe_key, '-') + 1), ''),
				       coalesce(j.headers::text, ''), coalesce(j.fairness_key, ''), coalesce(j.serial_key, ''),
				       coalesce(j.fair_rank::text, 'null'), (SELECT count(*) FROM pgqueuer_log AS l WHERE l.job_id = j.id AND l.status = 'queued')
				FROM pgqueuer AS j WHERE j.entrypoint = $1 ORDER BY j.id`, ep)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var b strings.Builder
			for r.Next() {
				var status, hex, dedupe, headers, fkey, skey, rank string
				var prio int32
				var null bool
				var delay float64
				var logged int
				if err := r.Scan(&status, &prio, &null, &hex, &delay, &dedupe, &headers, &fkey, &skey, &rank, &logged); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, "%s p%d null=%v %q +%vs dedupe=%q %s key=%q serial=%q rank=%s log=%d\n",
					status, prio, null, hex, delay, dedupe, headers, fkey, skey, rank, logged)
			}
			if err := r.Err(); err != nil {
				t.Fatal(err)
			}
			return b.String()
		}
		one, many := rows("one"), rows("many")
		if one != many {
			t.Fatalf("jobs enqueued one at a time:\n%s\nthe same as batches:\n%s", one, many)
		}
		if !strings.Contains(one, "rank=") || strings.Count(one, "\n") != 13 {
			t.Fatalf("want 13 jobs, got:\n%s", one)
		}
		t.Logf("both:\n%s", one)

		// What the statement is for: a connection keeps its plan. pgx
		// prepares it once per connection, and PostgreSQL plans a prepared
		// statement anew for its first five runs, then keeps its generic
		// plan when that costs no more (the arrays of JobsEnqueueKeyed
		// never do).
		if !strings.HasSuffix(t.Name(), "/pgx") {
			return
		}
		requireGenericPlans(t, dsn, func(single *sql.DB) {
			sq := pgq.NewQueries(single)
			for i := range 8 {
				if _, err := sq.Enqueue(ctx, "plan", nil, pgq.WithFairnessKey(fmt.Sprint("k", i%3))); err != nil {
					t.Fatal(err)
				}
				if _, err := sq.Enqueue(ctx, "plan", nil, pgq.WithFairnessKey(fmt.Sprint("k", i%3)),
					pgq.WithDedupeKey(fmt.Sprint("plan-", i%5)), pgq.WithSkipDuplicates()); err != nil {
					t.Fatal(err)
				}
			}
		}, "JobsEnqueueKeyedOne", "JobsEnqueueKeyedOneSkipDuplicates")
	})
}
