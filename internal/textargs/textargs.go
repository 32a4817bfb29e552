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
	"strconv"
	"unsafe"

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
		var lit driver.Value
		switch a := a.(type) {
		case *pq.Int64Array:
			lit = int64Literal(*a)
		case *pq.Int32Array, *pq.Float64Array, *pq.Float32Array,
			*pq.StringArray, *pq.BoolArray, *pq.ByteaArray, pq.GenericArray:
			var err error
			if lit, err = a.(driver.Valuer).Value(); err != nil {
				continue
			}
		default:
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

// int64Literal is what pq.Int64Array's Value returns (nil for a nil
// slice), written in one allocation: a finish of 2,000 jobs passes two such
// arrays, and Value's growing buffer and final copy were most of the bytes
// a worker allocated to write its outcomes.
func int64Literal(a []int64) driver.Value {
	if a == nil {
		return nil
	}
	lo, hi := int64(0), int64(0)
	if len(a) > 0 {
		lo, hi = slices.Min(a), slices.Max(a)
	}
	b := make([]byte, 0, 2+len(a)*(max(decimalLen(lo), decimalLen(hi))+1))
	b = append(b, '{')
	for i, v := range a {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	b = append(b, '}')
	return unsafe.String(unsafe.SliceData(b), len(b)) // b is not written again
}

// decimalLen is the length of v written in decimal, sign included.
func decimalLen(v int64) int {
	n := 1
	u := uint64(v)
	if v < 0 {
		n++
		u = -u
	}
	for u >= 10 {
		u /= 10
		n++
	}
	return n
}
