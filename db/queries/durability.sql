-- name: DurabilityJobTableLogged :exec
ALTER TABLE pgqueuer SET LOGGED;

-- name: DurabilityJobTableUnlogged :exec
ALTER TABLE pgqueuer SET UNLOGGED;

-- name: DurabilityLogTableLogged :exec
ALTER TABLE pgqueuer_log SET LOGGED;

-- name: DurabilityLogTableUnlogged :exec
ALTER TABLE pgqueuer_log SET UNLOGGED;
