package pgq_test

// Tests that run PGQueuer itself (Python, asyncpg) against the test server:
// its CLI installs, upgrades and verifies, its producer enqueues, its
// QueueManager works jobs. They need PGQUEUER_ENV, the env.sh that
// ../shared/pgqueuer/setup.sh writes (make test sets it up when it can);
// without it they skip, saying so once.

import (
	"bufio"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// pgqueuerCmd is PGQueuer's Python run with args against dsn (through
// libpq's PG* variables, with JIT off).
func pgqueuerCmd(ctx context.Context, t *testing.T, dsn string, args ...string) *exec.Cmd {
	env := pgqueuerPython(t)
	py := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PY="); ok {
			py = v
		}
	}
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Env = append(append(append(os.Environ(), env...), libpqEnv(t, dsn)...), "PGOPTIONS=-c jit=off")
	return cmd
}

// runPGQueuer runs PGQueuer's Python with args against dsn and returns its
// output; a non-zero exit fails the test unless allowFail.
func runPGQueuer(t *testing.T, ctx context.Context, dsn string, allowFail bool, args ...string) (string, error) {
	t.Helper()
	out, err := pgqueuerCmd(ctx, t, dsn, args...).CombinedOutput()
	if err != nil && !allowFail {
		t.Fatalf("PGQueuer %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), err
}

// runPGQueuerErr is runPGQueuer for a goroutine: it returns the error
// (with PGQueuer's stderr) instead of failing the test, and stdout alone.
func runPGQueuerErr(ctx context.Context, t *testing.T, dsn string, args ...string) (string, error) {
	out, err := pgqueuerCmd(ctx, t, dsn, args...).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = fmt.Errorf("%w: %s", err, ee.Stderr)
	}
	return string(out), err
}

// pyScript is a PGQueuer script: the imports the scripts here use, defs
// (module level), then body, the statements of an async main that has
// conn (an asyncpg connection to the test database) and driver (PGQueuer's
// AsyncpgDriver on it); body is indented as main's statements are.
func pyScript(defs, body string) string {
	return `
import asyncio, json, sys, time, asyncpg
from datetime import timedelta
from pgqueuer.db import AsyncpgDriver
from pgqueuer.errors import RetryRequested
from pgqueuer.models import Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode
` + defs + `
async def main():
    conn = await asyncpg.connect()
    driver = AsyncpgDriver(conn)
` + body + `
    await conn.close()
asyncio.run(main())
`
}

// pyEnqueue enqueues n jobs of entrypoint with PGQueuer's producer.
var pyEnqueue = pyScript("", `
    n, ep = int(sys.argv[1]), sys.argv[2]
    ids = await Queries(driver).enqueue([ep] * n, [b"from-python"] * n, [0] * n)
    print(len(ids))`)

// pyWorker drains entrypoint with PGQueuer's QueueManager and prints the
// number of jobs it ran and the payloads' distinct values.
var pyWorker = pyScript("", `
    qm = QueueManager(Queries(driver))
    ran, payloads = 0, set()
    @qm.entrypoint(sys.argv[1])
    async def work(job):
        nonlocal ran
        ran += 1
        payloads.add(job.payload)
    await qm.run(mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1))
    print(ran, sorted(p.decode() for p in payloads))`)

// processCtx bounds a test that runs PGQueuer's processes: longer than
// testCtx, since each Python start costs a second or more on a busy machine.
func processCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

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
// eachPGQueuerDriver runs f as a parallel subtest per driver, with a
// fresh database tuned for PGQueuer (jit off) and a process deadline; it
// skips, saying why, where PGQueuer cannot run.
func eachPGQueuerDriver(t *testing.T, f func(t *testing.T, ctx context.Context, db *sql.DB, dsn string)) {
	t.Helper()
	pgqueuerPython(t)
	t.Parallel()
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := processCtx(t)
			db, dsn := pgqtest.NewDB(t, d)
			noJIT(t, db)
			f(t, ctx, db, dsn)
		})
	}
}

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
	t.Parallel()
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := processCtx(t)
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
	t.Parallel()
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := processCtx(t)
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

