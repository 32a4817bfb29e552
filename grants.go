package pgq

import (
	"fmt"
	"strings"

	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Role is a part a database role plays for pgq, for GrantsSQL: what it
// runs decides what it may do to pgq's tables.
type Role int

// The parts a role can play.
const (
	// RoleProducer enqueues jobs (Enqueue, EnqueueBatch) and reads their
	// status and the queue's size (JobStatus, QueueSize). It may not
	// claim, change, cancel or delete jobs, nor read their payloads.
	RoleProducer Role = iota + 1
	// RoleWorker runs a QueueManager (claims, heartbeats, outcomes,
	// CompleteTx, statistics folding and log retention) and a
	// SchedulerManager, and may enqueue (handlers enqueue follow-up jobs,
	// schedules enqueue their runs).
	RoleWorker
	// RoleWatcher runs a CompletionWatcher: it reads jobs' ids and their
	// log's statuses, nothing else.
	RoleWatcher
	// RoleAdmin operates the queue: every read and change of pgq's rows
	// (cancel, delete, requeue, schedules, dashboard, durability). Install,
	// Upgrade and Uninstall change the schema and need the owner of pgq's
	// objects instead: run them as that role.
	RoleAdmin
)

var roleNames = map[Role]string{
	RoleProducer: "producer", RoleWorker: "worker", RoleWatcher: "watcher", RoleAdmin: "admin",
}

// String returns the role's name: producer, worker, watcher or admin.
func (r Role) String() string {
	if s, ok := roleNames[r]; ok {
		return s
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ParseRole returns the Role named s: producer, worker, watcher or admin.
func ParseRole(s string) (Role, error) {
	for r, name := range roleNames {
		if name == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("pgq: unknown role kind %q: want producer, worker, watcher or admin", s)
}

// GrantsSQL returns the GRANT statements that give the database role role
// what r needs of pgq's objects, and nothing more, for the names given by
// opts (WithPrefix, WithSchema): usage of the schema, privileges on the
// tables (on some columns only, where that is all r reads) and on the id
// sequences. Run them as the owner of pgq's objects, after Install or
// Upgrade. It touches no database.
//
// Enqueues fire the job table's trigger, whose function, like every
// function, any role may execute unless that was revoked; NOTIFY and
// LISTEN need no privilege. VACUUM and ANALYZE of the job table, which a
// worker runs when autovacuum lags, need its owner, or, from PostgreSQL 17,
// the MAINTAIN privilege, which the worker's grants include on such a
// server; a worker without it leaves them to autovacuum and logs that
// once.
func GrantsSQL(role string, r Role, opts ...SchemaOption) (string, error) {
	c, err := schemaConfig(opts)
	if err != nil {
		return "", err
	}
	if role == "" {
		return "", fmt.Errorf("pgq: grants: role name is empty")
	}
	if strings.EqualFold(role, "public") {
		return "", fmt.Errorf("pgq: grants: role %q would grant to every role; name a role of its own", role)
	}
	if _, ok := roleNames[r]; !ok {
		return "", fmt.Errorf("pgq: grants: unknown role kind %d", int(r))
	}
	n := c.names
	to := sqlname.QuoteIdent(role)
	job, log := n.Qualified(sqlname.JobTable), n.Qualified(sqlname.LogTable)
	stats, sched := n.Qualified(sqlname.StatisticsTable), n.Qualified(sqlname.SchedulesTable)
	paused, progress := n.Qualified(sqlname.PausedTable), n.Qualified(sqlname.ProgressTable)
	after, turn := n.Qualified(sqlname.AfterTable), n.Qualified(sqlname.FairTurnTable)
	afterLock := n.Qualified(sqlname.AfterLock) + "(bigint[])"
	afterSettle := n.Qualified(sqlname.AfterSettle) + "(bigint[], text[])"
	seq := func(base string) string { return n.Qualified(base + "_id_seq") }

	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("-- pgq: grants for role %s as a %s (%s)", to, r, describeNames(n))
	if n.Schema != "" {
		line("GRANT USAGE ON SCHEMA %s TO %s;", sqlname.QuoteIdent(n.Schema), to)
	}
	// Columns of the log that reading a job's latest status touches.
	const statusCols = "id, created, job_id, status"
	switch r {
	case RoleProducer:
		line("-- Enqueue and EnqueueBatch: insert jobs and their log rows; read back ids.")
		line("GRANT INSERT ON %s TO %s;", job, to)
		line("GRANT USAGE ON SEQUENCE %s TO %s;", seq(sqlname.JobTable), to)
		line("GRANT INSERT ON %s TO %s;", log, to)
		line("-- QueueSize and JobStatus: queue depth and each job's latest status (no payloads).")
		line("GRANT SELECT (id, priority, entrypoint, status, dedupe_key) ON %s TO %s;", job, to)
		line("GRANT SELECT (%s) ON %s TO %s;", statusCols, log, to)
		line("-- WithAfter: a waiting job's edges, and the lock on the jobs it waits for.")
		line("GRANT INSERT ON %s TO %s;", after, to)
		line("GRANT EXECUTE ON FUNCTION %s TO %s;", afterLock, to)
		line("-- WithFairnessKey: a key's next turn, from its queued jobs and the entrypoint's turn.")
		line("GRANT SELECT (execute_after, fairness_key, fair_rank) ON %s TO %s;", job, to)
		line("GRANT SELECT ON %s TO %s;", turn, to)
	case RoleWatcher:
		line("-- CompletionWatcher: which jobs exist, and their log's latest status.")
		line("GRANT SELECT (id) ON %s TO %s;", job, to)
		line("GRANT SELECT (%s) ON %s TO %s;", statusCols, log, to)
		line("-- Progress and WatchProgress: the progress handlers report.")
		line("GRANT SELECT ON %s TO %s;", progress, to)
	case RoleWorker:
		line("-- QueueManager: claim, heartbeat, release, finish and CompleteTx; enqueue.")
		line("GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %s;", job, to)
		line("GRANT USAGE ON SEQUENCE %s TO %s;", seq(sqlname.JobTable), to)
		line("-- The log: transitions; statistics folding marks rows, log retention deletes them.")
		line("GRANT SELECT, INSERT, DELETE ON %s TO %s;", log, to)
		line("GRANT UPDATE (aggregated) ON %s TO %s;", log, to)
		line("-- The statistics: claims, outcomes, folding and log retention count log rows there.")
		line("GRANT SELECT, INSERT, UPDATE ON %s TO %s;", stats, to)
		line("GRANT USAGE ON SEQUENCE %s TO %s;", seq(sqlname.StatisticsTable), to)
		line("-- SchedulerManager: cron schedules.")
		line("GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %s;", sched, to)
		line("GRANT USAGE ON SEQUENCE %s TO %s;", seq(sqlname.SchedulesTable), to)
		line("-- Claims skip paused entrypoints; Stats lists them.")
		line("GRANT SELECT ON %s TO %s;", paused, to)
		line("-- ReportProgress: handlers' progress, written and pruned by the worker.")
		line("GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %s;", progress, to)
		line("-- WithAfter: enqueue waiting jobs; the sweep settles dependencies that ended meanwhile.")
		line("GRANT SELECT, INSERT, DELETE ON %s TO %s;", after, to)
		line("GRANT EXECUTE ON FUNCTION %s, %s TO %s;", afterLock, afterSettle, to)
		line("-- The fair claim records each entrypoint's turn.")
		line("GRANT SELECT, INSERT, UPDATE ON %s TO %s;", turn, to)
		maintain(line, job, to)
	case RoleAdmin:
		line("-- Every read and change of pgq's rows. (Install, Upgrade and Uninstall need the")
		line("-- owner of pgq's objects: run them as that role.)")
		for _, t := range []string{job, log, stats, sched, paused, progress, after, turn} {
			line("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON %s TO %s;", t, to)
		}
		for _, base := range []string{sqlname.JobTable, sqlname.StatisticsTable, sqlname.SchedulesTable} {
			line("GRANT USAGE, SELECT ON SEQUENCE %s TO %s;", seq(base), to)
		}
		line("GRANT EXECUTE ON FUNCTION %s, %s TO %s;", afterLock, afterSettle, to)
		maintain(line, job, to)
	}
	return b.String(), nil
}

// maintain writes the grant of MAINTAIN (VACUUM, ANALYZE) on the job table,
// which only PostgreSQL 17 and later know.
func maintain(line func(string, ...any), job, to string) {
	line("-- VACUUM and ANALYZE of the job table when autovacuum lags (PostgreSQL 17+).")
	// A string literal, not dollar quotes, which no name can close.
	body := "BEGIN IF current_setting('server_version_num')::int >= 170000 THEN EXECUTE " +
		quoteLiteral(fmt.Sprintf("GRANT MAINTAIN ON %s TO %s", job, to)) + "; END IF; END"
	line("DO %s;", quoteLiteral(body))
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func describeNames(n sqlname.Names) string {
	s := "prefix " + fmt.Sprintf("%q", n.Prefix)
	if n.Schema != "" {
		return s + ", schema " + n.Schema
	}
	return s + ", the schema of the search path"
}
