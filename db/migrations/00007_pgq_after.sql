-- pgq schema, version 7: pgq-only state for dependencies between jobs.
--
-- A job enqueued with pgq.WithAfter(ids...) waits, outside the claimable
-- set, until every job it depends on has finished successfully: its row
-- is queued with execute_after = 9999-12-31 (no worker's claim, pgq's or
-- PGQueuer's, takes a job that is not due), and pgqueuer_pgq_after holds
-- one edge per dependency, with the time the job becomes due once
-- released and what happens when a dependency fails for good.
--
-- The log tells how every job ends, whoever ran it (a pgq worker, a
-- PGQueuer worker, a cancellation), so a trigger on the log settles the
-- edges: a dependency logged 'successful' drops its edges and releases
-- the jobs left without one (execute_after back to their due time, and a
-- table_changed_event on the queue's channel so that idle workers look);
-- one logged 'exception', 'canceled' or 'deleted' cancels its dependants
-- (or holds them, status 'failed') with a log row naming it, which in turn
-- settles their own dependants. A statement that logs nothing terminal, or
-- runs while no job waits, costs one probe of the empty edge table per
-- statement, not per job.
--
-- PGQueuer neither reads nor declares these objects; its upgrade leaves
-- them alone. Idempotent, like the earlier migrations.

-- +goose Up
CREATE TABLE IF NOT EXISTS pgqueuer_pgq_after (
    after_id BIGINT NOT NULL,      -- the job waited for
    job_id   BIGINT NOT NULL,      -- the job that waits
    due      TIMESTAMPTZ NOT NULL, -- when the waiting job becomes due once released
    hold     BOOLEAN NOT NULL DEFAULT false, -- on a failed dependency: hold, not cancel
    PRIMARY KEY (after_id, job_id)
);
CREATE INDEX IF NOT EXISTS pgqueuer_pgq_after_job_id ON pgqueuer_pgq_after (job_id);

-- Locks the rows of ids that exist, FOR KEY SHARE, for the enqueue of
-- jobs that wait for them: until the enqueue commits, none of them can be
-- deleted (finished), so the trigger below that settles one sees the new
-- edges. It runs as its owner, so that producers need no UPDATE right on
-- the job table to take the lock.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION pgqueuer_pgq_after_lock(ids BIGINT[]) RETURNS SETOF BIGINT
LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT j.id FROM pgqueuer AS j WHERE j.id = ANY(ids) FOR KEY SHARE
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION pgqueuer_pgq_after_lock(BIGINT[]) FROM PUBLIC;

-- Settles the edges of jobs that ended: done_ids and done_statuses are
-- parallel, one terminal status per job. Returns how many waiting jobs it
-- released, canceled or held. Called by the log's trigger and by workers'
-- sweeps (for a dependency that vanished while a dependant was enqueued).
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION pgqueuer_pgq_after_settle(done_ids BIGINT[], done_statuses TEXT[])
RETURNS INTEGER LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    rel_ids BIGINT[];
    rel_due TIMESTAMPTZ[];
    changed INTEGER := 0;
    n INTEGER;
BEGIN
    IF done_ids IS NULL OR cardinality(done_ids) = 0 THEN
        RETURN 0;
    END IF;
    -- A job that ended waits for nothing any more.
    DELETE FROM pgqueuer_pgq_after AS a WHERE a.job_id = ANY(done_ids);

    -- Dependencies that succeeded: their edges go, and the jobs left
    -- without an edge are released.
    WITH done AS (
        SELECT unnest(done_ids) AS id, unnest(done_statuses) AS status
    ),
    gone AS (
        DELETE FROM pgqueuer_pgq_after AS a
        USING done
        WHERE a.after_id = done.id AND done.status = 'successful'
        RETURNING a.job_id, a.due
    )
    SELECT array_agg(g.job_id), array_agg(g.due) INTO rel_ids, rel_due
    FROM (SELECT gone.job_id, max(gone.due) AS due FROM gone GROUP BY gone.job_id) AS g;
    IF rel_ids IS NOT NULL THEN
        -- Lock them, in id order, before looking for edges left: two
        -- settles that each drop one of a job's last two edges (its two
        -- dependencies finished at once, in two transactions) would each
        -- still see the other's edge. The second waits here for the
        -- first to commit, then, in its next statement's snapshot, sees
        -- no edge left and releases the job.
        PERFORM j.id FROM pgqueuer AS j WHERE j.id = ANY(rel_ids) ORDER BY j.id FOR NO KEY UPDATE;
        UPDATE pgqueuer AS j
        SET execute_after = GREATEST(r.due, now()), updated = now()
        FROM unnest(rel_ids, rel_due) AS r (id, due)
        WHERE j.id = r.id
          AND j.status = 'queued'
          AND NOT EXISTS (SELECT 1 FROM pgqueuer_pgq_after AS w WHERE w.job_id = j.id);
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            changed := changed + n;
            -- The job table's trigger announces no update: wake workers.
            PERFORM pg_notify('ch_pgqueuer', json_build_object(
                'channel', 'ch_pgqueuer', 'operation', 'update', 'sent_at', now(),
                'table', 'pgqueuer', 'type', 'table_changed_event')::text);
        END IF;
    END IF;

    -- Dependencies that failed for good: their dependants are canceled,
    -- or held, with a log row naming the dependency. Logging them settles
    -- their own dependants in turn (this trigger, nested).
    WITH done AS (
        SELECT unnest(done_ids) AS id, unnest(done_statuses) AS status
    ),
    bad AS (
        DELETE FROM pgqueuer_pgq_after AS a
        USING done
        WHERE a.after_id = done.id AND done.status <> 'successful'
        RETURNING a.job_id, a.after_id, a.hold, done.status
    ),
    victims AS (
        SELECT DISTINCT ON (bad.job_id) bad.job_id, bad.after_id, bad.hold, bad.status
        FROM bad
        ORDER BY bad.job_id, bad.after_id
    ),
    canceled AS (
        DELETE FROM pgqueuer AS j
        USING victims AS v
        WHERE j.id = v.job_id AND NOT v.hold AND j.status = 'queued'
        RETURNING j.id, j.priority, j.entrypoint, v.after_id, v.status
    ),
    held AS (
        UPDATE pgqueuer AS j
        SET status = 'failed', execute_after = now(), updated = now()
        FROM victims AS v
        WHERE j.id = v.job_id AND v.hold AND j.status = 'queued'
        RETURNING j.id, j.priority, j.entrypoint, v.after_id, v.status
    ),
    ended AS (
        SELECT c.id, c.priority, c.entrypoint, c.after_id, c.status, 'canceled' AS outcome FROM canceled AS c
        UNION ALL
        SELECT h.id, h.priority, h.entrypoint, h.after_id, h.status, 'failed' AS outcome FROM held AS h
    )
    INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, traceback)
    SELECT e.id, e.outcome::pgqueuer_status, e.priority, e.entrypoint, jsonb_build_object(
        'job_id', e.id,
        'timestamp', now(),
        'exception_type', 'DependencyFailed',
        'exception_message', format('dependency %s ended %s', e.after_id, e.status),
        'traceback', format('pgq: job %s depends on job %s (WithAfter), which ended %s', e.id, e.after_id, e.status),
        'additional_context', jsonb_build_object('entrypoint', e.entrypoint, 'dependency', e.after_id))
    FROM ended AS e;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        changed := changed + n;
        -- A held job waits for nothing more: requeued, it runs.
        DELETE FROM pgqueuer_pgq_after AS a
        WHERE EXISTS (SELECT 1 FROM pgqueuer AS j WHERE j.id = a.job_id AND j.status = 'failed');
    END IF;
    RETURN changed;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION pgqueuer_pgq_after_settle(BIGINT[], TEXT[]) FROM PUBLIC;

