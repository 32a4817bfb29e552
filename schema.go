package pgq

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing/fstest"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

//go:embed db/migrations/*.sql
var migrationFiles embed.FS

// Migrations returns pgq's goose migrations, which must be run with pgq's
// own version table, MigrationsTable, as GooseProvider does: pgq's versions
// are numbered from 00001 like your app's, so in goose's default
// goose_db_version one set would count as applied and goose would skip it
// without an error.
//
//	provider, err := pgq.GooseProvider(db) // pgq.Migrations() in pgqueuer_pgq_version
//	if err != nil { ... }
//	_, err = provider.Up(ctx)
//
// For the goose command line, `pgq migrations export DIR` writes these
// files and prints the goose command with its -table flag. The migrations
// use PGQueuer's default object names (GooseProviderFor and the export
// rewrite them for a prefix or schema). Every migration is idempotent, so
// it also adopts a schema that PGQueuer created.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "db/migrations")
	if err != nil {
		panic(err) // the embedded directory is fixed at build time
	}
	return sub
}

func schemaConfig(opts []SchemaOption) (common, error) {
	c := newCommon()
	for _, o := range opts {
		if o != nil {
			o.applySchema(&c)
		}
	}
	return c, c.err
}

// migrationsFor returns the migrations rewritten for c's names: the prefix
// applied to every object, and search_path set to the schema in each
// migration's transaction.
func migrationsFor(c common) (fs.FS, error) {
	if c.names.IsDefault() {
		return Migrations(), nil
	}
	out := fstest.MapFS{}
	err := fs.WalkDir(Migrations(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Migrations(), path)
		if err != nil {
			return err
		}
		text := c.names.DDL(string(b))
		if c.names.Schema != "" {
			set := "SET LOCAL search_path TO " + sqlname.QuoteIdent(c.names.Schema) + ";\n"
			text = strings.ReplaceAll(text, "-- +goose Up\n", "-- +goose Up\n"+set)
			text = strings.ReplaceAll(text, "-- +goose Down\n", "-- +goose Down\n"+set)
		}
		out[path] = &fstest.MapFile{Data: []byte(text)}
		return nil
	})
	return out, err
}

// createSchema creates the schema WithSchema names. It is DDL that belongs
// to the installation (goose needs the schema to exist before it can put its
// version table there), so it is built here rather than in db/queries.
func createSchema(ctx context.Context, db execer, c common) error {
	if c.names.Schema == "" {
		return nil
	}
	_, err := db.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+sqlname.QuoteIdent(c.names.Schema))
	return err
}

// targetSchema is the schema the objects live in: the configured one or the
// connection's current schema.
func targetSchema(ctx context.Context, db DBTX, c common) (string, error) {
	if c.names.Schema != "" {
		return c.names.Schema, nil
	}
	s, err := dbgen.New().SchemaCurrent(ctx, db)
	if err != nil {
		return "", fmt.Errorf("pgq: reading current schema: %w", err)
	}
	return s, nil
}

// Install creates pgq's schema: the status enum, the job, log, statistics
// and schedules tables with their indexes, and the notify trigger. It fails
// with ErrSchemaExists, dropping nothing, when the job table already exists;
// use Upgrade to bring an existing schema up to date.
func Install(ctx context.Context, db *sql.DB, opts ...SchemaOption) error {
	c, err := schemaConfig(opts)
	if err != nil {
		return err
	}
	schema, err := targetSchema(ctx, db, c)
	if err != nil {
		return err
	}
	rels, err := dbgen.New().SchemaRelations(ctx, db, dbgen.SchemaRelationsParams{
		SchemaName: schema, Names: []string{c.names.Name(sqlname.JobTable)},
	})
	if err != nil {
		return fmt.Errorf("pgq: install: %w", err)
	}
	if len(rels) > 0 {
		return fmt.Errorf("%w: table %s.%s exists; use Upgrade (`pgq upgrade`) to update it",
			ErrSchemaExists, schema, c.names.Name(sqlname.JobTable))
	}
	if c.durability == 0 {
		c.durability = Durable
	}
	return migrate(ctx, db, c, "install")
}

