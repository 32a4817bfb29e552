// Command instructions counts the instructions a PostgreSQL backend runs
// for each job that pgq claims and finishes, with valgrind's callgrind:
// a figure that, unlike CPU time, does not move with what else the
// machine is doing (docs/benchmarks.md, "Instructions a job").
//
// It starts a throwaway server under callgrind (jit and autovacuum off),
// installs pgq's schema in a database and enqueues -queue jobs there,
// then, for each variant of the schema, runs pgq's own JobsClaim and
// JobsFinishSucceeded statements (the generated code, so the figures
// follow the statements as they change) in a loop on one connection:
// -warmup times in one copy of the database and -warmup + -loops times in
// another. The difference between the two backends' totals, divided by
// the jobs of the extra loops, is the instructions a job, with nothing of
// the connection's start in it. The warm-up loops are the connection's
// first plans: PostgreSQL plans a prepared statement for its values on
// its first five runs and only then may keep a generic plan, as it does
// for the rest of a worker's life.
//
// Usage (or make instructions):
//
//	go run ./internal/cmd/instructions [-batch 2000] [-finish-batch 0] [-warmup 6] [-loops 5] [-queue 30000] [-vacuum=true] [-driver pgx] [-variants all] [-keep DIR]
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/lib/pq"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/idruns"
	"github.com/pgq-dev/pgq/internal/pgcluster"
)

// variant is a change to the installed schema, made in the copy of the
// database before the loops run. None of them is ever made by pgq: they
// measure what each part of the schema costs.
type variant struct {
	name string
	desc string
	ddl  []string
}

// dropPickedRows keeps 'picked' rows out of the log, with a row trigger
// whose cost the variant trigger-control measures.
var dropPickedRows = []string{
	`CREATE FUNCTION bench_drop_picked() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN IF NEW.status = 'picked' THEN RETURN NULL; END IF; RETURN NEW; END$$`,
	`CREATE TRIGGER bench_drop_picked BEFORE INSERT ON pgqueuer_log FOR EACH ROW EXECUTE FUNCTION bench_drop_picked()`,
}

// dropPGQueuerIndexes drops the indexes PGQueuer declares that a claimed
// job or a log row enters, besides the primary keys.
var dropPGQueuerIndexes = []string{
	`DROP INDEX pgqueuer_updated_id_id1_idx, pgqueuer_queue_manager_id_idx, pgqueuer_picked_heartbeat_idx,
	 pgqueuer_log_created, pgqueuer_log_status, pgqueuer_log_job_id_status`,
}

// variants are what the tool can measure; "as-installed" is the baseline.
var variants = []variant{
	{name: "as-installed", desc: "pgq's schema as installed"},
	{name: "trigger-control", desc: "a BEFORE INSERT row trigger on the log that keeps every row (control for no-picked-row)",
		ddl: []string{
			`CREATE FUNCTION bench_keep() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$`,
			`CREATE TRIGGER bench_keep BEFORE INSERT ON pgqueuer_log FOR EACH ROW EXECUTE FUNCTION bench_keep()`,
		}},
	{name: "no-picked-row", desc: "the same trigger dropping the 'picked' log rows",
		ddl: dropPickedRows},
	{name: "no-pgqueuer-indexes", desc: "the six PGQueuer indexes a picked or logged row enters, besides the primary keys, dropped",
		ddl: dropPGQueuerIndexes},
	{name: "neither", desc: "both: no 'picked' log rows (the trigger) and none of those six indexes",
		ddl: append(slices.Clone(dropPickedRows), dropPGQueuerIndexes...)},
	{name: "log-seq-cache", desc: "the log's id sequence with CACHE 100",
		ddl: []string{`ALTER SEQUENCE pgqueuer_log_id_seq CACHE 100`}},
	{name: "no-after-trigger", desc: "pgq's dependency trigger on the log (tg_pgqueuer_pgq_after) disabled",
		ddl: []string{`ALTER TABLE pgqueuer_log DISABLE TRIGGER tg_pgqueuer_pgq_after`}},
}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "instructions:", err)
		os.Exit(1)
	}
}

