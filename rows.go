package pgq

import (
	"encoding/json"

	"github.com/pgq-dev/pgq/dbgen"
)

// Rows of the generated queries (dbgen) become public types here, and only
// here: one function per row type.

// jobFromClaim is a claimed job as its handler gets it.
func jobFromClaim(r *dbgen.JobsClaimRow) Job {
	return Job{
		ID:           JobID(r.ID),
		Priority:     r.Priority,
		Entrypoint:   r.Entrypoint,
		Payload:      r.Payload,
		Headers:      decodeHeaders(r.Headers),
		Attempts:     r.Attempts,
		DedupeKey:    r.DedupeKey.String,
		FairnessKey:  r.FairnessKey.String,
		SerialKey:    r.SerialKey.String,
		Created:      r.Created,
		ExecuteAfter: r.ExecuteAfter,
	}
}

// claimRowFromKeyed is a keyed claim's row as an ordinary claim's.
func claimRowFromKeyed(r *dbgen.JobsClaimKeyedRow) *dbgen.JobsClaimRow {
	return &dbgen.JobsClaimRow{ID: r.ID, Priority: r.Priority, Created: r.Created,
		ExecuteAfter: r.ExecuteAfter, Entrypoint: r.Entrypoint, Payload: r.Payload,
		Headers: r.Headers, Attempts: r.Attempts, DedupeKey: r.DedupeKey,
		ClaimToken: r.ClaimToken, FairnessKey: r.FairnessKey, SerialKey: r.SerialKey}
}

// jobInfoFromRow is a job that is still in the job table.
func jobInfoFromRow(r *dbgen.JobsGetRow) *JobInfo {
	info := &JobInfo{
		Job: Job{ID: JobID(r.ID), Priority: r.Priority, Entrypoint: r.Entrypoint, Payload: r.Payload,
			Headers: decodeHeaders(r.Headers), Attempts: r.Attempts, DedupeKey: r.DedupeKey.String,
			Created: r.Created, ExecuteAfter: r.ExecuteAfter},
		Status:      Status(r.Status),
		Updated:     r.Updated,
		PayloadSize: len(r.Payload),
	}
	if info.Status == StatusPicked {
		info.WorkerID = r.QueueManagerID.UUID
		info.Heartbeat = r.Heartbeat
	}
	return info
}

// jobInfoFromListRow is a job of a ListJobs page: its payload is cut to
// the head JobsList returns, PayloadSize says how long it is.
func jobInfoFromListRow(r *dbgen.JobsListRow) JobInfo {
	info := JobInfo{
		Job: Job{ID: JobID(r.ID), Priority: r.Priority, Entrypoint: r.Entrypoint, Payload: r.PayloadHead,
			Headers: decodeHeaders(r.Headers), Attempts: r.Attempts, DedupeKey: r.DedupeKey.String,
			Created: r.Created, ExecuteAfter: r.ExecuteAfter},
		Status:      Status(r.Status),
		Updated:     r.Updated,
		PayloadSize: int(r.PayloadSize),
	}
	if info.Status == StatusPicked {
		info.WorkerID = r.QueueManagerID.UUID
		info.Heartbeat = r.Heartbeat
	}
	return info
}

// logEntryFromRow is one row of a job's log history.
func logEntryFromRow(r *dbgen.LogJobHistoryRow) LogEntry {
	e := LogEntry{ID: r.ID, At: r.Created, Status: Status(r.Status), Priority: r.Priority, Entrypoint: r.Entrypoint}
	if r.Traceback != "" {
		e.Traceback = json.RawMessage(r.Traceback)
	}
	return e
}

// failedJobFromRow is a held job.
func failedJobFromRow(r *dbgen.JobsListFailedRow) FailedJob {
	return FailedJob{
		Job: Job{ID: JobID(r.ID), Priority: r.Priority, Entrypoint: r.Entrypoint, Attempts: r.Attempts,
			Created: r.Created, Payload: r.Payload, Headers: decodeHeaders(r.Headers)},
		Updated:   r.Updated,
		LastError: r.LastError,
	}
}

// scheduleInfoFromRow is one row of the schedules table, times in UTC.
func scheduleInfoFromRow(r *dbgen.PgqueuerSchedule) ScheduleInfo {
	s := ScheduleInfo{
		ID:         ScheduleID(r.ID),
		Expression: r.Expression,
		Entrypoint: r.Entrypoint,
		NextRun:    r.NextRun.UTC(),
		Heartbeat:  r.Heartbeat.UTC(),
		Created:    r.Created.UTC(),
		Updated:    r.Updated.UTC(),
	}
	if r.Status.Valid {
		s.Status = Status(r.Status.PgqueuerStatus)
	}
	if r.LastRun.Valid {
		s.LastRun = r.LastRun.Time.UTC()
	}
	return s
}

// pausedFromRows are the paused entrypoints of PausedList.
func pausedFromRows(rows []*dbgen.PgqueuerPgqPaused) []PausedEntrypoint {
	out := make([]PausedEntrypoint, len(rows))
	for i, r := range rows {
		out[i] = PausedEntrypoint{Entrypoint: r.Entrypoint, Since: r.PausedAt}
	}
	return out
}

// progressFromRow is a job's latest reported progress.
func progressFromRow(r *dbgen.PgqueuerPgqProgress) Progress {
	return Progress{JobID: JobID(r.JobID), Fraction: r.Fraction, Note: r.Note, Updated: r.Updated}
}