// pySlotQueries is PGQueuer 1.3.2's Queries with its claim replaced by
// one that follows PGQueuer 1.4's dequeue statement (qb.py
// build_dequeue_query as of the capacity-slot change, PGQueuer's
// #761/#774/#777, commit 2f3a8b1; RELEASE.md v1.4.0), in the shape it
// takes when some entrypoint has a concurrency limit and the worker has no
// global limit:
//   - held jobs are counted per entrypoint as every row with a holder
//     (queue_manager_id set), and an entrypoint at its limit is not looked at;
//   - a limited entrypoint's candidates are windowed (at most
//     min(batch, limit - held) of them) before they are locked, so that
//     SKIP LOCKED cannot slide past the cap; unlimited ones lock straight
//     down the backlog;
//   - picked jobs whose heartbeat is older than the timeout compete with
//     the queued ones and are taken again keeping the slot they hold;
//   - each fresh claim of a limited entrypoint is paired by rank with the
//     lowest free slot among [0, held + min(batch, remaining)), and a claim
//     left without one is dropped;
//   - a lost race on pgqueuer_picked_slot_idx (unique violation, or a
//     deadlock) is an empty batch.
//
// The statement is our own text (PGQueuer 1.4-1.6 cannot be installed here:
// docs/pgqueuer-compat.md says why); the rest of the worker is 1.3.2's,
// whose retry and hold leave slot as 1.4's do.
const pySlotQueries = `
CLAIM = """
WITH params AS (
    SELECT unnest($2::text[]) AS entrypoint, unnest($3::bigint[]) AS lim
),
held AS (
    SELECT h.entrypoint, count(*) AS n FROM pgqueuer h
    WHERE h.queue_manager_id IS NOT NULL AND h.entrypoint = ANY($2)
    GROUP BY h.entrypoint
),
room AS (
    SELECT params.entrypoint,
           CASE WHEN params.lim <= 0 THEN NULL ELSE params.lim - coalesce(held.n, 0) END AS remaining
    FROM params LEFT JOIN held ON held.entrypoint = params.entrypoint
    WHERE params.lim <= 0 OR coalesce(held.n, 0) < params.lim
),
open_claims AS (
    SELECT c.id, c.priority, room.entrypoint FROM room CROSS JOIN LATERAL (
        SELECT q.id, q.priority FROM pgqueuer q
        WHERE q.entrypoint = room.entrypoint AND q.status = 'queued' AND q.execute_after < now()
        ORDER BY q.priority DESC, q.id LIMIT $1
        FOR UPDATE SKIP LOCKED
    ) c
    WHERE room.remaining IS NULL
),
capped_claims AS (
    SELECT c.id, c.priority, room.entrypoint FROM room CROSS JOIN LATERAL (
        SELECT l.id, l.priority FROM (
            SELECT w.id FROM pgqueuer w
            WHERE w.entrypoint = room.entrypoint AND w.status = 'queued' AND w.execute_after < now()
            ORDER BY w.priority DESC, w.id LIMIT least($1, room.remaining)
        ) win CROSS JOIN LATERAL (
            SELECT t.id, t.priority FROM pgqueuer t
            WHERE t.id = win.id AND t.status = 'queued' AND t.execute_after < now()
            FOR UPDATE OF t SKIP LOCKED
        ) l
        ORDER BY l.priority DESC, l.id LIMIT least($1, room.remaining)
    ) c
    WHERE room.remaining IS NOT NULL
),
fresh AS (
    SELECT u.id, u.priority, u.entrypoint FROM (
        SELECT * FROM open_claims UNION ALL SELECT * FROM capped_claims
    ) u ORDER BY u.priority DESC, u.id LIMIT $1
),
stale AS (
    SELECT s.id, s.priority, s.entrypoint FROM pgqueuer s
    WHERE s.status = 'picked' AND s.entrypoint = ANY($2)
      AND s.heartbeat < now() - $5::interval AND s.execute_after < now()
    ORDER BY s.priority DESC, s.id LIMIT $1
    FOR UPDATE SKIP LOCKED
),
eligible AS (
    SELECT * FROM (
        SELECT id, priority, entrypoint, true AS is_fresh FROM fresh
        UNION ALL
        SELECT id, priority, entrypoint, false FROM stale
    ) e ORDER BY priority DESC, id LIMIT $1
),
seats AS (
    SELECT room.entrypoint, g.slot,
           row_number() OVER (PARTITION BY room.entrypoint ORDER BY g.slot) AS rank
    FROM room JOIN params ON params.entrypoint = room.entrypoint
    CROSS JOIN LATERAL generate_series(0, params.lim - room.remaining + least($1, room.remaining) - 1) AS g(slot)
    WHERE room.remaining IS NOT NULL AND NOT EXISTS (
        SELECT FROM pgqueuer h
        WHERE h.entrypoint = room.entrypoint AND h.status = 'picked' AND h.slot = g.slot)
),
paired AS (
    SELECT r.id, seats.slot FROM (
        SELECT id, entrypoint, row_number() OVER (PARTITION BY entrypoint ORDER BY priority DESC, id) AS rank
        FROM eligible WHERE is_fresh
    ) r JOIN seats ON seats.entrypoint = r.entrypoint AND seats.rank = r.rank
),
claimed AS (
    UPDATE pgqueuer j
    SET status = 'picked', updated = now(), heartbeat = now(), queue_manager_id = $4,
        slot = CASE WHEN e.is_fresh THEN paired.slot ELSE j.slot END
    FROM eligible e
    LEFT JOIN paired ON paired.id = e.id
    LEFT JOIN params ON params.entrypoint = e.entrypoint
    WHERE j.id = e.id AND (NOT e.is_fresh OR params.lim <= 0 OR paired.slot IS NOT NULL)
    RETURNING j.*
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority)
    SELECT id, status, entrypoint, priority FROM claimed
)
SELECT * FROM claimed ORDER BY priority DESC, id
"""
class SlotQueries(Queries):
    async def dequeue(self, batch_size, entrypoints, queue_manager_id, global_concurrency_limit, heartbeat_timeout):
        try:
            rows = await self.driver.fetch(CLAIM, batch_size, list(entrypoints),
                [e.concurrency_limit for e in entrypoints.values()], queue_manager_id, heartbeat_timeout)
        except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
            return []
        return [Job.model_validate(r) for r in rows]
`

// pyFleetWorker drains the entrypoints in argv[3:] with PGQueuer's
// QueueManager ("lim" with the concurrency limit argv[1]; argv[2] "slots"
// claims with pySlotQueries) and prints one JSON line per handler call:
// [job_id, entrypoint, attempts, start_ns, end_ns].
var pyFleetWorker = pyScript(pySlotQueries, `
    limit, rule = int(sys.argv[1]), sys.argv[2]
    qm = QueueManager(SlotQueries(driver) if rule == "slots" else Queries(driver))
    runs = []
    def handler(sleep):
        async def work(job):
            start = time.time_ns()
            if sleep:
                await asyncio.sleep(sleep)
            runs.append([job.id, job.entrypoint, job.attempts, start, time.time_ns()])
            if job.entrypoint == "flaky" and job.attempts == 0:
                raise RetryRequested(delay=timedelta(0))
        return work
    for ep in sys.argv[3:]:
        lim = ep == "lim"
        qm.entrypoint(ep, concurrency_limit=limit if lim else 0)(handler(0.005 if lim else 0))
    await qm.run(mode=QueueExecutionMode.drain, batch_size=50, dequeue_timeout=timedelta(seconds=1))
    for r in runs:
        print(json.dumps(r))`)