// Upgrade brings the schema up to date, creating whatever is missing. It is
// idempotent, and it adopts a schema that PGQueuer created (any v0.x/v1.x:
// missing columns, indexes and enum values are added, rows are kept), leaving
// it as PGQueuer 1.6 declares it.
//
// An adopted schema whose job, statistics or schedules table still has an
// int4 id (PGQueuer before 1.1.1) gets a bigint id and id sequence, as
// PGQueuer's own upgrade does. Widening a column rewrites its table under an
// ACCESS EXCLUSIVE lock, which blocks every worker for a time that grows with
// the table; WithoutIDWidening skips it (PGQueuer's --no-widen-id).
func Upgrade(ctx context.Context, db *sql.DB, opts ...SchemaOption) error {
	c, err := schemaConfig(opts)
	if err != nil {
		return err
	}
	return migrate(ctx, db, c, "upgrade")
}

func migrate(ctx context.Context, db *sql.DB, c common, verb string) error {
	if err := createSchema(ctx, db, c); err != nil {
		return fmt.Errorf("pgq: %s: creating schema %s: %w", verb, c.names.Schema, err)
	}
	p, err := provider(db, c)
	if err != nil {
		return fmt.Errorf("pgq: %s: %w", verb, err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("pgq: %s: %w", verb, err)
	}
	// goose skips migrations it has recorded; if an object was dropped
	// since, apply them again: every migration is idempotent.
	var se *SchemaError
	if err := verify(ctx, db, c); errors.As(err, &se) {
		if err := reapply(ctx, db, c); err != nil {
			return fmt.Errorf("pgq: %s: restoring %s: %w", verb, strings.Join(se.Missing, ", "), err)
		}
	} else if err != nil {
		return fmt.Errorf("pgq: %s: %w", verb, err)
	}
	if !c.noWidenID {
		if err := dbgen.New().SchemaWidenIDs(ctx, wrapDB(c.names, db)); err != nil {
			return fmt.Errorf("pgq: %s: widening int4 ids to bigint: %w", verb, err)
		}
	}
	if err := setDurability(ctx, db, c); err != nil {
		return fmt.Errorf("pgq: %s: setting durability %s: %w", verb, c.durability, err)
	}
	return nil
}

// NarrowIDs returns the tables whose id column or id sequence is still int4
// (a schema PGQueuer created before 1.1.1, adopted with WithoutIDWidening),
// with their schema-qualified names. Upgrade without WithoutIDWidening
// widens them; so does `pgq upgrade`.
func NarrowIDs(ctx context.Context, db *sql.DB, opts ...SchemaOption) ([]string, error) {
	c, err := schemaConfig(opts)
	if err != nil {
		return nil, err
	}
	tables, err := dbgen.New().SchemaNarrowIDs(ctx, wrapDB(c.names, db))
	if err != nil {
		return nil, fmt.Errorf("pgq: reading id types: %w", err)
	}
	return tables, nil
}

func setDurability(ctx context.Context, db *sql.DB, c common) error {
	if c.durability == 0 {
		return nil
	}
	q, rdb := dbgen.New(), wrapDB(c.names, db)
	// As PGQueuer's modes: balanced makes the log and statistics tables
	// UNLOGGED, volatile all four.
	jobLogged, logLogged := q.DurabilityJobTableLogged, q.DurabilityLogTableLogged
	statsLogged, schedLogged := q.DurabilityStatisticsTableLogged, q.DurabilitySchedulesTableLogged
	if c.durability == Volatile {
		jobLogged, schedLogged = q.DurabilityJobTableUnlogged, q.DurabilitySchedulesTableUnlogged
	}
	if c.durability != Durable {
		logLogged, statsLogged = q.DurabilityLogTableUnlogged, q.DurabilityStatisticsTableUnlogged
	}
	for _, set := range []func(context.Context, dbgen.DBTX) error{jobLogged, logLogged, statsLogged, schedLogged} {
		if err := set(ctx, rdb); err != nil {
			return err
		}
	}
	return nil
}

// reapply runs the up sections of every migration again, in one
// transaction.
func reapply(ctx context.Context, db *sql.DB, c common) error {
	text, err := migrationSQL(true, []SchemaOption{NamingOption{func(cc *common) { cc.names = c.names }}})
	if err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if c.names.Schema != "" {
		text = "SET LOCAL search_path TO " + sqlname.QuoteIdent(c.names.Schema) + ";\n" + text
	}
	if _, err := tx.ExecContext(ctx, text); err != nil {
		return err
	}
	return tx.Commit()
}

// Uninstall drops every pgq object (tables with their rows, enum, trigger,
// function) and the migration version table.
func Uninstall(ctx context.Context, db *sql.DB, opts ...SchemaOption) error {
	c, err := schemaConfig(opts)
	if err != nil {
		return err
	}
	if err := createSchema(ctx, db, c); err != nil {
		return fmt.Errorf("pgq: uninstall: %w", err)
	}
	p, err := provider(db, c)
	if err != nil {
		return fmt.Errorf("pgq: uninstall: %w", err)
	}
	// Bring the version table in step first, so that a schema PGQueuer
	// created (which goose has never seen) is dropped too.
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("pgq: uninstall: %w", err)
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		return fmt.Errorf("pgq: uninstall: %w", err)
	}
	// The version table belongs to goose; drop it last.
	if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+c.names.Qualified(sqlname.VersionTable)); err != nil {
		return fmt.Errorf("pgq: uninstall: %w", err)
	}
	return nil
}

