package pgq_test

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// pickedIDs returns the ids of the picked jobs of entrypoint.
func pickedIDs(t *testing.T, db *sql.DB, entrypoint string) []pgq.JobID {
	t.Helper()
	rows, err := db.Query(`SELECT id FROM pgqueuer WHERE status = 'picked' AND entrypoint = $1 ORDER BY id`, entrypoint)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []pgq.JobID
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, pgq.JobID(id))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// aheadWorker is a worker with 2 handler slots and batches of 2, its
// entrypoint "ahead" warmed up with short jobs, then given 10 jobs whose
// handlers block: 2 run and 2 are claimed ahead, waiting for a slot.
type aheadWorker struct {
	started chan pgq.JobID // each handler's job, as it starts
	release chan struct{}  // a receive lets a blocked handler return
	stop    func()         // ends Run's ctx
	done    chan error     // Run's result
	ids     []pgq.JobID    // the 10 jobs
	running []pgq.JobID    // the 2 running
}

func startAheadWorker(t *testing.T, ctx context.Context, db *sql.DB, dsn string) *aheadWorker {
	t.Helper()
	var block atomic.Bool
	w := &aheadWorker{started: make(chan pgq.JobID, 100), release: make(chan struct{}, 100), done: make(chan error, 1)}
	qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
	_ = qm.Entrypoint("ahead", func(ctx context.Context, j *pgq.Job) error {
		w.started <- j.ID
		if block.Load() {
			<-w.release
		}
		return nil
	})
	runCtx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	w.stop = stop
	go func() {
		w.done <- qm.Run(runCtx, pgq.WithMaxConcurrentTasks(2), pgq.WithBatchSize(2),
			pgq.WithShutdownTimeout(20*time.Second))
	}()
	runShortJobs(t, ctx, db, "ahead", 6)
	for range 6 {
		receive(t, w.started, 10*time.Second, "a short job")
	}
	block.Store(true)
	w.ids = enqueueN(t, ctx, db, "ahead", 10)
	w.running = []pgq.JobID{receive(t, w.started, 10*time.Second, "run 1"), receive(t, w.started, 10*time.Second, "run 2")}
	eventually(t, "two running and two claimed ahead", func() bool { return len(pickedIDs(t, db, "ahead")) == 4 })
	return w
}

// While the queue is deep and handlers are short, a worker claims one
// batch ahead of its free slots: those jobs are held but do not start
// until a slot frees; one canceled meanwhile never starts, and at shutdown
// the others go back to the queue at once, while the running handlers
// finish in the grace period.
func TestClaimsAheadOfFreeSlots(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		w := startAheadWorker(t, ctx, db, dsn)
		started, release, stop, done := w.started, w.release, w.stop, w.done
		running := w.running
		time.Sleep(300 * time.Millisecond)
		if n := len(pickedIDs(t, db, "ahead")); n != 4 {
			t.Fatalf("%d jobs picked with 2 slots and a batch of 2, want 4", n)
		}
		select {
		case id := <-started:
			t.Fatalf("job %d started while both slots were taken", id)
		default:
		}
		var waiting []pgq.JobID
		for _, id := range pickedIDs(t, db, "ahead") {
			if !slices.Contains(running, id) {
				waiting = append(waiting, id)
			}
		}
		if len(waiting) != 2 {
			t.Fatalf("jobs waiting for a slot: %v", waiting)
		}

		// The first in line is canceled: it ends canceled without running.
		if _, err := q.CancelJobs(ctx, pgq.JobFilter{IDs: waiting[:1]}); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, ctx, q, waiting[0], pgq.StatusCanceled)

		// Shutdown: the other one goes back to the queue at once, while
		// the running handlers still run.
		stop()
		waitStatus(t, ctx, q, waiting[1], pgq.StatusQueued)
		if l := logOf(t, db, waiting[1]); l != "queued picked queued" {
			t.Fatalf("job claimed ahead, given back at shutdown: log %q", l)
		}
		close(release)
		if err := receive(t, done, 20*time.Second, "Run to return"); err != nil {
			t.Fatal(err)
		}
		for _, id := range running {
			if l := logOf(t, db, id); l != "queued picked successful" {
				t.Fatalf("job %d: log %q", id, l)
			}
		}
		if l := logOf(t, db, waiting[0]); l != "queued picked canceled" {
			t.Fatalf("job canceled while claimed ahead: log %q", l)
		}
		close(started)
		for id := range started {
			if id == waiting[0] || id == waiting[1] {
				t.Fatalf("job %d started, though it waited for a slot until it was canceled or given back", id)
			}
		}
	})
}

