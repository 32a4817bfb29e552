-- name: LogLatestStatus :many
-- The latest status of each of ids: its log row with the greatest
-- (created, id). One index-only probe of pgqueuer_log_job_id_status per id
-- (LIMIT 1), however long a job's log and however many ids. Ids without a
-- log row are absent.
SELECT i.job_id::bigint AS job_id, latest.status
FROM unnest(@ids::bigint[]) AS i (job_id)
CROSS JOIN LATERAL (
    SELECT l.status
    FROM pgqueuer_log AS l
    WHERE l.job_id = i.job_id
    ORDER BY l.created DESC, l.id DESC
    LIMIT 1
) AS latest
ORDER BY i.job_id;

-- name: LogFoldStatistics :execrows
-- Folds up to batch_size log rows that are not aggregated yet into the
-- per-second statistics, and marks them aggregated. Rows another worker is
-- folding are skipped. It folds only while holding, for its transaction,
-- the advisory lock PGQueuer (1.3+) folds under,
-- pg_try_advisory_xact_lock(hashtext('<statistics table>')) with the
-- table's name schema-qualified when a schema is configured (the rewriter
-- qualifies the literal the same way); when a PGQueuer worker holds it,
-- this folds nothing (0 rows). The batch is any batch_size rows of the
-- partial index pgqueuer_log_not_aggregated, in no order: with an ORDER BY
-- id the planner walks the primary key from the log's first row, stepping
-- over every row folded already (all the rows a retention keeps, or the
-- whole log without one), so each batch cost more the longer the log.
WITH guard AS (
    SELECT pg_try_advisory_xact_lock(hashtext('pgqueuer_statistics')) AS proceed
),
batch AS (
    SELECT l.id
    FROM pgqueuer_log AS l, guard
    WHERE guard.proceed AND NOT l.aggregated
    LIMIT @batch_size::int
    FOR UPDATE SKIP LOCKED
),
marked AS (
    UPDATE pgqueuer_log AS m
    SET aggregated = true
    FROM batch
    WHERE m.id = batch.id
    RETURNING m.created, m.priority, m.status, m.entrypoint
)
INSERT INTO pgqueuer_statistics (created, count, priority, status, entrypoint)
SELECT date_trunc('sec', marked.created AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       count(*), marked.priority, marked.status, marked.entrypoint
FROM marked
GROUP BY 1, marked.priority, marked.status, marked.entrypoint
ON CONFLICT (priority, date_trunc('sec', created AT TIME ZONE 'UTC'), status, entrypoint)
DO UPDATE SET count = pgqueuer_statistics.count + EXCLUDED.count;

-- name: LogPrune :execrows
-- Deletes up to batch_size log rows older than older_than_s seconds that
-- have been folded into the statistics, oldest first.
DELETE FROM pgqueuer_log
WHERE id IN (
    SELECT o.id
    FROM pgqueuer_log AS o
    WHERE o.created < now() - make_interval(secs => @older_than_s::float8)
      AND o.aggregated
    ORDER BY o.created
    LIMIT @batch_size::int
);
