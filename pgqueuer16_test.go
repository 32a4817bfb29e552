package pgq_test

// Tests of the schema against what PGQueuer 1.6 declares (its
// pgqueuer/domain/schema/*.py, written as pg_catalog spells it; facts in
// docs/pgqueuer-compat.md). PGQueuer 1.6 upgrades by diffing the catalog
// against that declaration, so a schema that matches it is one PGQueuer's
// upgrade leaves alone.

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

type declaredColumn struct {
	typ     string
	notNull bool
	def     string // pg_get_expr spelling; "" = none
	kind    string // plain, serial, identity
}

type declaredIndex struct {
	table  string
	unique bool
	body   string // pg_get_indexdef from " USING "
}

const ts = "timestamp with time zone"

// pgqueuer16Columns is PGQueuer 1.6's declaration of the four tables.
var pgqueuer16Columns = map[string]map[string]declaredColumn{
	"pgqueuer": {
		"id":               {"bigint", true, "", "serial"},
		"priority":         {"integer", true, "", "plain"},
		"queue_manager_id": {"uuid", false, "", "plain"},
		"created":          {ts, true, "now()", "plain"},
		"updated":          {ts, true, "now()", "plain"},
		"heartbeat":        {ts, true, "now()", "plain"},
		"execute_after":    {ts, true, "now()", "plain"},
		"status":           {"pgqueuer_status", true, "", "plain"},
		"entrypoint":       {"text", true, "", "plain"},
		"dedupe_key":       {"text", false, "", "plain"},
		"payload":          {"bytea", false, "", "plain"},
		"headers":          {"jsonb", false, "", "plain"},
		"attempts":         {"integer", true, "0", "plain"},
		"slot":             {"bigint", false, "", "plain"},
	},
	"pgqueuer_log": {
		"id":         {"bigint", true, "", "identity"},
		"created":    {ts, true, "now()", "plain"},
		"job_id":     {"bigint", true, "", "plain"},
		"status":     {"pgqueuer_status", true, "", "plain"},
		"priority":   {"integer", true, "", "plain"},
		"entrypoint": {"text", true, "", "plain"},
		"traceback":  {"jsonb", false, "", "plain"},
		"aggregated": {"boolean", false, "false", "plain"},
	},
	"pgqueuer_statistics": {
		"id":         {"bigint", true, "", "serial"},
		"created":    {ts, true, "date_trunc('sec'::text, (now() AT TIME ZONE 'UTC'::text))", "plain"},
		"count":      {"bigint", true, "", "plain"},
		"priority":   {"integer", true, "", "plain"},
		"status":     {"pgqueuer_status", true, "", "plain"},
		"entrypoint": {"text", true, "", "plain"},
	},
	"pgqueuer_schedules": {
		"id":         {"bigint", true, "", "serial"},
		"expression": {"text", true, "", "plain"},
		"entrypoint": {"text", true, "", "plain"},
		"heartbeat":  {ts, true, "now()", "plain"},
		"created":    {ts, true, "now()", "plain"},
		"updated":    {ts, true, "now()", "plain"},
		"next_run":   {ts, true, "now()", "plain"},
		"last_run":   {ts, false, "", "plain"},
		"status":     {"pgqueuer_status", false, "'queued'::pgqueuer_status", "plain"},
	},
}