type fleetRun struct {
	id         int64
	entrypoint string
	attempts   int
	start, end int64
	side       string
}

// TestMixedFleet: one pgq worker and one PGQueuer 1.3.2 worker drain
// 20,000 jobs of four entrypoints together. Every job runs to success
// exactly once (a retried job once per attempt), every log sequence is
// complete, retries cross from one side to the other, and pgq holds the
// concurrency limit of one entrypoint for what it runs. PGQueuer 1.3.2
// counts without a lock and takes no capacity slot, so the fleet-wide
// peak is reported, not asserted (TestMixedFleetSlots asserts it).
func TestMixedFleet(t *testing.T) {
	mixedFleet(t, "1.3.2", map[string]int{"a": 8000, "b": 8000, "flaky": 3400, "lim": 600})
}

// TestMixedFleetSlots: as TestMixedFleet, with a PGQueuer worker whose
// claims follow PGQueuer 1.4's capacity-slot rule (pySlotQueries): the
// concurrency limit holds fleet-wide.
func TestMixedFleetSlots(t *testing.T) {
	mixedFleet(t, "slots", map[string]int{"a": 2000, "flaky": 500, "lim": 1500})
}

// mixedFleet runs the mixed-fleet test with PGQueuer claiming by rule
// (see pyFleetWorker) and the jobs counts (per entrypoint; "lim" has a
// concurrency limit of 3 on both sides, "flaky" fails its first attempt).
func mixedFleet(t *testing.T, rule string, counts map[string]int) {
	pgqueuerPython(t)
	t.Parallel()
	const limit = 3
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			db, dsn := pgqtest.NewDB(t, d)
			noJIT(t, db)
			var jobs []pgq.NewJob
			eps := []string{strconv.Itoa(limit), rule}
			for ep, n := range counts {
				eps = append(eps, ep)
				for range n {
					jobs = append(jobs, pgq.NewJob{Entrypoint: ep})
				}
			}
			rand.Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })
			for i := 0; i < len(jobs); i += 5000 {
				if _, err := pgq.NewQueries(db).EnqueueBatch(ctx, jobs[i:min(i+5000, len(jobs))]); err != nil {
					t.Fatal(err)
				}
			}

			var mu sync.Mutex
			var runs []fleetRun
			record := func(j *pgq.Job, start time.Time) {
				mu.Lock()
				defer mu.Unlock()
				runs = append(runs, fleetRun{int64(j.ID), j.Entrypoint, int(j.Attempts), start.UnixNano(), time.Now().UnixNano(), "pgq"})
			}
			newQM := func() *pgq.QueueManager {
				qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
				for ep := range counts {
					register(t, qm, ep, limit, record)
				}
				return qm
			}
			pyDone := make(chan string, 1)
			go func() {
				out, err := runPGQueuerErr(ctx, t, dsn, append([]string{"-c", pyFleetWorker}, eps...)...)
				if err != nil {
					out = "ERROR " + err.Error() + "\n" + out
				}
				pyDone <- out
			}()
			// pgq starts once PGQueuer works, so that the two claim
			// side by side from the start.
			for scalar[int](t, db, "SELECT count(*) FROM pgqueuer WHERE status = 'picked'") == 0 && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
			drain(t, ctx, newQM())
			out := <-pyDone
			if strings.HasPrefix(out, "ERROR ") {
				t.Fatalf("PGQueuer worker: %s", out)
			}

			for _, line := range strings.Split(out, "\n") {
				var r []any
				if !strings.HasPrefix(line, "[") {
					continue
				}
				if err := json.Unmarshal([]byte(line), &r); err != nil || len(r) != 5 {
					t.Fatalf("PGQueuer output line %q: %v", line, err)
				}
				runs = append(runs, fleetRun{int64(r[0].(float64)), r[1].(string), int(r[2].(float64)),
					int64(r[3].(float64)), int64(r[4].(float64)), "pgqueuer"})

			}
			// A second pgq pass picks up whatever PGQueuer requeued as it
			// stopped (a retry landing after pgq's drain ended).
			drain(t, ctx, newQM())

			// Exactly once per attempt.
			type key struct {
				id       int64
				attempts int
			}
			seen := map[key]string{}
			perSide := map[string]int{}
			for _, r := range runs {
				k := key{r.id, r.attempts}
				if prev, dup := seen[k]; dup {
					t.Fatalf("job %d attempt %d ran twice (%s and %s)", r.id, r.attempts, prev, r.side)
				}
				seen[k] = r.side
				perSide[r.side]++
			}
			want := 0
			for ep, n := range counts {
				want += n
				if ep == "flaky" {
					want += n
				}
			}
			if len(seen) != want {
				t.Fatalf("%d handler calls, want %d (pgq %d, PGQueuer %d)", len(seen), want, perSide["pgq"], perSide["pgqueuer"])
			}
			if perSide["pgq"] == 0 || perSide["pgqueuer"] == 0 {
				t.Fatalf("one side did no work: %v", perSide)
			}
			// Retries cross: attempt 0 on one side, attempt 1 on the other.
			cross := map[string]int{}
			for k, side := range seen {
				if k.attempts == 1 {
					if first := seen[key{k.id, 0}]; first != side {
						cross[first+"->"+side]++
					}
				}
			}
			// (With fewer jobs PGQueuer, slower to start, may run no retry.)
			if counts["flaky"] >= 3000 && (cross["pgq->pgqueuer"] == 0 || cross["pgqueuer->pgq"] == 0) {
				t.Errorf("retries did not cross both ways: %v", cross)
			}
			fleet, pgqPeak, pyPeak := limPeak(runs, ""), limPeak(runs, "pgq"), limPeak(runs, "pgqueuer")
			t.Logf("PGQueuer claiming by %s: lim jobs started while %d or more ran fleet-wide: %v", rule, limit, startedOver(runs, limit))
			t.Logf("calls: pgq %d, PGQueuer %d; retries crossing: %v; peak concurrency of lim (limit %d): fleet %d, pgq %d, PGQueuer %d",
				perSide["pgq"], perSide["pgqueuer"], cross, limit, fleet, pgqPeak, pyPeak)
			if pgqPeak > limit {
				t.Errorf("pgq ran %d lim jobs at once, limit %d", pgqPeak, limit)
			}
			if rule == "slots" && fleet > limit {
				t.Errorf("the fleet ran %d lim jobs at once, limit %d", fleet, limit)
			}
			if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); n != 0 {
				t.Fatalf("%d jobs left", n)
			}
			bad := scalar[int](t, db, `SELECT count(*) FROM (
				SELECT entrypoint, string_agg(status::text, ',' ORDER BY created, id) AS seq
				FROM pgqueuer_log GROUP BY job_id, entrypoint) s
				WHERE seq <> CASE WHEN entrypoint = 'flaky' THEN 'queued,picked,queued,picked,successful'
				                  ELSE 'queued,picked,successful' END`)
			if bad != 0 {
				t.Fatalf("%d jobs with an incomplete or wrong log sequence", bad)
			}
		})
	}
}

