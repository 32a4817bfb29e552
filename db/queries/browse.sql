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
