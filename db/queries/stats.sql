-- name: StatsClock :one
-- The database's clock, and the start of the window of recent activity:
-- the start of the second window_s seconds ago. The window starts on a whole
-- second so that it takes the same log rows whether they are counted from
-- the log or from the per-second statistics they were folded into.
SELECT now()::timestamptz AS now,
       (date_trunc('sec', now()) - make_interval(secs => @window_s::float8))::timestamptz AS since;

-- name: StatsQueueDepth :many
-- Jobs in the job table by entrypoint, priority and status, with, for the
-- queued ones, how long the one that has been due longest has waited
-- (seconds since its execute_after; 0 when none is due). One pass over the
-- job table, which holds only live jobs.
SELECT j.entrypoint, j.priority, j.status, count(*)::bigint AS count,
       COALESCE(extract(epoch FROM now() - min(j.execute_after)
           FILTER (WHERE j.status = 'queued' AND j.execute_after <= now())), 0)::float8 AS oldest_wait_s
FROM pgqueuer AS j
GROUP BY j.entrypoint, j.priority, j.status
ORDER BY j.entrypoint, j.priority DESC, j.status;

-- name: StatsRecent :many
-- Status transitions since @since (a whole second) by entrypoint and status:
-- the per-second statistics plus the log rows not folded into them yet, so
-- that no transition is counted twice (one statement, one snapshot). The
-- statistics table has no index on created, only the unique one led by
-- priority: a loose index scan walks its distinct priorities and reads each
-- priority's recent seconds from that index (on a million statistics rows:
-- ~130 buffers and 3 ms instead of a 270 ms sequential scan). Log rows come
-- from pgqueuer_log_created or pgqueuer_log_not_aggregated.
WITH RECURSIVE prios AS (
    (SELECT s.priority FROM pgqueuer_statistics AS s ORDER BY s.priority LIMIT 1)
    UNION ALL
    SELECT (SELECT n.priority FROM pgqueuer_statistics AS n
            WHERE n.priority > prios.priority ORDER BY n.priority LIMIT 1)
    FROM prios
    WHERE prios.priority IS NOT NULL
),
counted AS (
    SELECT st.entrypoint, st.status, st.count
    FROM prios
    CROSS JOIN LATERAL (
        SELECT s.entrypoint, s.status, s.count
        FROM pgqueuer_statistics AS s
        WHERE s.priority = prios.priority
          AND date_trunc('sec', s.created AT TIME ZONE 'UTC') >= timezone('UTC', @since::timestamptz)
        OFFSET 0 -- keeps the subquery a per-priority index scan, not one big join
    ) AS st
    WHERE prios.priority IS NOT NULL
    UNION ALL
    SELECT l.entrypoint, l.status, 1::bigint AS count
    FROM pgqueuer_log AS l
    WHERE l.created >= @since::timestamptz
      AND NOT l.aggregated
)
SELECT c.entrypoint, c.status, sum(c.count)::bigint AS count
FROM counted AS c
GROUP BY c.entrypoint, c.status
ORDER BY c.entrypoint, c.status;

-- name: StatsTimeline :many
-- Outcomes (successful, exception, canceled, deleted) and holds (failed)
-- since @since (a whole second) in buckets of step_s seconds (bucket 0
-- starts at since), by status: read as StatsRecent reads its window (the
-- per-second statistics by a loose index scan, plus the log rows not
-- folded into them yet).
WITH RECURSIVE prios AS (
    (SELECT s.priority FROM pgqueuer_statistics AS s ORDER BY s.priority LIMIT 1)
    UNION ALL
    SELECT (SELECT n.priority FROM pgqueuer_statistics AS n
            WHERE n.priority > prios.priority ORDER BY n.priority LIMIT 1)
    FROM prios
    WHERE prios.priority IS NOT NULL
),
counted AS (
    SELECT st.at, st.status, st.count
    FROM prios
    CROSS JOIN LATERAL (
        SELECT date_trunc('sec', s.created AT TIME ZONE 'UTC') AS at, s.status, s.count
        FROM pgqueuer_statistics AS s
        WHERE s.priority = prios.priority
          AND date_trunc('sec', s.created AT TIME ZONE 'UTC') >= timezone('UTC', @since::timestamptz)
        OFFSET 0 -- keeps the subquery a per-priority index scan, not one big join
    ) AS st
    WHERE prios.priority IS NOT NULL
    UNION ALL
    SELECT timezone('UTC', l.created) AS at, l.status, 1::bigint AS count
    FROM pgqueuer_log AS l
    WHERE l.created >= @since::timestamptz
      AND NOT l.aggregated
)
SELECT floor(extract(epoch FROM c.at - timezone('UTC', @since::timestamptz)) / @step_s::float8)::int AS bucket,
       c.status, sum(c.count)::bigint AS count
