package cli_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	pgqueue "github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/cmd/pgq/internal/cli"
	"github.com/pgq-dev/pgq/internal/syncbuf"
	"github.com/pgq-dev/pgq/pgqtest"
)

// background runs a long-running command until stop is called, which
// cancels its ctx and returns its result.
func background(t *testing.T, args ...string) (out *syncbuf.Buffer, stop func() result) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &syncbuf.Buffer{}
	var errb syncbuf.Buffer
	done := make(chan int, 1)
	go func() { done <- cli.Main(ctx, args, strings.NewReader(""), out, &errb) }()
	var once sync.Once
	var r result
	stop = func() result {
		once.Do(func() {
			cancel()
			select {
			case code := <-done:
				r = result{args: args, code: code, stdout: out.String(), stderr: errb.String()}
			case <-time.After(30 * time.Second):
				t.Fatalf("pgq %q did not stop within 30s of its ctx's end", args)
			}
		})
		return r
	}
	t.Cleanup(func() { stop() })
	return out, stop
}

// waitFor polls cond every 10 ms until it holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustExec(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%v\n%s", err, query)
	}
}

// table returns the rows of the aligned table whose header starts with
// heading (spaces aside), as fields, up to the next blank line.
func table(t *testing.T, out, heading string) [][]string {
	t.Helper()
	lines := strings.Split(out, "\n")
	heading = strings.Join(strings.Fields(heading), " ")
	for i, l := range lines {
		if !strings.HasPrefix(strings.Join(strings.Fields(l), " "), heading) {
			continue
		}
		var rows [][]string
		for _, r := range lines[i+1:] {
			if strings.TrimSpace(r) == "" {
				break
			}
			rows = append(rows, strings.Fields(r))
		}
		return rows
	}
	t.Fatalf("no %q in:\n%s", heading, out)
	return nil
}

func fields(s ...string) []string { return s }

func sameRows(t *testing.T, what string, got [][]string, want ...[]string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// seedDashboard fills the queue with jobs, log rows and statistics whose
// dashboard is known.
func seedDashboard(t *testing.T, db *sql.DB) {
	t.Helper()
	q := pgqueue.NewQueries(db)
	ctx := context.Background()
	for _, j := range []struct {
		ep   string
		prio int32
	}{{"email", 5}, {"email", 5}, {"email", 5}, {"report", 1}} {
		if _, err := q.Enqueue(ctx, j.ep, nil, pgqueue.WithPriority(j.prio)); err != nil {
			t.Fatal(err)
		}
	}
	// The email jobs have been due for 90 s; one of them runs. The report
	// job is held after failing.
	mustExec(t, db, `UPDATE pgqueuer SET execute_after = now() - interval '90 s' WHERE entrypoint = 'email'`)
	mustExec(t, db, `UPDATE pgqueuer SET status = 'picked' WHERE id = (SELECT min(id) FROM pgqueuer)`)
	mustExec(t, db, `UPDATE pgqueuer SET status = 'failed' WHERE entrypoint = 'report'`)
	mustExec(t, db, `INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, traceback)
		SELECT id, 'failed', priority, entrypoint, '{"exception_message": "no printer\nfound"}' FROM pgqueuer WHERE entrypoint = 'report'`)
	mustExec(t, db, `INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, traceback)
		VALUES (now() - interval '2 s', 999, 'exception', 5, 'email', '{"exception_message": "smtp down"}')`)
	// Six email jobs finished 5 s ago, folded into the statistics.
	mustExec(t, db, `INSERT INTO pgqueuer_statistics (created, count, priority, status, entrypoint)
		VALUES (date_trunc('sec', now()) - interval '5 s', 6, 5, 'successful', 'email')`)
}

func TestDashboardOnce(t *testing.T) {
	t.Parallel()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			db, dsn := pgqtest.NewDB(t, driver)
			seedDashboard(t, db)
			out := pgq(t, "dashboard", "--once", "--driver", driver, "--dsn", dsn).ok(t).stdout
			if strings.Contains(out, "\x1b[") {
				t.Errorf("--once wrote ANSI codes:\n%q", out)
			}
			if !regexp.MustCompile(`^pgq dashboard  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n`).MatchString(out) {
				t.Errorf("title:\n%s", out)
			}
			if !regexp.MustCompile(`(?m)^QUEUE: 4 jobs, the oldest due one waiting 1m3\ds$`).MatchString(out) {
				t.Errorf("queue summary:\n%s", out)
			}
			rows := table(t, out, "ENTRYPOINT  PRIORITY  STATUS  JOBS  OLDEST WAIT")
			if len(rows) == 3 && regexp.MustCompile(`^1m3\ds$`).MatchString(rows[0][4]) {
				rows[0][4] = "1m30s"
			}
			sameRows(t, "queue", rows,
				fields("email", "5", "queued", "2", "1m30s"),
				fields("email", "5", "picked", "1", "-"),
				fields("report", "1", "failed", "1", "-"))

			if !regexp.MustCompile(`(?m)^LAST MINUTE: 7 finished, 0\.1[12] jobs/s$`).MatchString(out) {
				t.Errorf("activity summary:\n%s", out)
			}
			sameRows(t, "activity",
				table(t, out, "ENTRYPOINT  QUEUED  PICKED  SUCCESSFUL  EXCEPTION  CANCELED  DELETED  FAILED"),
				fields("email", "3", "0", "6", "1", "0", "0", "0"),
				fields("report", "1", "0", "0", "0", "0", "0", "1"))

			if !strings.Contains(out, "\nLAST ERRORS: 2\n") {
				t.Errorf("errors summary:\n%s", out)
			}
			errs := table(t, out, "TIME  ")
			if len(errs) != 2 || len(errs[0]) < 5 || len(errs[1]) < 5 {
				t.Fatalf("errors table: %q", errs)
			}
			if got := strings.Join(errs[0][2:], " "); got != "report failed no printer found" {
				t.Errorf("first error: %q", got)
			}
			if got := strings.Join(errs[1][1:], " "); got != "999 email exception smtp down" {
				t.Errorf("second error: %q", got)
			}

			// --errors 0 leaves the errors out; --errors 1 keeps the latest.
			out = pgq(t, "dashboard", "--once", "--errors", "0", "--driver", driver, "--dsn", dsn).ok(t).stdout
			if strings.Contains(out, "ERRORS") {
				t.Errorf("--errors 0:\n%s", out)
			}
			out = pgq(t, "dashboard", "--once", "--errors", "1", "--driver", driver, "--dsn", dsn).ok(t).stdout
			if !strings.Contains(out, "LAST ERRORS: 1\n") || len(table(t, out, "TIME  ")) != 1 {
				t.Errorf("--errors 1:\n%s", out)
			}
		})
	}
}

