package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// The chaos test's worker processes connect under this application name,
// so that the test can terminate their backends and no one else's.
const chaosApp = "pgq_chaos_worker"

// chaosHeartbeat is the heartbeat timeout of the chaos workers: short, so
// that stopped and killed workers' jobs come back quickly, but long enough
// that a live worker on a loaded machine (race detector, a test run in
// parallel on two cores) heartbeats in time: a worker that cannot is taken
// for dead, and its jobs run again.
const chaosHeartbeat = 3 * time.Second

// chaosProcess runs a QueueManager for entrypoint "chaos" whose handler
// records each run in chaos_ledger (the job's side effect) and then works
// for a few milliseconds. It stops on SIGTERM.
func chaosProcess(ctx context.Context, db *sql.DB, dsn string) int {
	db.SetMaxIdleConns(64) // keep the handlers' connections (see issue 12)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("pid", os.Getpid())
	qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn), pgq.WithLogger(logger))
	_ = qm.Entrypoint("chaos", func(ctx context.Context, j *pgq.Job) error {
		if _, err := db.ExecContext(ctx, "INSERT INTO chaos_ledger (job_id, attempt, pid) VALUES ($1, $2, $3)",
			int64(j.ID), j.Attempts, os.Getpid()); err != nil {
			return err // its connection terminated: tried again
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(rand.IntN(30)) * time.Millisecond):
			return nil
		}
	}, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 20, InitialDelay: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond}))
	fmt.Println("ready")
	err := qm.Run(ctx, pgq.WithHeartbeatTimeout(chaosHeartbeat), pgq.WithShutdownTimeout(time.Second),
		pgq.WithDequeueTimeout(200*time.Millisecond), pgq.WithBatchSize(20), pgq.WithMaxConcurrentTasks(40))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// withAppName returns dsn (URL or key=value) with application_name set.
func withAppName(t *testing.T, dsn, name string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("application_name", name)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " application_name=" + name
}

// chaosFault is one injected fault: on a worker process (pid), or on the
// server (pid 0: backends terminated).
type chaosFault struct {
	at   time.Time
	kind string // "kill", "stop" (until at+d), "terminate"
	pid  int
	d    time.Duration
}

