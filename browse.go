package pgq

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// JobInfo is what GetJob knows of a job. While the job is in the job table
// (queued, picked or failed) every field is set; once it has finished
// (its row is gone) only what the log keeps is: ID, Entrypoint, Priority,
// Status and Updated, with Finished true.
type JobInfo struct {
	Job
	Status  Status
	Updated time.Time // the row's last change; for a finished job, its last log row
	// WorkerID is the worker (QueueManager.ID, or a PGQueuer worker's id)
	// holding the job; zero unless Status is picked.
	WorkerID uuid.UUID
	// Heartbeat is the holder's last heartbeat for the job; zero unless
	// Status is picked.
	Heartbeat time.Time
	// Finished says the job has left the job table: the fields above come
	// from its latest log row.
	Finished bool
	// PayloadSize is the payload's length in bytes (ListJobs returns only
	// the first ListPayloadPreview bytes of it in Payload).
	PayloadSize int
	// Progress is the latest progress its handler reported
	// (ReportProgress), kept for about an hour after the job finished;
	// nil when there is none. GetJob sets it; ListJobs does not.
	Progress *Progress
}

// LogEntry is one row of a job's log: a status it reached, and when.
type LogEntry struct {
	ID         int64
	At         time.Time
	Status     Status
	Priority   int32
	Entrypoint string
	// Traceback is the JSON record of a failure (PGQueuer's shape:
	// exception_type, exception_message, traceback, ...), "" for other
	// rows.
	Traceback json.RawMessage
}

// GetJob returns the job with id: its row while it is queued, running or
// held, or what its log knows once it has finished. It returns an error
// matching ErrJobNotFound when neither has it (it never existed, or its log
// was pruned).
func (q *Queries) GetJob(ctx context.Context, id JobID) (*JobInfo, error) {
	if q.cfg.err != nil {
		return nil, q.cfg.err
	}
	rows, err := q.q.JobsGet(ctx, q.db, int64(id))
	if err != nil {
		return nil, fmt.Errorf("pgq: get job %d: %w", id, interpretError(err))
	}
	var info *JobInfo
	if len(rows) == 1 {
		info = jobInfoFromRow(rows[0])
	} else {
		hist, err := q.JobHistory(ctx, id)
		if err != nil {
			return nil, err
		}
		if len(hist) == 0 {
			return nil, fmt.Errorf("pgq: get job %d: %w", id, ErrJobNotFound)
		}
		last := hist[len(hist)-1]
		info = &JobInfo{
			Job:      Job{ID: id, Priority: last.Priority, Entrypoint: last.Entrypoint, Created: hist[0].At},
			Status:   last.Status,
			Updated:  last.At,
			Finished: true,
		}
	}
	p, err := readProgress(ctx, q.q, q.db, []JobID{id})
	if err != nil {
		return nil, fmt.Errorf("pgq: get job %d: progress: %w", id, err)
	}
	if pr, ok := p[id]; ok {
		info.Progress = &pr
	}
	return info, nil
}

// JobHistory returns the job's log rows, oldest first: each status it
// reached (queued, picked, the failures of retried attempts, the outcome),
// with the traceback of each failure. It returns none for an unknown id or
// a job whose log was pruned.
func (q *Queries) JobHistory(ctx context.Context, id JobID) ([]LogEntry, error) {
	if q.cfg.err != nil {
		return nil, q.cfg.err
	}
	rows, err := q.q.LogJobHistory(ctx, q.db, int64(id))
	if err != nil {
		return nil, fmt.Errorf("pgq: job %d history: %w", id, interpretError(err))
	}
	out := make([]LogEntry, len(rows))
	for i, r := range rows {
		out[i] = logEntryFromRow(r)
	}
	return out, nil
}
