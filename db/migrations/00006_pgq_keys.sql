-- pgq schema, version 6: fairness keys and serial keys (pgq only).
--
-- Two nullable columns on the job table: fairness_key (WithFairnessKey:
-- a claim shares its batch round-robin across the keys with due jobs) and
-- serial_key (WithSerialKey: one job of a key runs at a time, in enqueue
-- order). Jobs without them (every job PGQueuer enqueues) leave them NULL
-- and are in none of the indexes below, so their enqueue and claim cost
-- what they did. PGQueuer names its columns in its statements and ignores
-- these: its workers run keyed jobs as ordinary ones (they neither share
-- fairly nor keep a serial key's order). Idempotent, like the earlier
-- migrations.

-- +goose Up
ALTER TABLE pgqueuer ADD COLUMN IF NOT EXISTS fairness_key TEXT;
ALTER TABLE pgqueuer ADD COLUMN IF NOT EXISTS serial_key TEXT;

-- Which entrypoints have queued keyed jobs: the ordinary claim probes it
-- once per entrypoint and leaves those entrypoints to the keyed claim.
-- Empty, and never touched, while no job has a key.
CREATE INDEX IF NOT EXISTS pgqueuer_pgq_keyed_idx
    ON pgqueuer (entrypoint)
    WHERE status = 'queued' AND (fairness_key IS NOT NULL OR serial_key IS NOT NULL);

-- The keyed claim's walk over the fairness keys of an entrypoint (one probe
-- per key) and its take of each key's jobs, in priority then id order.
CREATE INDEX IF NOT EXISTS pgqueuer_pgq_fair_idx
    ON pgqueuer (entrypoint, fairness_key, priority DESC, id)
    WHERE status = 'queued' AND fairness_key IS NOT NULL;

-- Running jobs per fairness key, for WithKeyConcurrencyLimit.
CREATE INDEX IF NOT EXISTS pgqueuer_pgq_fair_picked_idx
    ON pgqueuer (entrypoint, fairness_key)
    WHERE status = 'picked' AND fairness_key IS NOT NULL;

-- A serial key's jobs by status, then enqueue order: the walk over the
-- keys, the look for a running or held job of a key, and its next job.
CREATE INDEX IF NOT EXISTS pgqueuer_pgq_serial_idx
    ON pgqueuer (entrypoint, serial_key, status, id)
    WHERE serial_key IS NOT NULL;

-- +goose Down
DROP INDEX IF EXISTS pgqueuer_pgq_serial_idx;
DROP INDEX IF EXISTS pgqueuer_pgq_fair_picked_idx;
DROP INDEX IF EXISTS pgqueuer_pgq_fair_idx;
DROP INDEX IF EXISTS pgqueuer_pgq_keyed_idx;
ALTER TABLE IF EXISTS pgqueuer DROP COLUMN IF EXISTS serial_key;
ALTER TABLE IF EXISTS pgqueuer DROP COLUMN IF EXISTS fairness_key;
