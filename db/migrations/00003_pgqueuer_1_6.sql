-- pgq schema, version 3: the objects PGQueuer 1.4-1.6 declare.
--
-- After this migration PGQueuer 1.6's catalog diff finds the job, log,
-- statistics and schedules tables, their columns and their indexes as it
-- declares them (docs/pgqueuer-compat.md lists the facts), and PGQueuer
-- 1.0-1.3 still find everything they check for. Every statement is
-- idempotent, like the earlier migrations.
--
-- Ids are widened to BIGINT by Upgrade outside this migration (it rewrites a
-- table, so it can be skipped); a fresh install creates them BIGINT here.

-- +goose Up
-- PGQueuer 1.4: the capacity slot a picked job holds under a concurrency
-- limit. NULL for unlimited entrypoints and for rows that are not picked.
ALTER TABLE pgqueuer ADD COLUMN IF NOT EXISTS slot BIGINT;
CREATE UNIQUE INDEX IF NOT EXISTS pgqueuer_picked_slot_idx
    ON pgqueuer (entrypoint, slot) WHERE status = 'picked' AND slot IS NOT NULL;

-- PGQueuer 1.5: stale picked jobs are found by heartbeat alone; the older
-- (heartbeat, id DESC) INCLUDE (id) index is retired and dropped by its
-- upgrade, so it is dropped here too (PGQueuer 1.0-1.3 never require it).
CREATE INDEX IF NOT EXISTS pgqueuer_picked_heartbeat_idx
    ON pgqueuer (heartbeat) WHERE status = 'picked';
DROP INDEX IF EXISTS pgqueuer_heartbeat_id_id1_idx;

-- PGQueuer 1.5 rebuilds pgqueuer_log_job_id_status whenever its definition
-- is not (job_id, created DESC). pgq's migration 1 built it wider; take
-- PGQueuer's shape, but only from the shape pgq built: any other definition
-- is left as found.
-- +goose StatementBegin
DO $$
DECLARE
    ix regclass := to_regclass('pgqueuer_log_job_id_status');
BEGIN
    IF ix IS NOT NULL
       AND pg_get_indexdef(ix) LIKE '% USING btree (job_id, created DESC, id DESC) INCLUDE (status)' THEN
        DROP INDEX pgqueuer_log_job_id_status;
    END IF;
END
$$;
-- +goose StatementEnd
CREATE INDEX IF NOT EXISTS pgqueuer_log_job_id_status
    ON pgqueuer_log (job_id, created DESC);

-- BIGINT ids (PGQueuer 1.1.1) for tables that are still empty, as after a
-- fresh install: no rows, nothing to rewrite. A table with rows is widened
-- by Upgrade (schema.go), which can be told to skip it.
-- +goose StatementBegin
DO $$
DECLARE
    t regclass;
    empty boolean;
BEGIN
    FOREACH t IN ARRAY ARRAY[to_regclass('pgqueuer'), to_regclass('pgqueuer_statistics'),
                             to_regclass('pgqueuer_schedules')] LOOP
        CONTINUE WHEN t IS NULL
            OR (SELECT a.atttypid FROM pg_attribute AS a
                WHERE a.attrelid = t AND a.attname = 'id' AND NOT a.attisdropped) <> 'int4'::regtype;
        EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %s)', t) INTO empty;
        IF empty THEN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN id TYPE bigint', t);
            IF pg_get_serial_sequence(t::text, 'id') IS NOT NULL THEN
                EXECUTE format('ALTER SEQUENCE %s AS bigint', pg_get_serial_sequence(t::text, 'id'));
            END IF;
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP INDEX IF EXISTS pgqueuer_picked_slot_idx;
DROP INDEX IF EXISTS pgqueuer_picked_heartbeat_idx;
CREATE INDEX IF NOT EXISTS pgqueuer_heartbeat_id_id1_idx
    ON pgqueuer (heartbeat ASC, id DESC) INCLUDE (id) WHERE status = 'picked';
ALTER TABLE IF EXISTS pgqueuer DROP COLUMN IF EXISTS slot;
