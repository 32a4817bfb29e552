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
-- Claims up to batch_size jobs, highest priority first then oldest, marks
-- them picked by this queue manager and writes their 'picked' log rows, all
-- in one statement. Each entrypoint gets at most its cap (the worker's free
-- slots, lowered by concurrency and rate limits), so a busy or limited
-- entrypoint never starves the others; paused ones (Queries.Pause) get
-- nothing. Per entrypoint it takes queued jobs that are due, in the order of
-- pgqueuer_ep_prio_id_idx, skipping rows other workers hold. (Jobs abandoned by a dead worker are put back in the queue
-- by JobsReleaseStale, which keeps this statement on one index.)
--
-- With fold_statistics (a claim that is its own transaction) the claim
-- also counts its 'picked' rows into pgqueuer_statistics and logs them as
-- aggregated, so that no fold has to rewrite them later: marking a log
-- row aggregated is an update that writes a new version of the row and
-- four index entries, and it cost more than the claim itself under log
-- retention (see LogFoldStatistics). The counts are upserted last, in the
-- statistics' key order, so a claim never waits on a statistics row while
-- holding another.
--
-- Each row also gets claim_token, which names this claim: the row's updated
-- time in microseconds, which only a claim sets while a job is picked. The
-- outcome and the heartbeat of the claim pass it back, so that a worker that
-- lost a job and claimed it again never applies its first claim's outcome
-- to the second.
--
-- Unless synchronous_claim is set, the claim's transaction commits without
-- waiting for its WAL to reach disk (synchronous_commit off for this
-- transaction only): a claim lost in a server crash puts its jobs back in
-- the queue, as a worker crash does, and they run again. Enqueues always
-- wait (outcomes too when asked, see JobsFinish); a later commit that waits
-- also makes the claims before it durable.
WITH commit_mode AS (
    SELECT set_config('synchronous_commit',
                      CASE WHEN @synchronous_claim::boolean
                           THEN current_setting('synchronous_commit')
                           ELSE 'off' END,
                      true) AS mode
),
caps AS (
    SELECT unnest(@entrypoints::text[]) AS entrypoint,
           unnest(@caps::int[]) AS cap
    FROM commit_mode
),
-- The entrypoints this claim takes from: a cap above 0, not paused
-- (Queries.Pause: one probe of the small paused table), and no queued job
-- with a fairness or serial key (those entrypoints are JobsClaimKeyed's:
-- one probe of pgqueuer_pgq_keyed_idx, empty while no job has a key).
-- Materialized, so that both probes run once per entrypoint, not once
-- per job taken (written in due's WHERE, the planner checked the keyed
-- index after the join, for every row).
open_caps AS MATERIALIZED (
    SELECT caps.entrypoint, caps.cap
    FROM caps
    WHERE caps.cap > 0
      AND NOT EXISTS (SELECT 1 FROM pgqueuer_pgq_paused AS p WHERE p.entrypoint = caps.entrypoint)
      AND NOT EXISTS (
          SELECT 1 FROM pgqueuer AS k
          WHERE k.entrypoint = caps.entrypoint
            AND k.status = 'queued'
            AND (k.fairness_key IS NOT NULL OR k.serial_key IS NOT NULL))
),
due AS (
    SELECT q.id, q.priority
    FROM open_caps
    CROSS JOIN LATERAL (
        SELECT d.id, d.priority
        FROM pgqueuer AS d
        WHERE d.status = 'queued'
          AND d.entrypoint = open_caps.entrypoint
          AND d.execute_after <= now()
        ORDER BY d.priority DESC, d.id ASC
        LIMIT open_caps.cap
        FOR UPDATE SKIP LOCKED
    ) AS q
),
-- The batch size is read through a subquery, and so are the finish's
-- bounds (JobsFinishSucceeded), so that a plan made for the call's values
-- is priced like the generic plan and a connection keeps the generic one
-- (pgx prepares its statements). Given as values, claims of 100 were
-- planned again on every call (5,500 instructions a job), and with the
-- range reads both statements were (19,300; make instructions -batch
-- 100, docs/benchmarks.md).
candidates AS (
    SELECT due.id FROM due
    ORDER BY due.priority DESC, due.id ASC
    LIMIT (SELECT @batch_size::int)
),
-- The claim's time is the clock's when the statement runs, not now() (the
-- transaction's start): a claim of an entrypoint with a concurrency limit
-- runs in a transaction that may have begun before another worker's
-- release or retry of the job committed, and the log must order 'picked'
-- after that 'queued' (the latest row is a job's status for every
-- watcher, PGQueuer's too). This statement sees that commit, so any clock
-- reading in it is later. One reading, so that the row's updated (the
-- claim token) and its log row agree.
claim_time AS MATERIALIZED (
    SELECT t.at, (extract(epoch FROM t.at) * 1000000)::bigint AS token
    FROM (SELECT clock_timestamp() AS at) AS t
),
-- The candidates' range, when they lie close together (fewer than two
-- ids apart on average, as a claim of one queue's jobs in order takes
-- them), else an empty one (low above high).
span AS MATERIALIZED (
    SELECT CASE WHEN max(c.id) - min(c.id) < 2 * count(*) THEN min(c.id) ELSE 0 END AS low,
           CASE WHEN max(c.id) - min(c.id) < 2 * count(*) THEN max(c.id) ELSE -1 END AS high
    FROM candidates AS c
),
-- The candidates in that range are read as one range of the primary key
-- and then from the table page by page (the OR makes it a bitmap scan),
-- the others found by = ANY(ids), one descent of the key each; the hashed
-- check picks the candidates out of the range. By = ANY alone, which
-- descends the key and reads the table once a row, a job cost 1.3 % more
-- instructions (make instructions, docs/benchmarks.md). Not a join with
-- the candidates: the planner cannot size them and, joining, may hash or
-- scan the whole table.
claimed AS (
    UPDATE pgqueuer AS j
    SET status = 'picked',
        updated = (SELECT claim_time.at FROM claim_time),
        heartbeat = now(),
        queue_manager_id = @queue_manager_id,
        -- A slot left on the row by an earlier holder could collide on
        -- pgqueuer_picked_slot_idx; jobs of entrypoints with a concurrency
        -- limit get theirs from JobsAssignSlots, in the same transaction.
        slot = NULL
    WHERE (j.id BETWEEN (SELECT span.low FROM span) AND (SELECT span.high FROM span)
           OR j.id = ANY(ARRAY(SELECT c.id FROM candidates AS c, span WHERE c.id NOT BETWEEN span.low AND span.high)))
      AND (j.id IN (SELECT candidates.id FROM candidates)) IS TRUE
    RETURNING j.id, j.priority, j.created, j.execute_after, j.entrypoint,
              j.payload, j.headers, j.attempts, j.dedupe_key,
              (SELECT claim_time.token FROM claim_time)::bigint AS claim_token,
              j.fairness_key, j.serial_key
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, created, aggregated)
    SELECT claimed.id, 'picked', claimed.priority, claimed.entrypoint, claim_time.at,
           @fold_statistics::boolean
    FROM claimed CROSS JOIN claim_time
),
-- With fold_statistics, the 'picked' rows are counted into the statistics
-- here and logged as aggregated (see LogFoldStatistics). Rows locked in
-- the statistics' key order, as every pgq statement that counts there.
-- Every row logged here has the claim's time as created: one second,
-- truncated once. Counted from claimed, which logged writes row for row:
-- the log rows read back (RETURNING) cost 1.3 % of a job's instructions
-- with the finish's (make instructions, docs/benchmarks.md).
folded AS (
    INSERT INTO pgqueuer_statistics (created, count, priority, status, entrypoint)
    SELECT (SELECT date_trunc('sec', claim_time.at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM claim_time),
           count(*), claimed.priority, 'picked'::pgqueuer_status, claimed.entrypoint
    FROM claimed
    WHERE @fold_statistics::boolean
    GROUP BY claimed.priority, claimed.entrypoint
    ORDER BY claimed.priority, claimed.entrypoint
    ON CONFLICT (priority, date_trunc('sec', created AT TIME ZONE 'UTC'), status, entrypoint)
    DO UPDATE SET count = pgqueuer_statistics.count + EXCLUDED.count
)
SELECT claimed.id, claimed.priority, claimed.created, claimed.execute_after,
       claimed.entrypoint, claimed.payload, claimed.headers, claimed.attempts,
       claimed.dedupe_key, claimed.claim_token, claimed.fairness_key, claimed.serial_key
FROM claimed
ORDER BY claimed.priority DESC, claimed.id ASC;

-- name: JobsReleaseStale :many
-- Puts running jobs whose heartbeat is older than stale_after_us (their
-- worker died or lost its connection) back in the queue, due at once with
-- attempts unchanged, and logs them 'queued'; at most max_jobs, oldest
-- heartbeat first (pgqueuer_picked_heartbeat_idx), skipping rows others
-- hold. Returns the ids released. Two kinds of job are never stale: the
-- caller's own (queue_manager_id, with ids in held_ids: it runs them, so
-- it is alive even when its heartbeats failed), and any job while the
-- server has been up for less than stale_after_us (after a restart no
-- worker could heartbeat while the server was down).
WITH stale AS (
    SELECT s.id
    FROM pgqueuer AS s
    WHERE s.status = 'picked'
      AND s.entrypoint = ANY(@entrypoints::text[])
      AND s.heartbeat < now() - (@stale_after_us::bigint) * interval '1 microsecond'
      AND pg_postmaster_start_time() < now() - (@stale_after_us::bigint) * interval '1 microsecond'
      AND NOT (s.queue_manager_id IS NOT DISTINCT FROM @queue_manager_id
               AND s.id = ANY(COALESCE(@held_ids::bigint[], '{}'::bigint[])))
    ORDER BY s.heartbeat ASC
    LIMIT @max_jobs::int
    FOR UPDATE SKIP LOCKED
),
released AS (
    UPDATE pgqueuer AS j
    SET status = 'queued',
        queue_manager_id = NULL,
        slot = NULL,
        updated = now(),
        execute_after = LEAST(j.execute_after, now())
    WHERE j.id = ANY(ARRAY(SELECT stale.id FROM stale))
    RETURNING j.id, j.priority, j.entrypoint
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT released.id, 'queued', released.priority, released.entrypoint FROM released
)
SELECT released.id FROM released ORDER BY released.id;