func TestDashboardEmptyAndLive(t *testing.T) {
	t.Parallel()
	db, dsn := pgqtest.NewDB(t, "pgx")
	out := pgq(t, "dashboard", "--once", "--dsn", dsn).ok(t).stdout
	for _, w := range []string{"QUEUE: 0 jobs\n", "LAST MINUTE: 0 finished, 0.00 jobs/s\n", "LAST ERRORS: 0\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("empty queue: no %q in\n%s", w, out)
		}
	}

	// Live, not on a terminal: a new picture each interval, no screen
	// clearing; Ctrl-C ends it with exit code 0.
	live, stop := background(t, "dashboard", "--interval", "100ms", "--dsn", dsn)
	waitFor(t, "a first picture", func() bool { return strings.Count(live.String(), "pgq dashboard  ") >= 1 })
	if _, err := pgqueue.NewQueries(db).Enqueue(context.Background(), "late", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a picture with the new job", func() bool { return strings.Contains(live.String(), "QUEUE: 1 job") })
	r := stop()
	if r.code != 0 || r.stderr != "" {
		t.Errorf("live dashboard ended with %d, stderr %q", r.code, r.stderr)
	}
	if strings.Contains(r.stdout, "\x1b[") || !strings.Contains(r.stdout, "(refreshing every 100ms; Ctrl-C to quit)") {
		t.Errorf("live output:\n%s", r.stdout)
	}
	if n := strings.Count(r.stdout, "pgq dashboard  "); n < 2 || strings.Count(r.stdout, "\n\npgq dashboard  ") != n-1 {
		t.Errorf("%d pictures, not separated by blank lines:\n%s", n, r.stdout)
	}
}

