-- pgq schema, version 12: vacuum the log once a twentieth of it is dead.
--
-- Version 2 gave pgqueuer_log PGQueuer's settings: no vacuum for dead rows
-- until a million plus 95 % of its live rows are dead, right for a log
-- that only grows. A log that WithLogRetention prunes is not such a log:
-- at a steady rate the prune deletes as many rows as the jobs insert, and
-- the statistics fold updates the rows written unfolded (enqueues'). Over
-- 30 minutes at 12,900 jobs/s with 5 minutes of retention, dead rows
-- reached twice the 12-15M live ones between vacuums, and the log grew
-- from 5.4 to 6.2 GB where it should have levelled off. Now autovacuum
-- takes the log once 100,000 rows plus 5 % of its live rows are dead, and
-- with five times autovacuum's default cost limit (1000 against 200; the
-- delay between its rounds stays): throttled at the default, a vacuum of
-- a log of 10M rows took 2-3 minutes, during which up to 14M more died,
-- and the log still grew. At 10,700 jobs/s the log is now vacuumed every
-- minute (autovacuum's naptime) in 30-45 s. A log nobody prunes or folds
-- has no dead rows, so for it nothing changes. Idempotent, like the
-- earlier migrations.

-- +goose Up
ALTER TABLE pgqueuer_log SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_threshold = 100000,
    autovacuum_vacuum_cost_limit = 1000
);

-- +goose Down
ALTER TABLE IF EXISTS pgqueuer_log SET (
    autovacuum_vacuum_scale_factor = 0.95,
    autovacuum_vacuum_threshold = 1000000
);
ALTER TABLE IF EXISTS pgqueuer_log RESET (autovacuum_vacuum_cost_limit);
