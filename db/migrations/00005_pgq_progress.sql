-- pgq schema, version 5: pgq-only state for the progress handlers report.
--
-- pgqueuer_pgq_progress keeps the latest progress a handler reported for
-- its job (pgq.ReportProgress): a fraction in [0, 1] and a short note. The
-- worker writes it coalesced, a few times a second at most per job and
-- many jobs per statement, and announces each write on its own channel
-- (ch_pgqueuer_pgq_progress), never on the channel PGQueuer listens on.
-- Rows outlive their job for a while, so that a finished job still shows
-- how far it got; workers prune them. PGQueuer neither reads nor declares
-- this table. Idempotent, like the earlier migrations.

-- +goose Up
CREATE TABLE IF NOT EXISTS pgqueuer_pgq_progress (
    job_id   BIGINT PRIMARY KEY,
    fraction DOUBLE PRECISION NOT NULL,
    note     TEXT NOT NULL DEFAULT '',
    updated  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS pgqueuer_pgq_progress_updated
    ON pgqueuer_pgq_progress (updated);

-- +goose Down
DROP TABLE IF EXISTS pgqueuer_pgq_progress;
