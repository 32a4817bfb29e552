package pgq

import (
	"context"
	"database/sql"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// WithDependencySweepInterval shortens how often a worker sweeps the
// dependencies (afterSweepInterval), for a test.
func WithDependencySweepInterval(d time.Duration) RunOption {
	return runOption(func(c *runConfig) { c.sweepInterval = d })
}

// SettleDependencies runs one sweep of the dependencies (what every worker
// does each afterSweepInterval) on a schema with default names.
func SettleDependencies(ctx context.Context, db *sql.DB) (int, error) {
	n, err := dbgen.New().AfterSweep(ctx, wrapDB(sqlname.Names{}, db))
	return int(n), err
}
