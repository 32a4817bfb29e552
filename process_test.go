package pgq_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
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
// (one on each driver) for 10 s: each tick runs exactly once, fleet-wide,
// and a second goes without a tick only when the run before it ended after
// that second had begun.
//
// How many ticks run depends on the machine's load, not on the scheduler:
// the schedule's single row is claimed while a tick runs, and a run that
// ends late (WithCatchUp) moves the next run to the next whole second after
// it. So the test records, with a trigger, every write of the schedule's
// next run and the database's clock at that moment, and checks the rule
// itself: the next run written is never later than the first whole second
// after the write, and every tick claimed ran.
func TestTwoSchedulerProcesses(t *testing.T) {
	db, dsn := pgqtest.NewDB(t, "pgx")
	for _, stmt := range []string{
		"CREATE TABLE sched_ticks (tick timestamptz, pid int)",
		"CREATE TABLE sched_writes (claimed timestamptz, next_run timestamptz, at timestamptz)",
		`CREATE FUNCTION sched_record() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.status = 'picked' AND NEW.status = 'queued' THEN
				INSERT INTO sched_writes VALUES (OLD.next_run, NEW.next_run, clock_timestamp());
			END IF;
			RETURN NEW;
		END $$`,
		"CREATE TRIGGER sched_record AFTER UPDATE ON pgqueuer_schedules FOR EACH ROW EXECUTE FUNCTION sched_record()",
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
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
	span := scalar[int](t, db, "SELECT coalesce(extract(epoch FROM max(tick) - min(tick))::int, -1) FROM sched_ticks")
	t.Logf("%d ticks in 10 s, %d distinct, by %d processes; %d seconds without a tick from the first", total,
		distinct, scalar[int](t, db, "SELECT count(DISTINCT pid) FROM sched_ticks"), span+1-total)
	if total != distinct {
		t.Fatalf("%d runs for %d ticks: a tick ran twice", total, distinct)
	}
	if whole != 0 {
		t.Fatalf("%d ticks not on a whole second", whole)
	}
	if total < 3 {
		t.Fatalf("%d ticks in 10 s", total)
	}
	// The next run is computed from the database's clock as the scheduler
	// estimates it (the claim's now() plus the time since): never ahead of
	// the clock at the write, give or take the estimate's error.
	early := scalar[int](t, db, `SELECT count(*) FROM sched_writes
		WHERE next_run > date_trunc('second', at + interval '50 milliseconds') + interval '1 second'
		   OR next_run <= claimed`)
	if early != 0 {
		var rows []string
		r, err := db.Query("SELECT claimed, next_run, at FROM sched_writes ORDER BY claimed")
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var c, n, at time.Time
			if err := r.Scan(&c, &n, &at); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, fmt.Sprintf("%s -> %s at %s", c.Format("15:04:05.000"),
				n.Format("15:04:05.000"), at.Format("15:04:05.000")))
		}
		_ = r.Close()
		t.Fatalf("%d writes skipped a second that had not begun (tick -> next run at write):\n%s", early,
			strings.Join(rows, "\n"))
	}
	// With WithCatchUp every claimed tick runs, late or not: the ticks
	// run and the ticks whose run was recorded are the same.
	unmatched := scalar[int](t, db, `SELECT count(*) FROM
		(SELECT tick FROM sched_ticks) t FULL JOIN (SELECT claimed FROM sched_writes) w ON t.tick = w.claimed
		WHERE t.tick IS NULL OR w.claimed IS NULL`)
	if unmatched != 0 {
		t.Fatalf("%d ticks ran without their next run recorded, or were recorded without running", unmatched)
	}
}
