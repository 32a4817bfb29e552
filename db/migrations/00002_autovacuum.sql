-- Vacuum the job table early and often: every job is inserted, updated and
-- deleted, so dead tuples pile up at the head of the claim index unless
-- vacuum keeps pace. The log only grows (until retention prunes it), so it
-- is vacuumed rarely and analysed often enough for good plans. The same
-- settings as PGQueuer's optimisation.

-- +goose Up
ALTER TABLE pgqueuer SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 500,
    autovacuum_vacuum_cost_limit = 10000,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE pgqueuer_log SET (
    autovacuum_vacuum_scale_factor = 0.95,
    autovacuum_vacuum_threshold = 1000000,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_analyze_threshold = 10000
);

-- +goose Down
ALTER TABLE IF EXISTS pgqueuer RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold,
    autovacuum_vacuum_cost_limit, autovacuum_vacuum_cost_delay
);
ALTER TABLE IF EXISTS pgqueuer_log RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold
);
