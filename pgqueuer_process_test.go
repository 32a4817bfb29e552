package pgq_test

// Tests that run PGQueuer itself (Python, asyncpg) against the test server:
// its CLI installs, upgrades and verifies, its producer enqueues, its
// QueueManager works jobs. They need PGQUEUER_ENV, the env.sh that
// ../shared/pgqueuer/setup.sh writes (make test sets it up when it can);
// without it they skip, saying so once.

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

var (
	pgqueuerEnvOnce sync.Once
	pgqueuerEnv     []string // PY=..., PYTHONPATH=...; nil when PGQueuer is not set up
)

// pgqueuerPython returns the environment to run PGQueuer with, or skips the
// test (printing one line for the whole run) when PGQueuer is not set up.
func pgqueuerPython(t *testing.T) []string {
	t.Helper()
	pgqueuerEnvOnce.Do(func() {
		path := os.Getenv("PGQUEUER_ENV")
		f, err := os.Open(path)
		if path == "" || err != nil {
			fmt.Fprintln(os.Stderr, "pgq: skipping the tests that run PGQueuer itself: PGQUEUER_ENV (the env.sh of ../shared/pgqueuer/setup.sh) is not set; `make test` sets it up where ../shared/pgqueuer exists")
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if kv, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "export "); ok {
				pgqueuerEnv = append(pgqueuerEnv, kv)
			}
		}
	})
	if pgqueuerEnv == nil {
		t.Skip("PGQueuer not set up (PGQUEUER_ENV)")
	}
	return pgqueuerEnv
}

// libpqEnv turns a key=value DSN into the PG* variables asyncpg reads.
func libpqEnv(t *testing.T, dsn string) []string {
	t.Helper()
	names := map[string]string{"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE", "password": "PGPASSWORD"}
	var env []string
	for _, field := range strings.Fields(dsn) {
		k, v, ok := strings.Cut(field, "=")
		if name, known := names[k]; ok && known {
			env = append(env, name+"="+strings.Trim(v, "'"))
		}
	}
	if len(env) == 0 {
		t.Fatalf("cannot pass DSN %q to PGQueuer", dsn)
	}
	return env
}