func TestListen(t *testing.T) {
	t.Parallel()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			db, dsn := pgqtest.NewDB(t, driver)
			out, stop := background(t, "listen", "--dsn", dsn, "--driver", driver)
			waitFor(t, "LISTEN", func() bool {
				var n int
				err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND state = 'idle' AND query = 'LISTEN "ch_pgqueuer"'`).Scan(&n)
				return err == nil && n == 1
			})
			q := pgqueue.NewQueries(db)
			ctx := context.Background()
			id, err := q.Enqueue(ctx, "email", nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := q.MarkJobAsCancelled(ctx, []pgqueue.JobID{id}); err != nil {
				t.Fatal(err)
			}
			mustExec(t, db, `SELECT pg_notify('ch_pgqueuer', 'not json'), pg_notify('ch_pgqueuer', '{"type": "nobody_knows"}')`)
			mustExec(t, db, `SELECT pg_notify('ch_pgqueuer', '{"channel": "ch_pgqueuer", "type": "health_check_event",
				"sent_at": "2025-01-02T03:04:05.5+00:00", "id": "6f1d5f3c-0b6c-4d7e-9a51-3c2f0b3e8e11"}')`)
			waitFor(t, "five events", func() bool { return strings.Count(out.String(), "\n") >= 6 })
			r := stop()
			if r.code != 0 || r.stderr != "" {
				t.Errorf("listen ended with %d, stderr %q", r.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
			ts := `sent_at=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`
			want := []string{
				`^table_changed_event operation=insert table=pgqueuer ` + ts + `$`,
				`^table_changed_event operation=delete table=pgqueuer ` + ts + `$`,
				fmt.Sprintf(`^cancellation_event ids=%d %s$`, id, ts),
				`^unparsed not json$`,
				`^unparsed \{"type": "nobody_knows"\}$`,
				`^health_check_event id=6f1d5f3c-0b6c-4d7e-9a51-3c2f0b3e8e11 sent_at=2025-01-02T03:04:05\.5Z$`,
			}
			if len(lines) != len(want) {
				t.Fatalf("printed %d lines, want %d:\n%s", len(lines), len(want), r.stdout)
			}
			for i, w := range want {
				if !regexp.MustCompile(w).MatchString(lines[i]) {
					t.Errorf("line %d = %q, want %s", i+1, lines[i], w)
				}
			}
		})
	}
}

func TestListenPrefix(t *testing.T) {
	t.Parallel()
	db, dsn := pgqtest.NewDB(t, "pgx")
	out, stop := background(t, "listen", "--dsn", dsn, "--prefix", "app_")
	waitFor(t, "LISTEN", func() bool {
		var n int
		err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND state = 'idle' AND query = 'LISTEN "app_ch_pgqueuer"'`).Scan(&n)
		return err == nil && n == 1
	})
	mustExec(t, db, `SELECT pg_notify('ch_pgqueuer', 'unprefixed'), pg_notify('app_ch_pgqueuer', 'line
two')`)
	waitFor(t, "an event", func() bool { return strings.Contains(out.String(), "\n") })
	if r := stop(); r.code != 0 || r.stdout != "unparsed \"line\\ntwo\"\n" {
		t.Errorf("exit %d, stdout %q", r.code, r.stdout)
	}
}

// heldJob inserts a held (failed) job with its log rows and returns its id.
func heldJob(t *testing.T, db *sql.DB, ep, msg string) pgqueue.JobID {
	t.Helper()
	var id int64
	err := db.QueryRow(`WITH j AS (
			INSERT INTO pgqueuer (priority, entrypoint, status, attempts) VALUES (2, $1, 'failed', 3)
			RETURNING id, priority, entrypoint)
		INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, traceback)
		SELECT id, 'failed', priority, entrypoint, jsonb_build_object('exception_message', $2::text) FROM j
		RETURNING job_id`, ep, msg).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return pgqueue.JobID(id)
}

func TestFailedRequeueCancel(t *testing.T) {
	t.Parallel()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			db, dsn := pgqtest.NewDB(t, driver)
			conn := []string{"--driver", driver, "--dsn", dsn}
			run := func(args ...string) result { return pgq(t, append(args, conn...)...) }
			ctx := context.Background()
			q := pgqueue.NewQueries(db)

			if out := run("failed").ok(t).stdout; out != "no failed (held) jobs\n" {
				t.Errorf("failed on an empty queue: %q", out)
			}
			a := heldJob(t, db, "email", "smtp said no")
			b := heldJob(t, db, "resize", strings.Repeat("x", 300))
			rows := table(t, run("failed").ok(t).stdout, "ID  ENTRYPOINT  PRIORITY  ATTEMPTS  FAILED AT  ERROR")
			if len(rows) != 2 || rows[0][0] != fmt.Sprint(b) || rows[1][0] != fmt.Sprint(a) ||
				strings.Join(rows[1][1:4], " ") != "email 2 3" || strings.Join(rows[1][5:], " ") != "smtp said no" ||
				len([]rune(rows[0][5])) != 120 {
				t.Errorf("failed: %q", rows)
			}
			if rows := table(t, run("failed", "-n", "1").ok(t).stdout, "ID  "); len(rows) != 1 || rows[0][0] != fmt.Sprint(b) {
				t.Errorf("failed -n 1: %q", rows)
			}

			// Requeue a and an id that is not held.
			r := run("requeue", fmt.Sprint(a), "424242").fails(t, 1, "requeue: not requeued (not held as failed, or no such job): 424242")
			if r.stdout != fmt.Sprintf("requeued %d\n", a) {
				t.Errorf("requeue stdout %q", r.stdout)
			}
			if st, _ := q.JobStatus(ctx, []pgqueue.JobID{a}); st[a] != pgqueue.StatusQueued {
				t.Errorf("after requeue, job %d is %q", a, st[a])
			}
			// What the help says about attempts is what requeue does.
			var attempts int
			if err := db.QueryRowContext(ctx, `SELECT attempts FROM pgqueuer WHERE id = $1`, int64(a)).Scan(&attempts); err != nil {
				t.Fatal(err)
			}
			hr := pgq(t, "requeue", "-h").ok(t)
			help := hr.stdout + hr.stderr
			if attempts != 0 || !strings.Contains(strings.Join(strings.Fields(help), " "), "attempt count reset to 0") {
				t.Errorf("after requeue, job %d has %d attempts; help says:\n%s", a, attempts, help)
			}
			if r := run("requeue", fmt.Sprint(b)).ok(t); r.stdout != fmt.Sprintf("requeued %d\n", b) || r.stderr != "" {
				t.Errorf("requeue %d: %q %q", b, r.stdout, r.stderr)
			}

			// Cancel a queued job, with a finished one and an unknown one.
			done, err := q.Enqueue(ctx, "email", nil)
			if err != nil {
				t.Fatal(err)
			}
			mustExec(t, db, `DELETE FROM pgqueuer WHERE id = $1`, int64(done))
			mustExec(t, db, `INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint) VALUES ($1, 'successful', 0, 'email')`, int64(done))
			r = run("cancel", fmt.Sprintf("%d,%d", a, done), "424242").
				fails(t, 1, fmt.Sprintf("cancel: not canceled: already finished: %d (successful); no such job: 424242", done))
			if r.stdout != fmt.Sprintf("canceled %d\n", a) {
				t.Errorf("cancel stdout %q", r.stdout)
			}
			if st, _ := q.JobStatus(ctx, []pgqueue.JobID{a}); st[a] != pgqueue.StatusCanceled {
				t.Errorf("after cancel, job %d is %q", a, st[a])
			}
			// Canceling again reports it canceled, exit 0.
			run("cancel", fmt.Sprint(a)).ok(t)
		})
	}
}

func TestSchedulesCommand(t *testing.T) {
	t.Parallel()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			db, dsn := pgqtest.NewDB(t, driver)
			conn := []string{"--driver", driver, "--dsn", dsn}
			run := func(args ...string) result { return pgq(t, append(args, conn...)...) }

			if out := run("schedules").ok(t).stdout; out != "no schedules\n" {
				t.Errorf("no schedules: %q", out)
			}
			mustExec(t, db, `INSERT INTO pgqueuer_schedules (id, expression, entrypoint, next_run, last_run, status) VALUES
				(1, '*/5 * * * *', 'cleanup', '2030-01-02 03:05:00+00', '2030-01-02 03:00:00+00', 'queued'),
				(2, '0 3 * * *', 'cleanup', '2030-01-03 03:00:00+00', NULL, 'picked'),
				(3, '0 * * * *', 'report', '2030-01-02 04:00:00+00', NULL, 'queued')`)
			sameRows(t, "schedules", table(t, run("schedules").ok(t).stdout, "ID  ENTRYPOINT  EXPRESSION  STATUS  NEXT RUN  LAST RUN"),
				fields("1", "cleanup", "*/5", "*", "*", "*", "*", "queued", "2030-01-02T03:05:00Z", "2030-01-02T03:00:00Z"),
				fields("2", "cleanup", "0", "3", "*", "*", "*", "picked", "2030-01-03T03:00:00Z", "-"),
				fields("3", "report", "0", "*", "*", "*", "*", "queued", "2030-01-02T04:00:00Z", "-"))

			// By id, with one that matches nothing: the rest is removed.
			r := run("schedules", "--remove", "3", "99").fails(t, 1, "schedules: no schedule has the id or entrypoint 99")
			if r.stdout != "removed schedule 3 (report, \"0 * * * *\")\n" {
				t.Errorf("--remove 3 99: %q", r.stdout)
			}
			// By entrypoint.
			r = run("schedules", "--remove", "cleanup").ok(t)
			if r.stdout != "removed schedule 1 (cleanup, \"*/5 * * * *\")\nremoved schedule 2 (cleanup, \"0 3 * * *\")\n" {
				t.Errorf("--remove cleanup: %q", r.stdout)
			}
			var n int
			if err := db.QueryRow("SELECT count(*) FROM pgqueuer_schedules").Scan(&n); err != nil || n != 0 {
				t.Errorf("%d schedules left (%v)", n, err)
			}
		})
	}
}