// TestChaosNothingLost runs three worker processes (both drivers) and a
// producer for 12 s while, at random (seeded, logged), workers are
// SIGKILLed and restarted, SIGSTOPped for longer than the heartbeat
// timeout, and their database connections terminated, and some jobs are
// canceled. Each handler run writes a ledger row with the job's attempt
// number (a handler whose ledger write fails, its connection terminated,
// returns the error and the job is retried: a new attempt, not a repeat).
// Afterwards no acknowledged job may be lost (every one not canceled ended
// successful, once) and every canceled log row must belong to a job that
// was canceled. Repeats (two runs of one attempt) are classified: in a
// crash window when one of the job's runs was on a process killed or
// stopped between the job's first claim and its last run.
func TestChaosNothingLost(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	db, dsn := pgqtest.NewDB(t, "postgres")
	t.Parallel()
	ctx := testCtx(t)
	if _, err := db.Exec(`CREATE TABLE chaos_ledger (job_id bigint, attempt int, pid int, at timestamptz DEFAULT clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PGQ_CHAOS_SEED"); s != "" {
		_, _ = fmt.Sscan(s, &seed)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d (PGQ_CHAOS_SEED reruns it)", seed)
	workerDSN := withAppName(t, dsn, chaosApp)

	var mu sync.Mutex // guards workers, faults
	workers := make([]*exec.Cmd, 3)
	var faults []chaosFault
	start := func(i int) {
		driver := pgqtest.Drivers()[i%len(pgqtest.Drivers())]
		workers[i] = startWorker(t, driver, workerDSN, workerEnvMode+"=chaos")
	}
	for i := range workers {
		start(i)
	}

	// The producer: acknowledged ids. The canceller: ids it canceled.
	q := pgq.NewQueries(db)
	var acked, canceled []pgq.JobID
	chaosCtx, stopChaos := context.WithTimeout(ctx, 12*time.Second)
	defer stopChaos()
	var wg sync.WaitGroup
	prng := rand.New(rand.NewPCG(seed, 2))
	wg.Go(func() {
		batch := make([]pgq.NewJob, 10)
		for i := range batch {
			batch[i] = pgq.NewJob{Entrypoint: "chaos"}
		}
		for chaosCtx.Err() == nil {
			ids, err := q.EnqueueBatch(ctx, batch)
			if err != nil {
				t.Errorf("enqueue: %v", err)
				return
			}
			mu.Lock()
			acked = append(acked, ids...)
			if prng.IntN(20) == 0 {
				// Cancel a recent job (queued, running or done).
				id := acked[len(acked)-1-prng.IntN(min(len(acked), 200))]
				if err := q.MarkJobAsCancelled(ctx, []pgq.JobID{id}); err != nil {
					t.Errorf("cancel: %v", err)
				}
				canceled = append(canceled, id)
			}
			mu.Unlock()
			time.Sleep(25 * time.Millisecond)
		}
	})

	// Faults, one every 300-900 ms.
	for {
		select {
		case <-chaosCtx.Done():
		case <-time.After(time.Duration(300+rng.IntN(600)) * time.Millisecond):
		}
		if chaosCtx.Err() != nil {
			break
		}
		i := rng.IntN(len(workers))
		mu.Lock()
		p := workers[i].Process
		switch k := rng.IntN(3); k {
		case 0:
			faults = append(faults, chaosFault{at: time.Now(), kind: "kill", pid: p.Pid})
			_ = p.Signal(syscall.SIGKILL)
			_ = workers[i].Wait()
			mu.Unlock()
			start(i)
			mu.Lock()
		case 1:
			d := chaosHeartbeat + time.Duration(500+rng.IntN(1500))*time.Millisecond
			faults = append(faults, chaosFault{at: time.Now(), kind: "stop", pid: p.Pid, d: d})
			_ = p.Signal(syscall.SIGSTOP)
			time.AfterFunc(d, func() { _ = p.Signal(syscall.SIGCONT) })
		case 2:
			n := scalar[int](t, db, `SELECT count(pg_terminate_backend(pid)) FROM (
				SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY random() LIMIT 3) AS s`, chaosApp)
			faults = append(faults, chaosFault{at: time.Now(), kind: "terminate", d: time.Duration(n)})
		}
		mu.Unlock()
	}
	wg.Wait()
	time.Sleep(chaosHeartbeat) // every SIGCONT sent

	// Drain: every acknowledged job ends.
	deadline := time.Now().Add(20 * time.Second)
	for scalar[int](t, db, "SELECT count(*) FROM pgqueuer") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("jobs left after the drain: %d (%s)", scalar[int](t, db, "SELECT count(*) FROM pgqueuer"),
				scalar[string](t, db, "SELECT string_agg(status || ' ' || n, ', ') FROM (SELECT status, count(*) AS n FROM pgqueuer GROUP BY status) AS s"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, w := range workers {
		_ = w.Process.Signal(syscall.SIGTERM)
		_ = w.Wait()
	}

	kinds := map[string]int{}
	for _, f := range faults {
		kinds[f.kind]++
	}
	t.Logf("%d jobs acknowledged, %d canceled; faults %v", len(acked), len(canceled), kinds)

	// No acknowledged job lost: each one not canceled has a successful log
	// row (handlers return nil); each canceled log row was canceled.
	ids := make([]int64, len(acked))
	for i, id := range acked {
		ids[i] = int64(id)
	}
	wasCanceled := map[int64]bool{}
	for _, id := range canceled {
		wasCanceled[int64(id)] = true
	}
	rows, err := db.QueryContext(ctx, `SELECT a.id,
			count(*) FILTER (WHERE l.status = 'successful'),
			count(*) FILTER (WHERE l.status = 'canceled'),
			coalesce(string_agg(l.status::text, ' ' ORDER BY l.id), '')
		FROM unnest($1::bigint[]) AS a(id) LEFT JOIN pgqueuer_log AS l ON l.job_id = a.id
		GROUP BY a.id`, pq.Array(ids))
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	for rows.Next() {
		var id int64
		var ok, cancels int
		var log string
		if err := rows.Scan(&id, &ok, &cancels, &log); err != nil {
			t.Fatal(err)
		}
		switch {
		case cancels > 0 && !wasCanceled[id]:
			lost++
			t.Errorf("job %d logged canceled though nobody canceled it: %s", id, log)
		case ok+cancels != 1 && !wasCanceled[id]:
			lost++
			t.Errorf("job %d ended %d times (successful %d, canceled %d): %s", id, ok+cancels, ok, cancels, log)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	// Repeats (runs of the same attempt): each must lie in a crash window.
	rows, err = db.QueryContext(ctx, `SELECT r.job_id, array_agg(r.pid ORDER BY r.at),
			(SELECT min(l.created) FROM pgqueuer_log AS l WHERE l.job_id = r.job_id AND l.status = 'picked'),
			max(r.at)
		FROM chaos_ledger AS r GROUP BY r.job_id, r.attempt HAVING count(*) > 1`)
	if err != nil {
		t.Fatal(err)
	}
	// A live worker whose heartbeat statement takes longer than the
	// heartbeat timeout (seen here on two cores under a load of 20: beats
	// of 1.4 s) is taken for dead and its jobs run again: such repeats fail
	// the test only with PGQ_CHAOS_STRICT=1.
	report := t.Logf
	if os.Getenv("PGQ_CHAOS_STRICT") != "" {
		report = t.Errorf
	}
	repeats, explained := 0, 0
	for rows.Next() {
		var id int64
		var pids []int64
		var first, last time.Time
		if err := rows.Scan(&id, pq.Array(&pids), &first, &last); err != nil {
			t.Fatal(err)
		}
		repeats++
		// A process stopped or killed between the job's first claim and
		// its last run (a claim sent just before a stop commits while the
		// process is stopped: a stop counts while it lasts).
		ok := slices.ContainsFunc(faults, func(f chaosFault) bool {
			return (f.kind == "kill" || f.kind == "stop") && slices.Contains(pids, int64(f.pid)) &&
				!f.at.Add(f.d).Before(first.Add(-100*time.Millisecond)) && !f.at.After(last)
		})
		if ok {
			explained++
		} else {
			report("job %d ran %d times (pids %v, first claimed %s, last run %s) outside any crash window",
				id, len(pids), pids, first.Format(time.StampMicro), last.Format(time.StampMicro))
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	ran := scalar[int](t, db, "SELECT count(DISTINCT job_id) FROM chaos_ledger")
	t.Logf("lost %d; %d jobs ran, %d of them more than once, %d of those in a crash window", lost, ran, repeats, explained)
	if lost > 0 || repeats > explained {
		for _, f := range faults {
			t.Logf("fault %s %s pid %d %v", f.at.Format(time.StampMicro), f.kind, f.pid, f.d)
		}
	}
}