-- name: JobsLockEntrypoints :exec
-- Serialises claims of limited entrypoints across the fleet until the end of
-- the transaction, so that counting running jobs and claiming are atomic.
-- Locks are taken in a fixed order to avoid deadlocks.
SELECT pg_advisory_xact_lock(k.key)
FROM (
    SELECT hashtextextended(@lock_namespace::text || e.name, 0) AS key
    FROM unnest(@entrypoints::text[]) AS e(name)
    ORDER BY 1
) AS k;

-- name: JobsRunningByEntrypoint :many
-- Jobs held by a worker per entrypoint, fleet-wide, counted as PGQueuer
-- counts them for its concurrency limits (every row with a holder, stale
-- heartbeat or not): what a concurrency limit leaves room for. A stale
-- job counts until it is released (JobsReleaseStale) or, by PGQueuer,
-- picked again; it keeps its capacity slot until then.
SELECT r.entrypoint, count(*)::int AS running
FROM pgqueuer AS r
WHERE r.queue_manager_id IS NOT NULL
  AND r.entrypoint = ANY(@entrypoints::text[])
GROUP BY r.entrypoint;

-- name: JobsAssignSlots :many
-- Gives the jobs ids, just claimed in this transaction for entrypoints
-- with a concurrency limit (limits, parallel to entrypoints), a capacity
-- slot as PGQueuer 1.4+ does for its own claims: per entrypoint, the
-- lowest slots in [0, limit) that no picked job holds, the lowest id
-- first. The unique index pgqueuer_picked_slot_idx then makes a claim
-- by another worker that takes the same slot at the same time fail
-- (unique_violation, or deadlock_detected when two claims wait on each
-- other) instead of running more jobs than the limit.
--
-- Per entrypoint it returns how many jobs got a slot (fewer than claimed
-- when the slots ran out) and how many jobs have a holder, fleet-wide,
-- as this statement sees the table: this transaction's claims and every
-- claim committed so far, including those committed after the caller
-- counted (a PGQueuer before 1.4 takes no slot and no lock). The caller
-- rolls back when either says the limit would be passed.
WITH limits AS (
    SELECT unnest(@entrypoints::text[]) AS entrypoint,
           unnest(@limits::int[]) AS slots
),
mine AS (
    SELECT j.id, j.entrypoint,
           row_number() OVER (PARTITION BY j.entrypoint ORDER BY j.id) AS rank
    FROM pgqueuer AS j
    WHERE j.id = ANY(@ids::bigint[])
),
taken AS (
    SELECT h.entrypoint, h.slot
    FROM pgqueuer AS h
    WHERE h.status = 'picked'
      AND h.slot IS NOT NULL
      AND h.entrypoint = ANY(@entrypoints::text[])
),
-- At most as many slots are looked at as are taken plus wanted: the
-- lowest free ones are among them.
free AS (
    SELECT limits.entrypoint, s.slot,
           row_number() OVER (PARTITION BY limits.entrypoint ORDER BY s.slot) AS rank
    FROM limits
    CROSS JOIN LATERAL generate_series(0::bigint, LEAST(
        limits.slots,
        (SELECT count(*) FROM mine WHERE mine.entrypoint = limits.entrypoint)
        + (SELECT count(*) FROM taken WHERE taken.entrypoint = limits.entrypoint)
    ) - 1) AS s(slot)
    WHERE NOT EXISTS (
        SELECT FROM taken
        WHERE taken.entrypoint = limits.entrypoint AND taken.slot = s.slot
    )
),
assigned AS (
    UPDATE pgqueuer AS j
    SET slot = free.slot
    FROM mine
    JOIN free ON free.entrypoint = mine.entrypoint AND free.rank = mine.rank
    WHERE j.id = mine.id
    RETURNING j.entrypoint
)
SELECT limits.entrypoint::text AS entrypoint,
       (SELECT count(*) FROM assigned WHERE assigned.entrypoint = limits.entrypoint)::int AS assigned,
       (SELECT count(*) FROM pgqueuer AS p
        WHERE p.queue_manager_id IS NOT NULL
          AND p.entrypoint = limits.entrypoint)::int AS holding