// TestOpsFailures covers the one-line failures of the new commands: usage
// mistakes (exit 2), a missing schema and an unreachable server (exit 1).
func TestOpsFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"requeue"}, []string{"requeue: missing job IDS"}},
		{[]string{"requeue", "12", "abc"}, []string{`requeue: bad job id "abc": want a positive whole number`}},
		{[]string{"cancel", "0"}, []string{`cancel: bad job id "0"`}},
		{[]string{"cancel", "1,,2"}, []string{`bad job id ""`}},
		{[]string{"cancel", "-5"}, []string{"unknown flag --5"}},
		{[]string{"failed", "-n", "0"}, []string{`invalid value "0" for --n`}},
		{[]string{"failed", "extra"}, []string{`unexpected argument "extra"`}},
		{[]string{"schedules", "cleanup"}, []string{`unexpected argument "cleanup": to remove schedules use --remove`}},
		{[]string{"schedules", "--remove", ""}, []string{"--remove", "want a schedule id or an entrypoint"}},
		{[]string{"dashboard", "--interval", "10ms"}, []string{"--interval 10ms is too short: want at least 100ms"}},
		{[]string{"dashboard", "--interval", "soon"}, []string{`invalid value "soon" for --interval`}},
		{[]string{"dashboard", "--errors", "-1"}, []string{`invalid value "-1" for --errors`}},
		{[]string{"dashboard", "now"}, []string{`unexpected argument "now"`}},
		{[]string{"listen", "ch"}, []string{`unexpected argument "ch"`}},
		{[]string{"listen", "--prefix", "Bad"}, []string{`invalid prefix "Bad"`}},
	} {
		pgq(t, tc.args...).fails(t, 2, tc.want...)
	}

	_, bare := pgqtest.NewDB(t, "pgx", pgqtest.Bare())
	for _, args := range [][]string{
		{"dashboard", "--once"}, {"failed"}, {"requeue", "1"}, {"cancel", "1"}, {"schedules"}, {"schedules", "--remove", "1"},
	} {
		pgq(t, append(args, "--dsn", bare)...).fails(t, 1, args[0]+": the pgq schema is not installed", "run `pgq install`")
	}

	const unreachable = "host=127.0.0.1 port=1 user=nobody dbname=nothing sslmode=disable connect_timeout=2"
	for _, args := range [][]string{{"dashboard"}, {"listen"}, {"failed"}, {"requeue", "1"}, {"cancel", "1"}, {"schedules"}} {
		pgq(t, append(args, "--dsn", unreachable)...).fails(t, 1, args[0]+": cannot connect to PostgreSQL (DSN from --dsn)")
	}
}

