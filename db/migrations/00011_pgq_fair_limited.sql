-- pgq schema, version 11: only jobs under a per-key limit are counted.
--
-- WithKeyConcurrencyLimit counts the running jobs of a fairness key from
-- pgqueuer_pgq_fair_picked_idx (version 6), which held every running job
-- with a fairness key: each keyed job's claim wrote an entry there, 7-10 %
-- of a keyed drain's WAL, though only entrypoints with a key limit ever
-- read it. Now the keyed claim (JobsClaimKeyed) marks the jobs it takes
-- for such entrypoints (fair_limited), the fair claim (JobsClaimFair)
-- clears the mark, and the index holds marked running jobs only. (The
-- ordinary claim never takes keyed jobs.) A running job claimed by a
-- worker without the limit, or by PGQueuer, is not counted by workers
-- with it, unless it kept its mark from an earlier claim (a retry); such
-- a worker does not keep the limit in its own claims either.
-- Running keyed jobs at the time of the upgrade are marked, so that none
-- escapes a limit while they finish. Idempotent, like the earlier
-- migrations.

-- +goose Up
ALTER TABLE pgqueuer ADD COLUMN IF NOT EXISTS fair_limited BOOLEAN;

UPDATE pgqueuer SET fair_limited = true
WHERE status = 'picked' AND fairness_key IS NOT NULL AND fair_limited IS NULL;

CREATE INDEX IF NOT EXISTS pgqueuer_pgq_fair_limited_idx
    ON pgqueuer (entrypoint, fairness_key)
    WHERE status = 'picked' AND fairness_key IS NOT NULL AND fair_limited;

DROP INDEX IF EXISTS pgqueuer_pgq_fair_picked_idx;

-- +goose Down
CREATE INDEX IF NOT EXISTS pgqueuer_pgq_fair_picked_idx
    ON pgqueuer (entrypoint, fairness_key)
    WHERE status = 'picked' AND fairness_key IS NOT NULL;
DROP INDEX IF EXISTS pgqueuer_pgq_fair_limited_idx;
ALTER TABLE IF EXISTS pgqueuer DROP COLUMN IF EXISTS fair_limited;
