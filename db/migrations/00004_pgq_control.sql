-- pgq schema, version 4: pgq-only state for controlling work.
--
-- pgqueuer_pgq_paused lists the entrypoints paused fleet-wide
-- (Queries.Pause): pgq's claim statement skips their jobs. PGQueuer
-- neither reads nor declares this table, and its upgrade leaves tables it
-- does not know alone, so its workers run on as before (they do not honour
-- a pause). One row per paused entrypoint, not per job: the claim looks it
-- up once per entrypoint. Idempotent, like the earlier migrations.

-- +goose Up
CREATE TABLE IF NOT EXISTS pgqueuer_pgq_paused (
    entrypoint TEXT PRIMARY KEY,
    paused_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE IF EXISTS pgqueuer_pgq_paused;