func TestOpsHelp(t *testing.T) {
	t.Parallel()
	out := pgq(t, "help").ok(t).stdout
	for _, cmd := range []string{"failed", "requeue", "cancel", "schedules", "dashboard", "listen"} {
		if !strings.Contains(out, "\n  "+cmd+" ") {
			t.Errorf("pgq help does not list %s:\n%s", cmd, out)
		}
	}
	for cmd, flags := range map[string][]string{
		"failed":    {"Usage: pgq failed [flags]", "--n N"},
		"requeue":   {"Usage: pgq requeue IDS... [flags]", "--dsn"},
		"cancel":    {"Usage: pgq cancel IDS... [flags]", "--dsn"},
		"schedules": {"Usage: pgq schedules [--remove ID|ENTRYPOINT ...] [flags]", "--remove ID"},
		"dashboard": {"Usage: pgq dashboard [flags]", "--interval interval", "(default 2s)", "--once", "--errors N", "(default 5)"},
		"listen":    {"Usage: pgq listen [flags]", "--prefix"},
	} {
		r := pgq(t, cmd, "-h").ok(t)
		for _, f := range flags {
			if !strings.Contains(r.stdout, f) {
				t.Errorf("pgq %s -h lacks %q:\n%s", cmd, f, r.stdout)
			}
		}
	}
}

