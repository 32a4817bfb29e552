-- name: PauseEntrypoints :exec
-- Pauses the entrypoints fleet-wide: pgq's claim (JobsClaim) skips their
-- jobs from the next claim on. Pausing a paused entrypoint keeps its
-- paused_at.
INSERT INTO pgqueuer_pgq_paused (entrypoint)
SELECT DISTINCT unnest(@entrypoints::text[])
ON CONFLICT (entrypoint) DO NOTHING;

-- name: ResumeEntrypoints :execrows
-- Resumes the entrypoints; those that were not paused are ignored.
DELETE FROM pgqueuer_pgq_paused AS p
WHERE p.entrypoint = ANY(@entrypoints::text[]);

-- name: PausedList :many
-- The paused entrypoints, by name.
SELECT p.entrypoint, p.paused_at
FROM pgqueuer_pgq_paused AS p
ORDER BY p.entrypoint;
