package pgq_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// The worker process: the test binary started with these variables set.
const (
	workerEnvDSN    = "PGQ_TEST_WORKER_DSN"
	workerEnvDriver = "PGQ_TEST_WORKER_DRIVER"
	workerEnvMode   = "PGQ_TEST_WORKER_MODE" // "" or "limited" (QueueManager), "scheduler", "completetx"
)

// workerProcess runs a QueueManager for entrypoint "crash" whose handler
// records its start in crash_marks and then blocks until its ctx ends. It
// stops on SIGTERM (shutdown grace 200 ms).
func workerProcess() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	dsn := os.Getenv(workerEnvDSN)
	db, err := sql.Open(os.Getenv(workerEnvDriver), dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer db.Close()
	switch os.Getenv(workerEnvMode) {
	case "scheduler":
		return schedulerProcess(ctx, db)
	case "completetx":
		return completeTxProcess(ctx, db, dsn)
	}
	qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
	var opts []pgq.EntrypointOption
	if os.Getenv(workerEnvMode) == "limited" { // "crash" with a concurrency limit of 2
		opts = append(opts, pgq.WithConcurrencyLimit(2))
	}
	_ = qm.Entrypoint("crash", func(ctx context.Context, j *pgq.Job) error {
		if _, err := db.ExecContext(ctx, "INSERT INTO crash_marks (job_id, pid) VALUES ($1, $2)", int64(j.ID), os.Getpid()); err != nil {
			return err
		}
		<-ctx.Done()
		return ctx.Err()
	}, opts...)
	fmt.Println("ready")
	err = qm.Run(ctx, pgq.WithHeartbeatTimeout(time.Second), pgq.WithShutdownTimeout(200*time.Millisecond),
		pgq.WithDequeueTimeout(200*time.Millisecond))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// schedulerProcess runs an every-second schedule that records each tick it
// runs in sched_ticks, until SIGTERM.
func schedulerProcess(ctx context.Context, db *sql.DB) int {
	sm := pgq.NewSchedulerManager(db)
	err := sm.Schedule("tick", "* * * * * *", func(ctx context.Context, s *pgq.Schedule) error {
		_, err := db.ExecContext(ctx, "INSERT INTO sched_ticks (tick, pid) VALUES ($1, $2)", s.Tick, os.Getpid())
		return err
	}, pgq.WithCatchUp())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	if err := sm.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startWorker starts a worker process and waits until it is ready.
func startWorker(t *testing.T, driver, dsn string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), workerEnvDSN+"="+dsn, workerEnvDriver+"="+driver)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("worker process: %q, %v", line, err)
	}
	return cmd
}

// waitMark waits until the job has been started by pid.
func waitMark(t *testing.T, db *sql.DB, id pgq.JobID, pid int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if scalar[int](t, db, "SELECT count(*) FROM crash_marks WHERE job_id = $1 AND pid = $2", int64(id), pid) > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("job %d was not started by process %d", id, pid)
}

func TestSIGKILLedWorkerLosesNothing(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		if _, err := db.Exec("CREATE TABLE crash_marks (job_id bigint, pid int)"); err != nil {
			t.Fatal(err)
		}
		driver := driverName(db)
		cmd := startWorker(t, driver, dsn)
		q := pgq.NewQueries(db)
		id, err := q.Enqueue(ctx, "crash", []byte("precious"))
		if err != nil {
			t.Fatal(err)
		}
		waitMark(t, db, id, cmd.Process.Pid)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		// Another worker claims it once its heartbeat is stale, and runs it.
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		var payload string
		_ = qm.Entrypoint("crash", func(ctx context.Context, j *pgq.Job) error { payload = string(j.Payload); return nil })
		runCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- qm.Run(runCtx, pgq.WithHeartbeatTimeout(time.Second), pgq.WithDequeueTimeout(100*time.Millisecond))
		}()
		for {
			st, _ := q.JobStatus(ctx, []pgq.JobID{id})
			if st[id] == pgq.StatusSuccessful {
				break
			}
			if runCtx.Err() != nil {
				t.Fatalf("job not rescued: %s", st[id])
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		<-done
		if payload != "precious" {
			t.Fatalf("payload %q", payload)
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); n != 0 {
			t.Fatalf("%d rows left", n)
		}
	})
}

