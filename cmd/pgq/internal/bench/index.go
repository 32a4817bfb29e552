package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
)

// Defaults of the index benchmark.
const (
	DefaultLogRows   = 1_000_000
	DefaultLookupIDs = 100
	DefaultRepeats   = 15
	// IndexEntrypoint is the entrypoint of the log rows Index adds.
	IndexEntrypoint = "pgq_bench_index"
)

// IndexConfig configures Index. Zero fields take the defaults.
type IndexConfig struct {
	LogRows   int64 // the log holds at least this many rows (default DefaultLogRows)
	LookupIDs int   // job ids per look-up (default DefaultLookupIDs)
	Repeats   int   // timed look-ups per case (default DefaultRepeats)
	// RemoveFill deletes the log rows Index added once it is done (for a
	// database that is not throwaway).
	RemoveFill bool
}

// IndexResult compares the watcher's latest-status look-up (the
// LogLatestStatus query of db/queries/log.sql, run through dbgen) with the
// pgqueuer_log_job_id_status index and without it (dropped inside a
// transaction that is rolled back). Times are medians of client-side wall
// time, round trip included.
type IndexResult struct {
	LogRows        int64    `json:"log_rows"`      // rows in the log while measuring
	InsertedRows   int64    `json:"inserted_rows"` // rows Index added
	FillSeconds    float64  `json:"fill_seconds"`
	WithIndexMs    float64  `json:"with_index_ms"`
	WithoutIndexMs float64  `json:"without_index_ms"`
	Speedup        float64  `json:"speedup"`
	WithIndex      Plan     `json:"with_index_plan"`
	WithoutIndex   Plan     `json:"without_index_plan"`
	Settings       Settings `json:"settings"`
}

// Index fills the log up to cfg.LogRows rows (three per job, inserted by
// one INSERT … SELECT generate_series), ANALYZEs it, and times the
// watcher's look-up of cfg.LookupIDs random job ids with and without the
// index.
func Index(ctx context.Context, db *sql.DB, cfg IndexConfig) (res IndexResult, err error) {
	if cfg.LogRows == 0 {
		cfg.LogRows = DefaultLogRows
	}
	cfg.LookupIDs = orDefault(cfg.LookupIDs, DefaultLookupIDs)
	cfg.Repeats = orDefault(cfg.Repeats, DefaultRepeats)
	if err := positives(map[string]int{"log rows": int(min(cfg.LogRows, 1<<30)), "lookup ids": cfg.LookupIDs,
		"repeats": cfg.Repeats}); err != nil {
		return res, err
	}
	if res.Settings, err = readSettings(ctx, db, ""); err != nil {
		return res, err
	}
	res.Settings.LogRows, res.Settings.LookupIDs, res.Settings.Repeats = cfg.LogRows, cfg.LookupIDs, cfg.Repeats

	var have int64
	if err := db.QueryRowContext(ctx, sqlLogCount).Scan(&have); err != nil {
		return res, fmt.Errorf("counting log rows: %w", err)
	}
	if cfg.RemoveFill {
		defer func() {
			if _, derr := db.ExecContext(context.WithoutCancel(ctx), sqlDeleteLogRows, IndexEntrypoint); derr != nil {
				err = errors.Join(err, fmt.Errorf("removing the benchmark's log rows: %w", derr))
			}
		}()
	}
	begin := time.Now()
	if add := cfg.LogRows - have; add > 0 {
		if _, err := db.ExecContext(ctx, sqlFillLog, add, IndexEntrypoint); err != nil {
			return res, fmt.Errorf("filling the log with %d rows: %w", add, err)
		}
		res.InsertedRows = add
	}
	if _, err := db.ExecContext(ctx, sqlAnalyzeLog); err != nil {
		return res, fmt.Errorf("analyze: %w", err)
	}
	res.FillSeconds = seconds(time.Since(begin))
	res.LogRows = max(have, cfg.LogRows)

	ids, err := randomJobIDs(ctx, db, cfg.LookupIDs)
	if err != nil {
		return res, err
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return res, err
	}
	defer tx.Rollback() //nolint:errcheck // rolling back is the point
	with, plan, err := timeLookups(ctx, tx, ids, cfg.Repeats)
	if err != nil {
		return res, fmt.Errorf("with the index: %w", err)
	}
	res.WithIndexMs, res.WithIndex = ms(with), plan
	if _, err := tx.ExecContext(ctx, sqlDropLogIndex); err != nil {
		return res, fmt.Errorf("dropping the index inside a transaction: %w", err)
	}
	without, plan, err := timeLookups(ctx, tx, ids, cfg.Repeats)
	if err != nil {
		return res, fmt.Errorf("without the index: %w", err)
	}
	res.WithoutIndexMs, res.WithoutIndex = ms(without), plan
	if err := tx.Rollback(); err != nil {
		return res, fmt.Errorf("rolling back the dropped index: %w", err)
	}
	if with > 0 {
		res.Speedup = round3(float64(without) / float64(with))
	}
	return res, nil
}

// randomJobIDs picks n distinct job ids of the log.
func randomJobIDs(ctx context.Context, db *sql.DB, n int) ([]int64, error) {
	rows, err := db.QueryContext(ctx, sqlRandomJobIDs, n)
	if err != nil {
		return nil, fmt.Errorf("picking job ids: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(ids) < n {
		return nil, fmt.Errorf("the log has %d distinct job ids, want %d", len(ids), n)
	}
	return ids, nil
}

// timeLookups runs the library's latest-status look-up of ids once to warm
// up, then repeats times, checks that every id is found, and returns the
// median time and the plan.
func timeLookups(ctx context.Context, tx *sql.Tx, ids []int64, repeats int) (time.Duration, Plan, error) {
	q := dbgen.New()
	var times []time.Duration
	for i := range repeats + 1 {
		t := time.Now()
		rows, err := q.LogLatestStatus(ctx, tx, ids)
		d := time.Since(t)
		if err != nil {
			return 0, Plan{}, err
		}
		if len(rows) != len(ids) {
			return 0, Plan{}, fmt.Errorf("look-up of %d ids found %d", len(ids), len(rows))
		}
		if i > 0 {
			times = append(times, d)
		}
	}
	c := &capture{tx: tx}
	_, _ = q.LogLatestStatus(ctx, c, ids)
	plan, err := explain(ctx, tx, c)
	return median(times), plan, err
}
