-- name: DurabilityJobTableLogged :exec
ALTER TABLE pgqueuer SET LOGGED;

-- name: DurabilityJobTableUnlogged :exec
ALTER TABLE pgqueuer SET UNLOGGED;

-- name: DurabilityLogTableLogged :exec
ALTER TABLE pgqueuer_log SET LOGGED;

-- name: DurabilityLogTableUnlogged :exec
ALTER TABLE pgqueuer_log SET UNLOGGED;

-- name: DurabilityStatisticsTableLogged :exec
ALTER TABLE pgqueuer_statistics SET LOGGED;

-- name: DurabilityStatisticsTableUnlogged :exec
ALTER TABLE pgqueuer_statistics SET UNLOGGED;

-- name: DurabilitySchedulesTableLogged :exec
ALTER TABLE pgqueuer_schedules SET LOGGED;

-- name: DurabilitySchedulesTableUnlogged :exec
ALTER TABLE pgqueuer_schedules SET UNLOGGED;
