package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// span is when a job's handler ran.
type span struct{ start, end time.Time }

// recorder is a handler that records when each job ran, by payload name,
// and fails the jobs whose name is in fail.
type recorder struct {
	mu   sync.Mutex
	ran  map[string]span
	fail map[string]bool
}

func (r *recorder) handle(ctx context.Context, job *pgq.Job) error {
	start := time.Now()
	time.Sleep(50 * time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ran[string(job.Payload)] = span{start, time.Now()}
	if r.fail[string(job.Payload)] {
		return errors.New("failing on purpose")
	}
	return nil
}

func (r *recorder) get(name string) (span, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.ran[name]
	return s, ok
}

// diamond enqueues A; B and C after A; D after B and C, and returns their
// ids by name.
func diamond(t *testing.T, ctx context.Context, q *pgq.Queries, opts ...pgq.EnqueueOption) map[string]pgq.JobID {
	t.Helper()
	ids := map[string]pgq.JobID{}
	enq := func(name string, after ...string) {
		var deps []pgq.JobID
		for _, a := range after {
			deps = append(deps, ids[a])
		}
		id, err := q.Enqueue(ctx, "step", []byte(name), append([]pgq.EnqueueOption{pgq.WithAfter(deps...)}, opts...)...)
		if err != nil {
			t.Fatalf("enqueue %s: %v", name, err)
		}
		ids[name] = id
	}
	enq("A")
	enq("B", "A")
	enq("C", "A")
	enq("D", "B", "C")
	return ids
}

// TestAfterDiamond: A -> B, C -> D. Each job starts only after the jobs it
// waits for have finished; a worker never claims a waiting job, though it
// runs up to four at once.
func TestAfterDiamond(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		ids := diamond(t, ctx, q)
		info, err := q.GetJob(ctx, ids["D"])
		if err != nil || !info.ExecuteAfter.Equal(pgq.WaitingForDependencies) || info.Status != pgq.StatusQueued {
			t.Fatalf("D before A ran: %+v, %v; want queued, waiting", info, err)
		}
		r := &recorder{ran: map[string]span{}}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("step", r.handle)
		w, err := pgq.NewCompletionWatcher(ctx, db, pgq.WithListenDSN(dsn))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		runWorker(t, ctx, qm, pgq.WithMaxConcurrentTasks(4))
		st, err := w.WaitFor(ctx, ids["D"])
		if err != nil || st != pgq.StatusSuccessful {
			t.Fatalf("D: %v, %v", st, err)
		}
		a, _ := r.get("A")
		b, _ := r.get("B")
		c, _ := r.get("C")
		d, _ := r.get("D")
		for _, x := range []struct {
			name   string
			before span
			after  span
		}{{"A before B", a, b}, {"A before C", a, c}, {"B before D", b, d}, {"C before D", c, d}} {
			if x.after.start.Before(x.before.end) {
				t.Errorf("%s: the later started at %v, the earlier ended at %v", x.name, x.after.start, x.before.end)
			}
		}
		// B and C wait for A only: they may run at once.
		if n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer_pgq_after`); n != 0 {
			t.Errorf("%d edges left", n)
		}
	})
}

// TestAfterFailure: in the diamond, B fails for good; D is canceled with a
// log row naming B, C still runs, and with WithHoldOnDependencyFailure D
// is held instead and runs once requeued.
func TestAfterFailure(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		for _, hold := range []bool{false, true} {
			t.Run(fmt.Sprintf("hold=%v", hold), func(t *testing.T) {
				if _, err := db.ExecContext(ctx, `TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_pgq_after`); err != nil {
					t.Fatal(err)
				}
				var opts []pgq.EnqueueOption
				if hold {
					opts = append(opts, pgq.WithHoldOnDependencyFailure())
				}
				ids := diamond(t, ctx, q, opts...)
				r := &recorder{ran: map[string]span{}, fail: map[string]bool{"B": true}}
				qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
				_ = qm.Entrypoint("step", r.handle)
				drain(t, ctx, qm, pgq.WithMaxConcurrentTasks(4))
				st, err := q.JobStatus(ctx, []pgq.JobID{ids["A"], ids["B"], ids["C"], ids["D"]})
				if err != nil {
					t.Fatal(err)
				}
				wantD := pgq.StatusCanceled
				if hold {
					wantD = pgq.StatusFailed
				}
				if st[ids["A"]] != pgq.StatusSuccessful || st[ids["B"]] != pgq.StatusException ||
					st[ids["C"]] != pgq.StatusSuccessful || st[ids["D"]] != wantD {
					t.Fatalf("statuses A B C D = %v %v %v %v; want successful exception successful %v",
						st[ids["A"]], st[ids["B"]], st[ids["C"]], st[ids["D"]], wantD)
				}
				if _, ran := r.get("D"); ran {
					t.Fatal("D ran though B failed")
				}
				hist, err := q.JobHistory(ctx, ids["D"])
				if err != nil {
					t.Fatal(err)
				}
				last := hist[len(hist)-1]
				if want := fmt.Sprintf("dependency %d ended exception", ids["B"]); !strings.Contains(string(last.Traceback), want) {
					t.Errorf("D's last log row %s: traceback %s, want it to say %q", last.Status, last.Traceback, want)
				}
				if !hold {
					return
				}
				if _, err := q.Requeue(ctx, []pgq.JobID{ids["D"]}); err != nil {
					t.Fatal(err)
				}
				drain(t, ctx, qm)
				if _, ran := r.get("D"); !ran {
					t.Fatal("D held, requeued, drained: did not run")
				}
			})
		}
	})
}

// TestAfterChainCancel: canceling a job cancels the jobs waiting for it,
// transitively; canceling a waiting job leaves no edge behind.
func TestAfterChainCancel(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		var chain []pgq.JobID
		for i := range 5 {
			var opts []pgq.EnqueueOption
			if i > 0 {
				opts = append(opts, pgq.WithAfter(chain[i-1]))
			}
			id, err := q.Enqueue(ctx, "step", nil, opts...)
			if err != nil {
				t.Fatal(err)
			}
			chain = append(chain, id)
		}
		if err := q.MarkJobAsCancelled(ctx, chain[:1]); err != nil {
			t.Fatal(err)
		}
		st, err := q.JobStatus(ctx, chain)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range chain {
			if st[id] != pgq.StatusCanceled {
				t.Errorf("job %d: %v, want canceled", id, st[id])
			}
		}
		if n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer`); n != 0 {
			t.Errorf("%d jobs left", n)
		}
		// A waiting job canceled by itself: its edge goes.
		a, _ := q.Enqueue(ctx, "step", nil)
		b, err := q.Enqueue(ctx, "step", nil, pgq.WithAfter(a))
		if err != nil {
			t.Fatal(err)
		}
		if err := q.MarkJobAsCancelled(ctx, []pgq.JobID{b}); err != nil {
			t.Fatal(err)
		}
		if n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer_pgq_after`); n != 0 {
			t.Errorf("%d edges left after the waiting job was canceled", n)
		}
	})
}

// TestAfterBadInput: unknown, failed and bad ids are refused by Enqueue
// with an error naming them; a dependency that already succeeded counts
// as done.
func TestAfterBadInput(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		if _, err := q.Enqueue(ctx, "step", nil, pgq.WithAfter(987654)); !errors.Is(err, pgq.ErrJobNotFound) ||
			!strings.Contains(err.Error(), "dependency 987654") {
			t.Errorf("unknown dependency: %v", err)
		}
		if _, err := q.Enqueue(ctx, "step", nil, pgq.WithAfter(0)); err == nil || !strings.Contains(err.Error(), "waits for job 0: not a job id") {
			t.Errorf("id 0: %v", err)
		}
		many := make([]pgq.JobID, pgq.MaxAfter+1)
		for i := range many {
			many[i] = pgq.JobID(i + 1)
		}
		if _, err := q.Enqueue(ctx, "step", nil, pgq.WithAfter(many...)); err == nil || !strings.Contains(err.Error(), "more than MaxAfter") {
			t.Errorf("too many: %v", err)
		}
		if _, err := q.Enqueue(ctx, "step", nil, pgq.WithAfter(1), pgq.WithSkipDuplicates()); err == nil ||
			!strings.Contains(err.Error(), "WithSkipDuplicates does not combine with WithAfter") {
			t.Errorf("with skip duplicates: %v", err)
		}
		canceled, _ := q.Enqueue(ctx, "step", nil)
		if err := q.MarkJobAsCancelled(ctx, []pgq.JobID{canceled}); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Enqueue(ctx, "step", nil, pgq.WithAfter(canceled)); err == nil ||
			!strings.Contains(err.Error(), fmt.Sprintf("dependency %d already ended canceled", canceled)) {
			t.Errorf("canceled dependency: %v", err)
		}
		// Done already: the new job is due at once.
		done, _ := q.Enqueue(ctx, "step", nil)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("step", func(context.Context, *pgq.Job) error { return nil })
		drain(t, ctx, qm)
		id, err := q.Enqueue(ctx, "step", nil, pgq.WithAfter(done, done))
		if err != nil {
			t.Fatal(err)
		}
		info, err := q.GetJob(ctx, id)
		if err != nil || info.ExecuteAfter.After(time.Now().Add(time.Hour)) {
			t.Errorf("after a finished job: %+v, %v; want due now", info, err)
		}
		// A batch: one waits, one does not.
		ids, err := q.EnqueueBatch(ctx, []pgq.NewJob{
			{Entrypoint: "step", After: []pgq.JobID{id}},
			{Entrypoint: "step"},
			{Entrypoint: "step", After: []pgq.JobID{id}, SerialKey: "acct-1"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer_pgq_after WHERE job_id = ANY($1)`,
			fmt.Sprintf("{%d,%d,%d}", ids[0], ids[1], ids[2])); n != 2 {
			t.Errorf("the batch wrote %d edges, want 2", n)
		}
		if k := scalar[string](t, db, `SELECT serial_key FROM pgqueuer WHERE id = $1`, int64(ids[2])); k != "acct-1" {
			t.Errorf("a waiting job's keys: %q", k)
		}
		for i, want := range []bool{true, false, true} {
			info, err := q.GetJob(ctx, ids[i])
			if err != nil || info.ExecuteAfter.Equal(pgq.WaitingForDependencies) != want {
				t.Errorf("batch job %d: %+v, %v; waiting should be %v", i, info, err, want)
			}
		}
	})
}