type config struct {
	batch, finishBatch, warmup, loops, queue int
	vacuum                                   bool
	keep, driver                             string
	variants                                 []variant
	verbose                                  bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("instructions", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.IntVar(&c.batch, "batch", 2000, "jobs per claim (and per finish)")
	fs.IntVar(&c.finishBatch, "finish-batch", 0, "outcomes per finish (0: -batch, one finish a claim)")
	fs.BoolVar(&c.vacuum, "vacuum", true, "VACUUM the queue after enqueuing it (false: ANALYZE only, so the claims find rows without hint bits, as a worker does right after an enqueue)")
	fs.IntVar(&c.warmup, "warmup", 6, "claims and finishes run before those counted (a prepared statement's first 5 runs are planned for their values)")
	fs.IntVar(&c.loops, "loops", 5, "claims and finishes counted, after the warm-up")
	fs.IntVar(&c.queue, "queue", 30000, "jobs enqueued before the loops")
	names := fs.String("variants", "all", "comma-separated variants to measure, or all: "+variantNames())
	fs.BoolVar(&c.verbose, "v", false, "log progress on stderr")
	fs.StringVar(&c.driver, "driver", "pgx", "database/sql driver of the counted connection: pgx (a prepared statement's generic plan after its first five runs) or postgres (lib/pq: planned on every run)")
	fs.StringVar(&c.keep, "keep", "", "copy each counted backend's callgrind file into this directory, as VARIANT.LOOPS (for callgrind_annotate)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case c.batch < 1:
		return c, fmt.Errorf("-batch %d: must be at least 1", c.batch)
	case c.finishBatch < 0:
		return c, fmt.Errorf("-finish-batch %d: must not be negative", c.finishBatch)
	case c.driver != "pgx" && c.driver != "postgres":
		return c, fmt.Errorf("-driver %q: must be pgx or postgres", c.driver)
	case c.warmup < 1:
		return c, fmt.Errorf("-warmup %d: must be at least 1", c.warmup)
	case c.loops < 1:
		return c, fmt.Errorf("-loops %d: must be at least 1", c.loops)
	case c.queue < c.batch*(c.warmup+c.loops):
		return c, fmt.Errorf("-queue %d: must hold -batch × (-warmup + -loops) = %d jobs", c.queue, c.batch*(c.warmup+c.loops))
	}
	if c.finishBatch == 0 || c.finishBatch > c.batch {
		c.finishBatch = c.batch
	}
	if *names == "all" {
		c.variants = variants
		return c, nil
	}
	for _, n := range strings.Split(*names, ",") {
		v, ok := findVariant(strings.TrimSpace(n))
		if !ok {
			return c, fmt.Errorf("-variants: unknown variant %q (have %s)", n, variantNames())
		}
		c.variants = append(c.variants, v)
	}
	return c, nil
}

func variantNames() string {
	names := make([]string, len(variants))
	for i, v := range variants {
		names[i] = v.name
	}
	return strings.Join(names, ", ")
}

func findVariant(name string) (variant, bool) {
	for _, v := range variants {
		if v.name == name {
			return v, true
		}
	}
	return variant{}, false
}

// errNoValgrind says the tool cannot run here.
var errNoValgrind = errors.New("valgrind not found (Debian: apt-get install valgrind)")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	valgrind, err := exec.LookPath("valgrind")
	if err != nil {
		return errNoValgrind
	}
	logw := io.Discard
	if cfg.verbose {
		logw = stderr
	}
	logf := func(format string, a ...any) { fmt.Fprintf(logw, "instructions: "+format+"\n", a...) }

	logf("starting a throwaway PostgreSQL under callgrind")
	cl, err := pgcluster.Start(ctx, pgcluster.Options{
		Settings: map[string]string{"jit": "off", "autovacuum": "off"},
		Wrapper: []string{valgrind, "--tool=callgrind", "--trace-children=yes",
			"--callgrind-out-file={root}/callgrind.%p"},
		Log: logw,
	})
	if err != nil {
		return err
	}
	defer cl.Stop()

	admin, err := sql.Open("pgx", cl.DSN("postgres"))
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := prepareBase(ctx, admin, cl, cfg, logf); err != nil {
		return err
	}

	type result struct {
		v      variant
		perJob float64
	}
	var results []result
	for i, v := range cfg.variants {
		logf("variant %s", v.name)
		var counts [2]int64
		for k, loops := range []int{cfg.warmup, cfg.warmup + cfg.loops} {
			db := fmt.Sprintf("v%d_%d", i, k)
			if err := exec1(ctx, admin, "CREATE DATABASE "+db+" TEMPLATE base"); err != nil {
				return err
			}
			n, err := measure(ctx, cl, db, v, cfg, loops)
			if err == nil && cfg.keep != "" {
				err = keepFile(cl, n.pid, filepath.Join(cfg.keep, fmt.Sprintf("%s.%d", v.name, loops)))
			}
			if err != nil {
				return fmt.Errorf("variant %s: %w", v.name, err)
			}
			counts[k] = n.total
		}
		results = append(results, result{v, float64(counts[1]-counts[0]) / float64(cfg.loops*cfg.batch)})
	}

	hints := "vacuumed"
	if !cfg.vacuum {
		hints = "not vacuumed"
	}
	fmt.Fprintf(stdout, "PostgreSQL backend instructions a job: pgq's claim of %d jobs + finishes of %d, %d loops counted after %d, queue %s, %s (callgrind)\n\n",
		cfg.batch, cfg.finishBatch, cfg.loops, cfg.warmup, hints, cfg.driver)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "variant\tinstructions/job\t÷ as-installed\twhat")
	var base float64
	for _, r := range results {
		if r.v.name == "as-installed" {
			base = r.perJob
		}
	}
	for _, r := range results {
		ratio := "-"
		if base > 0 {
			ratio = strconv.FormatFloat(r.perJob/base, 'f', 3, 64)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\n", r.v.name, r.perJob, ratio, r.v.desc)
	}
	return tw.Flush()
}

