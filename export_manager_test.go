package pgq

import (
	"context"
	"database/sql"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// WithHealthCheck shortens a worker's listener health checks for a test.
func WithHealthCheck(interval, timeout time.Duration) RunOption {
	return runOption(func(c *runConfig) { c.healthInterval, c.healthTimeout = interval, timeout })
}

// WithUpkeepInterval shortens how often a worker checks the job table's
// statistics and dead rows, for a test.
func WithUpkeepInterval(d time.Duration) RunOption {
	return runOption(func(c *runConfig) { c.upkeepInterval = d })
}

// WithBeforeFirstAnalyze has a worker call f when, before its first claim,
// it has read that the job table needs ANALYZE and is about to run it.
func WithBeforeFirstAnalyze(f func()) RunOption {
	return runOption(func(c *runConfig) { c.beforeAnalyze = f })
}

// JobTableNeeds runs the worker's upkeep check of the default job table on
// db: whether it wants ANALYZE and VACUUM (and the role may run them).
func JobTableNeeds(ctx context.Context, db dbgen.DBTX) (analyze, vacuum bool, err error) {
	r, err := tableNeeds(ctx, dbgen.New(), db, sqlname.Names{})
	if err != nil {
		return false, false, err
	}
	return r.NeedsAnalyze && r.MayMaintain, r.NeedsVacuum && r.MayMaintain, err
}

// JobTableNeedsVacuumAfter is the worker's check of whether the default
// job table needs a vacuum (JobsTableUpkeep), with gap in place of the
// least time since the last vacuum, so that a test can ask about an
// autovacuum that ended more than the worker's gap ago.
func JobTableNeedsVacuumAfter(ctx context.Context, db dbgen.DBTX, gap time.Duration) (bool, error) {
	r, err := dbgen.New().JobsTableUpkeep(ctx, db, upkeepParams(sqlname.Names{}, gap))
	if err != nil {
		return false, err
	}
	return r.NeedsVacuum, nil
}

// QueryDB returns db as pgq's own queries run on it (default names), for
// tests that call dbgen directly.
func QueryDB(db dbgen.DBTX) dbgen.DBTX { return wrapDB(sqlname.Names{}, db) }

// QueryDBNamed returns db as pgq's own queries run on it with a prefix and
// schema, for tests that call dbgen directly.
func QueryDBNamed(db dbgen.DBTX, prefix, schema string) dbgen.DBTX {
	return wrapDB(sqlname.Names{Prefix: prefix, Schema: schema}, db)
}

// ClaimCount returns how many claims qm's Runs have tried.
func ClaimCount(qm *QueueManager) int64 { return qm.claims.Load() }

// WakeGap is wakeGap: the least time from a claim that found nothing to
// the next claim a notification starts.
const WakeGap = wakeGap

// FinishNotifyGap is finishNotifyGap, for tests.
const FinishNotifyGap = finishNotifyGap

// LogUpkeep is one worker's log upkeep (fold and prune) on db, default
// names, for tests that run its passes one by one.
type LogUpkeep struct{ m *maintainer }

// NewLogUpkeep returns the log upkeep of a worker with this statistics
// interval and log retention.
func NewLogUpkeep(db *sql.DB, interval, retention time.Duration) *LogUpkeep {
	return &LogUpkeep{&maintainer{q: dbgen.New(), db: db, rdb: wrapDB(sqlname.Names{}, db),
		statsInterval: interval, logRetention: retention}}
}

// Pass runs one pass and reports whether it ran out of its time before it
// caught up (so that the next one will not rest between its turns).
func (u *LogUpkeep) Pass(ctx context.Context) (behind bool, err error) {
	err = u.m.foldAndPrune(ctx)
	return u.m.logBehind, err
}

// SetConcurrencyLimit sets how many handlers qm's running Run may run at
// once, as its governor would; it reports false when qm is not running.
func SetConcurrencyLimit(qm *QueueManager, n int) bool {
	w := qm.cur.Load()
	if w == nil {
		return false
	}
	w.gov.limit.Store(int64(n))
	return true
}
