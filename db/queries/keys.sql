-- name: JobsEnqueueKeyed :many
-- JobsEnqueue for batches with fairness or serial keys ('' for none):
-- the two key columns of migration 6 are set too. Batches without keys
-- take JobsEnqueue, which a schema before migration 6 also serves.
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
        unnest(@headers::text[])               AS headers,
        unnest(@fairness_keys::text[])         AS fairness_key,
        unnest(@serial_keys::text[])           AS serial_key
),
-- Fairness ranks (migration 8; see JobsClaimFair): each key's jobs of the
-- batch, in priority then input order, take the turns after the key's
-- last queued job, or from the entrypoint's current turn when that is
-- later or the key has none queued. The current turn is the lowest rank
-- of the entrypoint's due keyed jobs, found by one probe of
-- pgqueuer_pgq_fair_rank_idx from the turn the fair claim last recorded
-- (migration 9), or the recorded turn when none ranks there or later. The
-- probe starts there because the index's head holds the entries of every
-- job claimed since the last vacuum: from the head it stepped over them
-- all. (A retried job ranked before the recorded turn is not the turn; it
-- runs first all the same, by its rank.)
numbered AS (
    SELECT i.*, row_number() OVER () AS ord FROM input AS i
),
ranked AS (
    SELECT n.*,
           row_number() OVER (PARTITION BY n.entrypoint, n.fairness_key
                              ORDER BY n.priority DESC, n.ord) - 1 AS key_nth
    FROM numbered AS n
),
clocks AS MATERIALIZED (
    SELECT e.entrypoint,
           COALESCE((SELECT f.fair_rank FROM pgqueuer AS f
                     WHERE f.entrypoint = e.entrypoint
                       AND f.status = 'queued' AND f.fairness_key IS NOT NULL
                       AND f.fair_rank >= h.turn
                       AND f.execute_after <= now()
                     ORDER BY f.fair_rank
                     LIMIT 1), h.turn) AS turn
    FROM (SELECT DISTINCT r.entrypoint FROM ranked AS r WHERE r.fairness_key <> '') AS e
    CROSS JOIN LATERAL (
        SELECT COALESCE((SELECT t.turn FROM pgqueuer_pgq_fair_turn AS t
                         WHERE t.entrypoint = e.entrypoint), 0) AS turn
    ) AS h
),
starts AS (
    SELECT k.entrypoint, k.fairness_key,
           GREATEST(c.turn,
                    COALESCE((SELECT f.fair_rank + 1 FROM pgqueuer AS f
                              WHERE f.entrypoint = k.entrypoint AND f.fairness_key = k.fairness_key
                                AND f.status = 'queued' AND f.fairness_key IS NOT NULL
                                AND f.fair_rank IS NOT NULL
                              ORDER BY f.fair_rank DESC
                              LIMIT 1), 0)) AS start
    FROM (SELECT DISTINCT r.entrypoint, r.fairness_key FROM ranked AS r WHERE r.fairness_key <> '') AS k
    JOIN clocks AS c ON c.entrypoint = k.entrypoint
),
inserted AS (
    INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, status, dedupe_key, headers,
                          fairness_key, serial_key, fair_rank)
    SELECT
        i.priority,
        i.entrypoint,
        CASE WHEN i.payload_null THEN NULL ELSE i.payload END,
        now() + i.execute_after_us * interval '1 microsecond',
        'queued',
        NULLIF(i.dedupe_key, ''),
        NULLIF(i.headers, '')::jsonb,
        NULLIF(i.fairness_key, ''),
        NULLIF(i.serial_key, ''),
        s.start + i.key_nth
    FROM ranked AS i
    LEFT JOIN starts AS s ON s.entrypoint = i.entrypoint AND s.fairness_key = i.fairness_key
    ORDER BY i.ord
    RETURNING id, priority, entrypoint, dedupe_key
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT inserted.id, 'queued', inserted.priority, inserted.entrypoint FROM inserted
)
SELECT inserted.id, inserted.dedupe_key FROM inserted ORDER BY inserted.id;