// limPeak is the most "lim" runs at once of side ("" for both).
func limPeak(runs []fleetRun, side string) int64 {
	var edges [][2]int64
	for _, r := range runs {
		if r.entrypoint == "lim" && (side == "" || r.side == side) {
			edges = append(edges, [2]int64{r.start, 1}, [2]int64{r.end, -1})
		}
	}
	slices.SortFunc(edges, func(x, y [2]int64) int {
		if x[0] != y[0] {
			return cmp.Compare(x[0], y[0])
		}
		return cmp.Compare(x[1], y[1]) // ends before starts at the same instant
	})
	peak, cur := int64(0), int64(0)
	for _, e := range edges {
		cur += e[1]
		peak = max(peak, cur)
	}
	return peak
}

// startedOver counts, per side, the "lim" runs that started while limit
// or more ran fleet-wide: who overshoots.
func startedOver(runs []fleetRun, limit int) map[string]int {
	over := map[string]int{}
	for _, r := range runs {
		if r.entrypoint != "lim" {
			continue
		}
		running := 0
		for _, o := range runs {
			if o.entrypoint == "lim" && o.start < r.start && o.end > r.start {
				running++
			}
		}
		if running >= limit {
			over[r.side]++
		}
	}
	return over
}

// register adds the fleet test's handler for ep to qm.
func register(t *testing.T, qm *pgq.QueueManager, ep string, limit int, record func(*pgq.Job, time.Time)) {
	t.Helper()
	var opts []pgq.EntrypointOption
	switch ep {
	case "lim":
		opts = append(opts, pgq.WithConcurrencyLimit(limit))
	case "flaky":
		opts = append(opts, pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 2}))
	}
	err := qm.Entrypoint(ep, func(ctx context.Context, j *pgq.Job) error {
		start := time.Now()
		if ep == "lim" {
			time.Sleep(5 * time.Millisecond)
		}
		record(j, start)
		if ep == "flaky" && j.Attempts == 0 {
			return pgq.RetryAfter(0)
		}
		return nil
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
}

// pyWatch waits with PGQueuer's CompletionWatcher for the ids in argv and
// prints "id status" per id. Its safety poll comes after the wait's 60 s,
// so only notifications resolve it (PGQueuer 1.6 can turn the poll off).
var pyWatch = pyScript("from pgqueuer.core.completion import CompletionWatcher\n", `
    ids = [int(a) for a in sys.argv[1:]]
    async with CompletionWatcher(driver, queries=Queries(driver), refresh_interval=timedelta(hours=1)) as w:
        statuses = await asyncio.wait_for(asyncio.gather(*[w.wait_for(i) for i in ids]), 60)
    for i, s in zip(ids, statuses):
        print(i, s)`)

// pyHoldWorker drains entrypoint with PGQueuer's QueueManager, holding
// every job whose handler fails (on_failure="hold"); the handler fails.
var pyHoldWorker = pyScript("", `
    qm = QueueManager(Queries(driver))
    @qm.entrypoint(sys.argv[1], on_failure="hold")
    async def work(job):
        raise ValueError("python says no")
    await qm.run(mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1))`)

func TestCompletionWatchersCross(t *testing.T) {
	pgqueuerPython(t)
	t.Parallel()
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := processCtx(t)
			db, dsn := pgqtest.NewDB(t, d)
			noJIT(t, db)
			q := pgq.NewQueries(db)

			// PGQueuer's watcher sees pgq's outcomes: success, handler
			// error, cancellation.
			ok, _ := q.Enqueue(ctx, "go_ok", nil)
			bad, _ := q.Enqueue(ctx, "go_bad", nil)
			gone, err := q.Enqueue(ctx, "go_later", nil, pgq.WithExecuteAfter(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			watched := make(chan string, 1)
			go func() {
				out, err := runPGQueuerErr(ctx, t, dsn, "-c", pyWatch, strconv.FormatInt(int64(ok), 10), strconv.FormatInt(int64(bad), 10), strconv.FormatInt(int64(gone), 10))
				if err != nil {
					out = "ERROR " + err.Error()
				}
				watched <- out
			}()
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			_ = qm.Entrypoint("go_ok", func(context.Context, *pgq.Job) error { return nil })
			_ = qm.Entrypoint("go_bad", func(context.Context, *pgq.Job) error { return errors.New("go says no") })
			drain(t, ctx, qm)
			if err := q.MarkJobAsCancelled(ctx, []pgq.JobID{gone}); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("%d successful\n%d exception\n%d canceled", ok, bad, gone)
			if got := strings.TrimSpace(<-watched); got != want {
				t.Fatalf("PGQueuer's CompletionWatcher saw\n%s\nwant\n%s", got, want)
			}

			// pgq's watcher sees PGQueuer's outcomes.
			var ids []pgq.JobID
			for range 5 {
				id, err := q.Enqueue(ctx, "to_py", []byte("from-go"))
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			w, err := pgq.NewCompletionWatcher(ctx, db, pgq.WithListenDSN(dsn))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			got := make(chan map[pgq.JobID]pgq.Status, 1)
			go func() {
				m, _ := w.WaitForAll(ctx, ids)
				got <- m
			}()
			runPGQueuer(t, ctx, dsn, false, "-c", pyWorker, "to_py")
			m := <-got
			for _, id := range ids {
				if m[id] != pgq.StatusSuccessful {
					t.Fatalf("pgq's watcher: job %d is %q after PGQueuer ran it", id, m[id])
				}
			}
		})
	}
}

// A job PGQueuer held after its failure is listed and requeued by the pgq
// command (the built binary, run as a process), and one pgq held by
// PGQueuer's command.
func TestHeldJobsCross(t *testing.T) {
	pgqueuerPython(t)
	t.Parallel()
	cli := buildCLI(t)
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := processCtx(t)
			db, dsn := pgqtest.NewDB(t, d)
			noJIT(t, db)
			q := pgq.NewQueries(db)

			// PGQueuer holds a failed job; the pgq command lists it and
			// requeues it, and a pgq worker runs it.
			pyJob, err := q.Enqueue(ctx, "held_py", []byte("p"))
			if err != nil {
				t.Fatal(err)
			}
			runPGQueuer(t, ctx, dsn, false, "-c", pyHoldWorker, "held_py")
			id := strconv.FormatInt(int64(pyJob), 10)
			if out := runCLI(t, ctx, cli, "failed", "--dsn", dsn, "--driver", d); !strings.Contains(out, id) || !strings.Contains(out, "python says no") {
				t.Fatalf("pgq failed does not list PGQueuer's held job %s with its error:\n%s", id, out)
			}
			if out := runCLI(t, ctx, cli, "requeue", id, "--dsn", dsn, "--driver", d); !strings.Contains(out, id) {
				t.Fatalf("pgq requeue %s: %s", id, out)
			}
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			ran := 0
			_ = qm.Entrypoint("held_py", func(context.Context, *pgq.Job) error { ran++; return nil })
			drain(t, ctx, qm)
			if ran != 1 {
				t.Fatalf("pgq ran the requeued job %d times", ran)
			}
			const heldThenRun = "queued,picked,failed,queued,picked,successful"
			if seq := logSequence(t, db, pyJob); seq != heldThenRun {
				t.Fatalf("log of PGQueuer's held job: %s, want %s", seq, heldThenRun)
			}

			// pgq holds a failed job; PGQueuer's CLI lists and requeues it,
			// and its worker runs it.
			goJob, err := q.Enqueue(ctx, "to_py", []byte("from-go"))
			if err != nil {
				t.Fatal(err)
			}
			qm2 := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			_ = qm2.Entrypoint("to_py", func(context.Context, *pgq.Job) error { return errors.New("go says no") }, pgq.OnFailure(pgq.Hold))
			drain(t, ctx, qm2)
			out, _ := runPGQueuer(t, ctx, dsn, false, "-m", "pgqueuer", "failed")
			if !strings.Contains(out, strconv.FormatInt(int64(goJob), 10)) || !strings.Contains(out, "to_py") {
				t.Fatalf("pgqueuer failed does not list pgq's held job %d:\n%s", goJob, out)
			}
			if out, _ := runPGQueuer(t, ctx, dsn, false, "-m", "pgqueuer", "requeue", strconv.FormatInt(int64(goJob), 10)); !strings.Contains(out, "Re-queued 1 job") {
				t.Fatalf("pgqueuer requeue: %s", out)
			}
			if out, _ := runPGQueuer(t, ctx, dsn, false, "-c", pyWorker, "to_py"); strings.TrimSpace(out) != "1 ['from-go']" {
				t.Fatalf("PGQueuer's worker after its requeue: %q", out)
			}
			if seq := logSequence(t, db, goJob); seq != heldThenRun {
				t.Fatalf("log of pgq's held job: %s, want %s", seq, heldThenRun)
			}
		})
	}
}

