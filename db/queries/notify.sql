-- name: Notify :exec
-- Sends payload on channel (delivered when the surrounding transaction
-- commits).
SELECT pg_notify(@channel::text, @payload::text);
