package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// seedLive enqueues jobs of entrypoints "a" and "b" and makes some of them
// held (failed) and some running (picked by a fake holder), by SQL; it
// returns the ids by status.
func seedLive(t *testing.T, ctx context.Context, db *sql.DB, n int) map[pgq.Status][]pgq.JobID {
	t.Helper()
	jobs := make([]pgq.NewJob, n)
	for i := range jobs {
		jobs[i] = pgq.NewJob{Entrypoint: []string{"a", "b"}[i%2], Payload: []byte(fmt.Sprintf(`{"i":%d}`, i))}
		if i%5 == 0 {
			jobs[i].DedupeKey = fmt.Sprintf("key-%d", i)
		}
	}
	ids, err := pgq.NewQueries(db).EnqueueBatch(ctx, jobs)
	if err != nil {
		t.Fatal(err)
	}
	out := map[pgq.Status][]pgq.JobID{}
	for i, id := range ids {
		s := pgq.StatusQueued
		switch i % 7 {
		case 3:
			s = pgq.StatusFailed
		case 4:
			s = pgq.StatusPicked
		}
		out[s] = append(out[s], id)
	}
	if _, err := db.ExecContext(ctx, `UPDATE pgqueuer SET status = 'failed' WHERE id = ANY($1)`,
		pq.Array(toInts(out[pgq.StatusFailed]))); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE pgqueuer SET status = 'picked', queue_manager_id = gen_random_uuid() WHERE id = ANY($1)`,
		pq.Array(toInts(out[pgq.StatusPicked]))); err != nil {
		t.Fatal(err)
	}
	return out
}

func toInts(ids []pgq.JobID) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

// listAll pages through ListJobs with f, calling between (if not nil)
// after each page, and returns the ids in the order listed.
func listAll(t *testing.T, ctx context.Context, q *pgq.Queries, f pgq.JobFilter, between func()) []pgq.JobID {
	t.Helper()
	var ids []pgq.JobID
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("ListJobs does not end")
		}
		page, err := q.ListJobs(ctx, f)
		if err != nil {
			t.Fatalf("ListJobs(%+v): %v", f, err)
		}
		for _, j := range page.Jobs {
			ids = append(ids, j.ID)
		}
		if page.Next == "" {
			return ids
		}
		if f.Limit > 0 && len(page.Jobs) != f.Limit {
			t.Errorf("a page of %d jobs (limit %d) with a next cursor", len(page.Jobs), f.Limit)
		}
		f.Cursor = page.Next
		if between != nil {
			between()
		}
	}
}

// ListJobs filters by entrypoint, status, dedupe key and creation time,
// pages by cursor newest first, and refuses cursors that were changed or
// belong to another filter.
func TestListJobs(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		seeded := seedLive(t, ctx, db, 200)
		all := slices.Concat(seeded[pgq.StatusQueued], seeded[pgq.StatusPicked], seeded[pgq.StatusFailed])
		slices.Sort(all)
		slices.Reverse(all)

		got := listAll(t, ctx, q, pgq.JobFilter{Limit: 7}, nil)
		if !slices.Equal(got, all) {
			t.Errorf("all jobs, 7 a page: %d listed, want %d newest first", len(got), len(all))
		}
		for _, s := range []pgq.Status{pgq.StatusQueued, pgq.StatusPicked, pgq.StatusFailed} {
			want := slices.Clone(seeded[s])
			slices.Reverse(want)
			if got := listAll(t, ctx, q, pgq.JobFilter{Statuses: []pgq.Status{s}, Limit: 10}, nil); !slices.Equal(got, want) {
				t.Errorf("status %s: listed %v, want %v", s, got, want)
			}
		}
		page, err := q.ListJobs(ctx, pgq.JobFilter{Entrypoints: []string{"b"}, Statuses: []pgq.Status{pgq.StatusPicked}, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page.Jobs {
			if j.Entrypoint != "b" || j.Status != pgq.StatusPicked || j.WorkerID.String() == "00000000-0000-0000-0000-000000000000" {
				t.Errorf("entrypoint b, picked: got %+v", j)
			}
		}
		if len(page.Jobs) == 0 || page.Next != "" {
			t.Errorf("entrypoint b, picked: %d jobs, next %q", len(page.Jobs), page.Next)
		}

		page, err = q.ListJobs(ctx, pgq.JobFilter{DedupeKey: "key-15"})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Jobs) != 1 || page.Jobs[0].DedupeKey != "key-15" || string(page.Jobs[0].Payload) != `{"i":15}` ||
			page.Jobs[0].PayloadSize != 8 {
			t.Errorf("dedupe key key-15: %+v", page.Jobs)
		}
		some := []pgq.JobID{all[3], all[0], all[7], 999999}
		if got := listAll(t, ctx, q, pgq.JobFilter{IDs: some, Limit: 2}, nil); !slices.Equal(got, []pgq.JobID{all[0], all[3], all[7]}) {
			t.Errorf("ids %v: listed %v", some, got)
		}
		for _, f := range []pgq.JobFilter{
			{Entrypoints: []string{"nothing-like-it"}},
			{DedupeKey: "key-10", Statuses: []pgq.Status{pgq.StatusFailed}},
			{Before: time.Now().Add(-time.Hour)},
			{After: time.Now().Add(time.Hour)},
		} {
			page, err := q.ListJobs(ctx, f)
			if err != nil || len(page.Jobs) != 0 || page.Next != "" {
				t.Errorf("%+v: %d jobs, next %q, %v; want none", f, len(page.Jobs), page.Next, err)
			}
		}

		first, err := q.ListJobs(ctx, pgq.JobFilter{Limit: 5})
		if err != nil {
			t.Fatal(err)
		}
		tampered := []byte(first.Next)
		tampered[3] ^= 1
		for _, c := range []struct {
			f    pgq.JobFilter
			want string
		}{
			{pgq.JobFilter{Cursor: string(tampered)}, "not a cursor"},
			{pgq.JobFilter{Cursor: "garbage!"}, "not a cursor"},
			{pgq.JobFilter{Cursor: first.Next + "A"}, "not a cursor"},
			{pgq.JobFilter{Cursor: first.Next, Entrypoints: []string{"a"}}, "another filter"},
		} {
			_, err := q.ListJobs(ctx, c.f)
			if !errors.Is(err, pgq.ErrInvalidCursor) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("cursor %q: %v, want ErrInvalidCursor saying %q", c.f.Cursor, err, c.want)
			}
		}
		for _, f := range []pgq.JobFilter{
			{Statuses: []pgq.Status{pgq.StatusSuccessful}}, {Statuses: []pgq.Status{"bogus"}},
			{Limit: -1}, {Limit: pgq.MaxListLimit + 1}, {Entrypoints: []string{""}},
		} {
			if _, err := q.ListJobs(ctx, f); err == nil || errors.Is(err, pgq.ErrInvalidCursor) {
				t.Errorf("%+v: %v, want an error", f, err)
			}
		}
	})
}

// Pages stay exact while workers claim and finish jobs between them: every
// job that stays in the table is listed once, none twice.
func TestListJobsStableUnderClaims(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		jobs := make([]pgq.NewJob, 600)
		for i := range jobs {
			jobs[i] = pgq.NewJob{Entrypoint: []string{"keep", "run"}[i%2], Priority: int32(i % 3)}
		}
		if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
			t.Fatal(err)
		}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		gate := make(chan struct{})
		if err := qm.Entrypoint("run", func(ctx context.Context, job *pgq.Job) error {
			select {
			case <-gate:
			case <-ctx.Done():
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		runWorker(t, ctx, qm, pgq.WithBatchSize(5), pgq.WithMaxConcurrentTasks(10))
		var once sync.Once
		got := listAll(t, ctx, q, pgq.JobFilter{Limit: 20}, func() {
			// Between pages: let the worker finish some and claim more.
			once.Do(func() { close(gate) })
			time.Sleep(5 * time.Millisecond)
		})
		seen := map[pgq.JobID]bool{}
		for _, id := range got {
			if seen[id] {
				t.Fatalf("job %d listed twice", id)
			}
			seen[id] = true
		}
		keep := 0
		rows, err := db.QueryContext(ctx, `SELECT id FROM pgqueuer WHERE entrypoint = 'keep'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var id pgq.JobID
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			keep++
			if !seen[id] {
				t.Errorf("job %d, in the table throughout, not listed", id)
			}
		}
		if keep != 300 {
			t.Fatalf("%d keep jobs, want 300", keep)
		}
	})
}

