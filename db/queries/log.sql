-- name: LogLatestStatus :many
-- The latest status of each of ids: its log row with the greatest
-- (created, id). Served by pgqueuer_log_job_id_status as an index-only scan.
SELECT DISTINCT ON (l.job_id) l.job_id, l.status
FROM pgqueuer_log AS l
WHERE l.job_id = ANY(@ids::bigint[])
ORDER BY l.job_id, l.created DESC, l.id DESC;