// pgqueuer16Indexes is PGQueuer 1.6's declaration of the standalone indexes.
var pgqueuer16Indexes = map[string]declaredIndex{
	"pgqueuer_priority_id_id1_idx":     {"pgqueuer", false, "USING btree (priority, id DESC) INCLUDE (id) WHERE (status = 'queued'::pgqueuer_status)"},
	"pgqueuer_updated_id_id1_idx":      {"pgqueuer", false, "USING btree (updated, id DESC) INCLUDE (id) WHERE (status = 'picked'::pgqueuer_status)"},
	"pgqueuer_picked_heartbeat_idx":    {"pgqueuer", false, "USING btree (heartbeat) WHERE (status = 'picked'::pgqueuer_status)"},
	"pgqueuer_queue_manager_id_idx":    {"pgqueuer", false, "USING btree (queue_manager_id) WHERE (queue_manager_id IS NOT NULL)"},
	"pgqueuer_ep_prio_id_idx":          {"pgqueuer", false, "USING btree (entrypoint, priority DESC, id) WHERE (status = 'queued'::pgqueuer_status)"},
	"pgqueuer_ep_ea_idx":               {"pgqueuer", false, "USING btree (entrypoint, execute_after) WHERE (status = 'queued'::pgqueuer_status)"},
	"pgqueuer_unique_dedupe_key":       {"pgqueuer", true, "USING btree (dedupe_key) WHERE ((status = ANY (ARRAY['queued'::pgqueuer_status, 'picked'::pgqueuer_status])) AND (dedupe_key IS NOT NULL))"},
	"pgqueuer_picked_slot_idx":         {"pgqueuer", true, "USING btree (entrypoint, slot) WHERE ((status = 'picked'::pgqueuer_status) AND (slot IS NOT NULL))"},
	"pgqueuer_log_not_aggregated":      {"pgqueuer_log", false, "USING btree ((1)) WHERE (NOT aggregated)"},
	"pgqueuer_log_created":             {"pgqueuer_log", false, "USING btree (created)"},
	"pgqueuer_log_status":              {"pgqueuer_log", false, "USING btree (status)"},
	"pgqueuer_log_job_id_status":       {"pgqueuer_log", false, "USING btree (job_id, created DESC)"},
	"pgqueuer_statistics_unique_count": {"pgqueuer_statistics", true, "USING btree (priority, date_trunc('sec'::text, (created AT TIME ZONE 'UTC'::text)), status, entrypoint)"},
}

// pgqueuer16Retired are the indexes PGQueuer 1.6's upgrade drops.
var pgqueuer16Retired = []string{"pgqueuer_heartbeat_id_id1_idx"}