// TestDashboardWorkers: the dashboard lists the workers, idle or holding
// jobs, and says which do not listen. Two workers, one on a lib/pq pool
// from pgq.Open (listening), one on a lib/pq pool from sql.Open (polling),
// are seen idle (by their claim connections: before those were named, an
// idle polling worker was not seen), then each holding a job; a watcher
// listens.
func TestDashboardWorkers(t *testing.T) {
	t.Parallel()
	polled, dsn := pgqtest.NewDB(t, "postgres")
	opened, err := pgqueue.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	var wg sync.WaitGroup
	defer func() {
		close(release)
		cancel()
		wg.Wait()
	}()
	var ids []string
	for _, db := range []*sql.DB{opened, polled} {
		qm := pgqueue.NewQueueManager(db)
		if err := qm.Entrypoint("hold", func(context.Context, *pgqueue.Job) error {
			started <- struct{}{}
			<-release
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, qm.ID().String())
		wg.Go(func() { _ = qm.Run(ctx, pgqueue.WithBatchSize(1), pgqueue.WithMaxConcurrentTasks(1)) })
	}
	w, err := pgqueue.NewCompletionWatcher(ctx, opened)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	wantIdle := [][]string{fields(ids[0], "0", "yes"), fields(ids[1], "0", "no")}
	if ids[0] > ids[1] {
		wantIdle[0], wantIdle[1] = wantIdle[1], wantIdle[0]
	}
	var out string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out = pgq(t, "dashboard", "--once", "--dsn", dsn).ok(t).stdout
		if strings.Contains(out, "\nWORKERS: 2 seen, 1 not listening") || time.Now().After(deadline) {
			break
		}
	}
	sameRows(t, "idle workers", table(t, out, "WORKER  RUNNING  LISTENING"), wantIdle...)
	for range 2 {
		if _, err := pgqueue.NewQueries(polled).Enqueue(ctx, "hold", nil); err != nil {
			t.Fatal(err)
		}
	}
	<-started
	<-started
	out = pgq(t, "dashboard", "--once", "--dsn", dsn).ok(t).stdout
	if !strings.Contains(out, "\nWORKERS: 2 seen, 1 not listening (polling, or PGQueuer's); 1 watcher listening\n") {
		t.Errorf("workers summary:\n%s", out)
	}
	rows := table(t, out, "WORKER  RUNNING  LISTENING")
	want := [][]string{fields(ids[0], "1", "yes"), fields(ids[1], "1", "no")}
	if ids[0] > ids[1] {
		want[0], want[1] = want[1], want[0]
	}
	sameRows(t, "workers", rows, want...)
}

// pgq web serves the dashboard; --allow-actions needs --auth.
func TestWeb(t *testing.T) {
	db, dsn := pgqtest.NewDB(t, "pgx")
	if _, err := pgqueue.NewQueries(db).Enqueue(context.Background(), "webjob", nil); err != nil {
		t.Fatal(err)
	}
	pgq(t, "web", "--dsn", dsn, "--allow-actions").fails(t, 2, "--allow-actions needs --auth")
	pgq(t, "web", "--dsn", dsn, "--auth", "nopassword").fails(t, 2, "user:password")
	out, stop := background(t, "web", "--dsn", dsn, "--addr", "127.0.0.1:0", "--allow-actions", "--auth", "ops:pw")
	var addr string
	waitFor(t, "pgq web's address", func() bool {
		m := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/`).FindStringSubmatch(out.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	for _, c := range []struct {
		url  string
		code int
	}{{"http://" + addr + "/", 401}, {"http://ops:pw@" + addr + "/", 200}, {"http://ops:pw@" + addr + "/jobs?entrypoint=webjob", 200}} {
		res, err := http.Get(c.url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != c.code {
			t.Errorf("GET %s: %d, want %d", c.url, res.StatusCode, c.code)
		}
		if c.code == 200 && !strings.Contains(string(body), "webjob") {
			t.Errorf("GET %s: no webjob in the page", c.url)
		}
	}
	stop().ok(t)
}
