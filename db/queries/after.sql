-- name: AfterCheck :many
-- For each of ids (the dependencies of jobs about to be enqueued, see
-- WithAfter): whether it has a row in the job table, and its latest status
-- in the log ('' when it has none).
--
-- The array is read through a subquery so that a connection keeps the
-- generic plan (docs/benchmarks.md, "Statements planned on every call").
-- Planned for each call, it spent 0.2 ms planning a 0.04 ms look-up.
-- The look-up in the job table is a subquery with LIMIT, as in
-- AfterSweep, not EXISTS, which the planner may turn into a hash of every
-- id in the job table when it prices the table small.
SELECT i.id::bigint AS id,
       ((SELECT j.id FROM pgqueuer AS j WHERE j.id = i.id LIMIT 1) IS NOT NULL)::boolean AS live,
       COALESCE((
           SELECT l.status::text
           FROM pgqueuer_log AS l
           WHERE l.job_id = i.id
           ORDER BY l.created DESC, l.id DESC
           LIMIT 1
       ), '')::text AS status
FROM unnest((SELECT @ids::bigint[])) AS i (id);

-- name: JobsEnqueueAfter :many
-- JobsEnqueueKeyed for a batch in which some jobs wait for others (WithAfter):
-- a job with waits set is inserted with execute_after 9999-12-31, outside
-- the claimable set of every worker, and gets one edge in
-- pgqueuer_pgq_after per dependency (edge_jobs: the 1-based position of
-- the waiting job in the batch, edge_after: the job it waits for) with
-- the time it becomes due once released. The dependencies' rows are
-- locked FOR KEY SHARE (pgqueuer_pgq_after_lock) until the transaction
-- ends, so that none finishes before the edges are visible to the log's
-- trigger, which releases or cancels the waiting jobs.
WITH input AS (
    SELECT
        -- In step with the unnests (a window function would run before
        -- them, numbering one row).
        generate_subscripts(@priorities::int[], 1) AS n,
        unnest(@priorities::int[])             AS priority,
        unnest(@entrypoints::text[])           AS entrypoint,
        unnest(@payloads::bytea[])             AS payload,
        unnest(@payload_nulls::boolean[])      AS payload_null,
        unnest(@execute_after_us::bigint[])    AS execute_after_us,
        unnest(@dedupe_keys::text[])           AS dedupe_key,
        unnest(@headers::text[])               AS headers,
        unnest(@fairness_keys::text[])         AS fairness_key,
        unnest(@serial_keys::text[])           AS serial_key,
        unnest(@waits::boolean[])              AS waits,
        unnest(@holds::boolean[])              AS hold
),
locked AS (
    SELECT count(*) AS n FROM pgqueuer_pgq_after_lock(@edge_after::bigint[])
),
inserted AS (
    INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, status, dedupe_key, headers,
                          fairness_key, serial_key)
    SELECT
        i.priority,
        i.entrypoint,
        CASE WHEN i.payload_null THEN NULL ELSE i.payload END,
        CASE WHEN i.waits THEN '9999-12-31 00:00:00+00'::timestamptz
             ELSE now() + i.execute_after_us * interval '1 microsecond' END,
        'queued',
        NULLIF(i.dedupe_key, ''),
        NULLIF(i.headers, '')::jsonb,
        NULLIF(i.fairness_key, ''),
        NULLIF(i.serial_key, '')
    FROM input AS i
    ORDER BY i.n
    RETURNING id, priority, entrypoint, dedupe_key
),
numbered AS (
    SELECT inserted.id, row_number() OVER (ORDER BY inserted.id) AS n FROM inserted
),
edges AS (
    INSERT INTO pgqueuer_pgq_after (after_id, job_id, due, hold)
    SELECT e.after_id, numbered.id, now() + input.execute_after_us * interval '1 microsecond', input.hold
    FROM (
        SELECT unnest(@edge_jobs::bigint[]) AS n, unnest(@edge_after::bigint[]) AS after_id
    ) AS e
    JOIN numbered ON numbered.n = e.n
    JOIN input ON input.n = e.n
    ON CONFLICT DO NOTHING
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT inserted.id, 'queued', inserted.priority, inserted.entrypoint FROM inserted
)
SELECT inserted.id, inserted.dedupe_key
FROM inserted CROSS JOIN locked
ORDER BY inserted.id;

-- name: AfterSweep :one
-- Settles the edges whose dependency has left the job table without the
-- log's trigger seeing them (it finished while the waiting job's enqueue
-- was in progress): by the dependency's latest log status, or as deleted
-- when the log has no terminal row for it. Returns how many waiting jobs
-- were released, canceled or held.
--
-- The look-up of each dependency in the job table is a subquery the planner
-- keeps as one (NOT EXISTS became an anti-join): planning a join on the
-- job table's id reads the id index's actual lowest and highest entries,
-- walking past every dead one, and a drain leaves tens of thousands at the
-- low end between vacuums. Planned afresh after each VACUUM of the job
-- table, the sweep took 250 ms at the median under a drain with handlers
-- that saturate the server, with nothing to settle.
SELECT COALESCE(pgqueuer_pgq_after_settle(array_agg(v.after_id), array_agg(v.status)), 0)::int AS settled
FROM (
    SELECT DISTINCT a.after_id,
           COALESCE((
               SELECT l.status::text
               FROM pgqueuer_log AS l
               WHERE l.job_id = a.after_id
                 AND l.status IN ('successful', 'exception', 'canceled', 'deleted')
               ORDER BY l.created DESC, l.id DESC
               LIMIT 1
           ), 'deleted') AS status
    FROM pgqueuer_pgq_after AS a
    WHERE (SELECT j.id FROM pgqueuer AS j WHERE j.id = a.after_id LIMIT 1) IS NULL
) AS v;