// pyCancelWorker drains entrypoint argv[1] with PGQueuer's QueueManager; its
// handler waits up to a minute inside the job's cancellation scope, then
// prints "id canceled|finished seconds".
var pyCancelWorker = pyScript("", `
    qm = QueueManager(Queries(driver))
    @qm.entrypoint(sys.argv[1], accepts_context=True)
    async def work(job, ctx):
        start = time.monotonic()
        with ctx.cancellation:
            await asyncio.sleep(60)
        print(job.id, "canceled" if ctx.cancellation.cancel_called else "finished", round(time.monotonic() - start), flush=True)
    await qm.run(mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1))`)

// pyCancel cancels the jobs argv[1:] with PGQueuer's mark_job_as_cancelled.
var pyCancel = pyScript("", `
    await Queries(driver).mark_job_as_cancelled([int(a) for a in sys.argv[1:]])`)

// logSequence is the job's log statuses in order, comma-separated.
func logSequence(t *testing.T, db *sql.DB, id pgq.JobID) string {
	t.Helper()
	return scalar[string](t, db, `SELECT coalesce(string_agg(status::text, ',' ORDER BY created, id), '') FROM pgqueuer_log WHERE job_id = $1`, int64(id))
}

// Cancellation crosses languages: a job pgq enqueued that PGQueuer runs,
// canceled through pgq, ends PGQueuer's handler and the job; a job pgq
// runs, canceled through PGQueuer, cancels the handler's context.
func TestCancellationCrosses(t *testing.T) {
	pgqueuerPython(t)
	t.Parallel()
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := processCtx(t)
			db, dsn := pgqtest.NewDB(t, d)
			noJIT(t, db)
			q := pgq.NewQueries(db)

			// pgq cancels a job PGQueuer runs.
			pyJob, err := q.Enqueue(ctx, "py_long", nil)
			if err != nil {
				t.Fatal(err)
			}
			out := make(chan string, 1)
			go func() {
				o, err := runPGQueuerErr(ctx, t, dsn, "-c", pyCancelWorker, "py_long")
				if err != nil {
					o = "ERROR " + err.Error()
				}
				out <- o
			}()
			for scalar[int](t, db, "SELECT count(*) FROM pgqueuer WHERE id = $1 AND status = 'picked'", int64(pyJob)) == 0 {
				if ctx.Err() != nil {
					t.Fatal("PGQueuer never picked the job")
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // into the handler's sleep
			if err := q.MarkJobAsCancelled(ctx, []pgq.JobID{pyJob}); err != nil {
				t.Fatal(err)
			}
			got := strings.Fields(<-out)
			if len(got) != 3 || got[0] != strconv.FormatInt(int64(pyJob), 10) || got[1] != "canceled" {
				t.Fatalf("PGQueuer's handler: %q, want %d canceled", got, pyJob)
			}
			if secs, _ := strconv.Atoi(got[2]); secs > 20 {
				t.Fatalf("PGQueuer's handler ran %d s after the cancellation", secs)
			}
			if seq := logSequence(t, db, pyJob); seq != "queued,picked,canceled" {
				t.Fatalf("log of the job PGQueuer ran: %s", seq)
			}

			// PGQueuer cancels a job pgq runs.
			goJob, err := q.Enqueue(ctx, "go_long", nil)
			if err != nil {
				t.Fatal(err)
			}
			started := make(chan struct{})
			ended := make(chan error, 1)
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			if err := qm.Entrypoint("go_long", func(ctx context.Context, _ *pgq.Job) error {
				close(started)
				select {
				case <-ctx.Done():
					ended <- ctx.Err()
					return ctx.Err()
				case <-time.After(time.Minute):
					ended <- nil
					return nil
				}
			}); err != nil {
				t.Fatal(err)
			}
			runWorker(t, ctx, qm)
			<-started
			runPGQueuer(t, ctx, dsn, false, "-c", pyCancel, strconv.FormatInt(int64(goJob), 10))
			select {
			case err := <-ended:
				if err == nil {
					t.Fatal("pgq's handler ran to its end")
				}
			case <-time.After(20 * time.Second):
				t.Fatal("pgq's handler context not canceled")
			}
			time.Sleep(200 * time.Millisecond) // pgq's outcome, if it wrote one
			if seq := logSequence(t, db, goJob); seq != "queued,picked,canceled" {
				t.Fatalf("log of the job pgq ran: %s", seq)
			}
		})
	}
}

