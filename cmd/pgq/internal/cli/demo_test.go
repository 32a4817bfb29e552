package cli_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/pgq-dev/pgq/pgqtest"
)

// demoTotals reads the per-status lines of the demo's summary.
func demoTotals(t *testing.T, out string) map[string]int {
	t.Helper()
	totals := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^  (\w+) +(\d+)`).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[2])
		totals[m[1]] = n
	}
	return totals
}

func TestDemo(t *testing.T) {
	t.Parallel()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			// A bare database for pgx (the demo installs the schema), an
			// installed one for lib/pq (the demo upgrades it).
			var opts []pgqtest.DBOption
			if driver == "pgx" {
				opts = append(opts, pgqtest.Bare())
			}
			db, dsn := pgqtest.NewDB(t, driver, opts...)
			r := pgq(t, "demo", "--driver", driver, "--dsn", dsn, "--jobs", "200", "--workers", "3", "--batch-size", "20").ok(t)
			for _, w := range []string{
				"Enqueued 200 jobs over demo.email, demo.resize, demo.report, demo.webhook in ",
				"Ran 200 jobs in ",
				"demo.webhook fails 1 job in 10 on purpose",
				"their history is in table pgqueuer_log",
			} {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("demo output lacks %q:\n%s", w, r.stdout)
				}
			}
			// 50 demo.webhook jobs, of which the 10th, 20th… fail.
			if got := demoTotals(t, r.stdout); got["successful"] != 195 || got["exception"] != 5 || len(got) != 2 {
				t.Errorf("demo totals = %v, want successful 195, exception 5:\n%s", got, r.stdout)
			}
			// Plain progress lines, since stderr is not a terminal.
			if !strings.Contains(r.stderr, "100%  200/200 jobs") {
				t.Errorf("demo progress lacks the 100%% line:\n%s", r.stderr)
			}

			var left, logged int
			if err := db.QueryRow("SELECT count(*) FROM pgqueuer").Scan(&left); err != nil {
				t.Fatal(err)
			}
			if err := db.QueryRow(`SELECT count(DISTINCT job_id) FROM pgqueuer_log
				WHERE status IN ('successful', 'exception') AND entrypoint LIKE 'demo.%'`).Scan(&logged); err != nil {
				t.Fatal(err)
			}
			if left != 0 || logged != 200 {
				t.Errorf("after the demo: %d jobs left in the queue, %d finished in the log; want 0 and 200", left, logged)
			}
		})
	}
}

// TestDemoOneEntrypoint runs the demo with one entrypoint (so no failures)
// in a schema of its own with a prefix.
func TestDemoOneEntrypoint(t *testing.T) {
	t.Parallel()
	db, dsn := pgqtest.NewDB(t, "pgx", pgqtest.Bare())
	r := pgq(t, "demo", "--dsn", dsn, "--jobs", "30", "--entrypoints", "1", "--workers", "1",
		"--prefix", "d_", "--schema", "demo_s").ok(t)
	if got := demoTotals(t, r.stdout); got["successful"] != 30 || got["exception"] != 0 {
		t.Errorf("demo totals = %v, want successful 30, exception 0:\n%s", got, r.stdout)
	}
	for _, w := range []string{"over demo.email in", "their history is in table demo_s.d_pgqueuer_log."} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("demo output lacks %q:\n%s", w, r.stdout)
		}
	}
	var n int
	if err := db.QueryRow("SELECT count(*) FROM demo_s.d_pgqueuer_log WHERE status = 'successful'").Scan(&n); err != nil || n != 30 {
		t.Errorf("demo_s.d_pgqueuer_log has %d successful rows (%v), want 30", n, err)
	}
}

// TestDemoThrowawayServer runs the demo without a DSN: it starts its own
// server, and stops and deletes it afterwards.
func TestDemoThrowawayServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server")
	}
	t.Setenv("PGQ_DSN", "")
	// Sequential tests run alone: every goroutine the demo starts must end.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r := pgq(t, "demo", "--jobs", "100").ok(t)
	if got := demoTotals(t, r.stdout); got["successful"] != 98 || got["exception"] != 2 {
		t.Errorf("demo totals = %v, want successful 98, exception 2:\n%s", got, r.stdout)
	}
	if !strings.Contains(r.stderr, "Starting a throwaway PostgreSQL server") ||
		!strings.Contains(r.stdout, "throwaway PostgreSQL server, now stopped and deleted") {
		t.Errorf("demo output:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	m := regexp.MustCompile(`socket dir (\S+)\)`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no socket dir in the server's progress lines:\n%s", r.stderr)
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("the throwaway server's directory %s is still there (%v)", m[1], err)
	}
}
