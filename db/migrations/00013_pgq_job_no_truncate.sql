-- pgq schema, version 13: autovacuum leaves the job table's empty end.
--
-- At the end of a vacuum, PostgreSQL cuts off the empty pages at the end
-- of a table. To do so it takes an exclusive lock on the table, trying for
-- up to 5 s, and holds it while it checks the pages from the end. A busy
-- queue table is never without claims, finishes and enqueues: each
-- autovacuum of the job table (once a minute under load) spent most of its
-- time there, 1.4-2.3 s against 0.1-0.3 s without, and the table grows
-- back at once. Meanwhile a worker's own vacuum (which never truncates,
-- see JobsVacuum) could not run, dead rows rose to 83,000-107,000 against
-- 43,000-64,000 otherwise (10,700 jobs/s), and the table's indexes grew
-- to hold them (16.0 to 18.1 MB in one such pause). Indexes keep the pages
-- they grow to, so over 30 minutes they grew in steps. With
-- vacuum_truncate off, autovacuum skips that phase as the workers' vacuum
-- does. PGQueuer does not read the setting. Idempotent, like the earlier
-- migrations.

-- +goose Up
ALTER TABLE pgqueuer SET (vacuum_truncate = false);

-- +goose Down
ALTER TABLE IF EXISTS pgqueuer RESET (vacuum_truncate);
