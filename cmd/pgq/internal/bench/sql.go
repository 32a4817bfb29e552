package bench

// The SQL the benchmark tool runs itself: checks, fills, clean-ups and
// EXPLAIN. It is not library SQL (the library's statements live in
// db/queries and run through dbgen; the tool calls those through the
// library or dbgen, so that it measures exactly what users run). Object
// names are PGQueuer's defaults: the tool works in the connection's current
// schema without a prefix.
const (
	// sqlServerInfo reads the settings a result depends on.
	sqlServerInfo = `SELECT current_setting('server_version'), current_setting('fsync'),
       current_setting('synchronous_commit'), current_setting('full_page_writes'),
       current_setting('shared_buffers')`

	// sqlPersistence reads whether the job and log tables are logged
	// ('p') or unlogged ('u').
	sqlPersistence = `SELECT coalesce((SELECT relpersistence::text FROM pg_class WHERE oid = to_regclass('pgqueuer')), ''),
       coalesce((SELECT relpersistence::text FROM pg_class WHERE oid = to_regclass('pgqueuer_log')), '')`

	// sqlBackendPID is the server process of the connection; its parent is
	// the postmaster.
	sqlBackendPID = `SELECT pg_backend_pid()`

	// sqlPurgeJobs removes the benchmark's leftover jobs (of its own
	// entrypoint) from the job table.
	sqlPurgeJobs = `DELETE FROM pgqueuer WHERE entrypoint = $1`

	// sqlCountSuccessful counts the jobs among ids [$1, $2] of entrypoint $3
	// whose log says successful, and the successful rows (a job that ran
	// twice has two).
	sqlCountSuccessful = `SELECT count(DISTINCT job_id), count(*) FROM pgqueuer_log
WHERE job_id BETWEEN $1 AND $2 AND entrypoint = $3 AND status = 'successful'`

	// sqlStatements counts the statements that claimed and finished the
	// jobs among ids [$1, $2] of entrypoint $3: every row one statement
	// writes to the log has the same created (now(), the transaction's
	// start), so distinct created values of 'picked' rows are claims and
	// those of 'successful' rows are finish batches.
	sqlStatements = `SELECT count(DISTINCT created) FILTER (WHERE status = 'picked'),
       count(DISTINCT created) FILTER (WHERE status = 'successful')
FROM pgqueuer_log
WHERE job_id BETWEEN $1 AND $2 AND entrypoint = $3 AND status IN ('picked', 'successful')`

	// sqlClaimCalls counts the runs of the claim statement (sqlc names it
	// in a comment at its head) since pg_stat_statements was last reset.
	sqlClaimCalls = `SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE query LIKE '-- name: JobsClaim %'`

	// sqlCreateStatStatements makes pg_stat_statements readable.
	sqlCreateStatStatements = `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`

	// sqlCountLeft counts the jobs of entrypoint $1 still in the job table.
	sqlCountLeft = `SELECT count(*) FROM pgqueuer WHERE entrypoint = $1`

	// sqlQueueDepth counts the queued jobs of entrypoint $1.
	sqlQueueDepth = `SELECT count(*) FROM pgqueuer WHERE entrypoint = $1 AND status = 'queued'`

	// sqlLogCount counts the log's rows.
	sqlLogCount = `SELECT count(*) FROM pgqueuer_log`

	// sqlFillLog appends $1 log rows for entrypoint $2, three per job
	// (queued, picked, successful, a millisecond apart), for job ids above
	// every id the log holds.
	sqlFillLog = `INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint)
SELECT now() - ($1 - g) * interval '1 millisecond',
       b.base + g / 3,
       (ARRAY['queued', 'picked', 'successful']::pgqueuer_status[])[g % 3 + 1],
       0,
       $2
FROM (SELECT coalesce(max(job_id), 0) + 1 AS base FROM pgqueuer_log) AS b,
     generate_series(0, $1 - 1) AS g`

	// sqlAnalyzeLog refreshes the log's statistics.
	sqlAnalyzeLog = `ANALYZE pgqueuer_log`

	// sqlRandomJobIDs picks $1 distinct job ids of the log at random.
	sqlRandomJobIDs = `SELECT job_id FROM (SELECT DISTINCT job_id FROM pgqueuer_log) AS j ORDER BY random() LIMIT $1`

	// sqlDropLogIndex drops the watcher's index; the tool runs it only
	// inside a transaction that it rolls back.
	sqlDropLogIndex = `DROP INDEX pgqueuer_log_job_id_status`

	// sqlDeleteLogRows removes the log rows of entrypoint $1 (the index
	// benchmark's fill).
	sqlDeleteLogRows = `DELETE FROM pgqueuer_log WHERE entrypoint = $1`

	// sqlFillQueue inserts $1 queued jobs of entrypoint $2 in one
	// statement, for EXPLAIN of the claim query on a deep queue.
	sqlFillQueue = `INSERT INTO pgqueuer (priority, entrypoint, status)
SELECT 0, $2, 'queued' FROM generate_series(1, $1)`

	// sqlAnalyzeQueue refreshes the job table's statistics.
	sqlAnalyzeQueue = `ANALYZE pgqueuer`

	// sqlAutovacuumCounts reads autovacuum's run counts on the job table,
	// after making the statistics collector's view current.
	sqlAutovacuumCounts = `SELECT coalesce(sum(autovacuum_count), 0)::bigint, coalesce(sum(autoanalyze_count), 0)::bigint
FROM pg_stat_user_tables WHERE relid = to_regclass('pgqueuer')`

	// sqlVacuumQueue vacuums the job table.
	sqlVacuumQueue = `VACUUM pgqueuer`

	// sqlTableStats reads the job table's live and dead tuple counts and
	// when it was last vacuumed or analyzed.
	sqlTableStats = `SELECT n_live_tup, n_dead_tup,
       coalesce(greatest(last_vacuum, last_autovacuum)::text, 'never'),
       coalesce(greatest(last_analyze, last_autoanalyze)::text, 'never')
FROM pg_stat_user_tables WHERE relid = to_regclass('pgqueuer')`

	// sqlTableSizes reads the sizes of the job table and the log (all,
	// heap, indexes), their live and dead rows, and autovacuum's runs on
	// the log.
	sqlTableSizes = `SELECT pg_total_relation_size(j.oid), pg_relation_size(j.oid), pg_indexes_size(j.oid),
       coalesce(js.n_live_tup, 0), coalesce(js.n_dead_tup, 0),
       pg_total_relation_size(l.oid), pg_relation_size(l.oid), pg_indexes_size(l.oid),
       coalesce(ls.n_live_tup, 0), coalesce(ls.n_dead_tup, 0), coalesce(ls.autovacuum_count, 0)
FROM (SELECT to_regclass('pgqueuer') AS oid) AS j
CROSS JOIN (SELECT to_regclass('pgqueuer_log') AS oid) AS l
LEFT JOIN pg_stat_user_tables AS js ON js.relid = j.oid
LEFT JOIN pg_stat_user_tables AS ls ON ls.relid = l.oid`

	// sqlNoRow returns no row.
	sqlNoRow = `SELECT 1 WHERE false`

	// sqlCreateSink creates the table the sql handler inserts into: an
	// ordinary logged table, as a user's would be.
	sqlCreateSink = `CREATE TABLE IF NOT EXISTS pgq_bench_sink (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
)`

	// sqlTruncateSink empties it before a run.
	sqlTruncateSink = `TRUNCATE pgq_bench_sink`

	// sqlInsertSink is the sql handler's one statement.
	sqlInsertSink = `INSERT INTO pgq_bench_sink (job_id) VALUES ($1)`

	// sqlPickedTwice counts the jobs of entrypoint $1 with ids from $2 on
	// that the log shows picked more than once.
	sqlPickedTwice = `SELECT count(*) FROM (
    SELECT job_id FROM pgqueuer_log
    WHERE entrypoint = $1 AND job_id >= $2 AND status = 'picked'
    GROUP BY job_id HAVING count(*) > 1) AS t`

	// sqlHeartbeatAge reads the age of the oldest heartbeat of a running
	// job of entrypoint $1, in milliseconds (0 when none runs).
	sqlHeartbeatAge = `SELECT coalesce(extract(epoch FROM max(now() - heartbeat)) * 1000, 0)::float8
FROM pgqueuer WHERE entrypoint = $1 AND status = 'picked'`

	// explainPrefix is put in front of a captured library query.
	explainPrefix = `EXPLAIN (ANALYZE, BUFFERS, VERBOSE OFF) `
)
