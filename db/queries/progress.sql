-- name: ProgressWrite :many
-- Writes the latest progress of a batch of jobs (ids, fractions and notes
-- parallel; ids distinct), one row per job, and returns the ids written.
-- Only jobs still in the job table are written: the progress of a job
-- canceled meanwhile is dropped, not kept as an orphan.
INSERT INTO pgqueuer_pgq_progress AS p (job_id, fraction, note, updated)
SELECT i.job_id, i.fraction, i.note, now()
FROM (
    SELECT unnest(@ids::bigint[])      AS job_id,
           unnest(@fractions::float8[]) AS fraction,
           unnest(@notes::text[])       AS note
) AS i
WHERE EXISTS (SELECT 1 FROM pgqueuer AS j WHERE j.id = i.job_id)
ON CONFLICT (job_id) DO UPDATE
SET fraction = EXCLUDED.fraction, note = EXCLUDED.note, updated = EXCLUDED.updated
RETURNING p.job_id;

-- name: ProgressGet :many
-- The latest progress of each of ids that has reported any.
SELECT p.job_id, p.fraction, p.note, p.updated
FROM pgqueuer_pgq_progress AS p
WHERE p.job_id = ANY(@ids::bigint[])
ORDER BY p.job_id;

-- name: ProgressPrune :execrows
-- Deletes up to batch_size progress rows last written more than
-- older_than_s seconds ago whose job has left the job table, oldest first
-- (pgqueuer_pgq_progress_updated).
DELETE FROM pgqueuer_pgq_progress
WHERE job_id IN (
    SELECT o.job_id
    FROM pgqueuer_pgq_progress AS o
    WHERE o.updated < now() - make_interval(secs => @older_than_s::float8)
      AND NOT EXISTS (SELECT 1 FROM pgqueuer AS j WHERE j.id = o.job_id)
    ORDER BY o.updated
    LIMIT @batch_size::int
);