-- name: JobsEnqueueKeyedOne :one
-- JobsEnqueueKeyed for one job (Enqueue with a key, not skipping
-- duplicates), from scalars: the same row, rank and log row as a batch of
-- one. A copy kept for speed: a batch's arrays hide their length from a
-- generic plan, which the planner then prices as ten rows and rejects, so
-- JobsEnqueueKeyed is planned anew for each call (0.4-0.5 ms, more than
-- it takes to run); this statement's generic plan is chosen after the
-- first few calls of a connection, and one keyed job took 0.11 against
-- 0.6 ms of the server's time (docs/fairness.md).
WITH input AS MATERIALIZED (
    SELECT @priority::int                       AS priority,
           @entrypoint::text                    AS entrypoint,
           CASE WHEN @payload_null::boolean THEN NULL ELSE @payload::bytea END AS payload,
           @execute_after_us::bigint            AS execute_after_us,
           NULLIF(@dedupe_key::text, '')        AS dedupe_key,
           NULLIF(@headers::text, '')::jsonb    AS headers,
           NULLIF(@fairness_key::text, '')      AS fairness_key,
           NULLIF(@serial_key::text, '')        AS serial_key
),
turn AS MATERIALIZED (
    SELECT COALESCE((SELECT f.fair_rank FROM pgqueuer AS f
                     WHERE f.entrypoint = i.entrypoint
                       AND f.status = 'queued' AND f.fairness_key IS NOT NULL
                       AND f.fair_rank >= h.turn
                       AND f.execute_after <= now()
                     ORDER BY f.fair_rank
                     LIMIT 1), h.turn) AS turn
    FROM input AS i
    CROSS JOIN LATERAL (
        SELECT COALESCE((SELECT t.turn FROM pgqueuer_pgq_fair_turn AS t
                         WHERE t.entrypoint = i.entrypoint), 0) AS turn
    ) AS h
    WHERE i.fairness_key IS NOT NULL
),
start AS (
    SELECT GREATEST(turn.turn,
                    COALESCE((SELECT f.fair_rank + 1 FROM pgqueuer AS f
                              WHERE f.entrypoint = i.entrypoint AND f.fairness_key = i.fairness_key
                                AND f.status = 'queued' AND f.fairness_key IS NOT NULL
                                AND f.fair_rank IS NOT NULL
                              ORDER BY f.fair_rank DESC
                              LIMIT 1), 0)) AS rank
    FROM turn CROSS JOIN input AS i
),
inserted AS (
    INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, status, dedupe_key, headers,
                          fairness_key, serial_key, fair_rank)
    SELECT i.priority, i.entrypoint, i.payload,
           now() + i.execute_after_us * interval '1 microsecond',
           'queued', i.dedupe_key, i.headers, i.fairness_key, i.serial_key,
           (SELECT start.rank FROM start)
    FROM input AS i
    RETURNING id, priority, entrypoint, dedupe_key
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT inserted.id, 'queued', inserted.priority, inserted.entrypoint FROM inserted
)
SELECT inserted.id, inserted.dedupe_key FROM inserted;

-- name: JobsEnqueueKeyedOneSkipDuplicates :many
-- JobsEnqueueKeyedOne for Enqueue with WithSkipDuplicates: the job is
-- skipped (no row returned, nothing logged) when its dedupe key is held
-- by a queued or picked job. A copy for the same reason: a generic plan
-- that a connection keeps, where JobsEnqueueKeyedSkipDuplicates is
-- planned on every call.
WITH input AS MATERIALIZED (
    SELECT @priority::int                       AS priority,
           @entrypoint::text                    AS entrypoint,
           CASE WHEN @payload_null::boolean THEN NULL ELSE @payload::bytea END AS payload,
           @execute_after_us::bigint            AS execute_after_us,
           NULLIF(@dedupe_key::text, '')        AS dedupe_key,
           NULLIF(@headers::text, '')::jsonb    AS headers,
           NULLIF(@fairness_key::text, '')      AS fairness_key,
           NULLIF(@serial_key::text, '')        AS serial_key
),
turn AS MATERIALIZED (
    SELECT COALESCE((SELECT f.fair_rank FROM pgqueuer AS f
                     WHERE f.entrypoint = i.entrypoint
                       AND f.status = 'queued' AND f.fairness_key IS NOT NULL
                       AND f.fair_rank >= h.turn
                       AND f.execute_after <= now()
                     ORDER BY f.fair_rank
                     LIMIT 1), h.turn) AS turn
    FROM input AS i
    CROSS JOIN LATERAL (
        SELECT COALESCE((SELECT t.turn FROM pgqueuer_pgq_fair_turn AS t
                         WHERE t.entrypoint = i.entrypoint), 0) AS turn
    ) AS h
    WHERE i.fairness_key IS NOT NULL
),
start AS (
    SELECT GREATEST(turn.turn,
                    COALESCE((SELECT f.fair_rank + 1 FROM pgqueuer AS f
                              WHERE f.entrypoint = i.entrypoint AND f.fairness_key = i.fairness_key
                                AND f.status = 'queued' AND f.fairness_key IS NOT NULL
                                AND f.fair_rank IS NOT NULL
                              ORDER BY f.fair_rank DESC
                              LIMIT 1), 0)) AS rank
    FROM turn CROSS JOIN input AS i
),
inserted AS (
    INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, status, dedupe_key, headers,
                          fairness_key, serial_key, fair_rank)
    SELECT i.priority, i.entrypoint, i.payload,
           now() + i.execute_after_us * interval '1 microsecond',
           'queued', i.dedupe_key, i.headers, i.fairness_key, i.serial_key,
           (SELECT start.rank FROM start)
    FROM input AS i
    ON CONFLICT (dedupe_key) WHERE status IN ('queued', 'picked') AND dedupe_key IS NOT NULL
    DO NOTHING
    RETURNING id, priority, entrypoint, dedupe_key
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT inserted.id, 'queued', inserted.priority, inserted.entrypoint FROM inserted
)
SELECT inserted.id, inserted.dedupe_key FROM inserted;

