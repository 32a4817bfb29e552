package bench

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/dbgen"
)

// Defaults of the claim EXPLAIN.
const (
	DefaultExplainJobs    = 1_000_000
	DefaultExplainConsume = 100_000
)

// ExplainConfig configures ExplainClaim. Zero fields take the defaults.
type ExplainConfig struct {
	Jobs      int // queued jobs of Entrypoint (default DefaultExplainJobs)
	BatchSize int // the claim's batch size (default pgq.DefaultBatchSize)
	// Consume is how many jobs a QueueManager (with BatchSize) works
	// before the third EXPLAIN, leaving dead rows at the head of the queue
	// (default DefaultExplainConsume; -1 skips that stage).
	Consume int
}

// ClaimPlan is one EXPLAIN (ANALYZE, BUFFERS) of the claim, with the job
// table's statistics at that moment.
type ClaimPlan struct {
	Stage       string `json:"stage"`
	LiveTuples  int64  `json:"live_tuples"`
	DeadTuples  int64  `json:"dead_tuples"`
	LastVacuum  string `json:"last_vacuum"`
	LastAnalyze string `json:"last_analyze"`
	Plan
}

// ExplainResult holds the claim's plans at each stage.
type ExplainResult struct {
	FillSeconds    float64     `json:"fill_seconds"`
	ConsumeSeconds float64     `json:"consume_seconds,omitempty"`
	Plans          []ClaimPlan `json:"plans"`
	Settings       Settings    `json:"settings"`
}

// ExplainClaim queues cfg.Jobs jobs (one INSERT … SELECT generate_series)
// and runs EXPLAIN (ANALYZE, BUFFERS) of the library's claim statement
// (JobsClaim in db/queries/jobs.sql, captured from dbgen) inside a
// transaction that is rolled back: on the fresh table, after ANALYZE, after
// a worker ran cfg.Consume jobs, and after VACUUM. It removes the jobs at
// the end.
func ExplainClaim(ctx context.Context, db *sql.DB, cfg ExplainConfig) (res ExplainResult, err error) {
	cfg.Jobs = orDefault(cfg.Jobs, DefaultExplainJobs)
	cfg.BatchSize = orDefault(cfg.BatchSize, pgq.DefaultBatchSize)
	cfg.Consume = orDefault(cfg.Consume, DefaultExplainConsume)
	if err := positives(map[string]int{"jobs": cfg.Jobs, "batch size": cfg.BatchSize}); err != nil {
		return res, err
	}
	if res.Settings, err = readSettings(ctx, db, ""); err != nil {
		return res, err
	}
	res.Settings.Jobs, res.Settings.BatchSize = cfg.Jobs, cfg.BatchSize
	if err := purge(ctx, db); err != nil {
		return res, err
	}
	defer func() {
		if perr := purge(context.WithoutCancel(ctx), db); perr != nil && err == nil {
			err = perr
		}
	}()

	begin := time.Now()
	if _, err := db.ExecContext(ctx, sqlFillQueue, cfg.Jobs, Entrypoint); err != nil {
		return res, fmt.Errorf("queueing %d jobs: %w", cfg.Jobs, err)
	}
	res.FillSeconds = seconds(time.Since(begin))

	// The parameters QueueManager.Run passes for one entrypoint with no
	// limits and all of the batch free (see claim in manager.go).
	params := dbgen.JobsClaimParams{
		Entrypoints:    []string{Entrypoint},
		Caps:           []int32{int32(cfg.BatchSize)},
		BatchSize:      int32(cfg.BatchSize),
		QueueManagerID: uuid.NullUUID{UUID: uuid.New(), Valid: true},
	}
	stage := func(name string) error {
		p, err := explainClaim(ctx, db, params, name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		res.Plans = append(res.Plans, p)
		return nil
	}
	if err := stage(fmt.Sprintf("%d queued, fresh table", cfg.Jobs)); err != nil {
		return res, err
	}
	if _, err := db.ExecContext(ctx, sqlAnalyzeQueue); err != nil {
		return res, fmt.Errorf("analyze: %w", err)
	}
	if err := stage("after ANALYZE"); err != nil {
		return res, err
	}
	if cfg.Consume > 0 {
		begin := time.Now()
		n, err := consume(ctx, db, min(cfg.Consume, cfg.Jobs), cfg.BatchSize)
		res.ConsumeSeconds = seconds(time.Since(begin))
		if err != nil {
			return res, err
		}
		if err := stage(fmt.Sprintf("after a worker ran %d jobs (batch size %d, %.0f jobs/s), no VACUUM",
			n, cfg.BatchSize, rate(int64(n), time.Since(begin)))); err != nil {
			return res, err
		}
	}
	if _, err := db.ExecContext(ctx, sqlVacuumQueue); err != nil {
		return res, fmt.Errorf("vacuum: %w", err)
	}
	if err := stage("after VACUUM"); err != nil {
		return res, err
	}
	return res, nil
}

// explainClaim explains the claim in a transaction that it rolls back.
func explainClaim(ctx context.Context, db *sql.DB, params dbgen.JobsClaimParams, name string) (ClaimPlan, error) {
	cp := ClaimPlan{Stage: name}
	if err := db.QueryRowContext(ctx, sqlTableStats).Scan(&cp.LiveTuples, &cp.DeadTuples, &cp.LastVacuum, &cp.LastAnalyze); err != nil {
		return cp, fmt.Errorf("table statistics: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return cp, err
	}
	defer tx.Rollback() //nolint:errcheck // the claim must not stick
	c := &capture{tx: tx}
	_, _ = dbgen.New().JobsClaim(ctx, c, params)
	cp.Plan, err = explain(ctx, tx, c)
	return cp, err
}

// consume runs a QueueManager (default options but batchSize) with a
// no-op handler until n jobs ran, and returns how many ran (a few more than
// n: the batch in flight is finished on shutdown).
func consume(ctx context.Context, db *sql.DB, n, batchSize int) (int, error) {
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var ran atomic.Int64
	qm := pgq.NewQueueManager(db)
	if err := qm.Entrypoint(Entrypoint, func(context.Context, *pgq.Job) error {
		if ran.Add(1) >= int64(n) {
			stop()
		}
		return nil
	}); err != nil {
		return 0, err
	}
	if err := qm.Run(runCtx, pgq.WithBatchSize(batchSize)); err != nil {
		return int(ran.Load()), err
	}
	return int(ran.Load()), ctx.Err()
}
