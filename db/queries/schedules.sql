-- name: SchedulesInsert :exec
-- Registers schedules (one array element per schedule, all arrays the same
-- length). A row that exists keeps its state: its next_run, status and
-- history are the fleet's, not this process's. next_run_us is the first
-- tick, in microseconds since the Unix epoch, computed by the caller.
INSERT INTO pgqueuer_schedules (expression, entrypoint, next_run)
SELECT
    unnest(@expressions::text[]),
    unnest(@entrypoints::text[]),
    timestamptz 'epoch' + unnest(@next_run_us::bigint[]) * interval '1 microsecond'
ON CONFLICT (expression, entrypoint) DO NOTHING;

-- name: SchedulesClaim :many
-- Claims the due schedules among the given (entrypoint, expression) pairs
-- (arrays of the same length, element by element): those whose next_run has
-- come and that are queued, or picked by a scheduler whose heartbeat is
-- older than stale_after_us (it died). Rows other schedulers are claiming
-- are skipped. Returns the claimed rows with the database's clock.
UPDATE pgqueuer_schedules AS s
SET status = 'picked', heartbeat = now(), updated = now()
WHERE s.id IN (
    SELECT c.id
    FROM pgqueuer_schedules AS c
    WHERE c.next_run <= now()
      AND (c.status = 'queued'
           OR (c.status = 'picked'
               AND c.heartbeat < now() - sqlc.arg(stale_after_us)::bigint * interval '1 microsecond'))
      AND (c.entrypoint, c.expression) IN (
          SELECT unnest(@entrypoints::text[]), unnest(@expressions::text[])
      )
    FOR UPDATE SKIP LOCKED
)
RETURNING s.id, s.expression, s.entrypoint, s.created, s.next_run, s.last_run,
          now()::timestamptz AS db_now;

-- name: SchedulesNextWait :one
-- How many of the given (entrypoint, expression) pairs are queued, and how
-- long, in microseconds by the database's clock, until the earliest next_run
-- among them (0 when none is queued; negative when one is overdue).
SELECT count(*)::bigint AS queued,
       coalesce((extract(epoch FROM min(s.next_run) - now()) * 1000000)::bigint, 0)::bigint AS wait_us
FROM pgqueuer_schedules AS s
WHERE s.status = 'queued'
  AND (s.entrypoint, s.expression) IN (
      SELECT unnest(@entrypoints::text[]), unnest(@expressions::text[])
  );

-- name: SchedulesHeartbeat :execrows
-- Refreshes the heartbeat of the running schedules among ids.
UPDATE pgqueuer_schedules AS s
SET heartbeat = now(), updated = now()
WHERE s.id = ANY(@ids::bigint[])
  AND s.status = 'picked';

-- name: SchedulesFinish :execrows
-- Puts a schedule this scheduler claimed back in the queue with its next
-- tick; last_run becomes now when the tick ran (ran), and is kept when it was
-- skipped. The row must still hold the claimed tick (claimed_next_run), so a
-- scheduler whose claim went stale and was taken over changes nothing.
UPDATE pgqueuer_schedules AS s
SET status = 'queued',
    next_run = @next_run,
    last_run = CASE WHEN @ran::boolean THEN now() ELSE s.last_run END,
    updated = now()
WHERE s.id = @id
  AND s.status = 'picked'
  AND s.next_run = @claimed_next_run;

-- name: SchedulesList :many
-- Every schedule, by entrypoint and expression.
SELECT s.id, s.expression, s.entrypoint, s.heartbeat, s.created, s.updated,
       s.next_run, s.last_run, s.status
FROM pgqueuer_schedules AS s
ORDER BY s.entrypoint, s.expression, s.id;

-- name: SchedulesDelete :execrows
-- Removes the schedules whose id is among ids or whose entrypoint is among
-- entrypoints.
DELETE FROM pgqueuer_schedules AS s
WHERE s.id = ANY(@ids::bigint[])
   OR s.entrypoint = ANY(@entrypoints::text[]);