// buildCLI builds the pgq command into a temporary directory and returns
// its path.
func buildCLI(t *testing.T) string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build cmd/pgq with: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "pgq")
	if out, err := exec.Command(goCmd, "build", "-o", bin, "./cmd/pgq").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/pgq: %v\n%s", err, out)
	}
	return bin
}

// runCLI runs the pgq command with args and returns its output; a
// non-zero exit fails the test.
func runCLI(t *testing.T, ctx context.Context, bin string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pgq %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pyCrashWorker runs PGQueuer's QueueManager on entrypoint argv[1] with the
// concurrency limit argv[2], claiming as 1.4 does (pySlotQueries), with a
// heartbeat timeout of argv[4] seconds; its handler prints "started ID",
// sleeps argv[3] seconds and prints "done ID". It runs until it is stopped.
var pyCrashWorker = pyScript(pySlotQueries, `
    qm = QueueManager(SlotQueries(driver))
    @qm.entrypoint(sys.argv[1], concurrency_limit=int(sys.argv[2]))
    async def work(job):
        print("started", job.id, flush=True)
        await asyncio.sleep(float(sys.argv[3]))
        print("done", job.id, flush=True)
    await qm.run(dequeue_timeout=timedelta(milliseconds=200), heartbeat_timeout=timedelta(seconds=float(sys.argv[4])))`)

// heldSlots is the slot of each job of entrypoint that a worker holds, and
// the holders, as strings.
func heldSlots(t *testing.T, db *sql.DB, entrypoint string) (map[int64]int64, map[string]bool) {
	t.Helper()
	rows, err := db.Query(`SELECT id, slot, queue_manager_id::text FROM pgqueuer
		WHERE entrypoint = $1 AND status = 'picked' AND slot IS NOT NULL`, entrypoint)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	slots, holders := map[int64]int64{}, map[string]bool{}
	for rows.Next() {
		var id, slot int64
		var holder string
		if err := rows.Scan(&id, &slot, &holder); err != nil {
			t.Fatal(err)
		}
		slots[id], holders[holder] = slot, true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return slots, holders
}

// A worker killed while it runs jobs of a limited entrypoint loses none of
// them to the other language: PGQueuer (claiming as 1.4 does) takes a
// killed pgq process's stale jobs again, keeping the capacity slots pgq gave
// them, and runs them; pgq releases a killed PGQueuer process's stale jobs
// (clearing their slots), claims them with slots of its own and runs them.
// The rescuers' heartbeat timeouts are 3 s (PGQueuer) and 2 s (pgq). The
// killed PGQueuer worker's is 60 s, so that on a busy machine it does not
// take its own jobs again (its heartbeat late) before it is killed.
func TestCrashRecoveryCrosses(t *testing.T) {
	pgqueuerPython(t)
	t.Parallel()
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := processCtx(t)
			db, dsn := pgqtest.NewDB(t, d)
			noJIT(t, db)
			q := pgq.NewQueries(db)
			if _, err := db.Exec("CREATE TABLE crash_marks (job_id bigint, pid int)"); err != nil {
				t.Fatal(err)
			}

			// A pgq process holds two jobs in slots 0 and 1, and dies.
			goJobs := make([]pgq.JobID, 2)
			for i := range goJobs {
				id, err := q.Enqueue(ctx, "crash", nil)
				if err != nil {
					t.Fatal(err)
				}
				goJobs[i] = id
			}
			worker := startWorker(t, d, dsn, workerEnvMode+"=limited")
			for _, id := range goJobs {
				waitMark(t, db, id, worker.Process.Pid)
			}
			pgqSlots, pgqHolders := heldSlots(t, db, "crash")
			if len(pgqSlots) != 2 || len(pgqHolders) != 1 || pgqSlots[int64(goJobs[0])] == pgqSlots[int64(goJobs[1])] {
				t.Fatalf("pgq's process holds slots %v (holders %v), want two distinct", pgqSlots, pgqHolders)
			}
			if err := worker.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = worker.Wait()

			pyCtx, stopPy := context.WithCancel(ctx)
			py := pgqueuerCmd(pyCtx, t, dsn, "-c", pyCrashWorker, "crash", "2", "0.3", "3")
			py.Stderr = os.Stderr
			if err := py.Start(); err != nil {
				t.Fatal(err)
			}
			// PGQueuer takes them again once stale, in the slots they had.
			var kept bool
			for !kept {
				if ctx.Err() != nil {
					t.Fatal("PGQueuer did not take the killed pgq process's jobs again")
				}
				slots, holders := heldSlots(t, db, "crash")
				kept = len(slots) == 2 && len(holders) == 1 && !holders[firstKey(pgqHolders)]
				if kept && (slots[int64(goJobs[0])] != pgqSlots[int64(goJobs[0])] || slots[int64(goJobs[1])] != pgqSlots[int64(goJobs[1])]) {
					t.Fatalf("PGQueuer took the jobs again in slots %v, pgq had given them %v", slots, pgqSlots)
				}
				time.Sleep(20 * time.Millisecond)
			}
			for scalar[int](t, db, "SELECT count(*) FROM pgqueuer") > 0 {
				if ctx.Err() != nil {
					t.Fatal("PGQueuer did not finish the jobs it took again")
				}
				time.Sleep(20 * time.Millisecond)
			}
			stopPy()
			_ = py.Wait()
			for _, id := range goJobs {
				if seq := logSequence(t, db, id); seq != "queued,picked,picked,successful" {
					t.Fatalf("log of job %d (pgq killed, PGQueuer took it again): %s", id, seq)
				}
			}

			// A PGQueuer process holds two jobs in slots 0 and 1, and dies.
			pyJobs := make([]pgq.JobID, 2)
			for i := range pyJobs {
				id, err := q.Enqueue(ctx, "crash_py", nil)
				if err != nil {
					t.Fatal(err)
				}
				pyJobs[i] = id
			}
			py = pgqueuerCmd(ctx, t, dsn, "-c", pyCrashWorker, "crash_py", "2", "600", "60")
			py.Stderr = os.Stderr
			out, err := py.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := py.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			for started := 0; started < 2; {
				if !sc.Scan() {
					t.Fatalf("PGQueuer's worker ended before it started both jobs: %v", sc.Err())
				}
				if strings.HasPrefix(sc.Text(), "started ") {
					started++
				}
			}
			pySlots, _ := heldSlots(t, db, "crash_py")
			if len(pySlots) != 2 {
				t.Fatalf("PGQueuer's process holds slots %v, want two", pySlots)
			}
			if err := py.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = py.Wait()

			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			var mu sync.Mutex
			ranIn := map[pgq.JobID]sql.NullInt64{} // the slot pgq holds each job in as it runs it
			if err := qm.Entrypoint("crash_py", func(ctx context.Context, j *pgq.Job) error {
				var slot sql.NullInt64
				if err := db.QueryRowContext(ctx, "SELECT slot FROM pgqueuer WHERE id = $1", int64(j.ID)).Scan(&slot); err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				ranIn[j.ID] = slot
				return nil
			}, pgq.WithConcurrencyLimit(2)); err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- qm.Run(runCtx, pgq.WithHeartbeatTimeout(2*time.Second), pgq.WithDequeueTimeout(100*time.Millisecond))
			}()
			for scalar[int](t, db, "SELECT count(*) FROM pgqueuer") > 0 {
				if ctx.Err() != nil {
					t.Fatal("pgq did not take the killed PGQueuer process's jobs")
				}
				time.Sleep(20 * time.Millisecond)
			}
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			for _, id := range pyJobs {
				if slot, ok := ranIn[id]; !ok || !slot.Valid || slot.Int64 < 0 || slot.Int64 > 1 {
					t.Fatalf("pgq ran job %d in slot %v (ran: %v), want 0 or 1", id, slot, ok)
				}
				if seq := logSequence(t, db, id); seq != "queued,picked,queued,picked,successful" {
					t.Fatalf("log of job %d (PGQueuer killed, pgq released and ran it): %s", id, seq)
				}
			}
		})
	}
}