-- name: JobsEnqueueKeyedSkipDuplicates :many
-- JobsEnqueueSkipDuplicates with fairness and serial keys (see
-- JobsEnqueueKeyed).
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
        unnest(@headers::text[])               AS headers,
        unnest(@fairness_keys::text[])         AS fairness_key,
        unnest(@serial_keys::text[])           AS serial_key
),
-- Fairness ranks (migration 8; see JobsClaimFair): each key's jobs of the
-- batch, in priority then input order, take the turns after the key's
-- last queued job, or from the entrypoint's current turn when that is
-- later or the key has none queued. The current turn is the lowest rank
-- of the entrypoint's due keyed jobs, found by one probe of
-- pgqueuer_pgq_fair_rank_idx from the turn the fair claim last recorded
-- (migration 9), or the recorded turn when none ranks there or later. The
-- probe starts there because the index's head holds the entries of every
-- job claimed since the last vacuum: from the head it stepped over them
-- all. (A retried job ranked before the recorded turn is not the turn; it
-- runs first all the same, by its rank.)
numbered AS (
    SELECT i.*, row_number() OVER () AS ord FROM input AS i
),
ranked AS (
    SELECT n.*,
           row_number() OVER (PARTITION BY n.entrypoint, n.fairness_key
                              ORDER BY n.priority DESC, n.ord) - 1 AS key_nth
    FROM numbered AS n
),
clocks AS MATERIALIZED (
    SELECT e.entrypoint,
           COALESCE((SELECT f.fair_rank FROM pgqueuer AS f
                     WHERE f.entrypoint = e.entrypoint
                       AND f.status = 'queued' AND f.fairness_key IS NOT NULL
                       AND f.fair_rank >= h.turn
                       AND f.execute_after <= now()
                     ORDER BY f.fair_rank
                     LIMIT 1), h.turn) AS turn
    FROM (SELECT DISTINCT r.entrypoint FROM ranked AS r WHERE r.fairness_key <> '') AS e
    CROSS JOIN LATERAL (
        SELECT COALESCE((SELECT t.turn FROM pgqueuer_pgq_fair_turn AS t
                         WHERE t.entrypoint = e.entrypoint), 0) AS turn
    ) AS h
),
starts AS (
    SELECT k.entrypoint, k.fairness_key,
           GREATEST(c.turn,
                    COALESCE((SELECT f.fair_rank + 1 FROM pgqueuer AS f
                              WHERE f.entrypoint = k.entrypoint AND f.fairness_key = k.fairness_key
                                AND f.status = 'queued' AND f.fairness_key IS NOT NULL
                                AND f.fair_rank IS NOT NULL
                              ORDER BY f.fair_rank DESC
                              LIMIT 1), 0)) AS start
    FROM (SELECT DISTINCT r.entrypoint, r.fairness_key FROM ranked AS r WHERE r.fairness_key <> '') AS k
    JOIN clocks AS c ON c.entrypoint = k.entrypoint
),
inserted AS (
    INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, status, dedupe_key, headers,
                          fairness_key, serial_key, fair_rank)
    SELECT
        i.priority,
        i.entrypoint,
        CASE WHEN i.payload_null THEN NULL ELSE i.payload END,
        now() + i.execute_after_us * interval '1 microsecond',
        'queued',
        NULLIF(i.dedupe_key, ''),
        NULLIF(i.headers, '')::jsonb,
        NULLIF(i.fairness_key, ''),
        NULLIF(i.serial_key, ''),
        s.start + i.key_nth
    FROM ranked AS i
    LEFT JOIN starts AS s ON s.entrypoint = i.entrypoint AND s.fairness_key = i.fairness_key
    ORDER BY i.ord
    ON CONFLICT (dedupe_key) WHERE status IN ('queued', 'picked') AND dedupe_key IS NOT NULL
    DO NOTHING
    RETURNING id, priority, entrypoint, dedupe_key
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint)
    SELECT inserted.id, 'queued', inserted.priority, inserted.entrypoint FROM inserted
)
SELECT inserted.id, inserted.dedupe_key FROM inserted ORDER BY inserted.id;