// pgqueuer16Diff lists what PGQueuer 1.6's upgrade would change in the
// current schema of db: the same comparisons its planner makes (columns by
// type, NOT NULL, default and kind; id sequences by type; declared indexes
// by definition; retired indexes by presence; the unique constraint of the
// schedules table). The trigger function's text is not compared: PGQueuer
// replaces a function whose text differs from its own (docs/pgqueuer-compat.md).
func pgqueuer16Diff(t *testing.T, db *sql.DB) []string {
	t.Helper()
	ctx := testCtx(t)
	var diff []string
	rows, err := db.QueryContext(ctx, `
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity::text,
       COALESCE(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1)`,
		"{pgqueuer,pgqueuer_log,pgqueuer_statistics,pgqueuer_schedules}")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for rows.Next() {
		var table, name, typ, identity, def string
		var notNull bool
		if err := rows.Scan(&table, &name, &typ, &notNull, &identity, &def); err != nil {
			t.Fatal(err)
		}
		want, ok := pgqueuer16Columns[table][name]
		if !ok {
			continue // undeclared columns are left alone
		}
		seen[table+"."+name] = true
		kind := "plain"
		switch {
		case identity != "":
			kind = "identity"
		case strings.HasPrefix(def, "nextval("):
			kind, def = "serial", ""
		}
		got := declaredColumn{typ, notNull, def, kind}
		if got != want {
			diff = append(diff, fmt.Sprintf("column %s.%s is %+v, declared %+v", table, name, got, want))
		}
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	for table, cols := range pgqueuer16Columns {
		for name := range cols {
			if !seen[table+"."+name] {
				diff = append(diff, "missing column "+table+"."+name)
			}
		}
	}
	for _, table := range []string{"pgqueuer", "pgqueuer_statistics", "pgqueuer_schedules"} {
		seq := scalar[string](t, db, `SELECT COALESCE((SELECT format_type(seqtypid, NULL) FROM pg_sequence
			WHERE seqrelid = to_regclass(pg_get_serial_sequence($1, 'id'))), 'none')`, table)
		if seq != "bigint" {
			diff = append(diff, fmt.Sprintf("id sequence of %s is %s, declared bigint", table, seq))
		}
	}
	for name, want := range pgqueuer16Indexes {
		var table, def string
		var unique bool
		err := db.QueryRowContext(ctx, `SELECT t.relname, i.indisunique, pg_get_indexdef(i.indexrelid)
			FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
			WHERE i.indexrelid = to_regclass($1)`, name).Scan(&table, &unique, &def)
		if errors.Is(err, sql.ErrNoRows) {
			diff = append(diff, "missing index "+name)
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		got := declaredIndex{table, unique, def[strings.Index(def, " USING ")+1:]}
		if got != want {
			diff = append(diff, fmt.Sprintf("index %s is %+v, declared %+v", name, got, want))
		}
	}
	for _, name := range pgqueuer16Retired {
		if scalar[bool](t, db, "SELECT to_regclass($1) IS NOT NULL", name) {
			diff = append(diff, "retired index "+name+" present")
		}
	}
	if !scalar[bool](t, db, `SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'pgqueuer_schedules'::regclass
		AND contype = 'u' AND conkey = ARRAY(SELECT attnum FROM pg_attribute WHERE attrelid = 'pgqueuer_schedules'::regclass
		AND attname IN ('expression', 'entrypoint') ORDER BY attname = 'entrypoint'))`) {
		diff = append(diff, "missing unique (expression, entrypoint) on pgqueuer_schedules")
	}
	slices.Sort(diff)
	return diff
}

// pgqueuer16DDL builds the schema PGQueuer 1.6's install renders from its
// declaration (tables, indexes, trigger), as it would be found on a server
// where PGQueuer 1.6 installed it. Its trigger function is a stand-in
// with the same effect.
const pgqueuer16DDL = `
CREATE TYPE pgqueuer_status AS ENUM ('queued', 'picked', 'successful', 'exception', 'canceled', 'deleted', 'failed');
CREATE TABLE pgqueuer (
    id bigserial NOT NULL PRIMARY KEY, priority integer NOT NULL, queue_manager_id uuid,
    created timestamp with time zone NOT NULL DEFAULT now(), updated timestamp with time zone NOT NULL DEFAULT now(),
    heartbeat timestamp with time zone NOT NULL DEFAULT now(), execute_after timestamp with time zone NOT NULL DEFAULT now(),
    status pgqueuer_status NOT NULL, entrypoint text NOT NULL, dedupe_key text, payload bytea, headers jsonb,
    attempts integer NOT NULL DEFAULT 0, slot bigint);
CREATE TABLE pgqueuer_log (
    id bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL PRIMARY KEY, created timestamp with time zone NOT NULL DEFAULT now(),
    job_id bigint NOT NULL, status pgqueuer_status NOT NULL, priority integer NOT NULL, entrypoint text NOT NULL,
    traceback jsonb, aggregated boolean DEFAULT false);
CREATE TABLE pgqueuer_schedules (
    id bigserial NOT NULL PRIMARY KEY, expression text NOT NULL, entrypoint text NOT NULL,
    heartbeat timestamp with time zone NOT NULL DEFAULT now(), created timestamp with time zone NOT NULL DEFAULT now(),
    updated timestamp with time zone NOT NULL DEFAULT now(), next_run timestamp with time zone NOT NULL DEFAULT now(),
    last_run timestamp with time zone, status pgqueuer_status DEFAULT 'queued'::pgqueuer_status,
    UNIQUE (expression, entrypoint));
CREATE TABLE pgqueuer_statistics (
    id bigserial NOT NULL PRIMARY KEY,
    created timestamp with time zone NOT NULL DEFAULT date_trunc('sec'::text, (now() AT TIME ZONE 'UTC'::text)),
    count bigint NOT NULL, priority integer NOT NULL, status pgqueuer_status NOT NULL, entrypoint text NOT NULL);
CREATE INDEX pgqueuer_ep_ea_idx ON pgqueuer USING btree (entrypoint, execute_after) WHERE (status = 'queued'::pgqueuer_status);
CREATE INDEX pgqueuer_ep_prio_id_idx ON pgqueuer USING btree (entrypoint, priority DESC, id) WHERE (status = 'queued'::pgqueuer_status);
CREATE INDEX pgqueuer_log_created ON pgqueuer_log USING btree (created);
CREATE INDEX pgqueuer_log_job_id_status ON pgqueuer_log USING btree (job_id, created DESC);
CREATE INDEX pgqueuer_log_not_aggregated ON pgqueuer_log USING btree ((1)) WHERE (NOT aggregated);
CREATE INDEX pgqueuer_log_status ON pgqueuer_log USING btree (status);
CREATE INDEX pgqueuer_picked_heartbeat_idx ON pgqueuer USING btree (heartbeat) WHERE (status = 'picked'::pgqueuer_status);
CREATE UNIQUE INDEX pgqueuer_picked_slot_idx ON pgqueuer USING btree (entrypoint, slot) WHERE ((status = 'picked'::pgqueuer_status) AND (slot IS NOT NULL));
CREATE INDEX pgqueuer_priority_id_id1_idx ON pgqueuer USING btree (priority, id DESC) INCLUDE (id) WHERE (status = 'queued'::pgqueuer_status);
CREATE INDEX pgqueuer_queue_manager_id_idx ON pgqueuer USING btree (queue_manager_id) WHERE (queue_manager_id IS NOT NULL);
CREATE UNIQUE INDEX pgqueuer_statistics_unique_count ON pgqueuer_statistics USING btree (priority, date_trunc('sec'::text, (created AT TIME ZONE 'UTC'::text)), status, entrypoint);
CREATE UNIQUE INDEX pgqueuer_unique_dedupe_key ON pgqueuer USING btree (dedupe_key) WHERE ((status = ANY (ARRAY['queued'::pgqueuer_status, 'picked'::pgqueuer_status])) AND (dedupe_key IS NOT NULL));
CREATE INDEX pgqueuer_updated_id_id1_idx ON pgqueuer USING btree (updated, id DESC) INCLUDE (id) WHERE (status = 'picked'::pgqueuer_status);
CREATE FUNCTION fn_pgqueuer_changed() RETURNS TRIGGER AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR OLD IS DISTINCT FROM NEW THEN
        PERFORM pg_notify('ch_pgqueuer', json_build_object('channel', 'ch_pgqueuer', 'operation', lower(TG_OP),
            'sent_at', NOW(), 'table', TG_TABLE_NAME, 'type', 'table_changed_event')::text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN RETURN NEW; ELSIF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER tg_pgqueuer_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgqueuer
EXECUTE FUNCTION fn_pgqueuer_changed();
`

func TestInstallIsAsPGQueuer16Declares(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		if diff := pgqueuer16Diff(t, db); len(diff) > 0 {
			t.Fatalf("a fresh install differs from PGQueuer 1.6's declaration:\n%s", strings.Join(diff, "\n"))
		}
		// An Upgrade on top changes nothing either.
		if err := pgq.Upgrade(testCtx(t), db); err != nil {
			t.Fatal(err)
		}
		if diff := pgqueuer16Diff(t, db); len(diff) > 0 {
			t.Fatalf("after Upgrade:\n%s", strings.Join(diff, "\n"))
		}
	})
}

