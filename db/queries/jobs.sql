-- name: JobsEnqueue :many
-- Inserts a batch of jobs (one array element per job, all arrays the same
-- length) and their 'queued' log rows in one statement. Rows are inserted in
-- array order, so ascending ids follow the input order.
WITH input AS (
    SELECT
        unnest(@priorities::int[])             AS priority,
        unnest(@entrypoints::text[])           AS entrypoint,
        unnest(@payloads::bytea[])             AS payload,
        unnest(@payload_nulls::boolean[])      AS payload_null,
        unnest(@execute_after_us::bigint[])    AS execute_after_us,
        unnest(@dedupe_keys::text[])           AS dedupe_key,
        unnest(@headers::text[])               AS headers
),
inserted AS (
    INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, status, dedupe_key, headers)
    SELECT
        i.priority,
        i.entrypoint,
        CASE WHEN i.payload_null THEN NULL ELSE i.payload END,
        now() + i.execute_after_us * interval '1 microsecond',
        'queued',
        NULLIF(i.dedupe_key, ''),
        NULLIF(i.headers, '')::jsonb
    FROM input AS i
    RETURNING id, priority, entrypoint, dedupe_key
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT inserted.id, 'queued', inserted.priority, inserted.entrypoint FROM inserted
)
SELECT inserted.id, inserted.dedupe_key FROM inserted ORDER BY inserted.id;

-- name: JobsEnqueueSkipDuplicates :many
-- Like JobsEnqueue, but a job whose dedupe key is already held by a queued or
-- picked job (or by an earlier job of the same batch) is skipped, not an error.
WITH input AS (
    SELECT
        unnest(@priorities::int[])             AS priority,
        unnest(@entrypoints::text[])           AS entrypoint,
        unnest(@payloads::bytea[])             AS payload,
        unnest(@payload_nulls::boolean[])      AS payload_null,
        unnest(@execute_after_us::bigint[])    AS execute_after_us,
        unnest(@dedupe_keys::text[])           AS dedupe_key,
        unnest(@headers::text[])               AS headers
),
inserted AS (
    INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, status, dedupe_key, headers)
    SELECT
        i.priority,
        i.entrypoint,
        CASE WHEN i.payload_null THEN NULL ELSE i.payload END,
        now() + i.execute_after_us * interval '1 microsecond',
        'queued',
        NULLIF(i.dedupe_key, ''),
        NULLIF(i.headers, '')::jsonb
    FROM input AS i
    ON CONFLICT (dedupe_key) WHERE status IN ('queued', 'picked') AND dedupe_key IS NOT NULL
    DO NOTHING
    RETURNING id, priority, entrypoint, dedupe_key
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT inserted.id, 'queued', inserted.priority, inserted.entrypoint FROM inserted
)
SELECT inserted.id, inserted.dedupe_key FROM inserted ORDER BY inserted.id;

-- name: JobsClaim :many
-- Claims up to batch_size runnable jobs of the given entrypoints, highest
-- priority first then oldest, skipping rows other workers hold; marks them
-- picked by this queue manager and writes their 'picked' log rows, all in
-- one statement. The candidate scan walks pgqueuer_priority_id_id1_idx
-- backwards, which yields exactly (priority DESC, id ASC).
WITH candidates AS (
    SELECT c.id
    FROM pgqueuer AS c
    WHERE c.status = 'queued'
      AND c.entrypoint = ANY(@entrypoints::text[])
      AND c.execute_after <= now()
    ORDER BY c.priority DESC, c.id ASC
    LIMIT @batch_size::int
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE pgqueuer AS j
    SET status = 'picked',
        updated = now(),
        heartbeat = now(),
        queue_manager_id = @queue_manager_id
    FROM candidates
    WHERE j.id = candidates.id
    RETURNING j.id, j.priority, j.created, j.execute_after, j.entrypoint,
              j.payload, j.headers, j.attempts, j.dedupe_key
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT claimed.id, 'picked', claimed.priority, claimed.entrypoint FROM claimed
)
SELECT claimed.id, claimed.priority, claimed.created, claimed.execute_after,
       claimed.entrypoint, claimed.payload, claimed.headers, claimed.attempts,
       claimed.dedupe_key
FROM claimed
ORDER BY claimed.priority DESC, claimed.id ASC;

-- name: JobsFinish :execrows
-- Finishes a batch of jobs this queue manager holds: deletes their rows and
-- writes each one's terminal log row (status and, for an exception, its
-- traceback as JSON text) in one statement.
WITH outcome AS (
    SELECT
        unnest(@ids::bigint[])       AS id,
        unnest(@statuses::text[])    AS status,
        unnest(@tracebacks::text[])  AS traceback
),
finished AS (
    DELETE FROM pgqueuer AS j
    USING outcome
    WHERE j.id = outcome.id
      AND j.status = 'picked'
      AND j.queue_manager_id = @queue_manager_id
    RETURNING j.id, j.priority, j.entrypoint
)
INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, traceback)
SELECT finished.id, outcome.status::pgqueuer_status, finished.priority, finished.entrypoint,
       NULLIF(outcome.traceback, '')::jsonb
FROM finished
JOIN outcome ON outcome.id = finished.id;

-- name: JobsRelease :execrows
-- Puts jobs this queue manager holds back in the queue (status queued) so
-- that another worker runs them, e.g. at shutdown before they started.
UPDATE pgqueuer AS j
SET status = 'queued', queue_manager_id = NULL, updated = now()
WHERE j.id = ANY(@ids::bigint[])
  AND j.status = 'picked'
  AND j.queue_manager_id = @queue_manager_id;

-- name: JobsCancelWaiting :many
-- Removes queued or held jobs among ids and logs them 'canceled'; returns
-- the ids removed. Running (picked) jobs are left to their workers.
WITH removed AS (
    DELETE FROM pgqueuer AS j
    WHERE j.id = ANY(@ids::bigint[])
      AND j.status IN ('queued', 'failed')
    RETURNING j.id, j.priority, j.entrypoint
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT removed.id, 'canceled', removed.priority, removed.entrypoint FROM removed
)
SELECT removed.id FROM removed;

-- name: JobsExisting :many
-- Returns which of ids have a row in the job table.
SELECT j.id FROM pgqueuer AS j WHERE j.id = ANY(@ids::bigint[]);

-- name: JobsCountByStatus :many
-- Queue depth by entrypoint, priority and status.
SELECT j.entrypoint, j.priority, j.status, count(*)::bigint AS count
FROM pgqueuer AS j
GROUP BY j.entrypoint, j.priority, j.status
ORDER BY j.entrypoint, j.priority DESC, j.status;

-- name: JobsQueuedExist :one
-- Reports whether a job of the given entrypoints is queued (runnable now or
-- later); drain mode stops when none is.
SELECT EXISTS (
    SELECT 1 FROM pgqueuer AS j
    WHERE j.status = 'queued' AND j.entrypoint = ANY(@entrypoints::text[])
)::boolean AS found;