// The bulk actions act on what the filter matches, in batches, report
// progress, send running jobs' workers the cancellation event, and leave
// everything else alone.
func TestBulkActions(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		seeded := seedLive(t, ctx, db, 140)
		count := func(where string) int {
			return scalar[int](t, db, `SELECT count(*) FROM pgqueuer WHERE `+where)
		}
		logged := func(status string) int {
			return scalar[int](t, db, `SELECT count(*) FROM pgqueuer_log WHERE status = $1`, status)
		}

		var progress []int64
		n, err := q.RequeueJobs(ctx, pgq.JobFilter{Entrypoints: []string{"a"}}, pgq.WithBulkBatchSize(3),
			pgq.WithBulkProgress(func(k int64) { progress = append(progress, k) }))
		failedA := count(`status = 'failed' AND entrypoint = 'a'`)
		if err != nil || n == 0 || failedA != 0 || int(n) != len(seeded[pgq.StatusFailed])/2 {
			t.Errorf("requeue held of a: %d, %v; %d of a still held; %d held in all", n, err, failedA, len(seeded[pgq.StatusFailed]))
		}
		if len(progress) < int(n)/3 || progress[len(progress)-1] != n {
			t.Errorf("requeue progress %v for %d jobs in batches of 3", progress, n)
		}
		if count(`status = 'failed'`) == 0 {
			t.Error("requeue of a's held jobs requeued b's too")
		}

		queuedB := count(`status = 'queued' AND entrypoint = 'b'`)
		n, err = q.DeleteJobs(ctx, pgq.JobFilter{Entrypoints: []string{"b"}}, pgq.WithBulkBatchSize(4))
		if err != nil || int(n) != queuedB || count(`status = 'queued' AND entrypoint = 'b'`) != 0 || logged("deleted") != queuedB {
			t.Errorf("delete queued of b: %d (want %d), %v", n, queuedB, err)
		}
		if count(`status = 'picked' AND entrypoint = 'b'`) == 0 || count(`status = 'failed' AND entrypoint = 'b'`) == 0 {
			t.Error("delete of queued jobs deleted running or held ones")
		}
		heldB := count(`status = 'failed' AND entrypoint = 'b'`)
		oneHeld := scalar[int64](t, db, `SELECT min(id) FROM pgqueuer WHERE status = 'failed' AND entrypoint = 'b'`)
		n, err = q.DeleteJobs(ctx, pgq.JobFilter{IDs: []pgq.JobID{pgq.JobID(oneHeld)}, Statuses: []pgq.Status{pgq.StatusFailed}})
		if err != nil || n != 1 || count(`status = 'failed' AND entrypoint = 'b'`) != heldB-1 {
			t.Errorf("delete of held job %d: %d, %v", oneHeld, n, err)
		}

		// A running job of a real worker gets its cancellation.
		started := make(chan pgq.JobID, 1)
		canceled := make(chan error, 1)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		if err := qm.Entrypoint("c", func(ctx context.Context, job *pgq.Job) error {
			started <- job.ID
			<-ctx.Done()
			canceled <- context.Cause(ctx)
			return ctx.Err()
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Enqueue(ctx, "c", nil); err != nil {
			t.Fatal(err)
		}
		runWorker(t, ctx, qm)
		<-started
		live := count(`status IN ('queued', 'picked')`)
		before := time.Now()
		n, err = q.CancelJobs(ctx, pgq.JobFilter{}, pgq.WithBulkBatchSize(5))
		if err != nil || int(n) != live || count(`status IN ('queued', 'picked')`) != 0 {
			t.Errorf("cancel all: %d (want %d), %v", n, live, err)
		}
		select {
		case <-canceled:
			if d := time.Since(before); d > 3*time.Second {
				t.Errorf("the running job saw its cancellation after %v", d)
			}
		case <-time.After(10 * time.Second):
			t.Error("the running job's context was not canceled")
		}
		if held := count(`status = 'failed'`); held == 0 {
			t.Error("cancel touched held jobs")
		}
		for _, c := range []struct {
			name string
			f    func() (int64, error)
		}{
			{"cancel held", func() (int64, error) {
				return q.CancelJobs(ctx, pgq.JobFilter{Statuses: []pgq.Status{pgq.StatusFailed}})
			}},
			{"delete running", func() (int64, error) {
				return q.DeleteJobs(ctx, pgq.JobFilter{Statuses: []pgq.Status{pgq.StatusPicked}})
			}},
			{"requeue queued", func() (int64, error) {
				return q.RequeueJobs(ctx, pgq.JobFilter{Statuses: []pgq.Status{pgq.StatusQueued}})
			}},
			{"batch 0", func() (int64, error) { return q.CancelJobs(ctx, pgq.JobFilter{}, pgq.WithBulkBatchSize(0)) }},
		} {
			if n, err := c.f(); err == nil || n != 0 {
				t.Errorf("%s: %d, %v; want an error", c.name, n, err)
			}
		}
	})
}