func TestSIGTERMReleasesInFlightJobs(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		if _, err := db.Exec("CREATE TABLE crash_marks (job_id bigint, pid int)"); err != nil {
			t.Fatal(err)
		}
		cmd := startWorker(t, driverName(db), dsn)
		q := pgq.NewQueries(db)
		ids, err := q.EnqueueBatch(ctx, []pgq.NewJob{{Entrypoint: "crash"}, {Entrypoint: "crash"}, {Entrypoint: "crash"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			waitMark(t, db, id, cmd.Process.Pid)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("worker exit: %v", err)
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer WHERE status = 'picked'"); n != 0 {
			t.Fatalf("%d jobs left picked after SIGTERM", n)
		}
		st, _ := q.JobStatus(ctx, ids)
		for _, id := range ids {
			if st[id] != pgq.StatusQueued {
				t.Fatalf("job %d is %s after SIGTERM, want queued (released)", id, st[id])
			}
		}
		if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer WHERE status = 'queued' AND attempts = 0"); n != 3 {
			t.Fatalf("%d released jobs with attempts 0, want 3", n)
		}
	})
}

func driverName(db *sql.DB) string {
	if fmt.Sprintf("%T", db.Driver()) == "*pq.Driver" {
		return "postgres"
	}
	return "pgx"
}

// TestTwoSchedulerProcesses runs an every-second schedule in two processes
// (one on each driver) for 10 s: each tick runs exactly once, fleet-wide.
func TestTwoSchedulerProcesses(t *testing.T) {
	db, dsn := pgqtest.NewDB(t, "pgx")
	if _, err := db.Exec("CREATE TABLE sched_ticks (tick timestamptz, pid int)"); err != nil {
		t.Fatal(err)
	}
	t.Parallel()
	a := startWorker(t, "pgx", dsn, workerEnvMode+"=scheduler")
	b := startWorker(t, "postgres", dsn, workerEnvMode+"=scheduler")
	time.Sleep(10 * time.Second)
	for _, p := range []*exec.Cmd{a, b} {
		if err := p.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []*exec.Cmd{a, b} {
		if err := p.Wait(); err != nil {
			t.Fatalf("scheduler process: %v", err)
		}
	}
	total := scalar[int](t, db, "SELECT count(*) FROM sched_ticks")
	distinct := scalar[int](t, db, "SELECT count(DISTINCT tick) FROM sched_ticks")
	whole := scalar[int](t, db, "SELECT count(*) FROM sched_ticks WHERE tick <> date_trunc('second', tick)")
	t.Logf("%d ticks in 10 s, %d distinct, by %d processes", total, distinct, scalar[int](t, db, "SELECT count(DISTINCT pid) FROM sched_ticks"))
	if total != distinct {
		t.Fatalf("%d runs for %d ticks: a tick ran twice", total, distinct)
	}
	// Ticks are counted from the first one on, not from the processes'
	// start, which a machine loaded by the other tests can slow down by
	// seconds. From then on every second has its tick, except where the
	// scheduler stalled for over a second: the seconds a stall spans are
	// skipped by design (WithCatchUp runs the first of them late). A
	// loaded CI machine stalls about once in the 10 s, so one second in
	// five may go missing, never more.
	span := scalar[int](t, db, "SELECT coalesce(extract(epoch FROM max(tick) - min(tick))::int, -1) FROM sched_ticks")
	missing := span + 1 - total
	t.Logf("%d ticks over %d s from the first: %d seconds without a tick", total, span, missing)
	if total < 5 || missing < 0 || missing > (span+1)/5 || whole != 0 {
		t.Fatalf("%d ticks over %d s from the first (%d not on a whole second)", total, span, whole)
	}
}