-- name: JobsClaimKeyed :many
-- The claim of entrypoints whose queued jobs carry fairness or serial keys
-- (JobsClaim leaves those entrypoints to this statement, which skips the
-- others: a probe of pgqueuer_pgq_fair_idx, and of pgqueuer_pgq_serial_idx
-- when that finds none, each). Per entrypoint (caps,
-- cursors, key_limits, by_priority and held_blocks are parallel to
-- entrypoints) it shares the entrypoint's cap among:
--
--   - each fairness key with queued jobs, walked one index probe per key
--     (pgqueuer_pgq_fair_idx) from just after fair_cursor, at most cap
--     keys; a key takes its jobs in priority then id order, and at most
--     key_limit minus its running jobs when key_limit > 0;
--   - each serial key whose next job may start: no job of the key is
--     running (or held, when held_blocks) and its next job by enqueue
--     order (by priority first when by_priority) is due; at most one job a
--     key; keys walked from just after serial_cursor, at most 4 cap + 64;
--   - the jobs without a key, as one share, found among the first
--     min(cap, 100) queued jobs of the entrypoint in priority order.
--
-- Every share gets the same number of jobs (cap divided by the shares,
-- rounded up) and the batch takes their first jobs, then their second,
-- and so on: round robin. What shares with fewer jobs leave goes to the
-- fairness keys that filled theirs, again in equal parts, ranked after
-- every first pick; what is still left (a key ran out, jobs locked by
-- other workers, serial keys, jobs without a key) the caller claims again.
--
-- Claimed rows are marked and logged as JobsClaim does (same claim token,
-- same synchronous_claim). One more row per entrypoint, with id 0 and no
-- job, carries the cursors for the next claim: the last key walked when a
-- walk stopped at its bound, '' when it reached the last key.
WITH RECURSIVE commit_mode AS (
    SELECT set_config('synchronous_commit',
                      CASE WHEN @synchronous_claim::boolean
                           THEN current_setting('synchronous_commit')
                           ELSE 'off' END,
                      true) AS mode
),
input AS (
    SELECT unnest(@entrypoints::text[])     AS entrypoint,
           unnest(@caps::int[])             AS cap,
           unnest(@fair_cursors::text[])    AS fair_after,
           unnest(@serial_cursors::text[])  AS serial_after,
           unnest(@key_limits::int[])       AS key_limit,
           unnest(@by_priority::boolean[])  AS by_priority,
           unnest(@held_blocks::boolean[])  AS held_blocks
    FROM commit_mode
),
eps AS MATERIALIZED (
    SELECT input.entrypoint, input.cap, input.fair_after, input.serial_after,
           input.key_limit, input.by_priority, input.held_blocks
    FROM input
    WHERE input.cap > 0
      -- The first fairness key, or serial key, of the entrypoint: a probe
      -- of an index that the min() needs for its order, so that the plan
      -- stays on it even when generic (an EXISTS on pgqueuer_pgq_keyed_idx
      -- became a hash join over every keyed row there, and a LIMIT 1 a
      -- sequential scan).
      AND ((SELECT min(f.fairness_key) FROM pgqueuer AS f
            WHERE f.status = 'queued' AND f.fairness_key IS NOT NULL
              AND f.entrypoint = input.entrypoint) IS NOT NULL
           OR (SELECT min(s.serial_key) FROM pgqueuer AS s
               WHERE s.serial_key IS NOT NULL AND s.status = 'queued'
                 AND s.entrypoint = input.entrypoint) IS NOT NULL)
      AND NOT EXISTS (SELECT 1 FROM pgqueuer_pgq_paused AS p WHERE p.entrypoint = input.entrypoint)
),
-- A loose index scan: the next fairness key after the last, one probe each.
fair_keys (entrypoint, fairness_key, n, lim) AS (
    SELECT eps.entrypoint,
           (SELECT min(f.fairness_key) FROM pgqueuer AS f
            WHERE f.status = 'queued' AND f.fairness_key IS NOT NULL
              AND f.entrypoint = eps.entrypoint AND f.fairness_key > eps.fair_after),
           1,
           eps.cap
    FROM eps
    UNION ALL
    SELECT w.entrypoint,
           (SELECT min(f.fairness_key) FROM pgqueuer AS f
            WHERE f.status = 'queued' AND f.fairness_key IS NOT NULL
              AND f.entrypoint = w.entrypoint AND f.fairness_key > w.fairness_key),
           w.n + 1,
           w.lim
    FROM fair_keys AS w
    WHERE w.fairness_key IS NOT NULL AND w.n < w.lim
),
serial_keys (entrypoint, serial_key, n, lim) AS (
    SELECT eps.entrypoint,
           (SELECT min(s.serial_key) FROM pgqueuer AS s
            WHERE s.serial_key IS NOT NULL AND s.status = 'queued'
              AND s.entrypoint = eps.entrypoint AND s.serial_key > eps.serial_after),
           1,
           eps.cap * 4 + 64
    FROM eps
    UNION ALL
    SELECT w.entrypoint,
           (SELECT min(s.serial_key) FROM pgqueuer AS s
            WHERE s.serial_key IS NOT NULL AND s.status = 'queued'
              AND s.entrypoint = w.entrypoint AND s.serial_key > w.serial_key),
           w.n + 1,
           w.lim
    FROM serial_keys AS w
    WHERE w.serial_key IS NOT NULL AND w.n < w.lim
),
fair_shares AS MATERIALIZED (
    SELECT w.entrypoint, w.fairness_key FROM fair_keys AS w WHERE w.fairness_key IS NOT NULL
),
-- The next job of each serial key, when it may start.
serial_heads AS MATERIALIZED (
    SELECT w.entrypoint, h.id
    FROM serial_keys AS w
    JOIN eps ON eps.entrypoint = w.entrypoint
    CROSS JOIN LATERAL (
        SELECT CASE WHEN eps.by_priority THEN (
                   SELECT q.id FROM pgqueuer AS q
                   WHERE q.serial_key IS NOT NULL AND q.entrypoint = w.entrypoint
                     AND q.serial_key = w.serial_key AND q.status = 'queued'
                   ORDER BY q.priority DESC, q.id ASC LIMIT 1)
               ELSE (
                   SELECT q.id FROM pgqueuer AS q
                   WHERE q.serial_key IS NOT NULL AND q.entrypoint = w.entrypoint
                     AND q.serial_key = w.serial_key AND q.status = 'queued'
                   ORDER BY q.id ASC LIMIT 1)
               END AS id
    ) AS c
    JOIN pgqueuer AS h ON h.id = c.id
    WHERE w.serial_key IS NOT NULL
      AND h.execute_after <= now()
      AND NOT EXISTS (
          SELECT 1 FROM pgqueuer AS b
          WHERE b.serial_key IS NOT NULL AND b.entrypoint = w.entrypoint
            AND b.serial_key = w.serial_key
            AND b.status = ANY(CASE WHEN eps.held_blocks
                                    THEN '{picked,failed}'::pgqueuer_status[]
                                    ELSE '{picked}'::pgqueuer_status[] END))
),
unkeyed AS MATERIALIZED (
    SELECT eps.entrypoint, u.id
    FROM eps
    CROSS JOIN LATERAL (
        SELECT s.id FROM (
            SELECT d.id, d.fairness_key, d.serial_key
            FROM pgqueuer AS d
            WHERE d.status = 'queued'
              AND d.entrypoint = eps.entrypoint
              AND d.execute_after <= now()
            ORDER BY d.priority DESC, d.id ASC
            LIMIT LEAST(eps.cap, 100)
        ) AS s
        WHERE s.fairness_key IS NULL AND s.serial_key IS NULL
    ) AS u
),
shares AS (
    SELECT eps.entrypoint, eps.cap, eps.key_limit,
           ceil(eps.cap::float8 / GREATEST(1,
               (SELECT count(*) FROM fair_shares AS f WHERE f.entrypoint = eps.entrypoint)
               + (SELECT count(*) FROM serial_heads AS h WHERE h.entrypoint = eps.entrypoint)
               + (SELECT count(*) FROM (SELECT 1 FROM unkeyed AS u WHERE u.entrypoint = eps.entrypoint LIMIT 1) AS one)
           ))::int AS per_share
    FROM eps
),
-- Each fairness key's part: its share, and at most what WithKeyConcurrencyLimit
-- leaves it (room; the cap without a limit).
fair_lims AS MATERIALIZED (
    SELECT f.entrypoint, f.fairness_key, s.per_share,
           CASE WHEN s.key_limit > 0
                THEN GREATEST(0, s.key_limit - (
                    SELECT count(*) FROM pgqueuer AS r
                    WHERE r.status = 'picked' AND r.fairness_key IS NOT NULL AND r.fair_limited
                      AND r.entrypoint = f.entrypoint AND r.fairness_key = f.fairness_key))::int
                ELSE s.cap END AS room
    FROM fair_shares AS f
    JOIN shares AS s ON s.entrypoint = f.entrypoint
),
fair_picks AS (
    SELECT f.entrypoint, f.fairness_key, x.id, x.priority,
           row_number() OVER (PARTITION BY f.entrypoint, f.fairness_key ORDER BY x.priority DESC, x.id ASC) AS rank
    FROM fair_lims AS f
    CROSS JOIN LATERAL (
        SELECT d.id, d.priority
        FROM pgqueuer AS d
        WHERE d.status = 'queued'
          AND d.fairness_key IS NOT NULL
          AND d.entrypoint = f.entrypoint
          AND d.fairness_key = f.fairness_key
          AND d.execute_after <= now()
        ORDER BY d.priority DESC, d.id ASC
        LIMIT LEAST(f.per_share, f.room)
        FOR UPDATE SKIP LOCKED
    ) AS x
),
serial_picks AS (
    SELECT h.entrypoint, x.id, x.priority, 1::bigint AS rank
    FROM serial_heads AS h
    CROSS JOIN LATERAL (
        SELECT d.id, d.priority
        FROM pgqueuer AS d
        WHERE d.id = h.id AND d.status = 'queued' AND d.execute_after <= now()
        FOR UPDATE SKIP LOCKED
    ) AS x
),
unkeyed_picks AS (
    SELECT s.entrypoint, x.id, x.priority,
           row_number() OVER (PARTITION BY s.entrypoint ORDER BY x.priority DESC, x.id ASC) AS rank
    FROM shares AS s
    CROSS JOIN LATERAL (
        SELECT d.id, d.priority
        FROM pgqueuer AS d
        WHERE d.id = ANY(ARRAY(SELECT u.id FROM unkeyed AS u WHERE u.entrypoint = s.entrypoint))
          AND d.status = 'queued' AND d.execute_after <= now()
        ORDER BY d.priority DESC, d.id ASC
        LIMIT s.per_share
        FOR UPDATE SKIP LOCKED
    ) AS x
),
-- The keys that filled their share and may take more ("full") share what
-- the others left of the entrypoint's cap (or the batch), as equally: so
-- when one key holds nearly all the due jobs, one statement fills the
-- batch. Their extra jobs rank after every first pick: round robin still.
fair_full AS MATERIALIZED (
    SELECT f.entrypoint, f.fairness_key, f.per_share, f.room,
           array_agg(p.id) AS taken
    FROM fair_lims AS f
    JOIN fair_picks AS p ON p.entrypoint = f.entrypoint AND p.fairness_key = f.fairness_key
    WHERE f.room > f.per_share
    GROUP BY f.entrypoint, f.fairness_key, f.per_share, f.room
    HAVING count(*) = f.per_share
),
leftover AS (
    SELECT s.entrypoint,
           LEAST(s.cap, @batch_size::int)
               - (SELECT count(*) FROM fair_picks AS p WHERE p.entrypoint = s.entrypoint)
               - (SELECT count(*) FROM serial_picks AS p WHERE p.entrypoint = s.entrypoint)
               - (SELECT count(*) FROM unkeyed_picks AS p WHERE p.entrypoint = s.entrypoint) AS n,
           (SELECT count(*) FROM fair_full AS f WHERE f.entrypoint = s.entrypoint) AS full_keys
    FROM shares AS s
),
fair_more AS (
    SELECT f.entrypoint, x.id, x.priority,
           f.per_share + row_number() OVER (PARTITION BY f.entrypoint, f.fairness_key ORDER BY x.priority DESC, x.id ASC) AS rank
    FROM fair_full AS f
    JOIN leftover AS l ON l.entrypoint = f.entrypoint
    CROSS JOIN LATERAL (
        SELECT d.id, d.priority
        FROM pgqueuer AS d
        WHERE d.status = 'queued'
          AND d.fairness_key IS NOT NULL
          AND d.entrypoint = f.entrypoint
          AND d.fairness_key = f.fairness_key
          AND d.execute_after <= now()
          AND d.id <> ALL(f.taken)
        ORDER BY d.priority DESC, d.id ASC
        LIMIT LEAST(ceil(l.n::float8 / GREATEST(1, l.full_keys))::int, f.room - f.per_share)
        FOR UPDATE SKIP LOCKED
    ) AS x
    WHERE l.n > 0
),
picks AS (
    SELECT fair_picks.entrypoint, fair_picks.id, fair_picks.priority, fair_picks.rank FROM fair_picks
    UNION ALL
    SELECT fair_more.entrypoint, fair_more.id, fair_more.priority, fair_more.rank FROM fair_more
    UNION ALL
    SELECT serial_picks.entrypoint, serial_picks.id, serial_picks.priority, serial_picks.rank FROM serial_picks
    UNION ALL
    SELECT unkeyed_picks.entrypoint, unkeyed_picks.id, unkeyed_picks.priority, unkeyed_picks.rank FROM unkeyed_picks
),
ranked AS (
    SELECT picks.id, picks.priority, picks.rank, eps.cap,
           row_number() OVER (PARTITION BY picks.entrypoint ORDER BY picks.rank, picks.priority DESC, picks.id ASC) AS nth
    FROM picks
    JOIN eps ON eps.entrypoint = picks.entrypoint
),
candidates AS (
    SELECT ranked.id FROM ranked
    WHERE ranked.nth <= ranked.cap
    ORDER BY ranked.rank, ranked.priority DESC, ranked.id ASC
    LIMIT @batch_size::int
),
-- One clock reading for the row and its log row (see JobsClaim).
claim_time AS MATERIALIZED (
    SELECT clock_timestamp() AS at
),
claimed AS (
    UPDATE pgqueuer AS j
    SET status = 'picked',
        updated = (SELECT claim_time.at FROM claim_time),
        heartbeat = now(),
        queue_manager_id = @queue_manager_id,
        slot = NULL,
        -- Counted by WithKeyConcurrencyLimit (migration 11): the jobs with
        -- a fairness key of entrypoints with a key limit.
        fair_limited = CASE WHEN j.fairness_key IS NOT NULL
                             AND j.entrypoint = ANY(ARRAY(SELECT eps.entrypoint FROM eps
                                                          WHERE eps.key_limit > 0))
                            THEN true END
    WHERE j.id = ANY(ARRAY(SELECT candidates.id FROM candidates))
    RETURNING j.id, j.priority, j.created, j.execute_after, j.entrypoint,
              j.payload, j.headers, j.attempts, j.dedupe_key,
              (extract(epoch FROM j.updated) * 1000000)::bigint AS claim_token,
              j.fairness_key, j.serial_key
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, created)
    SELECT claimed.id, 'picked', claimed.priority, claimed.entrypoint, claim_time.at
    FROM claimed CROSS JOIN claim_time
)
SELECT claimed.id, claimed.priority, claimed.created, claimed.execute_after,
       claimed.entrypoint, claimed.payload, claimed.headers, claimed.attempts,
       claimed.dedupe_key, claimed.claim_token, claimed.fairness_key, claimed.serial_key,
       ''::text AS fair_cursor, ''::text AS serial_cursor
