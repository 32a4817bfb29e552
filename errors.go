package pgq

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
)

// The errors pgq returns that callers may test for.

var (
	// ErrDuplicateJob is returned (wrapped in a *DuplicateJobError) when a
	// job's dedupe key is already held by a queued or running job.
	ErrDuplicateJob = errors.New("pgq: duplicate job")
	// ErrJobNotFound is returned when a job id has neither a row in the job
	// table nor any log row: it never existed (or its log was pruned).
	ErrJobNotFound = errors.New("pgq: job not found")
	// ErrSchemaMissing is returned when pgq's tables are missing or
	// incomplete; run `pgq install` (or Install), or `pgq upgrade`.
	ErrSchemaMissing = errors.New("pgq: schema not installed or incomplete")
	// ErrSchemaExists is returned by Install when the job table exists.
	ErrSchemaExists = errors.New("pgq: schema already installed")
	// ErrClosed is returned by a CompletionWatcher's waits once it is
	// closed (wrapped with its ctx's error when that ended it).
	ErrClosed = errors.New("pgq: closed")
)

// DuplicateJobError reports the dedupe key that made an enqueue fail. It
// matches ErrDuplicateJob with errors.Is.
type DuplicateJobError struct {
	DedupeKey string
}

// Error names the dedupe key.
func (e *DuplicateJobError) Error() string {
	if e.DedupeKey == "" {
		return "pgq: duplicate job: a job with the same dedupe key is already queued or running"
	}
	return fmt.Sprintf("pgq: duplicate job: dedupe key %q is already held by a queued or running job", e.DedupeKey)
}

// Is makes errors.Is(err, ErrDuplicateJob) true.
func (e *DuplicateJobError) Is(target error) bool { return target == ErrDuplicateJob }

// SchemaError lists what Verify found missing. It matches ErrSchemaMissing
// with errors.Is.
type SchemaError struct {
	Schema  string
	Missing []string // e.g. "index pgqueuer_log_job_id_status"
	// GooseDefaultVersions, when pgq's job table is missing, are the versions
	// of pgq's migrations that goose's default version table,
	// goose_db_version, records as applied: an app's own goose pipeline has
	// likely recorded pgq's migrations there (goose then skipped them as
	// applied). Hint says what to do about it.
	GooseDefaultVersions []int64
	// Hint is the fix for GooseDefaultVersions, empty without them.
	Hint string
}

// Error names the schema and each missing object, and the fix.
func (e *SchemaError) Error() string {
	if len(e.GooseDefaultVersions) > 0 {
		return fmt.Sprintf("pgq: schema %s is incomplete, missing %s; %s",
			e.Schema, strings.Join(e.Missing, ", "), e.Hint)
	}
	return fmt.Sprintf("pgq: schema %s is incomplete, missing %s: run `pgq upgrade` (or pgq.Upgrade)",
		e.Schema, strings.Join(e.Missing, ", "))
}

// Is makes errors.Is(err, ErrSchemaMissing) true.
func (e *SchemaError) Is(target error) bool { return target == ErrSchemaMissing }

// RetryAfterError asks for the job to be tried again after Delay; see
// RetryAfter.
type RetryAfterError struct {
	Delay time.Duration
	Err   error // why, optional
}

// Error gives the delay and the cause.
func (e *RetryAfterError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("retry after %v: %v", e.Delay, e.Err)
	}
	return fmt.Sprintf("retry after %v", e.Delay)
}

// Unwrap returns the cause.
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter is what a handler returns to have its job tried again after d
// (instead of the retry policy's backoff). It counts as a failed attempt:
// once the entrypoint's MaxAttempts is used up, the job fails for good.
// Wrap a cause with RetryAfterError{Delay: d, Err: cause}.
func RetryAfter(d time.Duration) error { return &RetryAfterError{Delay: max(d, 0)} }

// ---------------------------------------------------------------------------
// Server errors, from either driver

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
	if hinted := hintPooler(err); hinted != err {
		return hinted
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

// poolerStatementHint is what pgq adds to an error that says the driver's
// prepared statements did not survive a transaction-mode pooler.
const poolerStatementHint = "the driver's prepared statements do not survive the transaction-mode pooler " +
	"(PgBouncer before 1.21, or without max_prepared_statements) between pgq and the server: " +
	"add default_query_exec_mode=cache_describe (pgx) or binary_parameters=yes (lib/pq) to the pool's DSN, " +
	"or use session mode (see pgq's docs/pgbouncer.md)"

// poolerError is a server error that a transaction-mode pooler caused,
// with the hint how to fix it.
type poolerError struct{ err error }

func (e *poolerError) Error() string { return e.err.Error() + ": " + poolerStatementHint }
func (e *poolerError) Unwrap() error { return e.err }

// hintPooler returns err wrapped with poolerStatementHint when it says
// that a statement met a server connection that is not the one it was
// prepared on: pgx's cached statement missing or already there (another
// client prepared it on that server connection), or lib/pq's unnamed
// statement missing or someone else's. Other errors are returned
// unchanged.
func hintPooler(err error) error {
	var already *poolerError
	if err == nil || errors.As(err, &already) {
		return err
	}
	pe, ok := asPgError(err)
	if !ok {
		return err
	}
	switch {
	case pe.Code == "42P05" && strings.Contains(pe.Message, "stmtcache_"), // duplicate_prepared_statement
		pe.Code == "26000" && strings.Contains(pe.Message, "prepared statement"), // invalid_sql_statement_name
		pe.Code == "08P01" && strings.HasPrefix(pe.Message, "bind message"):      // protocol_violation
		return &poolerError{err}
	}
	return err
}
