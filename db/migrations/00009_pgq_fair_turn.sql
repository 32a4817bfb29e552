-- pgq schema, version 9: where the fair claim's turn is, for the enqueue.
--
-- A key with nothing queued starts its jobs at the entrypoint's current
-- turn (version 8), the lowest rank of its due keyed jobs. The enqueue
-- found it from the head of pgqueuer_pgq_fair_rank_idx, where the entries
-- of every job claimed since the job table's last vacuum still lie: under
-- a drain, most of the enqueue's reads. The fair claim (JobsClaimFair) now
-- records, per entrypoint and a few times a second, the highest rank it
-- took, and the enqueue looks for the turn from there. pgq only: PGQueuer
-- never reads or writes it. Idempotent, like the earlier migrations.

-- +goose Up
CREATE TABLE IF NOT EXISTS pgqueuer_pgq_fair_turn (
    entrypoint TEXT PRIMARY KEY,
    turn BIGINT NOT NULL
);

-- +goose Down
DROP TABLE IF EXISTS pgqueuer_pgq_fair_turn;