FROM claimed
UNION ALL
SELECT 0::bigint, 0::int, now(), now(), eps.entrypoint, NULL::bytea, NULL::jsonb, 0::int,
       NULL::text, 0::bigint, NULL::text, NULL::text,
       COALESCE((SELECT w.fairness_key FROM fair_keys AS w
                 WHERE w.entrypoint = eps.entrypoint ORDER BY w.n DESC LIMIT 1), '')::text,
       COALESCE((SELECT w.serial_key FROM serial_keys AS w
                 WHERE w.entrypoint = eps.entrypoint ORDER BY w.n DESC LIMIT 1), '')::text
FROM eps;

-- name: JobsKeyedWaiting :many
-- Which of the entrypoints have queued jobs with a fairness or serial key
-- (one probe of pgqueuer_pgq_keyed_idx each), and for those: whether some
-- have a fairness key (fair), some a serial key (serial), and whether any
-- of the first 100 queued jobs in priority order has no key (unkeyed).
-- JobsClaimFair takes an entrypoint with fair jobs only; JobsClaimKeyed
-- the others. A worker that found no keyed jobs asks this, not the keyed
-- claims, until some appear.
SELECT e.name::text AS entrypoint,
       EXISTS (SELECT 1 FROM pgqueuer AS f
               WHERE f.entrypoint = e.name AND f.status = 'queued'
                 AND f.fairness_key IS NOT NULL) AS fair,
       EXISTS (SELECT 1 FROM pgqueuer AS s
               WHERE s.entrypoint = e.name AND s.status = 'queued'
                 AND s.serial_key IS NOT NULL) AS serial,
       EXISTS (SELECT 1 FROM (
                   SELECT u.fairness_key, u.serial_key FROM pgqueuer AS u
                   WHERE u.entrypoint = e.name AND u.status = 'queued'
                   ORDER BY u.priority DESC, u.id
                   LIMIT 100) AS h
               WHERE h.fairness_key IS NULL AND h.serial_key IS NULL) AS unkeyed
