package pgq

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
)

// pgError is the part of a server error pgq looks at, from either driver.
type pgError struct {
	Code, Message, Detail, Constraint string
}

func asPgError(err error) (pgError, bool) {
	var pqe *pq.Error
	if errors.As(err, &pqe) {
		return pgError{string(pqe.Code), pqe.Message, pqe.Detail, pqe.Constraint}, true
	}
	var pge *pgconn.PgError
	if errors.As(err, &pge) {
		return pgError{pge.Code, pge.Message, pge.Detail, pge.ConstraintName}, true
	}
	return pgError{}, false
}

// interpretError maps server errors to pgq's errors: a missing relation or
// type becomes ErrSchemaMissing with a hint, a dedupe-key violation a
// *DuplicateJobError. Other errors are returned unchanged.
func interpretError(err error) error {
	if err == nil {
		return nil
	}
	pe, ok := asPgError(err)
	if !ok {
		return err
	}
	switch pe.Code {
	case "42P01", "42704", "42883": // undefined_table, undefined_object, undefined_function
		return fmt.Errorf("%w (%s): run `pgq install` or `pgq upgrade` (or pgq.Install/pgq.Upgrade) first",
			ErrSchemaMissing, pe.Message)
	case "2200H": // sequence_generator_limit_exceeded: an int4 id sequence ran out
		return fmt.Errorf("%w: the id sequence is int4 and at its maximum; widen the ids to bigint with `pgq upgrade` (pgq.Upgrade)", err)
	case "22003": // numeric_value_out_of_range
		if strings.Contains(pe.Message, "integer out of range") {
			return fmt.Errorf("%w: if an id column is still int4 (pgq.NarrowIDs lists them), widen it to bigint with `pgq upgrade` (pgq.Upgrade)", err)
		}
	case "23505": // unique_violation
		if strings.HasSuffix(pe.Constraint, "unique_dedupe_key") {
			return &DuplicateJobError{DedupeKey: dedupeKeyFromDetail(pe.Detail)}
		}
	}
	return err
}

// dedupeKeyFromDetail extracts k from `Key (dedupe_key)=(k) already exists.`
func dedupeKeyFromDetail(detail string) string {
	const open, closing = ")=(", ") already exists"
	i := strings.Index(detail, open)
	j := strings.LastIndex(detail, closing)
	if i < 0 || j < i+len(open) {
		return ""
	}
	return detail[i+len(open) : j]
}
