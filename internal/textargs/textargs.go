// Package textargs hands array parameters to the database driver as
// PostgreSQL array literals.
//
// The generated queries (dbgen) wrap every array parameter in pq.Array, the
// form lib/pq needs. pgx takes such a value by calling its Value method,
// parsing the literal it returns and encoding the result in binary: for
// batches of thousands of ids that parse was a quarter of a worker's CPU.
// Handed the literal itself, as a string, pgx sends it as text, which the
// server parses, as it does for lib/pq.
package textargs

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"slices"

	"github.com/lib/pq"

	"github.com/pgq-dev/pgq/internal/sqlname"
)

// DBTX is the subset of *sql.DB, *sql.Conn and *sql.Tx that queries use.
type DBTX = sqlname.DBTX

// Wrap returns db with the pq arrays among every query's arguments
// replaced by their literals.
func Wrap(db DBTX) DBTX {
	if w, ok := db.(wrapped); ok {
		return w
	}
	return wrapped{db}
}

type wrapped struct{ db DBTX }

func (w wrapped) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return w.db.ExecContext(ctx, q, Literals(args)...)
}

func (w wrapped) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return w.db.PrepareContext(ctx, q)
}

func (w wrapped) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return w.db.QueryContext(ctx, q, Literals(args)...)
}

func (w wrapped) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return w.db.QueryRowContext(ctx, q, Literals(args)...)
}

// Literals returns args with each array made by pq.Array replaced by its
// literal (a string, or nil for a nil slice); args itself when there is
// none. An array whose Value fails is left for the driver to report.
func Literals(args []any) []any {
	var out []any
	for i, a := range args {
		var v driver.Valuer
		switch a := a.(type) {
		case *pq.Int64Array, *pq.Int32Array, *pq.Float64Array, *pq.Float32Array,
			*pq.StringArray, *pq.BoolArray, *pq.ByteaArray, pq.GenericArray:
			v = a.(driver.Valuer)
		default:
			continue
		}
		lit, err := v.Value()
		if err != nil {
			continue
		}
		if out == nil {
			out = slices.Clone(args)
		}
		out[i] = lit
	}
	if out == nil {
		return args
	}
	return out
}