// A worker with a fleet-wide concurrency limit never claims ahead: its
// waiting jobs would hold the limit's slots.
func TestNoClaimsAheadUnderALimit(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		var block atomic.Bool
		started := make(chan pgq.JobID, 100)
		release := make(chan struct{})
		defer close(release)
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("limited", func(ctx context.Context, j *pgq.Job) error {
			started <- j.ID
			if block.Load() {
				<-release
			}
			return nil
		}, pgq.WithConcurrencyLimit(10))
		runWorker(t, ctx, qm, pgq.WithMaxConcurrentTasks(2), pgq.WithBatchSize(2))
		// Finished, not only started: a short job's handler that had
		// sent its start but not yet read block would block too, and
		// hold the second slot (seen under load).
		runShortJobs(t, ctx, db, "limited", 6)
		for range 6 {
			receive(t, started, 10*time.Second, "a short job")
		}
		block.Store(true)
		for range 10 {
			if _, err := q.Enqueue(ctx, "limited", nil); err != nil {
				t.Fatal(err)
			}
		}
		receive(t, started, 10*time.Second, "run 1")
		receive(t, started, 10*time.Second, "run 2")
		time.Sleep(500 * time.Millisecond)
		if n := len(pickedIDs(t, db, "limited")); n != 2 {
			t.Fatalf("%d jobs picked with 2 slots under a concurrency limit, want 2", n)
		}
	})
}