func TestUpgradeLeavesAdoptedSchemaAsPGQueuer16Declares(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			db, _ := pgqtest.NewDB(t, d, pgqtest.Bare())
			if _, err := db.ExecContext(ctx, pgqueuerV0); err != nil {
				t.Fatal(err)
			}
			// Without widening the int4 ids stay, and are listed.
			if err := pgq.Upgrade(ctx, db, pgq.WithoutIDWidening()); err != nil {
				t.Fatal(err)
			}
			narrow, err := pgq.NarrowIDs(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(narrow, ",") != "pgqueuer,pgqueuer_statistics" {
				t.Fatalf("NarrowIDs = %q", narrow)
			}
			if err := pgq.Verify(ctx, db); err != nil {
				t.Fatalf("Verify with narrow ids: %v", err)
			}
			diff := pgqueuer16Diff(t, db)
			for _, d := range diff {
				if !strings.Contains(d, "column pgqueuer.id ") && !strings.Contains(d, "column pgqueuer_statistics.id ") &&
					!strings.HasPrefix(d, "id sequence of pgqueuer ") && !strings.HasPrefix(d, "id sequence of pgqueuer_statistics ") {
					t.Errorf("unexpected difference without widening: %s", d)
				}
			}
			if len(diff) != 4 {
				t.Errorf("differences without widening: %q, want the two ids and their sequences", diff)
			}
			if err := pgq.Upgrade(ctx, db); err != nil {
				t.Fatal(err)
			}
			if diff := pgqueuer16Diff(t, db); len(diff) > 0 {
				t.Fatalf("adopted schema after Upgrade differs from PGQueuer 1.6's declaration:\n%s", strings.Join(diff, "\n"))
			}
			if narrow, err := pgq.NarrowIDs(ctx, db); err != nil || len(narrow) > 0 {
				t.Fatalf("NarrowIDs after widening = %q, %v", narrow, err)
			}
			if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer"); n != 2 {
				t.Fatalf("jobs after widening: %d", n)
			}
		})
	}
}