// runPGQueuer runs PGQueuer's Python with args against dsn and returns its
// output; a non-zero exit fails the test unless allowFail.
func runPGQueuer(t *testing.T, ctx context.Context, dsn string, allowFail bool, args ...string) (string, error) {
	t.Helper()
	env := pgqueuerPython(t)
	py := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PY="); ok {
			py = v
		}
	}
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Env = append(append(append(os.Environ(), env...), libpqEnv(t, dsn)...), "PGOPTIONS=-c jit=off")
	out, err := cmd.CombinedOutput()
	if err != nil && !allowFail {
		t.Fatalf("PGQueuer %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), err
}

// pyEnqueue enqueues n jobs of entrypoint with PGQueuer's producer.
const pyEnqueue = `
import asyncio, sys, asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries
async def main():
    conn = await asyncpg.connect()
    n, ep = int(sys.argv[1]), sys.argv[2]
    ids = await Queries(AsyncpgDriver(conn)).enqueue([ep] * n, [b"from-python"] * n, [0] * n)
    print(len(ids))
    await conn.close()
asyncio.run(main())
`

// pyWorker drains entrypoint with PGQueuer's QueueManager and prints the
// number of jobs it ran and the payloads' distinct values.
const pyWorker = `
import asyncio, sys, asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode
async def main():
    conn = await asyncpg.connect()
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    ran, payloads = 0, set()
    @qm.entrypoint(sys.argv[1])
    async def work(job):
        nonlocal ran
        ran += 1
        payloads.add(job.payload)
    await qm.run(mode=QueueExecutionMode.drain, dequeue_timeout=__import__("datetime").timedelta(seconds=1))
    print(ran, sorted(p.decode() for p in payloads))
    await conn.close()
asyncio.run(main())
`

// noJIT turns JIT off for db's database: asyncpg's type introspection query
// is JIT-compiled otherwise, about a second per connection.
func noJIT(t *testing.T, db *sql.DB) {
	t.Helper()
	if _, err := db.Exec(`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET jit = off', current_database()); END $$`); err != nil {
		t.Fatal(err)
	}
}

// checkLogSequences checks that every job of entrypoint has the log rows
// queued, picked, successful, in that order, and no others.
func checkLogSequences(t *testing.T, db *sql.DB, entrypoint string, jobs int) {
	t.Helper()
	bad := scalar[int](t, db, `SELECT count(*) FROM (
		SELECT job_id, string_agg(status::text, ',' ORDER BY created, id) AS seq
		FROM pgqueuer_log WHERE entrypoint = $1 GROUP BY job_id) s
		WHERE seq <> 'queued,picked,successful'`, entrypoint)
	n := scalar[int](t, db, `SELECT count(DISTINCT job_id) FROM pgqueuer_log WHERE entrypoint = $1`, entrypoint)
	if bad != 0 || n != jobs {
		t.Fatalf("%s: %d jobs logged, %d with a sequence other than queued,picked,successful; want %d, 0", entrypoint, n, bad, jobs)
	}
}

func TestPGQueuerInstallsPgqWorks(t *testing.T) {
	pgqueuerPython(t)
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			db, dsn := pgqtest.NewDB(t, d, pgqtest.Bare())
			noJIT(t, db)
			runPGQueuer(t, ctx, dsn, false, "-m", "pgqueuer", "install", "--durability", "durable")
			runPGQueuer(t, ctx, dsn, false, "-m", "pgqueuer", "upgrade", "--durability", "durable")
			if out, _ := runPGQueuer(t, ctx, dsn, false, "-c", pyEnqueue, "50", "from_py"); strings.TrimSpace(out) != "50" {
				t.Fatalf("PGQueuer enqueue: %q", out)
			}
			if err := pgq.Upgrade(ctx, db); err != nil {
				t.Fatalf("pgq.Upgrade on PGQueuer's schema: %v", err)
			}
			if err := pgq.Verify(ctx, db); err != nil {
				t.Fatalf("pgq.Verify: %v", err)
			}
			if diff := pgqueuer16Diff(t, db); len(diff) > 0 {
				t.Fatalf("PGQueuer 1.3's schema after pgq.Upgrade differs from PGQueuer 1.6's declaration:\n%s", strings.Join(diff, "\n"))
			}
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			var mu sync.Mutex
			ran := map[pgq.JobID]string{}
			if err := qm.Entrypoint("from_py", func(_ context.Context, j *pgq.Job) error {
				mu.Lock()
				defer mu.Unlock()
				ran[j.ID] = string(j.Payload)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			drain(t, ctx, qm)
			if len(ran) != 50 {
				t.Fatalf("pgq ran %d of PGQueuer's 50 jobs", len(ran))
			}
			for id, p := range ran {
				if p != "from-python" {
					t.Fatalf("job %d payload %q", id, p)
				}
			}
			checkLogSequences(t, db, "from_py", 50)

			// PGQueuer's own upgrade and verify on the schema pgq upgraded:
			// still a schema it accepts, and pgq still starts after.
			runPGQueuer(t, ctx, dsn, false, "-m", "pgqueuer", "upgrade", "--durability", "durable")
			if out, _ := runPGQueuer(t, ctx, dsn, false, "-m", "pgqueuer", "verify", "--expect", "present"); !strings.Contains(out, "All required") {
				t.Fatalf("PGQueuer verify: %s", out)
			}
			if err := pgq.Verify(ctx, db); err != nil {
				t.Fatalf("pgq.Verify after PGQueuer's upgrade: %v", err)
			}
			if _, err := pgq.NewQueries(db).Enqueue(ctx, "again", nil); err != nil {
				t.Fatal(err)
			}
			qm2 := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			if err := qm2.Entrypoint("again", func(context.Context, *pgq.Job) error { return nil }); err != nil {
				t.Fatal(err)
			}
			drain(t, ctx, qm2)
		})
	}
}

func TestPgqInstallsPGQueuerWorks(t *testing.T) {
	pgqueuerPython(t)
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			db, dsn := pgqtest.NewDB(t, d) // installed by pgq
			noJIT(t, db)
			if out, _ := runPGQueuer(t, ctx, dsn, false, "-m", "pgqueuer", "verify", "--expect", "present"); !strings.Contains(out, "All required") {
				t.Fatalf("PGQueuer verify on pgq's schema: %s", out)
			}
			jobs := make([]pgq.NewJob, 60)
			for i := range jobs {
				jobs[i] = pgq.NewJob{Entrypoint: "to_py", Payload: []byte("from-go")}
			}
			if _, err := pgq.NewQueries(db).EnqueueBatch(ctx, jobs); err != nil {
				t.Fatal(err)
			}
			out, _ := runPGQueuer(t, ctx, dsn, false, "-c", pyWorker, "to_py")
			if strings.TrimSpace(out) != "60 ['from-go']" {
				t.Fatalf("PGQueuer's QueueManager on pgq's jobs: %q", out)
			}
			if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); n != 0 {
				t.Fatalf("%d jobs left", n)
			}
			checkLogSequences(t, db, "to_py", 60)
			if err := pgq.Verify(ctx, db); err != nil {
				t.Fatal(err)
			}
		})
	}
}