FROM limits;

-- name: LogStartedByEntrypoint :many
-- Jobs started (picked) per entrypoint within the last window_us, fleet-wide,
-- from the log: what a rate limit counts.
SELECT l.entrypoint, count(*)::int AS started
FROM pgqueuer_log AS l
WHERE l.status = 'picked'
  AND l.entrypoint = ANY(@entrypoints::text[])
  AND l.created > now() - (@window_us::bigint) * interval '1 microsecond'
GROUP BY l.entrypoint;

-- name: JobsFinish :many
-- Records a batch of outcomes of jobs this queue manager holds, in one
-- statement, and returns the ids of the outcomes that changed nothing
-- (none when every job was still held: see the last SELECT). action says
-- what happens to the row: 'finish' deletes it (the log gets status:
-- successful, exception or canceled); 'retry' puts it back in the queue
-- after delay_us with attempts + 1 (log: queued, with the error); 'hold'
-- keeps it as failed (log: failed, with the error); 'release' puts it back
-- at once, attempts unchanged (log: queued); 'snooze' puts it back after
-- delay_us, attempts unchanged, and counts the snooze in its headers
-- (pgq-snoozes; log: queued, with the reason). traceback is JSON text or ''. An
-- outcome changes its job only while the job is still held by the claim
-- that ran it (this queue manager and claim_token, see JobsClaim): the
-- outcome of a claim lost meanwhile (the job released as stale, then
-- claimed again, by this worker or another) changes nothing. ids must not
-- repeat within a batch.
--
-- Unless synchronous_outcome is set, the statement's transaction commits
-- without waiting for its WAL to reach disk (synchronous_commit off for
-- this transaction only, as JobsClaim's). The delete notifies (the job
-- table's trigger), and PostgreSQL holds the lock that orders notifying
-- commits through the commit's WAL flush: a waiting outcome makes every
-- enqueue and every other outcome queue behind its flush. An outcome lost
-- in a server crash leaves its jobs picked; they are rescued as stale and
-- run again.
--
-- The outcome rows are counted into pgqueuer_statistics in the same
-- statement and logged as aggregated, as JobsClaim's 'picked' rows with
-- fold_statistics (a finish is always its own transaction).
--
-- With quiet set the delete sends no table_changed_event (pgq.quiet_delete,
-- migration 10): the worker sends one itself for its finishes of the last
-- few milliseconds (see completer.go).
WITH commit_mode AS (
    SELECT set_config('synchronous_commit',
                      CASE WHEN @synchronous_outcome::boolean
                           THEN current_setting('synchronous_commit')
                           ELSE 'off' END,
                      true) AS mode,
           set_config('pgq.quiet_delete',
                      CASE WHEN @quiet::boolean THEN 'on' ELSE 'off' END,
                      true) AS quiet
),
outcome AS (
    SELECT
        unnest(@ids::bigint[])          AS id,
        unnest(@actions::text[])        AS action,
        unnest(@statuses::text[])       AS status,
        unnest(@tracebacks::text[])     AS traceback,
        unnest(@delays_us::bigint[])    AS delay_us,
        -- The claim token as the time it is (the row's updated while the
        -- claim holds it), turned once per outcome rather than each row's
        -- updated into a number.
        'epoch'::timestamptz + unnest(@claim_tokens::bigint[]) * interval '1 microsecond' AS claimed_at
    FROM commit_mode
),
-- Rows are found with = ANY(ARRAY(...)), which probes the primary key; a
-- join with outcome alone may be planned as a hash of the whole table. The
-- checks of status and holder are written IS NOT DISTINCT FROM, which no
-- index serves: with '=' the planner may instead scan a partial index of
-- picked rows (which statistics taken while all jobs were queued call
-- nearly empty) and search the id array linearly for each row, quadratic in
-- the batch. The claim token is checked as (id, updated) among the
-- outcomes, in a hashed subplan (a batch is at most 1,000 outcomes, see
-- maxFinishBatch; IS TRUE keeps the planner from turning it into a join,
-- which may hash the whole table); ids do not repeat, so the pair can only
-- be the row's own outcome.
finished AS (
    DELETE FROM pgqueuer AS j
    WHERE j.id = ANY(ARRAY(SELECT o.id FROM outcome AS o WHERE o.action = 'finish'))
      AND ((j.id, j.updated) IN (SELECT o.id, o.claimed_at FROM outcome AS o)) IS TRUE
      AND j.status IS NOT DISTINCT FROM 'picked'
      AND j.queue_manager_id IS NOT DISTINCT FROM @queue_manager_id
    RETURNING j.id, j.priority, j.entrypoint
),
requeued AS (
    UPDATE pgqueuer AS j
    SET status = 'queued',
        queue_manager_id = NULL,
        slot = NULL,
        updated = now(),
        execute_after = now() + outcome.delay_us * interval '1 microsecond',
        attempts = j.attempts + CASE WHEN outcome.action = 'retry' THEN 1 ELSE 0 END,
        headers = CASE WHEN outcome.action = 'snooze'
            THEN (CASE WHEN jsonb_typeof(j.headers) = 'object' THEN j.headers ELSE '{}'::jsonb END)
                || jsonb_build_object('pgq-snoozes', (1 + CASE
                WHEN j.headers ->> 'pgq-snoozes' ~ '^[0-9]{1,9}$' THEN (j.headers ->> 'pgq-snoozes')::int ELSE 0 END)::text)
            ELSE j.headers END
    FROM outcome
    WHERE j.id = ANY(ARRAY(SELECT o.id FROM outcome AS o WHERE o.action IN ('retry', 'release', 'snooze')))
      AND j.id = outcome.id
      AND j.updated = outcome.claimed_at
      AND j.status IS NOT DISTINCT FROM 'picked'
      AND j.queue_manager_id IS NOT DISTINCT FROM @queue_manager_id
    RETURNING j.id, j.priority, j.entrypoint
),
held AS (
    UPDATE pgqueuer AS j
    SET status = 'failed',
        queue_manager_id = NULL,
        slot = NULL,
        updated = now(),
        attempts = j.attempts + 1
    WHERE j.id = ANY(ARRAY(SELECT o.id FROM outcome AS o WHERE o.action = 'hold'))
      AND ((j.id, j.updated) IN (SELECT o.id, o.claimed_at FROM outcome AS o)) IS TRUE
      AND j.status IS NOT DISTINCT FROM 'picked'
      AND j.queue_manager_id IS NOT DISTINCT FROM @queue_manager_id
    RETURNING j.id, j.priority, j.entrypoint
),
changed AS (
    SELECT finished.id, finished.priority, finished.entrypoint FROM finished
    UNION ALL
    SELECT requeued.id, requeued.priority, requeued.entrypoint FROM requeued
    UNION ALL
    SELECT held.id, held.priority, held.entrypoint FROM held
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, traceback, created, aggregated)
    SELECT changed.id, outcome.status::pgqueuer_status, changed.priority, changed.entrypoint,
           NULLIF(outcome.traceback, '')::jsonb, now(), true
    FROM changed
    JOIN outcome ON outcome.id = changed.id
    RETURNING pgqueuer_log.job_id, pgqueuer_log.priority, pgqueuer_log.status, pgqueuer_log.entrypoint
),
-- The outcome rows are counted into the statistics here and logged as
-- aggregated (see LogFoldStatistics), locking statistics rows in their
-- key order. Every row logged here has the statement's now() as created:
-- one second, truncated once.
folded AS (
    INSERT INTO pgqueuer_statistics (created, count, priority, status, entrypoint)
    SELECT date_trunc('sec', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           count(*), logged.priority, logged.status, logged.entrypoint
    FROM logged
    GROUP BY logged.priority, logged.status, logged.entrypoint
    ORDER BY logged.priority, logged.status, logged.entrypoint
    ON CONFLICT (priority, date_trunc('sec', created AT TIME ZONE 'UTC'), status, entrypoint)
    DO UPDATE SET count = pgqueuer_statistics.count + EXCLUDED.count
)
-- The outcomes not written, rather than the jobs written: a batch that
-- wrote every outcome (nearly all) sends no row back. Decoding one row
-- per job written took about a tenth of a worker's CPU at 2,000 jobs at
-- once (docs/benchmarks.md).
SELECT o.id::bigint AS id FROM outcome AS o
WHERE NOT EXISTS (SELECT 1 FROM logged WHERE logged.job_id = o.id);

-- name: JobsFinishSucceeded :many
-- JobsFinish for a batch whose every outcome is a success (action finish,
-- status successful, no traceback), the common batch: the same rows
-- deleted, logged and counted, with the same checks and the same result
-- (the ids of the outcomes not written, see JobsFinish), from
-- two arrays where JobsFinish takes six, and the bounds of the batch's
-- largest run of ids (run_low, run_high: see finished), without its
-- requeue and hold parts. Mixed batches go to JobsFinish. A copy kept
-- for speed: drains at 2,000 at once ran 1.045 times as fast with it as
-- with JobsFinish for every batch (median of 5 pairs, docs/benchmarks.md).
WITH commit_mode AS (
    SELECT set_config('synchronous_commit',
                      CASE WHEN @synchronous_outcome::boolean
                           THEN current_setting('synchronous_commit')
                           ELSE 'off' END,
                      true) AS mode,
           set_config('pgq.quiet_delete',
                      CASE WHEN @quiet::boolean THEN 'on' ELSE 'off' END,
                      true) AS quiet
),
outcome AS (
    SELECT unnest(@ids::bigint[]) AS id,
           'epoch'::timestamptz + unnest(@claim_tokens::bigint[]) * interval '1 microsecond' AS claimed_at
    FROM commit_mode
),
-- The batch's largest run of ids close together (@run_low to @run_high,
-- see internal/idruns; nearly the whole batch when handlers finish in
-- about the order their jobs were claimed) is read as one range of the
-- primary key and then from the table page by page (the OR makes it a
-- bitmap scan), the others found by = ANY(ids), one descent of the key
-- each; the token check picks the batch's own rows out of the range. By
-- = ANY alone, which descends the key and reads the table once a row, a
-- job cost 6.6 % more instructions (make instructions,
-- docs/benchmarks.md). The ids apart are an array the statement makes,
-- never a constant: planned for an empty array given as a value, the OR's
-- second arm, always false, was read from an unrelated partial index.
finished AS (
    DELETE FROM pgqueuer AS j
    -- The bounds through subqueries: see JobsClaim's candidates.
    WHERE (j.id BETWEEN (SELECT @run_low::bigint) AND (SELECT @run_high::bigint)
           OR j.id = ANY(ARRAY(SELECT o.id FROM outcome AS o WHERE o.id NOT BETWEEN @run_low AND @run_high)))
      AND ((j.id, j.updated) IN (SELECT o.id, o.claimed_at FROM outcome AS o)) IS TRUE
      AND j.status IS NOT DISTINCT FROM 'picked'
      AND j.queue_manager_id IS NOT DISTINCT FROM @queue_manager_id
    RETURNING j.id, j.priority, j.entrypoint
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, created, aggregated)
    SELECT finished.id, 'successful', finished.priority, finished.entrypoint, now(), true
    FROM finished
),
-- Counted, and checked, from finished, which logged writes row for row
-- (see JobsClaim's folded).
folded AS (
    INSERT INTO pgqueuer_statistics (created, count, priority, status, entrypoint)
    SELECT date_trunc('sec', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           count(*), finished.priority, 'successful'::pgqueuer_status, finished.entrypoint
    FROM finished
    GROUP BY finished.priority, finished.entrypoint
    ORDER BY finished.priority, finished.entrypoint
    ON CONFLICT (priority, date_trunc('sec', created AT TIME ZONE 'UTC'), status, entrypoint)
    DO UPDATE SET count = pgqueuer_statistics.count + EXCLUDED.count
)
SELECT o.id::bigint AS id FROM outcome AS o
WHERE NOT EXISTS (SELECT 1 FROM finished WHERE finished.id = o.id);

-- name: JobsCompleteTx :execrows
-- Marks one job successful inside the caller's transaction (CompleteTx):
-- deletes its row and writes its 'successful' log row, only while the job
-- is still held by the claim that ran it (this queue manager and
-- claim_token, see JobsClaim). It affects 1 row when it did that and 0 when
-- the job is no longer held (released as stale and maybe claimed again,
-- canceled, or already finished). The delete fires the job table's trigger,
-- whose notification is delivered when the caller's transaction commits.
WITH finished AS (
    DELETE FROM pgqueuer AS j
    WHERE j.id = @id::bigint
      AND (extract(epoch FROM j.updated) * 1000000)::bigint = @claim_token::bigint
      AND j.status = 'picked'
      AND j.queue_manager_id = @queue_manager_id::uuid
    RETURNING j.id, j.priority, j.entrypoint
)
INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
SELECT finished.id, 'successful', finished.priority, finished.entrypoint FROM finished;

-- name: JobsHeartbeat :many
-- Refreshes the heartbeat of the running jobs this queue manager holds and
-- returns their ids with the token of the claim that holds each (see
-- JobsClaim); a job missing from the result, or held under another token,
-- is no longer held by the claim the caller ran (it was canceled, or
-- released after a stale heartbeat and maybe claimed again). IS NOT
-- DISTINCT FROM keeps the look-up on the primary key (see JobsFinish).
--
-- It never waits for a row lock: a row another transaction holds locked (a
-- handler's transaction that has called CompleteTx and not committed yet, a
-- cancellation in progress) is skipped, not refreshed, and reported as its
-- last committed version says, so that one open transaction does not hold
-- up the heartbeats of every other job of the worker.
--
-- A row whose heartbeat is younger than refresh_after_s (its claim, or a
-- heartbeat, set it lately) is reported without being written: most jobs
-- of a busy worker were claimed a moment ago, and each write is a new row
-- version with an entry in every index of the table (heartbeat is indexed,
-- so no update of it is HOT). Under handlers that saturate the server, a
-- heartbeat that rewrote every held row took 7 ms at the median and up to
-- 20 ms.
--
-- Its transaction commits without waiting for its WAL to reach disk
-- (synchronous_commit off for this transaction only, as JobsClaim's): a
-- heartbeat lost in a server crash only makes its jobs look older, and no
-- heartbeat waits in the queue of WAL flushes behind the commits of the
-- handlers' own transactions, however many there are.
WITH commit_mode AS (
    SELECT set_config('synchronous_commit', 'off', true) AS mode
),
free AS (
    SELECT f.id
    FROM pgqueuer AS f, commit_mode
    WHERE f.id = ANY(@ids::bigint[])
      AND f.status IS NOT DISTINCT FROM 'picked'
      AND f.queue_manager_id IS NOT DISTINCT FROM @queue_manager_id
      AND f.heartbeat < now() - make_interval(secs => @refresh_after_s::float8)
    FOR UPDATE OF f SKIP LOCKED
),
beaten AS (
    UPDATE pgqueuer AS j
    SET heartbeat = now()
    WHERE j.id = ANY(ARRAY(SELECT free.id FROM free))
    RETURNING j.id, (extract(epoch FROM j.updated) * 1000000)::bigint AS claim_token
)
SELECT beaten.id, beaten.claim_token FROM beaten
UNION ALL
SELECT b.id, (extract(epoch FROM b.updated) * 1000000)::bigint AS claim_token
FROM pgqueuer AS b
WHERE b.id = ANY(@ids::bigint[])
  AND b.status IS NOT DISTINCT FROM 'picked'
  AND b.queue_manager_id IS NOT DISTINCT FROM @queue_manager_id
  AND b.id <> ALL(ARRAY(SELECT free.id FROM free));

-- name: JobsConfirmClaim :many
-- Refreshes the heartbeat of jobs a slow claim of this queue manager has
-- just taken, before their handlers start, and returns the ids it
-- refreshed with their claim tokens (see JobsClaim). A claim's rows carry
-- the heartbeat of its transaction's start; when the claim took long,
-- another worker may find them stale the moment they commit and release
-- them. Only the rows this statement could lock and still finds picked by
-- the caller are returned: a row another transaction holds (a release in
-- progress) is left out, and the caller does not run it. Commits without
-- waiting for the WAL flush, as JobsHeartbeat does.
WITH commit_mode AS (
    SELECT set_config('synchronous_commit', 'off', true) AS mode
),
free AS (
    SELECT f.id
    FROM pgqueuer AS f, commit_mode
    WHERE f.id = ANY(@ids::bigint[])
      AND f.status IS NOT DISTINCT FROM 'picked'
      AND f.queue_manager_id IS NOT DISTINCT FROM @queue_manager_id
    FOR UPDATE OF f SKIP LOCKED
)
UPDATE pgqueuer AS j
SET heartbeat = now()
WHERE j.id = ANY(ARRAY(SELECT free.id FROM free))
RETURNING j.id, (extract(epoch FROM j.updated) * 1000000)::bigint AS claim_token;

-- name: JobsRequeue :many
-- Puts held (failed) jobs back in the queue, due now, with a fresh set of
-- attempts (as PGQueuer's requeue does), and logs them 'queued'; returns the
-- ids requeued.
WITH requeued AS (
    UPDATE pgqueuer AS j
    SET status = 'queued', execute_after = now(), updated = now(), queue_manager_id = NULL, slot = NULL, attempts = 0
    WHERE j.id = ANY(@ids::bigint[])
      AND j.status = 'failed'
    RETURNING j.id, j.priority, j.entrypoint
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT requeued.id, 'queued', requeued.priority, requeued.entrypoint FROM requeued
)
SELECT requeued.id FROM requeued;

-- name: JobsListFailed :many
-- Held (failed) jobs, newest first, with the error of their last attempt.
SELECT j.id, j.priority, j.entrypoint, j.attempts, j.created, j.updated, j.payload, j.headers,
       COALESCE((
           SELECT l.traceback->>'exception_message'
           FROM pgqueuer_log AS l
           WHERE l.job_id = j.id AND l.status = 'failed'
           ORDER BY l.created DESC, l.id DESC
           LIMIT 1
       ), '')::text AS last_error
FROM pgqueuer AS j
WHERE j.status = 'failed'
ORDER BY j.updated DESC, j.id DESC
LIMIT @max_rows::int;

-- name: JobsCancel :many
-- Cancels jobs: removes their rows, whatever their status (queued, held, or
-- running: the worker running one learns of it from the cancellation event
-- or its next heartbeat), and logs them 'canceled'; returns the ids removed.
WITH removed AS (
    DELETE FROM pgqueuer AS j
    WHERE j.id = ANY(@ids::bigint[])
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

-- name: JobsNextDue :one
-- Seconds until the earliest queued job of the entrypoints that is not due
-- yet becomes due (-1 when there is none), so an idle worker can sleep
-- exactly that long. It runs after every claim that found fewer jobs than
-- it asked for, so under a steady load after nearly every claim.
--
-- One probe of pgqueuer_ep_ea_idx per entrypoint, for its first job after
-- now(): a scan of all the entrypoint's jobs not due yet, or of all its
-- queued jobs, read each of them. The array is read through a subquery so
-- that a connection keeps the generic plan (docs/benchmarks.md,
-- "Statements planned on every call"). Before, it was planned on 2,935 of
-- 5,040 calls of a steady load, 0.8 ms a plan against 0.08 ms a run.
SELECT COALESCE(extract(epoch FROM min(n.execute_after) - now()), -1)::float8 AS seconds
FROM unnest((SELECT @entrypoints::text[])) AS e (name)
CROSS JOIN LATERAL (
    SELECT j.execute_after
    FROM pgqueuer AS j
    WHERE j.entrypoint = e.name
      AND j.status = 'queued'
      AND j.execute_after > now()
    ORDER BY j.execute_after
    LIMIT 1
) AS n;

-- name: JobsTableUpkeep :one
-- Reports what the job table needs: needs_analyze when its planner
-- statistics are far behind its contents (more rows changed since the last
-- ANALYZE than a fifth of the table, and over 1000, and no ANALYZE of it
-- ended in the last analyze_gap_s seconds), which the claim plan depends
-- on, or, whatever the gap, when they count no queued job with a fairness
-- or serial key (pgqueuer_pgq_keyed_idx, named by keyed_index_name, had 0
-- rows at the last ANALYZE or VACUUM) while that index has since grown by
-- more than keyed_pages pages (see below); few_rows when the statistics
-- put the table under 1000 rows, which the caller then checks against the
-- queue (JobsQueuedAtLeast); needs_vacuum when its dead rows (every
-- claimed and finished job leaves two) outnumber min_dead and a tenth of
-- the table, which autovacuum, waking once a minute, lets pile up under
-- load, and no manual vacuum of it (any worker's) ended in the last
-- vacuum_gap_s seconds, so that the workers of a fleet, each checking
-- every second, do not vacuum it several times a second between them. An
-- autovacuum's end does not count: it removes only the rows dead when it
-- started, and under load it ran 1-2 s, so that waiting out the gap after
-- it left the table without a vacuum for 7-9 s, twice the usual, and its
-- indexes grew to hold the dead rows. may_maintain is set when the
-- current user may VACUUM and ANALYZE it (has the privileges of its
-- owner, or, from PostgreSQL 17, MAINTAIN on it; else PostgreSQL skips the
-- table with a warning each time).
--
-- Keyed jobs the statistics do not count: planned on such statistics, the
-- keyed enqueue's look-ups of a key's last turn took the smallest index on
-- the entrypoint (all look empty) and read every keyed job of it: a batch
-- of 1,000 jobs with distinct keys took 1 s at 10,000 keyed jobs queued,
-- and grew with them, until the next ANALYZE, which the table's size may
-- put off for a fifth of it (docs/fairness.md). Read from the index's size,
-- it lags nothing, and an ANALYZE that finds no keyed job after all (their
-- index entries dead) records the size, so it does not repeat until the
-- index grows again.
--
-- It reads the two counters with the statistics functions for the one
-- table rather than through pg_stat_user_tables, a view that computes
-- every counter of every table before the filter. It reads the job table
-- itself not at all: a statement that does is planned again after each
-- VACUUM or ANALYZE of the table, and under handlers that saturate the
-- server that planning took up to 10 ms.
SELECT ((COALESCE(pg_catalog.pg_stat_get_mod_since_analyze(c.oid) > greatest(1000, c.reltuples * 0.2), false)
         AND COALESCE(greatest(pg_catalog.pg_stat_get_last_analyze_time(c.oid), pg_catalog.pg_stat_get_last_autoanalyze_time(c.oid))
                      < now() - make_interval(secs => @analyze_gap_s::float8), true))
        OR COALESCE((SELECT k.reltuples = 0
                            AND pg_catalog.pg_relation_size(k.oid)
                                > (k.relpages::bigint + @keyed_pages::bigint) * current_setting('block_size')::bigint
                     FROM pg_catalog.pg_class AS k
                     WHERE k.oid = to_regclass(@keyed_index_name::text)), false)
       )::boolean AS needs_analyze,
       (c.reltuples < 1000)::boolean AS few_rows,
       (COALESCE(pg_catalog.pg_stat_get_dead_tuples(c.oid) > greatest(@min_dead::bigint, c.reltuples * 0.1), false)
        AND COALESCE(pg_catalog.pg_stat_get_last_vacuum_time(c.oid)
                     < now() - make_interval(secs => @vacuum_gap_s::float8), true)
       )::boolean AS needs_vacuum,
       (pg_catalog.pg_has_role(c.relowner, 'USAGE')
        OR CASE WHEN current_setting('server_version_num')::int >= 170000
                THEN pg_catalog.has_table_privilege(c.oid, 'MAINTAIN')
                ELSE false END)::boolean AS may_maintain
FROM pg_catalog.pg_class AS c
WHERE c.oid = to_regclass(@table_name::text);

-- name: JobsQueuedAtLeast :one
-- Reports whether 1000 or more jobs are queued (the count stops there).
-- When the statistics put the table under 1000 rows (JobsTableUpkeep's
-- few_rows) while that many are queued, they are missing or wrong, and the
-- table needs ANALYZE whatever the gap since the last one. The counters
-- JobsTableUpkeep reads lag: a backend reports its changes at most once a
-- second, and when idle up to 10 s later, so right after a bulk enqueue
-- they may still say nothing changed; this test does not wait for them. It
-- matters most after a VACUUM of the empty table, which records 0 rows for
-- the table and its indexes: the planner then takes the partial indexes
-- for empty, whatever their size, and plans the claim as a scan of
-- pgqueuer_ep_ea_idx that sorts every queued row on each claim (a drain of
-- 100,000 jobs ran 5× slower until the next ANALYZE).
SELECT (count(*) >= 1000)::boolean AS many
FROM (SELECT 1 FROM pgqueuer AS q WHERE q.status = 'queued' LIMIT 1000) AS s;

-- name: JobsAnalyzeSampleSettings :exec
-- Settings for the rest of the transaction that runs a worker's ANALYZE
-- before its first claim (JobsAnalyze): a statistics target of 10, a
-- sample of 3,000 rows where the default target (100) takes 30,000. The
-- first claim waits for that ANALYZE, and all it needs is the number of
-- rows in the table and its partial indexes (exact either way while the
-- table has under 3,000 pages, closely estimated past that) and the
-- share of queued rows: on 100,000 queued jobs the ANALYZE took 20 ms
-- against 200 (docs/benchmarks.md, "A worker's first ANALYZE"). Columns
-- with a target of their own (ALTER TABLE ... SET STATISTICS) keep it, and
-- the next ANALYZE (the upkeep's, or autovacuum's) takes the full sample.
SELECT set_config('default_statistics_target', '10', true);

-- name: JobsTryAnalyzeLock :one
-- Takes, for the rest of the transaction, the advisory lock under which a
-- worker runs its ANALYZE before its first claim, if no other session
-- holds it; reports whether it did. The key is the hash of a text naming
-- the job table (the rewriter qualifies it as it does the table). Under
-- it the worker reads again what the table needs (JobsTableUpkeep), so
-- that of the worker processes that start together, each having read the
-- statistics as missing, the first analyses and the rest, reading again
-- after its ANALYZE ended, find them fresh. Read only before, they could
-- be missing for a worker just before another's ANALYZE ended, and that
-- worker ran its own after it: 4 workers starting together under load
-- ran 3. An advisory lock, not the table's (LOCK TABLE ... NOWAIT), whose
-- failure would be an error in the server's log each time.
SELECT pg_try_advisory_xact_lock(hashtext('pgq first analyze of pgqueuer'))::boolean AS locked;

-- name: JobsAnalyze :exec
-- Refreshes the job table's planner statistics, unless another ANALYZE or
-- a VACUUM (another worker's, or autovacuum) holds the table: then it does
-- nothing (with a warning from the server) rather than wait for it and
-- repeat its work. Worker processes that start together each find the
-- statistics missing: waiting in line, each ran its own ANALYZE after the
-- others' (1.3 s each under a drain of 4 processes) before its first claim.
ANALYZE (SKIP_LOCKED) pgqueuer;

-- name: JobsVacuum :exec
-- Vacuums the job table, unless another vacuum (autovacuum or another
-- worker's) holds it: then it does nothing. Without truncating the table's
-- empty end: to truncate, VACUUM waits up to 5 s for an exclusive lock on
-- the table, which the claims, finishes and enqueues of a busy queue never
-- leave free, and holds it, stopping them all, while it checks the pages.
-- Sampled under load, the worker's vacuum spent half its time waiting so
-- (VacuumTruncate), 1.4-1.6 s a call. A queue table grows back at once.
-- Without parallel workers (PARALLEL 0): those would be taken from the
-- application's share (max_parallel_workers) for an upkeep task, and on
-- 2 cores they cost a quarter more CPU without ending it sooner: a vacuum
-- of 200,000 claimed and deleted jobs used 0.20-0.28 s of the server's CPU
-- against 0.28-0.41 with the two workers PostgreSQL started for its
-- indexes (docs/benchmarks.md).
VACUUM (SKIP_LOCKED, TRUNCATE false, PARALLEL 0) pgqueuer;