FROM unnest(@entrypoints::text[]) AS e(name)
WHERE EXISTS (
    SELECT 1 FROM pgqueuer AS k
    WHERE k.entrypoint = e.name
      AND k.status = 'queued'
      AND (k.fairness_key IS NOT NULL OR k.serial_key IS NOT NULL));

-- name: JobsClaimFair :many
-- The claim of entrypoints whose queued keyed jobs all have a fairness
-- key (no serial keys, no jobs without a key near the queue's head, no
-- WithKeyConcurrencyLimit: JobsClaimKeyed takes the others). It is
-- JobsClaim on another order: per entrypoint, up to its cap of due jobs
-- with a fairness key by fair_rank, then id (pgqueuer_pgq_fair_rank_idx).
-- The ranks given at enqueue (see JobsEnqueueKeyed) make that order a
-- round robin across the keys with due jobs: a key's first job ranks with
-- the entrypoint's current turn, its next ones a turn later each. Marks
-- the jobs picked, writes their 'picked' log rows and returns them as
-- JobsClaim does (claim_token, synchronous_claim: see there), and records
-- the entrypoint's turn for the enqueue.
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
due AS (
    SELECT q.id, q.fair_rank
    FROM caps
    CROSS JOIN LATERAL (
        SELECT d.id, d.fair_rank
        FROM pgqueuer AS d
        WHERE d.status = 'queued'
          AND d.fairness_key IS NOT NULL
          AND d.entrypoint = caps.entrypoint
          AND d.execute_after <= now()
        ORDER BY d.fair_rank ASC, d.id ASC
        LIMIT caps.cap
        FOR UPDATE SKIP LOCKED
    ) AS q
    WHERE caps.cap > 0
      AND NOT EXISTS (SELECT 1 FROM pgqueuer_pgq_paused AS p WHERE p.entrypoint = caps.entrypoint)
),
candidates AS (
    SELECT due.id FROM due
    ORDER BY due.fair_rank ASC, due.id ASC
    LIMIT @batch_size::int
),
claim_time AS MATERIALIZED (
    SELECT clock_timestamp() AS at
),
claimed AS (
    UPDATE pgqueuer AS j
    SET status = 'picked',
        updated = (SELECT claim_time.at FROM claim_time),
        heartbeat = now(),
        queue_manager_id = @queue_manager_id,
        slot = NULL,
        -- Entrypoints claimed here have no key limit (migration 11).
        fair_limited = NULL
    WHERE j.id = ANY(ARRAY(SELECT candidates.id FROM candidates))
    RETURNING j.id, j.priority, j.created, j.execute_after, j.entrypoint,
              j.payload, j.headers, j.attempts, j.dedupe_key,
              (extract(epoch FROM j.updated) * 1000000)::bigint AS claim_token,
              j.fairness_key, j.serial_key, j.fair_rank
),
logged AS (
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, created, aggregated)
    SELECT claimed.id, 'picked', claimed.priority, claimed.entrypoint, claim_time.at,
           @fold_statistics::boolean
    FROM claimed CROSS JOIN claim_time
    RETURNING pgqueuer_log.created, pgqueuer_log.priority, pgqueuer_log.status, pgqueuer_log.entrypoint
),
-- With fold_statistics, as JobsClaim. Only the entrypoint's first turn
-- row (first_turns, written once per entrypoint ever) may wait for a lock
-- after these; two first claims caught that way deadlock, the server ends
-- one, and its worker claims again.
folded AS (
    INSERT INTO pgqueuer_statistics (created, count, priority, status, entrypoint)
    SELECT date_trunc('sec', logged.created AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           count(*), logged.priority, logged.status, logged.entrypoint
    FROM logged
    WHERE @fold_statistics::boolean
    GROUP BY 1, logged.priority, logged.status, logged.entrypoint
    ORDER BY logged.priority, 1, logged.status, logged.entrypoint
    ON CONFLICT (priority, date_trunc('sec', created AT TIME ZONE 'UTC'), status, entrypoint)
    DO UPDATE SET count = pgqueuer_statistics.count + EXCLUDED.count
),
-- When record_turn is set, each entrypoint's turn (migration 9): the
-- highest rank this claim took, when higher than the one recorded. The
-- claim took the lowest ranks due, so the due jobs left rank there or
-- later, and the enqueue looks for the current turn from there. Workers
-- set it a few times a second, not on every claim: a write per claim cost
-- 8 % of a drain, and the enqueue's probe steps over only the entries of
-- the jobs claimed since. A row another claim is writing is skipped, not
-- waited for: claims never queue behind each other here.
turns AS (
    SELECT claimed.entrypoint, max(claimed.fair_rank) AS turn
    FROM claimed
    WHERE claimed.fair_rank IS NOT NULL AND @record_turn::boolean
    GROUP BY claimed.entrypoint
),
turn_rows AS (
    SELECT t.entrypoint
    FROM pgqueuer_pgq_fair_turn AS t
    JOIN turns ON turns.entrypoint = t.entrypoint
    WHERE t.turn < turns.turn
    FOR UPDATE OF t SKIP LOCKED
),
turned AS (
    UPDATE pgqueuer_pgq_fair_turn AS t
    SET turn = turns.turn
    FROM turns
    WHERE t.entrypoint = turns.entrypoint
      AND t.entrypoint IN (SELECT turn_rows.entrypoint FROM turn_rows)
      AND t.turn < turns.turn
),
first_turns AS (
    INSERT INTO pgqueuer_pgq_fair_turn (entrypoint, turn)
    SELECT turns.entrypoint, turns.turn
    FROM turns
    WHERE NOT EXISTS (SELECT 1 FROM pgqueuer_pgq_fair_turn AS e WHERE e.entrypoint = turns.entrypoint)
    ON CONFLICT (entrypoint) DO NOTHING
)
SELECT claimed.id, claimed.priority, claimed.created, claimed.execute_after,
       claimed.entrypoint, claimed.payload, claimed.headers, claimed.attempts,
       claimed.dedupe_key, claimed.claim_token, claimed.fairness_key, claimed.serial_key
FROM claimed
ORDER BY claimed.fair_rank ASC, claimed.id ASC;

-- name: JobsKeyedTxSettings :exec
-- Settings for the rest of the transaction that runs JobsClaimKeyed:
--
--   - JIT compilation off: the planner's estimates for its key walks on a
--     large table pass jit_above_cost, and compiling the statement's
--     expressions takes far longer (hundreds of ms) than running it (a
--     few ms);
--   - a generic plan: planning the statement's dozen CTEs costs more than
--     running it, and every choice in its plan follows from its CTEs, not
--     from its parameter values. A driver that prepares statements once
--     per connection (pgx) then plans it once per connection; one that
--     sends it unnamed each time (lib/pq) plans it each time either way.
SELECT set_config('jit', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true);
