-- pgq schema, version 8: fair share by rank.
--
-- A job with a fairness key gets a rank at enqueue: its key's next turn.
-- A key with queued jobs continues after its last one; a key without
-- queued jobs starts at the entrypoint's current turn, the lowest rank of
-- its due keyed jobs. Claiming in rank order then takes one job of every
-- key with due jobs before a second of any, as a round robin does, from
-- one index, at the cost of an ordinary claim (JobsClaimFair).
-- Jobs without a fairness key (all of PGQueuer's) leave fair_rank NULL and
-- enter neither index. Idempotent, like the earlier migrations.

-- +goose Up
ALTER TABLE pgqueuer ADD COLUMN IF NOT EXISTS fair_rank BIGINT;

-- The fair claim's order: an entrypoint's due keyed jobs by rank.
CREATE INDEX IF NOT EXISTS pgqueuer_pgq_fair_rank_idx
    ON pgqueuer (entrypoint, fair_rank, id)
    WHERE status = 'queued' AND fairness_key IS NOT NULL;

-- A key's last rank, for the enqueue of its next job.
CREATE INDEX IF NOT EXISTS pgqueuer_pgq_fair_key_rank_idx
    ON pgqueuer (entrypoint, fairness_key, fair_rank)
    WHERE status = 'queued' AND fairness_key IS NOT NULL;

-- Jobs queued before this version: ranks in each key's priority then id
-- order, every key starting at 0.
UPDATE pgqueuer AS j
SET fair_rank = r.rank
FROM (
    SELECT q.id, row_number() OVER (PARTITION BY q.entrypoint, q.fairness_key
                                    ORDER BY q.priority DESC, q.id) - 1 AS rank
    FROM pgqueuer AS q
    WHERE q.fairness_key IS NOT NULL AND q.fair_rank IS NULL
) AS r
WHERE j.id = r.id;

-- +goose Down
DROP INDEX IF EXISTS pgqueuer_pgq_fair_key_rank_idx;
DROP INDEX IF EXISTS pgqueuer_pgq_fair_rank_idx;
ALTER TABLE IF EXISTS pgqueuer DROP COLUMN IF EXISTS fair_rank;