// A claim that stalls after it marked its jobs picked (here its log row
// waits for another transaction's row with the same id, longer than the
// heartbeat timeout) must not run jobs whose heartbeat went stale before
// they were handed over: another worker may have released them already
// and run them too. (pgq chaos found it: a claim slowed down by a server
// just restarted, 3.4 s against a 3 s heartbeat timeout.)
func TestSlowClaimNotRunTwice(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		if err := q.Pause(ctx, "slowclaim"); err != nil {
			t.Fatal(err)
		}
		id, err := q.Enqueue(ctx, "slowclaim", nil)
		if err != nil {
			t.Fatal(err)
		}
		var runs atomic.Int32
		handler := func(context.Context, *pgq.Job) error { runs.Add(1); return nil }
		const hb = 900 * time.Millisecond
		for range 2 {
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			_ = qm.Entrypoint("slowclaim", handler)
			runWorker(t, ctx, qm, pgq.WithHeartbeatTimeout(hb), pgq.WithDequeueTimeout(100*time.Millisecond))
		}

		// The next log row's id is taken by an open transaction: the
		// claim's 'picked' row waits for it, its job already picked.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		var next int64
		if err := tx.QueryRowContext(ctx, `SELECT nextval(pg_get_serial_sequence('pgqueuer_log', 'id')) + 1`).Scan(&next); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO pgqueuer_log (id, job_id, status, priority, entrypoint)
			VALUES ($1, 0, 'queued', 0, 'blocker')`, next); err != nil {
			t.Fatal(err)
		}
		if err := q.Resume(ctx, "slowclaim"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * hb)
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, ctx, q, id, pgq.StatusSuccessful)
		time.Sleep(2 * hb)
		if n := runs.Load(); n != 1 {
			t.Fatalf("the job ran %d times (log %q)", n, logOf(t, db, id))
		}
	})
}

// Jobs claimed ahead wait for slots in several claims' batches; every one
// of them is heartbeated from its claim on, however long the slots stay
// taken, so that no other worker releases and runs them meanwhile. (pgq
// chaos found the batches queued behind the first one unheld: they went
// stale, another worker ran them, and then so did the first.)
func TestJobsClaimedAheadHeartbeated(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		var block atomic.Bool
		var mu sync.Mutex
		runs := map[pgq.JobID]int{}
		release := make(chan struct{})
		var released sync.Once
		free := func() { released.Do(func() { close(release) }) }
		handler := func(ctx context.Context, j *pgq.Job) error {
			mu.Lock()
			runs[j.ID]++
			mu.Unlock()
			if block.Load() {
				<-release
			}
			return nil
		}
		const hb = 900 * time.Millisecond
		a := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = a.Entrypoint("aheadhb", handler)
		stopA := startRun(t, ctx, a, pgq.WithHeartbeatTimeout(hb), pgq.WithMaxConcurrentTasks(3), pgq.WithBatchSize(2),
			pgq.WithShutdownTimeout(20*time.Second))
		defer stopA()
		defer free()
		runShortJobs(t, ctx, db, "aheadhb", 6)
		block.Store(true)
		// Claimed in batches of 2, 2 and 1: three run, one waits for a
		// slot in the dispatcher, and the last claim's batch waits
		// behind it.
		enqueueN(t, ctx, db, "aheadhb", 5)
		eventually(t, "five jobs picked", func() bool { return len(pickedIDs(t, db, "aheadhb")) == 5 })

		// Another worker would release and run any of them gone stale.
		b := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = b.Entrypoint("aheadhb", handler)
		runWorker(t, ctx, b, pgq.WithHeartbeatTimeout(hb), pgq.WithDequeueTimeout(100*time.Millisecond))
		time.Sleep(4 * hb)
		free()
		eventually(t, "every job to finish", func() bool {
			return scalar[int](t, db, `SELECT count(*) FROM pgqueuer WHERE entrypoint = 'aheadhb'`) == 0
		})
		stopA()
		mu.Lock()
		defer mu.Unlock()
		for id, n := range runs {
			if n != 1 {
				t.Errorf("job %d ran %d times (log %q)", id, n, logOf(t, db, id))
			}
		}
	})
}

// Jobs claimed ahead wait for a slot while the worker's heartbeats cannot
// refresh them (here a lock on the job table holds the heartbeat up): when
// their slot comes after half the heartbeat timeout, they go back to the
// queue instead of starting, since another worker could soon find them
// stale and run them too (chaos runs 4 and 5 in docs/chaos.md ran jobs
// twice that way). They run once the heartbeats go through again.
func TestJobsClaimedAheadGivenBackWhenHeartbeatsFail(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		var block atomic.Bool
		type start struct {
			id pgq.JobID
			at time.Time
		}
		started := make(chan start, 100)
		release := make(chan struct{})
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("ahead", func(ctx context.Context, j *pgq.Job) error {
			started <- start{j.ID, time.Now()}
			if block.Load() {
				<-release
			}
			return nil
		})
		const timeout = time.Second
		runWorker(t, ctx, qm, pgq.WithMaxConcurrentTasks(2), pgq.WithBatchSize(2), pgq.WithHeartbeatTimeout(timeout))

		runShortJobs(t, ctx, db, "ahead", 6)
		for range 6 {
			receive(t, started, 10*time.Second, "a short job")
		}
		block.Store(true)
		jobs := []pgq.NewJob{{Entrypoint: "ahead"}, {Entrypoint: "ahead"}, {Entrypoint: "ahead"}, {Entrypoint: "ahead"}}
		ids, err := q.EnqueueBatch(ctx, jobs)
		if err != nil {
			t.Fatal(err)
		}
		running := []pgq.JobID{receive(t, started, 10*time.Second, "run 1").id, receive(t, started, 10*time.Second, "run 2").id}
		eventually(t, "two running and two claimed ahead", func() bool { return len(pickedIDs(t, db, "ahead")) == 4 })

		unstall := stallHeartbeats(t, ctx, db)
		time.Sleep(timeout * 7 / 10)
		close(release) // the slots free up, past half the timeout
		time.Sleep(200 * time.Millisecond)
		unlocked := time.Now()
		unstall()

		for _, id := range ids {
			waitStatus(t, ctx, q, id, pgq.StatusSuccessful)
		}
		close(started)
		for s := range started {
			if !slices.Contains(running, s.id) && s.at.Before(unlocked) {
				t.Fatalf("job %d, claimed ahead, started %v before the heartbeats could go through again",
					s.id, unlocked.Sub(s.at).Round(time.Millisecond))
			}
		}
		for _, id := range ids {
			want := "queued picked successful"
			if !slices.Contains(running, id) {
				want = "queued picked queued picked successful"
			}
			if l := logOf(t, db, id); l != want {
				t.Fatalf("job %d: log %q, want %q", id, l, want)
			}
		}
	})
}

// A claim under way when Run stops is let finish, and the jobs that no
// slot started (claimed ahead, or by that claim) go back to the queue only
// after it: given back at once, they were claimed again by it (picked
// twice), and a claim cut off as it committed left its jobs picked by
// nobody until they went stale. The claim is held up before it reads the
// table (a lock on the paused table, which it reads and the outcome
// writes do not) while Run stops.
func TestShutdownGivesBackAfterTheLastClaim(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		w := startAheadWorker(t, ctx, db, dsn)
		started, release, stop, done, ids := w.started, w.release, w.stop, w.done, w.ids

		// The next claim waits for the lock; one handler returns so that
		// it is made, and a job claimed ahead takes the slot.
		lock := lockedTx(t, ctx, db, `LOCK TABLE pgqueuer_pgq_paused IN ACCESS EXCLUSIVE MODE`)
		release <- struct{}{}
		receive(t, started, 10*time.Second, "run 3")
		eventually(t, "a claim waiting for the lock", func() bool {
			return scalar[int](t, db, `SELECT count(*) FROM pg_locks WHERE NOT granted
				AND relation = 'pgqueuer_pgq_paused'::regclass`) > 0
		})
		stop()
		time.Sleep(500 * time.Millisecond) // time to give the waiting job back, were it given back now
		if err := lock.Commit(); err != nil {
			t.Fatal(err)
		}
		close(release)
		if err := receive(t, done, 20*time.Second, "Run to return"); err != nil {
			t.Fatal(err)
		}
		if picked := pickedIDs(t, db, "ahead"); len(picked) > 0 {
			t.Errorf("jobs left picked after Run returned: %v", picked)
		}
		for _, id := range ids {
			if l := logOf(t, db, id); strings.Count(l, "picked") > 1 {
				t.Errorf("job %d picked twice: log %q", id, l)
			}
		}
		if n := scalar[int](t, db, `SELECT count(*) FROM pgqueuer WHERE entrypoint = 'ahead'`); n != 7 {
			t.Errorf("%d jobs queued after Run returned, want 7 (10, of which 3 ran)", n)
		}
		close(started)
	})
}