// Jobs enqueued while a bulk action runs are left alone: it stops at the
// highest id there when it started.
func TestBulkActionStopsAtStart(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		enqueueN(t, ctx, db, "s", 50)
		n, err := q.DeleteJobs(ctx, pgq.JobFilter{}, pgq.WithBulkBatchSize(10), pgq.WithBulkProgress(func(int64) {
			if _, err := q.Enqueue(ctx, "s", nil); err != nil {
				t.Error(err)
			}
		}))
		if err != nil || n != 50 {
			t.Errorf("delete: %d, %v; want 50", n, err)
		}
		if left := scalar[int](t, db, `SELECT count(*) FROM pgqueuer`); left != 5 {
			t.Errorf("%d jobs left, want the 5 enqueued during the delete", left)
		}
	})
}

// ListJobs' and the bulk actions' statements use an index for each filter
// the dashboard offers (entrypoint, status, dedupe key, and none), on a
// job table of 1,000,000 rows: 970,000 queued (one entrypoint of four
// rare), 20,000 running, 10,000 held.
func TestListPlans(t *testing.T) {
	if testing.Short() {
		t.Skip("a million rows")
	}
	db, _ := pgqtest.NewDB(t, pgqtest.Drivers()[0])
	ctx := testCtx(t)
	for _, stmt := range []string{
		`INSERT INTO pgqueuer (priority, entrypoint, status, dedupe_key, execute_after, payload)
		 SELECT i % 3, CASE WHEN i % 1000 = 0 THEN 'rare' ELSE 'ep' || (i % 3) END,
		        CASE WHEN i % 100 = 1 THEN 'failed'::pgqueuer_status
		             WHEN i % 50 = 2 THEN 'picked'::pgqueuer_status ELSE 'queued'::pgqueuer_status END,
		        CASE WHEN i % 10 = 0 THEN 'k' || i END, now(), '\x7b7d'
		 FROM generate_series(1, 1000000) AS i`,
		`UPDATE pgqueuer SET queue_manager_id = gen_random_uuid() WHERE status = 'picked'`,
		`VACUUM ANALYZE pgqueuer`,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	far := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	early := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	none := pq.Array([]string{})
	for _, c := range []struct {
		name        string
		statuses    []string
		entrypoints []string
		dedupe      string
	}{
		{"everything", nil, nil, ""},
		{"common entrypoint", nil, []string{"ep1"}, ""},
		{"rare entrypoint", nil, []string{"rare"}, ""},
		{"queued", []string{"queued"}, nil, ""},
		{"running", []string{"picked"}, nil, ""},
		{"held", []string{"failed"}, nil, ""},
		{"queued of a common entrypoint", []string{"queued"}, []string{"ep2"}, ""},
		{"queued of a rare entrypoint", []string{"queued"}, []string{"rare"}, ""},
		{"running of an entrypoint", []string{"picked"}, []string{"ep1"}, ""},
		{"held of an entrypoint", []string{"failed"}, []string{"ep1"}, ""},
		{"dedupe key", []string{"queued", "picked"}, nil, "k500"},
		{"dedupe key of an entrypoint", []string{"queued", "picked"}, []string{"ep2"}, "k500"},
		{"queued dedupe key", []string{"queued"}, nil, "k500"},
		{"running dedupe key", []string{"picked"}, nil, "k502"},
	} {
		statuses := pq.Array(c.statuses)
		if c.statuses == nil {
			statuses = none
		}
		eps := pq.Array(c.entrypoints)
		if c.entrypoints == nil {
			eps = none
		}
		common := map[string]any{"@statuses": statuses, "@entrypoints": eps, "@dedupe_key": c.dedupe, "@ids": pq.Array([]int64{}),
			"@created_after": early, "@created_before": far}
		with := func(extra map[string]any) map[string]any {
			m := map[string]any{}
			for k, v := range common {
				m[k] = v
			}
			for k, v := range extra {
				m[k] = v
			}
			return m
		}
		for _, s := range []struct {
			name string
			args map[string]any
		}{
			{"JobsList", with(map[string]any{"@preview_bytes": 256, "@before_id": int64(1 << 62), "@max_rows": 51})},
			{"JobsList", with(map[string]any{"@preview_bytes": 256, "@before_id": int64(500_000), "@max_rows": 51})},
		} {
			query, args := boundQuery(t, "browse.sql", s.name, s.args)
			plan := explain(t, db, query, args...)
			if !strings.Contains(plan, "Index") || strings.Contains(plan, "Seq Scan") {
				t.Errorf("%s, %s: no index:\n%s", s.name, c.name, plan)
			} else if testing.Verbose() {
				t.Logf("%s, %s:\n%s", s.name, c.name, plan)
			}
		}
		if len(c.statuses) != 1 {
			continue // a bulk action passes one status at a time
		}
		for _, after := range []int64{0, 500_000} {
			query, args := boundQuery(t, "browse.sql", "JobsMatching", with(map[string]any{
				"@after_id": after, "@max_id": int64(1_000_000), "@batch_size": 1000}))
			plan := explain(t, db, query, args...)
			if !strings.Contains(plan, "Index") || strings.Contains(plan, "Seq Scan") {
				t.Errorf("JobsMatching after %d, %s: no index:\n%s", after, c.name, plan)
			} else if testing.Verbose() {
				t.Logf("JobsMatching after %d, %s:\n%s", after, c.name, plan)
			}
		}
	}
}