// The objects Verify checks, by base name.
var (
	requiredColumns = map[string][]string{
		sqlname.JobTable: {"id", "priority", "queue_manager_id", "created", "updated", "heartbeat",
			"execute_after", "status", "entrypoint", "dedupe_key", "payload", "headers", "attempts", "slot",
			"fairness_key", "serial_key", // the keys: pgq only (migration 6)
			"fair_rank",     // pgq only (migration 8)
			"fair_limited"}, // pgq only (migration 11)
		sqlname.LogTable:        {"id", "created", "job_id", "status", "priority", "entrypoint", "traceback", "aggregated"},
		sqlname.StatisticsTable: {"id", "created", "count", "priority", "status", "entrypoint"},
		sqlname.SchedulesTable: {"id", "expression", "entrypoint", "heartbeat", "created", "updated",
			"next_run", "last_run", "status"},
		sqlname.PausedTable:   {"entrypoint", "paused_at"},               // pgq only (migration 4)
		sqlname.ProgressTable: {"job_id", "fraction", "note", "updated"}, // pgq only (migration 5)
		sqlname.AfterTable:    {"after_id", "job_id", "due", "hold"},     // pgq only (migration 7)
		sqlname.FairTurnTable: {"entrypoint", "turn"},                    // pgq only (migration 9)
	}
	requiredIndexes = []string{
		"pgqueuer_priority_id_id1_idx", "pgqueuer_updated_id_id1_idx", "pgqueuer_picked_heartbeat_idx",
		"pgqueuer_queue_manager_id_idx", "pgqueuer_ep_prio_id_idx", "pgqueuer_ep_ea_idx",
		"pgqueuer_unique_dedupe_key", "pgqueuer_picked_slot_idx", "pgqueuer_log_not_aggregated",
		"pgqueuer_log_created", "pgqueuer_log_status", "pgqueuer_log_job_id_status",
		"pgqueuer_statistics_unique_count",
		// pgq only (migration 6)
		"pgqueuer_pgq_keyed_idx", "pgqueuer_pgq_fair_idx", "pgqueuer_pgq_serial_idx",
		// pgq only (migration 8)
		"pgqueuer_pgq_fair_rank_idx", "pgqueuer_pgq_fair_key_rank_idx",
		// pgq only (migration 11)
		"pgqueuer_pgq_fair_limited_idx",
	}
	// indexStandIns are indexes that serve as well as a required one, so
	// that a schema PGQueuer 1.0-1.5 left behind passes: before 1.6 stale
	// picked jobs were found by pgqueuer_heartbeat_id_id1_idx, which 1.6
	// retired (and its upgrade drops).
	indexStandIns = map[string]string{
		"pgqueuer_picked_heartbeat_idx": "pgqueuer_heartbeat_id_id1_idx",
	}
	statusValues = []string{"queued", "picked", "successful", "exception", "canceled", "deleted", "failed"}
)