// TestAfterSweep: a dependency that ended while the waiting job's enqueue
// was in flight (the log's trigger could not see the edge yet) is settled
// by a worker's sweep.
func TestAfterSweep(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		a, _ := q.Enqueue(ctx, "step", nil)
		b, err := q.Enqueue(ctx, "step", nil, pgq.WithAfter(a))
		if err != nil {
			t.Fatal(err)
		}
		finishBehindTrigger(t, ctx, db, a)
		if n, err := pgq.SettleDependencies(ctx, db); err != nil || n != 1 {
			t.Fatalf("SettleDependencies = %d, %v; want 1 job released", n, err)
		}
		info, err := q.GetJob(ctx, b)
		if err != nil || info.ExecuteAfter.Equal(pgq.WaitingForDependencies) {
			t.Fatalf("b after the sweep: %+v, %v; want released", info, err)
		}
	})
}

// finishBehindTrigger ends job id as successful without the log's trigger
// seeing it, as the race the sweep settles would (the waiting job's edge
// was not committed yet when the trigger ran).
func finishBehindTrigger(t *testing.T, ctx context.Context, db *sql.DB, id pgq.JobID) {
	t.Helper()
	for _, s := range []string{
		`ALTER TABLE pgqueuer_log DISABLE TRIGGER tg_pgqueuer_pgq_after`,
		fmt.Sprintf(`WITH d AS (DELETE FROM pgqueuer WHERE id = %d RETURNING id, priority, entrypoint)
		 INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint) SELECT id, 'successful', priority, entrypoint FROM d`, id),
		`ALTER TABLE pgqueuer_log ENABLE TRIGGER tg_pgqueuer_pgq_after`,
	} {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWorkerSweepsDependencies: a running worker sweeps the dependencies
// itself (on its heartbeat's connection): a job whose dependency ended
// behind the log trigger's back is released and runs.
func TestWorkerSweepsDependencies(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		a, err := q.Enqueue(ctx, "first", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := q.Enqueue(ctx, "then", nil, pgq.WithAfter(a))
		if err != nil {
			t.Fatal(err)
		}
		finishBehindTrigger(t, ctx, db, a)
		ran := make(chan pgq.JobID, 1)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("then", func(ctx context.Context, j *pgq.Job) error {
			ran <- j.ID
			return nil
		})
		runWorker(t, ctx, qm, pgq.WithDependencySweepInterval(100*time.Millisecond))
		if id := receive(t, ran, 10*time.Second, "the waiting job to run"); id != b {
			t.Fatalf("job %d ran, want %d", id, b)
		}
	})
}

// TestAfterPrefixAndSchema: dependencies work under a prefix and a schema
// (the trigger and its functions find their tables whatever the caller's
// search_path), and Uninstall removes them.
func TestAfterPrefixAndSchema(t *testing.T) {
	ctx := testCtx(t)
	db, dsn := pgqtest.NewDB(t, "pgx", pgqtest.Bare())
	naming := []pgq.NamingOption{pgq.WithPrefix("x_"), pgq.WithSchema("deps")}
	schemaOpts := []pgq.SchemaOption{naming[0], naming[1]}
	if err := pgq.Install(ctx, db, schemaOpts...); err != nil {
		t.Fatal(err)
	}
	q := pgq.NewQueries(db, naming[0], naming[1])
	ids := diamond(t, ctx, q)
	r := &recorder{ran: map[string]span{}}
	qm := pgq.NewQueueManager(db, naming[0], naming[1], pgq.WithListenDSN(dsn))
	_ = qm.Entrypoint("step", r.handle)
	drain(t, ctx, qm, pgq.WithMaxConcurrentTasks(4))
	st, err := q.JobStatus(ctx, []pgq.JobID{ids["D"]})
	if err != nil || st[ids["D"]] != pgq.StatusSuccessful {
		t.Fatalf("D: %v, %v", st, err)
	}
	a, _ := r.get("A")
	d, _ := r.get("D")
	if d.start.Before(a.end) {
		t.Fatal("D started before A ended")
	}
	if err := pgq.Uninstall(ctx, db, schemaOpts...); err != nil {
		t.Fatal(err)
	}
	if n := scalar[int](t, db, `SELECT count(*) FROM pg_proc WHERE proname LIKE '%pgq_after%'`); n != 0 {
		t.Errorf("%d functions left after Uninstall", n)
	}
}

// TestAfterConcurrentDependencies: a job's two dependencies finish in two
// transactions at once, each of which drops one of its two edges. The
// second settle must wait for the first to commit and then release the
// job (each seeing the other's edge, neither would).
func TestAfterConcurrentDependencies(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		p, _ := q.Enqueue(ctx, "p", nil)
		r, _ := q.Enqueue(ctx, "q", nil)
		d, err := q.Enqueue(ctx, "d", nil, pgq.WithAfter(p, r))
		if err != nil {
			t.Fatal(err)
		}
		// Each finishes as a worker's outcome does: its row deleted and
		// 'successful' logged, in one statement.
		finish := func(tx *sql.Tx, id pgq.JobID) error {
			_, err := tx.ExecContext(ctx, `WITH f AS (DELETE FROM pgqueuer WHERE id = $1 RETURNING id, priority, entrypoint)
				INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
				SELECT id, 'successful', priority, entrypoint FROM f`, int64(id))
			return err
		}
		tx1, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := finish(tx1, p); err != nil {
			t.Fatal(err)
		}
		second := make(chan error, 1)
		go func() {
			tx2, err := db.BeginTx(ctx, nil)
			if err == nil {
				if err = finish(tx2, r); err == nil {
					err = tx2.Commit()
				} else {
					_ = tx2.Rollback()
				}
			}
			second <- err
		}()
		time.Sleep(300 * time.Millisecond) // the second settle is under way
		if err := tx1.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := <-second; err != nil {
			t.Fatal(err)
		}
		info, err := q.GetJob(ctx, d)
		if err != nil || info.ExecuteAfter.Equal(pgq.WaitingForDependencies) {
			t.Fatalf("after both dependencies succeeded at once: %+v, %v; want released", info, err)
		}
	})
}

// TestAfterCheckKeepsItsPlan: the look-up of a WithAfter job's
// dependencies (AfterCheck) runs its generic plan on a pgx connection
// after the first few calls, as PostgreSQL keeps a prepared statement's
// generic plan only when a custom one is not priced cheaper. Planned for
// each call, it spent 0.2 ms planning a look-up that runs in 0.04 ms.
func TestAfterCheckKeepsItsPlan(t *testing.T) {
	_, dsn := pgqtest.NewDB(t, "pgx")
	ctx := testCtx(t)
	requireGenericPlans(t, dsn, func(single *sql.DB) {
		q := pgq.NewQueries(single)
		for i := range 8 {
			parent, err := q.Enqueue(ctx, "parent", nil)
			if err != nil {
				t.Fatal(err)
			}
			after := []pgq.JobID{parent}
			if i%2 == 1 {
				after = append(after, parent-2)
			}
			if _, err := q.Enqueue(ctx, "child", nil, pgq.WithAfter(after...)); err != nil {
				t.Fatal(err)
			}
		}
	}, "AfterCheck")
}
