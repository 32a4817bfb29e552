-- name: JobsGet :many
-- The job's row, if it is still in the job table (queued, picked or
-- failed): at most one row, by primary key.
SELECT j.id, j.priority, j.queue_manager_id, j.created, j.updated, j.heartbeat, j.execute_after,
       j.status, j.entrypoint, j.dedupe_key, j.payload, j.headers, j.attempts
FROM pgqueuer AS j
WHERE j.id = @id::bigint;

-- name: LogJobHistory :many
-- The job's log rows, oldest first: a range scan of
-- pgqueuer_log_job_id_status (job_id, created DESC) read backwards.
SELECT l.id, l.created, l.status, l.priority, l.entrypoint, COALESCE(l.traceback::text, '')::text AS traceback
FROM pgqueuer_log AS l
WHERE l.job_id = @job_id::bigint
ORDER BY l.created, l.id;

-- name: JobsList :many
-- A page of the job table, newest first: the jobs with an id below
-- before_id that match the filter (an empty array or '' matches all),
-- created in [created_after, created_before). The payload is cut to its
-- first preview_bytes. The filters fold away when empty (custom plans), so
-- each combination gets its own plan: a walk of the primary key backwards
-- from before_id, or, when the filter is selective, one of the partial
-- indexes (queued: pgqueuer_ep_prio_id_idx or pgqueuer_priority_id_id1_idx,
-- picked: pgqueuer_updated_id_id1_idx; a dedupe key:
-- pgqueuer_unique_dedupe_key) and a sort of what it finds.
SELECT j.id, j.priority, j.queue_manager_id, j.created, j.updated, j.heartbeat, j.execute_after,
       j.status, j.entrypoint, j.dedupe_key, j.attempts, j.headers,
       substring(j.payload FROM 1 FOR @preview_bytes::int)::bytea AS payload_head,
       COALESCE(octet_length(j.payload), 0)::bigint AS payload_size
FROM pgqueuer AS j
WHERE j.id < @before_id::bigint
  AND (cardinality(@statuses::pgqueuer_status[]) = 0 OR j.status = ANY(@statuses::pgqueuer_status[]))
  AND (cardinality(@entrypoints::text[]) = 0 OR j.entrypoint = ANY(@entrypoints::text[]))
  AND (@dedupe_key::text = '' OR j.dedupe_key = @dedupe_key::text)
  AND (cardinality(@ids::bigint[]) = 0 OR j.id = ANY(@ids::bigint[]))
  AND j.created >= @created_after::timestamptz
  AND j.created < @created_before::timestamptz
ORDER BY j.id DESC
LIMIT @max_rows::int;

-- name: JobsMaxID :one
-- The highest id in the job table (0 when empty): a bulk action stops
-- there, so that jobs enqueued while it runs are not touched.
SELECT COALESCE(max(j.id), 0)::bigint AS id FROM pgqueuer AS j;

-- name: JobsMatching :many
-- One batch of a bulk action: the ids of up to batch_size jobs above
-- after_id and up to max_id that match the filter, in id order (a range
-- of the primary key, or a partial index when the filter is selective).
-- Nothing is locked: the action's own statement rechecks the status.
SELECT j.id
FROM pgqueuer AS j
WHERE j.id > @after_id::bigint
  AND j.id <= @max_id::bigint
  AND j.status = ANY(@statuses::pgqueuer_status[])
  AND (cardinality(@entrypoints::text[]) = 0 OR j.entrypoint = ANY(@entrypoints::text[]))
  AND (@dedupe_key::text = '' OR j.dedupe_key = @dedupe_key::text)
  AND (cardinality(@ids::bigint[]) = 0 OR j.id = ANY(@ids::bigint[]))
  AND j.created >= @created_after::timestamptz
  AND j.created < @created_before::timestamptz
ORDER BY j.id
LIMIT @batch_size::int;

-- name: JobsCancelMatching :many
-- Cancels those of ids whose status is still one of statuses: removes
-- their rows, logs them 'canceled', and returns each id with whether it
-- was running (its worker is sent a cancellation event).
WITH removed AS (
    DELETE FROM pgqueuer AS j
    WHERE j.id = ANY(@ids::bigint[])
      AND j.status = ANY(@statuses::pgqueuer_status[])
    RETURNING j.id, j.priority, j.entrypoint, j.status
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT removed.id, 'canceled', removed.priority, removed.entrypoint FROM removed
)
SELECT removed.id, (removed.status = 'picked')::boolean AS running FROM removed ORDER BY removed.id;

-- name: JobsDeleteMatching :execrows
-- Deletes those of ids whose status is still one of statuses and logs
-- them 'deleted'.
WITH removed AS (
    DELETE FROM pgqueuer AS j
    WHERE j.id = ANY(@ids::bigint[])
      AND j.status = ANY(@statuses::pgqueuer_status[])
    RETURNING j.id, j.priority, j.entrypoint
)
INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
SELECT removed.id, 'deleted', removed.priority, removed.entrypoint FROM removed;