func TestPgqOnPGQueuer16Schema(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			db, dsn := pgqtest.NewDB(t, d, pgqtest.Bare())
			if _, err := db.ExecContext(ctx, pgqueuer16DDL); err != nil {
				t.Fatal(err)
			}
			if diff := pgqueuer16Diff(t, db); len(diff) > 0 {
				t.Fatalf("the test's 1.6 schema is off:\n%s", strings.Join(diff, "\n"))
			}
			// pgq needs only its own objects: the tables for paused
			// entrypoints, progress and dependencies, the key and rank
			// columns and their indexes, the dependencies' functions and trigger, which
			// Upgrade adds, leaving PGQueuer's objects as declared.
			const pgqOnly = "missing table pgqueuer_pgq_after, table pgqueuer_pgq_fair_turn, table pgqueuer_pgq_paused, table pgqueuer_pgq_progress, " +
				"index pgqueuer_pgq_keyed_idx, index pgqueuer_pgq_fair_idx, " +
				"index pgqueuer_pgq_serial_idx, index pgqueuer_pgq_fair_rank_idx, " +
				"index pgqueuer_pgq_fair_key_rank_idx, index pgqueuer_pgq_fair_limited_idx, column pgqueuer.fairness_key, " +
				"column pgqueuer.serial_key, column pgqueuer.fair_rank, column pgqueuer.fair_limited, function fn_pgqueuer_pgq_after, function pgqueuer_pgq_after_settle, " +
				"function pgqueuer_pgq_after_lock, trigger tg_pgqueuer_pgq_after: run `pgq upgrade` (or pgq.Upgrade)"
			if err := pgq.Verify(ctx, db); err == nil || !strings.HasSuffix(err.Error(), pgqOnly) {
				t.Fatalf("Verify on PGQueuer 1.6's schema = %v, want only pgq's own objects missing", err)
			}
			if err := pgq.Upgrade(ctx, db); err != nil {
				t.Fatal(err)
			}
			if diff := pgqueuer16Diff(t, db); len(diff) > 0 {
				t.Fatalf("after pgq.Upgrade:\n%s", strings.Join(diff, "\n"))
			}
			q := pgq.NewQueries(db)
			if _, err := q.Enqueue(ctx, "e", []byte("x")); err != nil {
				t.Fatal(err)
			}
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
			ran := 0
			if err := qm.Entrypoint("e", func(context.Context, *pgq.Job) error { ran++; return nil }); err != nil {
				t.Fatal(err)
			}
			drain(t, ctx, qm)
			if ran != 1 {
				t.Fatalf("ran %d jobs", ran)
			}
			// pgq upgrade leaves it as declared.
			if err := pgq.Upgrade(ctx, db); err != nil {
				t.Fatal(err)
			}
			if diff := pgqueuer16Diff(t, db); len(diff) > 0 {
				t.Fatalf("after pgq.Upgrade:\n%s", strings.Join(diff, "\n"))
			}
		})
	}
}

func TestVerifyAcceptsSchemasPGQueuerLeaves(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		// PGQueuer 1.3's upgrade adds its heartbeat index back; 1.6's drops
		// it again. Either way pgq starts.
		if _, err := db.ExecContext(ctx, `CREATE INDEX pgqueuer_heartbeat_id_id1_idx
			ON pgqueuer (heartbeat ASC, id DESC) INCLUDE (id) WHERE status = 'picked'`); err != nil {
			t.Fatal(err)
		}
		if err := pgq.Verify(ctx, db); err != nil {
			t.Fatalf("Verify with the retired index present: %v", err)
		}
		if _, err := db.ExecContext(ctx, `DROP INDEX pgqueuer_picked_heartbeat_idx`); err != nil {
			t.Fatal(err)
		}
		if err := pgq.Verify(ctx, db); err != nil {
			t.Fatalf("Verify on a PGQueuer 1.4 heartbeat index: %v", err)
		}
		if _, err := db.ExecContext(ctx, `DROP INDEX pgqueuer_heartbeat_id_id1_idx`); err != nil {
			t.Fatal(err)
		}
		var se *pgq.SchemaError
		if err := pgq.Verify(ctx, db); !errors.As(err, &se) || !strings.Contains(err.Error(), "index pgqueuer_picked_heartbeat_idx") {
			t.Fatalf("Verify with no heartbeat index = %v", err)
		}
	})
}