FROM counted AS c
WHERE c.status IN ('successful', 'exception', 'canceled', 'deleted', 'failed')
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: StatsRecentErrors :many
-- The latest max_rows errors, newest first: log rows of status exception
-- (the handler failed for good) or failed (held), found through
-- pgqueuer_log_status (or, when errors are frequent, pgqueuer_log_created
-- read backwards), and the error of the last attempt of every live job that
-- is waiting for (or running) a retry: its latest 'queued' log row with a
-- traceback, found through pgqueuer_log_job_id_status. ('queued' rows are a
-- third of the log; retries still waiting are few.)
SELECT e.id, e.job_id, e.entrypoint, e.status, e.created, e.message
FROM (
    (SELECT l.id, l.job_id, l.entrypoint, l.status, l.created,
            COALESCE(l.traceback->>'exception_message', '')::text AS message
     FROM pgqueuer_log AS l
     WHERE l.status = 'exception'
     ORDER BY l.created DESC, l.id DESC
     LIMIT @max_rows::int)
    UNION ALL
    (SELECT l.id, l.job_id, l.entrypoint, l.status, l.created,
            COALESCE(l.traceback->>'exception_message', '')::text AS message
     FROM pgqueuer_log AS l
     WHERE l.status = 'failed'
     ORDER BY l.created DESC, l.id DESC
     LIMIT @max_rows::int)
    UNION ALL
    (SELECT r.id, r.job_id, r.entrypoint, r.status, r.created, r.message
     FROM pgqueuer AS j
     CROSS JOIN LATERAL (
         SELECT l.id, l.job_id, l.entrypoint, l.status, l.created,
                COALESCE(l.traceback->>'exception_message', '')::text AS message
         FROM pgqueuer_log AS l
         WHERE l.job_id = j.id
           AND l.status = 'queued'
           AND l.traceback IS NOT NULL
         ORDER BY l.created DESC, l.id DESC
         LIMIT 1
     ) AS r
     WHERE j.attempts > 0
       AND j.status IN ('queued', 'picked')
     ORDER BY r.created DESC, r.id DESC
     LIMIT @max_rows::int)
) AS e
ORDER BY e.created DESC, e.id DESC
LIMIT @max_rows::int;

-- name: StatsWorkers :many
-- The workers seen on the queue: those holding jobs (queue_manager_id of
-- its picked rows), those whose claim connection is open, which pgq names
-- 'pgq claims <id> <channel>', and those whose listener connection is
-- open, named 'pgq worker <id> <channel>' (each cut to 63 bytes, as
-- PostgreSQL keeps application_name); with how many jobs each holds and
-- whether it listens. A worker seen without a listener connection polls
-- (or is PGQueuer's, whose connections pgq does not name).
WITH held AS (
    SELECT j.queue_manager_id AS id, count(*)::bigint AS running, max(j.heartbeat) AS last_heartbeat
    FROM pgqueuer AS j
    WHERE j.status = 'picked' AND j.queue_manager_id IS NOT NULL
    GROUP BY j.queue_manager_id
),
named AS (
    SELECT DISTINCT substr(a.application_name, 12, 36)::uuid AS id,
           substr(a.application_name, 5, 6) = 'worker' AS listener
    FROM pg_catalog.pg_stat_activity AS a
    WHERE a.datname = current_database()
      AND a.application_name ~ '^pgq (worker|claims) [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} '
      AND a.application_name = left(substr(a.application_name, 1, 47) || ' ' || @channel::text, 63)
),
seen AS (
    SELECT n.id, bool_or(n.listener) AS listening
    FROM named AS n
    GROUP BY n.id
)
SELECT COALESCE(h.id, s.id)::uuid AS id, COALESCE(h.running, 0)::bigint AS running,
       COALESCE(s.listening, false)::bool AS listening,
       COALESCE(h.last_heartbeat, 'epoch'::timestamptz)::timestamptz AS last_heartbeat
FROM held AS h
FULL JOIN seen AS s ON s.id = h.id
ORDER BY 1;

-- name: StatsWatchers :one
-- How many CompletionWatchers listen on the queue's channel: pgq names
-- their listener connections 'pgq watcher <channel>'.
SELECT count(*)::bigint AS watchers
FROM pg_catalog.pg_stat_activity AS a
WHERE a.datname = current_database()
  AND a.application_name = left('pgq watcher ' || @channel::text, 63);

-- name: SetApplicationName :exec
-- Names the session in pg_stat_activity: a worker names its claim
-- connection 'pgq claims <id> <channel>' so that StatsWorkers sees it
-- when it does not listen.
SELECT set_config('application_name', @name::text, false);

-- name: ResetApplicationName :exec
-- Gives the session back the application_name it connected with, before
-- a worker hands its claim connection back to the pool.
SELECT set_config('application_name', s.reset_val, false)
FROM pg_catalog.pg_settings AS s
WHERE s.name = 'application_name';