// prepareBase makes the template database: pgq's schema and cfg.queue
// queued jobs, vacuumed and analyzed.
func prepareBase(ctx context.Context, admin *sql.DB, cl *pgcluster.Cluster, cfg config, logf func(string, ...any)) error {
	if err := exec1(ctx, admin, "CREATE DATABASE base"); err != nil {
		return err
	}
	db, err := sql.Open("pgx", cl.DSN("base"))
	if err != nil {
		return err
	}
	defer db.Close()
	if err := pgq.Install(ctx, db); err != nil {
		return err
	}
	logf("enqueuing %d jobs", cfg.queue)
	q := pgq.NewQueries(db)
	for left := cfg.queue; left > 0; {
		jobs := make([]pgq.NewJob, min(left, 1000))
		for i := range jobs {
			jobs[i] = pgq.NewJob{Entrypoint: "bench"}
		}
		if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
			return err
		}
		left -= len(jobs)
	}
	prep := []string{"VACUUM ANALYZE pgqueuer", "CHECKPOINT"}
	if !cfg.vacuum {
		prep[0] = "ANALYZE pgqueuer"
	}
	for _, stmt := range prep {
		if err := exec1(ctx, db, stmt); err != nil {
			return err
		}
	}
	return db.Close() // CREATE DATABASE … TEMPLATE base needs no one connected
}