// firstKey is any one key of m.
func firstKey(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}

// pyDedupe enqueues, with PGQueuer's producer, one job of entrypoint "dd"
// per argument MODE:KEY (MODE is its on_conflict, "raise" or "skip") and
// prints one word per argument: "new", "duplicate" (DuplicateJobError) or
// "skipped" (no id).
var pyDedupe = pyScript("from pgqueuer.errors import DuplicateJobError\n", `
    q = Queries(driver)
    for arg in sys.argv[1:]:
        mode, key = arg.split(":")
        try:
            ids = await q.enqueue("dd", None, dedupe_key=key, on_conflict=mode)
            print("new" if ids[0] is not None else "skipped")
        except DuplicateJobError:
            print("duplicate")`)

// Dedupe keys cross: a key held by a job one side enqueued is a duplicate
// for the other side (PGQueuer's on_conflict="skip" infers pgq's unique
// index as its arbiter), and is free again for both once the job ran.
func TestDedupeKeysCross(t *testing.T) {
	eachPGQueuerDriver(t, func(t *testing.T, ctx context.Context, db *sql.DB, dsn string) {
		q := pgq.NewQueries(db)
		if _, err := q.Enqueue(ctx, "dd", nil, pgq.WithDedupeKey("from-go")); err != nil {
			t.Fatal(err)
		}
		out, _ := runPGQueuer(t, ctx, dsn, false, "-c", pyDedupe, "raise:from-go", "skip:from-go", "raise:from-py", "skip:other")
		if got := strings.Fields(out); !slices.Equal(got, []string{"duplicate", "skipped", "new", "new"}) {
			t.Fatalf("PGQueuer's enqueues against pgq's keys: %q, want duplicate skipped new new", got)
		}
		if _, err := q.Enqueue(ctx, "dd", nil, pgq.WithDedupeKey("from-py")); !errors.Is(err, pgq.ErrDuplicateJob) {
			t.Fatalf("pgq's enqueue of PGQueuer's key: %v, want ErrDuplicateJob", err)
		}
		// A picked job keeps its key on both sides.
		started, release := make(chan struct{}), make(chan struct{})
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		var once sync.Once
		_ = qm.Entrypoint("dd", func(context.Context, *pgq.Job) error {
			once.Do(func() { close(started) })
			<-release
			return nil
		}, pgq.WithConcurrencyLimit(1))
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- qm.Run(runCtx, pgq.WithDequeueTimeout(100*time.Millisecond)) }()
		<-started
		picked := scalar[string](t, db, "SELECT dedupe_key FROM pgqueuer WHERE status = 'picked'")
		out, _ = runPGQueuer(t, ctx, dsn, false, "-c", pyDedupe, "raise:"+picked)
		if strings.TrimSpace(out) != "duplicate" {
			t.Fatalf("PGQueuer's enqueue of the key of a job pgq runs: %q, want duplicate", out)
		}
		close(release)
		for scalar[int](t, db, "SELECT count(*) FROM pgqueuer") > 0 && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// Every job ran: the keys are free for both sides.
		out, _ = runPGQueuer(t, ctx, dsn, false, "-c", pyDedupe, "raise:from-go", "skip:other")
		if got := strings.Fields(out); !slices.Equal(got, []string{"new", "new"}) {
			t.Fatalf("PGQueuer's enqueues after the jobs ran: %q, want new new", got)
		}
		if _, err := q.Enqueue(ctx, "dd", nil, pgq.WithDedupeKey("from-py")); err != nil {
			t.Fatalf("pgq's enqueue after the jobs ran: %v", err)
		}
	})
}