func TestHalfUpgradedSchema(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		// As an interrupted PGQueuer 1.4+ upgrade may leave it: the column
		// added, its index not built yet, the log index dropped for rebuild.
		if _, err := db.ExecContext(ctx, `DROP INDEX pgqueuer_picked_slot_idx; DROP INDEX pgqueuer_log_job_id_status;
			CREATE INDEX pgq_rebuild_0000 ON pgqueuer_log (job_id, created DESC)`); err != nil {
			t.Fatal(err)
		}
		var se *pgq.SchemaError
		err := pgq.Verify(ctx, db)
		if !errors.As(err, &se) || strings.Join(se.Missing, ",") != "index pgqueuer_picked_slot_idx,index pgqueuer_log_job_id_status" {
			t.Fatalf("Verify on a half-upgraded schema = %v", err)
		}
		if err := pgq.Upgrade(ctx, db); err != nil {
			t.Fatal(err)
		}
		if err := pgq.Verify(ctx, db); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `DROP INDEX pgq_rebuild_0000`); err != nil {
			t.Fatal(err)
		}
		if diff := pgqueuer16Diff(t, db); len(diff) > 0 {
			t.Fatalf("after Upgrade:\n%s", strings.Join(diff, "\n"))
		}
	})
}

func TestFutureSchemaRevision(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		if _, err := db.ExecContext(ctx, `COMMENT ON TABLE pgqueuer IS '{"pgqueuer":{"schema_revision":97}}';
			COMMENT ON TABLE pgqueuer_log IS 'not a mark';
			COMMENT ON TABLE pgqueuer_statistics IS '{"pgqueuer":{"schema_revision":"x"}}'`); err != nil {
			t.Fatal(err)
		}
		// An object a future PGQueuer might add: pgq's upgrade leaves it.
		if _, err := db.ExecContext(ctx, `ALTER TABLE pgqueuer ADD COLUMN future_col int;
			CREATE INDEX pgqueuer_future_idx ON pgqueuer (future_col)`); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, nil))
		for range 2 {
			qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn), pgq.WithLogger(logger))
			if err := qm.Entrypoint("e", func(context.Context, *pgq.Job) error { return nil }); err != nil {
				t.Fatal(err)
			}
			drain(t, ctx, qm)
		}
		if n := strings.Count(logs.String(), "schema_revision=97"); n != 1 {
			t.Fatalf("warnings naming revision 97: %d, want 1; log:\n%s", n, logs.String())
		}
		if err := pgq.Upgrade(ctx, db); err != nil {
			t.Fatal(err)
		}
		if !scalar[bool](t, db, `SELECT to_regclass('pgqueuer_future_idx') IS NOT NULL
			AND obj_description('pgqueuer'::regclass, 'pg_class') = '{"pgqueuer":{"schema_revision":97}}'`) {
			t.Fatal("Upgrade changed what it does not know")
		}
	})
}

func TestIntIDAtMaximumNamesTheFix(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			db, _ := pgqtest.NewDB(t, d, pgqtest.Bare())
			if _, err := db.ExecContext(ctx, pgqueuerV0); err != nil {
				t.Fatal(err)
			}
			if err := pgq.Upgrade(ctx, db, pgq.WithoutIDWidening()); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('pgqueuer', 'id'), 2147483647)`); err != nil {
				t.Fatal(err)
			}
			_, err := pgq.NewQueries(db).Enqueue(ctx, "e", nil)
			if err == nil || !strings.Contains(err.Error(), "pgq upgrade") || !strings.Contains(err.Error(), "bigint") {
				t.Fatalf("Enqueue at the int4 maximum = %v", err)
			}
			if err := pgq.Upgrade(ctx, db); err != nil {
				t.Fatal(err)
			}
			id, err := pgq.NewQueries(db).Enqueue(ctx, "e", nil)
			if err != nil || id <= 2147483647 {
				t.Fatalf("Enqueue after widening = %d, %v", id, err)
			}
		})
	}
}