// gooseTrap fills se's GooseDefaultVersions and Hint when pgq's job table is
// missing while goose_db_version records versions that pgq's migrations
// use.
func gooseTrap(ctx context.Context, db DBTX, c common, se *SchemaError) error {
	if !slices.Contains(se.Missing, "table "+c.names.Name(sqlname.JobTable)) {
		return nil
	}
	q := dbgen.New()
	ok, err := q.GooseDefaultTableExists(ctx, db)
	if err != nil || !ok {
		return err
	}
	versions, err := migrationVersions(Migrations())
	if err != nil {
		return err
	}
	found, err := q.GooseDefaultAppliedVersions(ctx, wrapDB(c.names, db), versions)
	if err != nil || len(found) == 0 {
		return err
	}
	var list []string
	for _, v := range found {
		list = append(list, strconv.FormatInt(v, 10))
	}
	se.GooseDefaultVersions = found
	se.Hint = fmt.Sprintf("pgq's migrations may have been recorded in %s by an app's own pipeline "+
		"(it lists versions %s, which pgq's migrations use too): use pgq.GooseProvider / the %s table "+
		"(`pgq migrations export` for the goose CLI), or run `pgq upgrade` (pgq.Upgrade)",
		gooseDefaultTable, strings.Join(list, ", "), versionTable(c.names))
	return nil
}

// Verify checks that every object pgq needs exists: tables and their
// columns, indexes, enum values, the trigger and its function. It returns nil
// when all are present, or a *SchemaError naming each missing object.
func Verify(ctx context.Context, db *sql.DB, opts ...SchemaOption) error {
	c, err := schemaConfig(opts)
	if err != nil {
		return err
	}
	return verify(ctx, db, c)
}

