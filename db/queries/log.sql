-- name: LogLatestStatus :many
-- The latest status of each of ids: its log row with the greatest
-- (created, id). One index-only probe of pgqueuer_log_job_id_status per id
-- (LIMIT 1), however long a job's log and however many ids. Ids without a
-- log row are absent.
--
-- The array is read through a subquery so that a connection keeps the
-- generic plan (docs/benchmarks.md, "Statements planned on every call").
-- Planned for each call, a watcher's look-up spent 0.23 ms planning a
-- 0.05 ms run.
SELECT i.job_id::bigint AS job_id, latest.status
FROM unnest((SELECT @ids::bigint[])) AS i (job_id)
CROSS JOIN LATERAL (
    SELECT l.status
    FROM pgqueuer_log AS l
    WHERE l.job_id = i.job_id
    ORDER BY l.created DESC, l.id DESC
    LIMIT 1
) AS latest
ORDER BY i.job_id;

-- name: LogFoldStatistics :one
-- Folds up to batch_size log rows that are not aggregated yet into the
-- per-second statistics, and marks them aggregated: the rows after
-- after_id, by id, or when after_id is 0 the first ones not aggregated.
-- Returns how many log rows it folded (not how many statistics rows it
-- wrote; a batch short of batch_size means the fold has caught up) and the
-- greatest id folded, the after_id of the next batch (after_id itself when
-- none).
--
-- It folds only while holding, for its transaction, the advisory lock
-- PGQueuer (1.3+) folds under,
-- pg_try_advisory_xact_lock(hashtext('<statistics table>')) with the
-- table's name schema-qualified when a schema is configured (the rewriter
-- qualifies the literal the same way); when a PGQueuer worker holds it,
-- this folds nothing. Rows another worker is folding are skipped.
--
-- pgq's own claims and outcomes count their rows into the statistics as
-- they write them (JobsClaim, JobsFinish), so what is left here is the
-- 'queued' rows of enqueues, the rows written inside callers' or
-- multi-statement transactions (CompleteTx, limited and keyed claims) and
-- the rows of PGQueuer's workers. Statistics rows are upserted in their key
-- order (priority, second, status, entrypoint), as in every pgq statement
-- that counts there, so two such statements cannot deadlock.
--
-- Why a cursor: each fold rewrites its rows, and until the log is vacuumed
-- (its autovacuum waits for a million dead rows) the entries of the
-- versions it replaced stay in the log's indexes. A batch taken from the
-- head of pgqueuer_log_not_aggregated steps over all of them (40 ms for 500
-- rows at 19,000 new log rows a second), and one taken ORDER BY id from the
-- head of the primary key over every row ever folded. After after_id, the
-- primary key holds only rows not folded yet and rows counted as they were
-- written (JobsClaim, JobsFinish), which were never rewritten, so have no
-- entries of old versions to step over. The first batch of a pass
-- finds where to start from the partial index, once.
--
-- The batch's test is written coalesce(aggregated, true) = false (the
-- rows NOT aggregated selects) so that pgqueuer_log_not_aggregated cannot
-- serve it, and the update finds its rows with = ANY(ARRAY(...)). Since
-- claims and outcomes count their own rows, most of the log is aggregated
-- when written and that index is small; the generic plan a prepared
-- statement gets after five runs then read the whole index and sorted it
-- on disk for each batch (200 ms for 500 rows on a log of 1.5 million),
-- or hashed the whole log for the update.
WITH guard AS (
    SELECT pg_try_advisory_xact_lock(hashtext('pgqueuer_statistics')) AS proceed
),
batch AS (
    SELECT l.id
    FROM pgqueuer_log AS l, guard
    WHERE guard.proceed AND coalesce(l.aggregated, true) = false
      AND l.id > (CASE WHEN @after_id::bigint > 0 THEN @after_id::bigint
                  ELSE (SELECT coalesce(min(u.id) - 1, 9223372036854775807)
                        FROM (SELECT n.id FROM pgqueuer_log AS n WHERE NOT n.aggregated OFFSET 0) AS u)
                  END)
    ORDER BY l.id
    LIMIT @batch_size::int
    FOR UPDATE SKIP LOCKED
),
marked AS (
    UPDATE pgqueuer_log AS m
    SET aggregated = true
    WHERE m.id = ANY(ARRAY(SELECT batch.id FROM batch))
    RETURNING m.id, m.created, m.priority, m.status, m.entrypoint
),
folded AS (
    INSERT INTO pgqueuer_statistics (created, count, priority, status, entrypoint)
    SELECT date_trunc('sec', marked.created AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           count(*), marked.priority, marked.status, marked.entrypoint
    FROM marked
    GROUP BY 1, marked.priority, marked.status, marked.entrypoint
    ORDER BY marked.priority, 1, marked.status, marked.entrypoint
    ON CONFLICT (priority, date_trunc('sec', created AT TIME ZONE 'UTC'), status, entrypoint)
    DO UPDATE SET count = pgqueuer_statistics.count + EXCLUDED.count
)
SELECT count(*)::bigint AS folded, coalesce(max(marked.id), @after_id::bigint)::bigint AS last_id
FROM marked;

-- name: LogPrune :one
-- Deletes up to batch_size log rows older than older_than_s seconds, by
-- id after after_id (0: from the first), and returns how many it deleted
-- and the greatest id deleted (after_id itself when none), the after_id of
-- the next batch. A batch short of batch_size means the prune has caught
-- up.
--
-- Rows not folded into the statistics yet are folded as they are
-- deleted, in the same statement, while it holds the advisory lock the
-- fold takes (see LogFoldStatistics); without the lock (another worker,
-- or PGQueuer, is folding) they are left for a later batch. So a fold that
-- falls behind under a heavy load no longer holds the log above its
-- retention: a row folded by its deletion costs no update.
--
-- Why by id after a cursor: ids follow insertion, and the primary key
-- after the cursor holds no entries of the rows the pass deleted, which
-- stay in the indexes until the log is vacuumed (its autovacuum waits for
-- a million dead rows). Taken oldest first from the head of
-- pgqueuer_log_created, each batch stepped over all of them, and each
-- plan too (the planner reads the index's ends). The id bound is the
-- first row at or after the cutoff by created, so the scan stops there.
WITH guard AS (
    SELECT pg_try_advisory_xact_lock(hashtext('pgqueuer_statistics')) AS proceed
),
cutoff AS MATERIALIZED (
    SELECT now() - make_interval(secs => @older_than_s::float8) AS at
),
bound AS MATERIALIZED (
    SELECT coalesce((
        SELECT b.id
        FROM pgqueuer_log AS b
        WHERE b.created >= (SELECT cutoff.at FROM cutoff)
        ORDER BY b.created
        LIMIT 1
    ), 9223372036854775807) AS id
),
batch AS (
    SELECT o.id
    FROM pgqueuer_log AS o, guard
    WHERE o.id > @after_id::bigint
      AND o.id < (SELECT bound.id FROM bound)
      AND o.created < (SELECT cutoff.at FROM cutoff)
      AND (o.aggregated OR guard.proceed)
    ORDER BY o.id
    LIMIT @batch_size::int
    FOR UPDATE OF o SKIP LOCKED
),
deleted AS (
    DELETE FROM pgqueuer_log AS d
    USING batch
    WHERE d.id = batch.id
    RETURNING d.id, d.created, d.priority, d.status, d.entrypoint, d.aggregated
),
folded AS (
    INSERT INTO pgqueuer_statistics (created, count, priority, status, entrypoint)
    SELECT date_trunc('sec', deleted.created AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           count(*), deleted.priority, deleted.status, deleted.entrypoint
    FROM deleted
    WHERE NOT deleted.aggregated
    GROUP BY 1, deleted.priority, deleted.status, deleted.entrypoint
    ORDER BY deleted.priority, 1, deleted.status, deleted.entrypoint
    ON CONFLICT (priority, date_trunc('sec', created AT TIME ZONE 'UTC'), status, entrypoint)
    DO UPDATE SET count = pgqueuer_statistics.count + EXCLUDED.count
)
SELECT count(*)::bigint AS pruned, coalesce(max(deleted.id), @after_id::bigint)::bigint AS last_id
FROM deleted;
