package pgq

import (
	"context"
	"database/sql"
	"encoding/json"
	"strings"
	"time"
)

// JobID identifies a job; it is the id column of the job table.
type JobID int64

// Status is the state of a job, as the pgqueuer_status enum spells it.
type Status string

// The statuses of a job. Live rows of the job table are StatusQueued,
// StatusPicked or StatusFailed; the log records every transition.
const (
	StatusQueued     Status = "queued"     // waiting to run
	StatusPicked     Status = "picked"     // claimed by a worker, running
	StatusSuccessful Status = "successful" // the handler returned nil
	StatusException  Status = "exception"  // the handler returned an error or panicked
	StatusCanceled   Status = "canceled"   // canceled before or while running
	StatusDeleted    Status = "deleted"    // removed without running
	StatusFailed     Status = "failed"     // held after its last failed attempt; not terminal
)

// Terminal reports whether s is a final outcome: successful, exception,
// canceled or deleted. StatusFailed is not terminal, since a held job can be
// requeued.
func (s Status) Terminal() bool {
	switch s {
	case StatusSuccessful, StatusException, StatusCanceled, StatusDeleted:
		return true
	}
	return false
}

// DBTX is what pgq runs its queries on: *sql.DB, *sql.Conn and *sql.Tx all
// satisfy it.
type DBTX interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// Job is a job handed to a [Handler].
type Job struct {
	ID           JobID
	Priority     int32
	Entrypoint   string
	Payload      []byte            // nil when the job was enqueued without a payload
	Headers      map[string]string // nil when the job has none
	Attempts     int32             // how many earlier attempts failed and were retried
	DedupeKey    string            // "" when the job has none
	FairnessKey  string            // "" when the job has none (WithFairnessKey)
	SerialKey    string            // "" when the job has none (WithSerialKey)
	Created      time.Time
	ExecuteAfter time.Time

	att *attempt // the claim that handed the job out (see CompleteTx)
}

// Handler runs one job. Returning nil records the job as successful;
// returning an error (or panicking) records it as an exception with the
// error text in the log's traceback. ctx ends when the job is canceled or
// when the worker's shutdown grace period is over.
type Handler func(ctx context.Context, job *Job) error

// Limits of the values a job may carry.
const (
	// MaxPayloadSize is the largest payload Enqueue accepts: 256 MiB.
	// PostgreSQL's bytea holds up to 1 GiB, but a payload travels
	// hex-encoded inside a batch and is held in memory by both sides, so
	// large blobs belong in object storage with a reference in the payload.
	MaxPayloadSize = 256 << 20
	// MaxExecuteAfter is the longest delay Enqueue accepts: 100 years.
	MaxExecuteAfter = 100 * 365 * 24 * time.Hour
)

// decodeHeaders turns the headers column into a map. Non-string JSON values
// (which PGQueuer producers may write) are kept as their JSON text.
func decodeHeaders(raw json.RawMessage) map[string]string {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return map[string]string{"": string(raw)}
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
		} else {
			out[k] = strings.TrimSpace(string(v))
		}
	}
	return out
}
