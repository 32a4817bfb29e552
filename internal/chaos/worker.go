package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"strconv"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "github.com/lib/pq"              // registers the "postgres" driver

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/dsn"
)

// The environment of a worker process. The parent sets them all; EnvWorker
// says that the process is a chaos worker.
const (
	EnvWorker      = "PGQ_CHAOS_WORKER" // "1"
	envDSN         = "PGQ_CHAOS_DSN"
	envDriver      = "PGQ_CHAOS_DRIVER"
	envPrefix      = "PGQ_CHAOS_PREFIX"
	envSchema      = "PGQ_CHAOS_SCHEMA"
	envRun         = "PGQ_CHAOS_RUN"
	envLedger      = "PGQ_CHAOS_LEDGER" // the ledger table, quoted and qualified
	envHeartbeat   = "PGQ_CHAOS_HEARTBEAT"
	envConcurrency = "PGQ_CHAOS_CONCURRENCY"
	envWork        = "PGQ_CHAOS_WORK" // a handler works up to this long before its ledger write
	envCompleteTx  = "PGQ_CHAOS_COMPLETE_TX"
)

// Entrypoint is the entrypoint of the chaos jobs. A chaos run only claims
// jobs of this entrypoint, so that it leaves a staging database's own jobs
// alone.
const Entrypoint = "pgq.chaos"

// workerApp is the application_name of a worker process's connections
// (followed by its pid); its listener's is pgq's own, "pgq worker <id> …".
const workerApp = "pgq chaos worker "

// producerApp is the application_name of the producers' connections.
const producerApp = "pgq chaos producer"

// WorkerMain is the main function of a worker process: a QueueManager for
// Entrypoint whose handler works a little and then, in one transaction,
// writes the job's ledger row (its side effect) and, with --complete-tx,
// marks the job done. It prints "ready <queue manager id>" once running,
// and stops on ctx's end. getenv reads the settings the parent passed.
func WorkerMain(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(stderr, "pgq chaos worker:", err)
		return 1
	}
	hb, err := time.ParseDuration(getenv(envHeartbeat))
	if err != nil {
		return fail(fmt.Errorf("bad %s: %w", envHeartbeat, err))
	}
	work, err := time.ParseDuration(getenv(envWork))
	if err != nil {
		return fail(fmt.Errorf("bad %s: %w", envWork, err))
	}
	conc, err := strconv.Atoi(getenv(envConcurrency))
	if err != nil || conc < 1 {
		return fail(fmt.Errorf("bad %s %q", envConcurrency, getenv(envConcurrency)))
	}
	completeTx := getenv(envCompleteTx) == "1"
	pid := os.Getpid()
	connString, err := withAppName(getenv(envDSN), workerApp+strconv.Itoa(pid))
	if err != nil {
		return fail(err)
	}
	db, err := sql.Open(getenv(envDriver), connString)
	if err != nil {
		return fail(dsn.RedactError(err, connString))
	}
	defer db.Close()
	db.SetMaxIdleConns(conc + 8) // the handlers' connections stay open
	var naming []pgq.ManagerOption
	if p := getenv(envPrefix); p != "" {
		naming = append(naming, pgq.WithPrefix(p))
	}
	if s := getenv(envSchema); s != "" {
		naming = append(naming, pgq.WithSchema(s))
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("pid", pid)
	qm := pgq.NewQueueManager(db, append(naming, pgq.WithListenDSN(connString), pgq.WithLogger(logger))...)
	run, ledger := getenv(envRun), getenv(envLedger)
	insert := "INSERT INTO " + ledger + " (run, job_id, attempt, pid) VALUES ($1, $2, $3, $4)"
	rng := rand.New(rand.NewPCG(uint64(pid), uint64(time.Now().UnixNano())))
	var rngMu = make(chan struct{}, 1)
	handler := func(ctx context.Context, j *pgq.Job) error {
		rngMu <- struct{}{}
		d := time.Duration(rng.Int64N(int64(work) + 1))
		<-rngMu
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(d):
		}
		// The side effect and its ledger row commit together (and, with
		// --complete-tx, the job's success): a run whose transaction did
		// not commit left no trace and is tried again.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.ExecContext(ctx, insert, run, int64(j.ID), j.Attempts, pid); err != nil {
			return err
		}
		if completeTx {
			if err := pgq.CompleteTx(ctx, tx, j); err != nil {
				return err
			}
		}
		return tx.Commit()
	}
	retry := pgq.RetryPolicy{MaxAttempts: 50, InitialDelay: 10 * time.Millisecond, MaxDelay: 200 * time.Millisecond}
	if err := qm.Entrypoint(Entrypoint, handler, pgq.WithRetry(retry)); err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "ready %s\n", qm.ID())
	err = qm.Run(ctx, pgq.WithHeartbeatTimeout(hb), pgq.WithShutdownTimeout(2*time.Second),
		pgq.WithDequeueTimeout(500*time.Millisecond), pgq.WithBatchSize(max(1, conc/2)),
		pgq.WithMaxConcurrentTasks(conc))
	if err != nil {
		return fail(dsn.RedactError(err, connString))
	}
	return 0
}

// withAppName returns connString (URL or key=value) with its
// application_name set to name.
func withAppName(connString, name string) (string, error) {
	if dsn.IsURL(connString) {
		u, err := url.Parse(connString)
		if err != nil {
			return "", fmt.Errorf("cannot parse the connection URL: %w", dsn.RedactError(err, connString))
		}
		q := u.Query()
		q.Set("application_name", name)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	pairs, err := dsn.ParseKeywordValue(connString)
	if err != nil {
		return "", fmt.Errorf("cannot parse the connection string: %w", dsn.RedactError(err, connString))
	}
	out := pairs[:0]
	for _, p := range pairs {
		if p.Key != "application_name" {
			out = append(out, p)
		}
	}
	return dsn.Join(append(out, dsn.Pair{Key: "application_name", Value: name})), nil
}