// measure applies v to database db, then runs loops claims of cfg.batch
// jobs, each followed by the finishes of its jobs, on one connection and
// returns its backend and the instructions it ran in all. The variant's
// DDL runs in a pool of its own, closed first, so that its backend is not
// the one counted.
func measure(ctx context.Context, cl *pgcluster.Cluster, dbname string, v variant, cfg config, loops int) (counted, error) {
	setup, err := sql.Open("pgx", cl.DSN(dbname))
	if err != nil {
		return counted{}, err
	}
	for _, stmt := range v.ddl {
		if err = exec1(ctx, setup, stmt); err != nil {
			break
		}
	}
	setup.Close()
	if err != nil {
		return counted{}, err
	}

	db, err := sql.Open(cfg.driver, cl.DSN(dbname))
	if err != nil {
		return counted{}, err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return counted{}, err
	}
	pid, err := runLoops(ctx, conn, cfg, loops)
	// The backend writes its counts when it exits: close the connection.
	conn.Close()
	db.Close()
	if err != nil {
		return counted{}, err
	}
	total, err := readTotal(ctx, callgrindFile(cl, pid))
	return counted{pid, total}, err
}

// counted is a backend's process id and the instructions it ran.
type counted struct {
	pid   int
	total int64
}

// callgrindFile is where callgrind writes backend pid's counts (see the
// wrapper's --callgrind-out-file).
func callgrindFile(cl *pgcluster.Cluster, pid int) string {
	return filepath.Join(cl.Root(), fmt.Sprintf("callgrind.%d", pid))
}

// keepFile copies the callgrind file of backend pid to path.
func keepFile(cl *pgcluster.Cluster, pid int, path string) error {
	b, err := os.ReadFile(callgrindFile(cl, pid))
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// runLoops runs the claims and finishes on conn and returns its backend's
// process id.
func runLoops(ctx context.Context, conn *sql.Conn, cfg config, loops int) (pid int, err error) {
	if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return 0, err
	}
	qm := uuid.NullUUID{UUID: uuid.New(), Valid: true}
	q := dbgen.New()
	for i := range loops {
		rows, err := q.JobsClaim(ctx, conn, dbgen.JobsClaimParams{
			Entrypoints: []string{"bench"}, Caps: []int32{int32(cfg.batch)}, BatchSize: int32(cfg.batch),
			QueueManagerID: qm, FoldStatistics: true,
		})
		if err != nil {
			return 0, fmt.Errorf("claim %d: %w", i+1, err)
		}
		if len(rows) != cfg.batch {
			return 0, fmt.Errorf("claim %d took %d jobs, want %d", i+1, len(rows), cfg.batch)
		}
		for part := range slices.Chunk(rows, cfg.finishBatch) {
			ids, tokens := make([]int64, len(part)), make([]int64, len(part))
			for j, r := range part {
				ids[j], tokens[j] = r.ID, r.ClaimToken
			}
			unwritten, err := q.JobsFinishSucceeded(ctx, conn, idruns.Finish(dbgen.JobsFinishSucceededParams{
				Ids: ids, ClaimTokens: tokens, QueueManagerID: qm, Quiet: true,
			}))
			if err != nil {
				return 0, fmt.Errorf("finish %d: %w", i+1, err)
			}
			if len(unwritten) > 0 {
				return 0, fmt.Errorf("finish %d left %d outcomes unwritten", i+1, len(unwritten))
			}
		}
	}
	return pid, nil
}

// totalRE finds the total of a callgrind output file.
var totalRE = regexp.MustCompile(`(?m)^(?:summary|totals):\s+(\d+)`)

// readTotal waits for a backend's callgrind file to be complete and
// returns its total.
func readTotal(ctx context.Context, path string) (int64, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if m := totalRE.FindSubmatch(b); m != nil {
				return strconv.ParseInt(string(m[1]), 10, 64)
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no callgrind total in %s after 2 minutes", path)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// exec1 runs one statement, an error naming its first words.
func exec1(ctx context.Context, db dbgen.DBTX, stmt string) error {
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		words := strings.Fields(stmt)
		return fmt.Errorf("%s: %w", strings.Join(words[:min(len(words), 3)], " "), err)
	}
	return nil
}