// A fleet in the middle of an upgrade: the schema is as PGQueuer 1.6
// installs it (pgqueuer16DDL), and a PGQueuer 1.3.2 worker is still there.
// 1.3.2's verify accepts it, its producer's jobs run on pgq and pgq's on
// its QueueManager; 1.3.2's own upgrade on it adds back only the heartbeat
// index 1.6 retired, and pgq still starts.
func TestPGQueuer13OnPGQueuer16Schema(t *testing.T) {
	pgqueuerPython(t)
	t.Parallel()
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := processCtx(t)
			db, dsn := pgqtest.NewDB(t, d, pgqtest.Bare())
			noJIT(t, db)
			if _, err := db.ExecContext(ctx, pgqueuer16DDL); err != nil {
				t.Fatal(err)
			}
			if out, _ := runPGQueuer(t, ctx, dsn, false, "-m", "pgqueuer", "verify", "--expect", "present"); !strings.Contains(out, "All required") {
				t.Fatalf("PGQueuer 1.3.2's verify on 1.6's schema: %s", out)
			}
			if out, _ := runPGQueuer(t, ctx, dsn, false, "-c", pyEnqueue, "20", "from_py"); strings.TrimSpace(out) != "20" {
				t.Fatalf("PGQueuer enqueue: %q", out)
			}
			jobs := make([]pgq.NewJob, 20)
			for i := range jobs {
				jobs[i] = pgq.NewJob{Entrypoint: "to_py", Payload: []byte("from-go")}
			}
			if _, err := pgq.NewQueries(db).EnqueueBatch(ctx, jobs); err != nil {
				t.Fatal(err)
			}
			if out, _ := runPGQueuer(t, ctx, dsn, false, "-c", pyWorker, "to_py"); strings.TrimSpace(out) != "20 ['from-go']" {
				t.Fatalf("PGQueuer 1.3.2's QueueManager on 1.6's schema: %q", out)
			}
			if err := pgq.Upgrade(ctx, db); err != nil { // pgq's paused table
				t.Fatal(err)
			}
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			var ran atomic.Int64
			_ = qm.Entrypoint("from_py", func(context.Context, *pgq.Job) error { ran.Add(1); return nil })
			drain(t, ctx, qm)
			if n := ran.Load(); n != 20 {
				t.Fatalf("pgq ran %d of PGQueuer's 20 jobs", n)
			}
			checkLogSequences(t, db, "to_py", 20)
			checkLogSequences(t, db, "from_py", 20)

			runPGQueuer(t, ctx, dsn, false, "-m", "pgqueuer", "upgrade", "--durability", "durable")
			if diff := pgqueuer16Diff(t, db); len(diff) != 1 || diff[0] != "retired index pgqueuer_heartbeat_id_id1_idx present" {
				t.Fatalf("1.6's schema after PGQueuer 1.3.2's upgrade, against 1.6's declaration:\n%s", strings.Join(diff, "\n"))
			}
			if err := pgq.Verify(ctx, db); err != nil {
				t.Fatalf("pgq.Verify after PGQueuer 1.3.2's upgrade: %v", err)
			}
		})
	}
}