func verify(ctx context.Context, db DBTX, c common) error {
	q := dbgen.New()
	schema, err := targetSchema(ctx, db, c)
	if err != nil {
		return err
	}
	var missing []string
	n := c.names.Name

	var tables []string
	for t := range requiredColumns {
		tables = append(tables, n(t))
	}
	slices.Sort(tables)
	var names []string
	names = append(names, tables...)
	for _, ix := range requiredIndexes {
		names = append(names, n(ix))
	}
	for _, ix := range indexStandIns {
		names = append(names, n(ix))
	}
	rels, err := q.SchemaRelations(ctx, db, dbgen.SchemaRelationsParams{SchemaName: schema, Names: names})
	if err != nil {
		return fmt.Errorf("pgq: verify: %w", err)
	}
	found := map[string]bool{}
	for _, r := range rels {
		found[r.Name] = true
	}
	for _, t := range tables {
		if !found[t] {
			missing = append(missing, "table "+t)
		}
	}
	for _, ix := range requiredIndexes {
		if alt, ok := indexStandIns[ix]; ok && found[n(alt)] {
			continue
		}
		if !found[n(ix)] {
			missing = append(missing, "index "+n(ix))
		}
	}
	cols, err := q.SchemaColumns(ctx, db, dbgen.SchemaColumnsParams{SchemaName: schema, TableNames: tables})
	if err != nil {
		return fmt.Errorf("pgq: verify: %w", err)
	}
	have := map[string]bool{}
	for _, col := range cols {
		have[col.TableName+"."+col.ColumnName] = true
	}
	for _, t := range slices.Sorted(maps.Keys(requiredColumns)) {
		if !found[n(t)] {
			continue
		}
		for _, col := range requiredColumns[t] {
			if !have[n(t)+"."+col] {
				missing = append(missing, "column "+n(t)+"."+col)
			}
		}
	}
	labels, err := q.SchemaEnumLabels(ctx, db, dbgen.SchemaEnumLabelsParams{SchemaName: schema, TypeName: n(sqlname.StatusType)})
	if err != nil {
		return fmt.Errorf("pgq: verify: %w", err)
	}
	if len(labels) == 0 {
		missing = append(missing, "type "+n(sqlname.StatusType))
	} else {
		for _, v := range statusValues {
			if !slices.Contains(labels, v) {
				missing = append(missing, "enum value "+n(sqlname.StatusType)+"."+v)
			}
		}
	}
	ok, err := q.SchemaFunctionExists(ctx, db, dbgen.SchemaFunctionExistsParams{SchemaName: schema, FunctionName: n(sqlname.Function)})
	if err != nil {
		return fmt.Errorf("pgq: verify: %w", err)
	}
	if !ok {
		missing = append(missing, "function "+n(sqlname.Function))
	}
	ok, err = q.SchemaTriggerExists(ctx, db, dbgen.SchemaTriggerExistsParams{
		SchemaName: schema, TableName: n(sqlname.JobTable), TriggerName: n(sqlname.Trigger)})
	if err != nil {
		return fmt.Errorf("pgq: verify: %w", err)
	}
	if !ok {
		missing = append(missing, "trigger "+n(sqlname.Trigger))
	}
	// Dependencies (migration 7): the log's trigger settles them.
	for _, f := range []string{sqlname.AfterFunction, sqlname.AfterSettle, sqlname.AfterLock} {
		ok, err := q.SchemaFunctionExists(ctx, db, dbgen.SchemaFunctionExistsParams{SchemaName: schema, FunctionName: n(f)})
		if err != nil {
			return fmt.Errorf("pgq: verify: %w", err)
		}
		if !ok {
			missing = append(missing, "function "+n(f))
		}
	}
	ok, err = q.SchemaTriggerExists(ctx, db, dbgen.SchemaTriggerExistsParams{
		SchemaName: schema, TableName: n(sqlname.LogTable), TriggerName: n(sqlname.AfterTrigger)})
	if err != nil {
		return fmt.Errorf("pgq: verify: %w", err)
	}
	if !ok {
		missing = append(missing, "trigger "+n(sqlname.AfterTrigger))
	}
	if len(missing) > 0 {
		se := &SchemaError{Schema: schema, Missing: missing}
		// Best effort: a goose_db_version that cannot be read leaves the
		// error without the hint.
		_ = gooseTrap(ctx, db, c, se)
		return se
	}
	return nil
}

// InstallSQL returns the SQL that Install and Upgrade run (the up sections of
// every migration, rewritten for the options), for review or for running by
// hand. It touches no database.
func InstallSQL(opts ...SchemaOption) (string, error) { return migrationSQL(true, opts) }

// UninstallSQL returns the SQL that Uninstall runs. It touches no database.
func UninstallSQL(opts ...SchemaOption) (string, error) { return migrationSQL(false, opts) }

func migrationSQL(up bool, opts []SchemaOption) (string, error) {
	c, err := schemaConfig(opts)
	if err != nil {
		return "", err
	}
	fsys, err := migrationsFor(c)
	if err != nil {
		return "", err
	}
	paths, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return "", err
	}
	if !up {
		slices.Reverse(paths)
	}
	var b strings.Builder
	if c.names.Schema != "" && up {
		fmt.Fprintf(&b, "CREATE SCHEMA IF NOT EXISTS %s;\n", sqlname.QuoteIdent(c.names.Schema))
	}
	for _, p := range paths {
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "-- %s\n", p)
		b.WriteString(section(string(data), up))
	}
	if !up {
		fmt.Fprintf(&b, "DROP TABLE IF EXISTS %s;\n", c.names.Qualified(sqlname.VersionTable))
	}
	return b.String(), nil
}

// section extracts the up or down part of a goose migration, without goose's
// annotations.
func section(text string, up bool) string {
	var b strings.Builder
	in := false
	for line := range strings.SplitAfterSeq(text, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "-- +goose Up":
			in = up
			continue
		case trimmed == "-- +goose Down":
			in = !up
			continue
		case strings.HasPrefix(trimmed, "-- +goose "):
			continue
		}
		if in {
			b.WriteString(line)
		}
	}
	return b.String()
}