-- The trigger runs as the functions' owner too: whoever writes the log (a
-- producer, a PGQueuer worker) needs no rights on pgq's edge table.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION fn_pgqueuer_pgq_after() RETURNS TRIGGER
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    -- The common case: nothing waits.
    IF NOT EXISTS (SELECT 1 FROM pgqueuer_pgq_after) THEN
        RETURN NULL;
    END IF;
    PERFORM pgqueuer_pgq_after_settle(array_agg(l.job_id), array_agg(l.status::text))
    FROM pgq_logged AS l
    WHERE l.status IN ('successful', 'exception', 'canceled', 'deleted');
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

DROP TRIGGER IF EXISTS tg_pgqueuer_pgq_after ON pgqueuer_log;
CREATE TRIGGER tg_pgqueuer_pgq_after
    AFTER INSERT ON pgqueuer_log
    REFERENCING NEW TABLE AS pgq_logged
    FOR EACH STATEMENT EXECUTE FUNCTION fn_pgqueuer_pgq_after();

-- +goose Down
DROP TRIGGER IF EXISTS tg_pgqueuer_pgq_after ON pgqueuer_log;
DROP FUNCTION IF EXISTS fn_pgqueuer_pgq_after();
DROP FUNCTION IF EXISTS pgqueuer_pgq_after_settle(BIGINT[], TEXT[]);
DROP FUNCTION IF EXISTS pgqueuer_pgq_after_lock(BIGINT[]);
DROP TABLE IF EXISTS pgqueuer_pgq_after;
