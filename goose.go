package pgq

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// MigrationsTable is the goose version table in which pgq records its own
// migrations (with the default names; MigrationsTableFor gives it for a
// prefix or schema). It must not be goose's default, goose_db_version, when
// your app records its own goose migrations there: both sets are numbered
// from 00001, so goose would take one set's versions for the other's and
// skip them.
const MigrationsTable = "pgqueuer_pgq_version"

// gooseDefaultTable is the version table goose uses when none is given.
const gooseDefaultTable = "goose_db_version"

// MigrationsTableFor returns the name of pgq's goose version table for the
// naming options: the prefix applied and, with WithSchema, qualified by the
// schema ("jobs.app_pgqueuer_pgq_version"), as goose's -table flag and
// goose.WithTableName take it.
func MigrationsTableFor(opts ...NamingOption) (string, error) {
	c, err := namingConfig(opts)
	if err != nil {
		return "", err
	}
	return versionTable(c.names), nil
}

// MigrationsFor returns pgq's goose migrations rewritten for the naming
// options, as Install runs them: the prefix applied to every object name
// and, with WithSchema, search_path set to the schema in each migration's
// transaction. Run them with the version table MigrationsTableFor(opts...)
// (GooseProviderFor does both); the schema must exist before goose creates
// its version table there.
func MigrationsFor(opts ...NamingOption) (fs.FS, error) {
	c, err := namingConfig(opts)
	if err != nil {
		return nil, err
	}
	return migrationsFor(c)
}

func versionTable(n sqlname.Names) string {
	table := n.Name(sqlname.VersionTable)
	if n.Schema != "" {
		table = n.Schema + "." + table
	}
	return table
}

func namingConfig(opts []NamingOption) (common, error) {
	s := make([]SchemaOption, len(opts))
	for i, o := range opts {
		s[i] = o
	}
	return schemaConfig(s)
}

// GooseProvider returns a goose provider for pgq's migrations (Migrations),
// configured to run them in your own goose pipeline next to your app's
// migrations: pgq's versions are recorded in MigrationsTable, not in
// goose's default goose_db_version, and a PostgreSQL session lock keeps
// two deploys from migrating at once.
//
//	p, err := pgq.GooseProvider(db)
//	if err != nil { ... }
//	_, err = p.Up(ctx)
//
// opts are added to pgq's (for example goose.WithVerbose or goose.WithSlog);
// goose refuses WithTableName, WithStore, WithSessionLocker and WithLocker,
// which pgq sets.
//
// Each time the provider takes its lock it also moves records of pgq's
// migrations out of goose_db_version, where the plain
// goose.NewProvider(goose.DialectPostgres, db, pgq.Migrations()) of earlier
// pgq versions put them: a record moves only when it was written by the
// same transaction that created or changed pgq's tables, enum, function or
// trigger, and only when two or more of pgq's migrations are found so, each
// in its own transaction (one is an app's migration that ran pgq's SQL).
// Your app's own records stay, and your app's migrations with the same
// version numbers, which goose skipped, run on its next up.
//
// Use GooseProviderFor for a prefix or schema.
func GooseProvider(db *sql.DB, opts ...goose.ProviderOption) (*goose.Provider, error) {
	return GooseProviderFor(db, nil, opts...)
}

// GooseProviderFor is GooseProvider for the naming options WithPrefix and
// WithSchema: the migrations rewritten for them (as Install runs them) and
// the version table MigrationsTableFor(naming...). With WithSchema, the
// provider creates the schema, if missing, with its version table (goose
// creates the table before any migration runs).
func GooseProviderFor(db *sql.DB, naming []NamingOption, opts ...goose.ProviderOption) (*goose.Provider, error) {
	c, err := namingConfig(naming)
	if err != nil {
		return nil, err
	}
	p, err := provider(db, c, opts...)
	if err != nil {
		return nil, fmt.Errorf("pgq: goose provider: %w", err)
	}
	return p, nil
}

func provider(db *sql.DB, c common, opts ...goose.ProviderOption) (*goose.Provider, error) {
	fsys, err := migrationsFor(c)
	if err != nil {
		return nil, err
	}
	versions, err := migrationVersions(fsys)
	if err != nil {
		return nil, err
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, err
	}
	store, err := database.NewStore(goose.DialectPostgres, versionTable(c.names))
	if err != nil {
		return nil, err
	}
	ext, ok := store.(database.StoreExtender)
	if !ok {
		return nil, fmt.Errorf("goose's %T cannot check whether %s exists", store, store.Tablename())
	}
	opts = append(slices.Clone(opts),
		goose.WithStore(versionStore{StoreExtender: ext, c: c}),
		goose.WithSessionLocker(&adoptingLocker{SessionLocker: locker, c: c, versions: versions}),
		goose.WithDisableGlobalRegistry(true),
	)
	return goose.NewProvider(goose.DialectCustom, db, fsys, opts...)
}

// versionStore is goose's PostgreSQL store for pgq's version table, which
// creates the schema WithSchema names before the table: goose creates its
// version table before any migration runs.
type versionStore struct {
	database.StoreExtender
	c common
}

func (s versionStore) CreateVersionTable(ctx context.Context, db database.DBTxConn) error {
	if err := createSchema(ctx, db, s.c); err != nil {
		return fmt.Errorf("pgq: creating schema %s: %w", s.c.names.Schema, err)
	}
	return s.StoreExtender.CreateVersionTable(ctx, db)
}

// migrationVersions returns the versions of the migrations in fsys.
func migrationVersions(fsys fs.FS) ([]int64, error) {
	paths, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	var versions []int64
	for _, p := range paths {
		v, err := goose.NumericComponent(p)
		if err != nil {
			return nil, err
		}
		versions = append(versions, v)
	}
	return versions, nil
}

// adoptingLocker is the session locker of pgq's providers. Once it holds
// the lock, before goose reads its version table, it moves pgq's records
// out of goose_db_version (see GooseProvider).
type adoptingLocker struct {
	lock.SessionLocker
	c        common
	versions []int64
}

func (l *adoptingLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	if err := l.SessionLocker.SessionLock(ctx, conn); err != nil {
		return err
	}
	if err := adoptGooseRecords(ctx, conn, l.c, l.versions); err != nil {
		// goose does not unlock when SessionLock fails, and the connection
		// goes back to the pool: release the lock here.
		return errors.Join(err, l.SessionLocker.SessionUnlock(context.WithoutCancel(ctx), conn))
	}
	return nil
}

// adoptGooseRecords moves the records of pgq's migrations from
// goose_db_version to pgq's version table: the rows for pgq's versions
// written by a transaction that also created or changed one of pgq's
// objects (goose inserts a migration's row in the migration's transaction).
func adoptGooseRecords(ctx context.Context, conn *sql.Conn, c common, versions []int64) error {
	q := dbgen.New()
	ok, err := q.GooseDefaultTableExists(ctx, conn)
	if err != nil || !ok {
		return err
	}
	schema, err := targetSchema(ctx, conn, c)
	if err != nil {
		return err
	}
	n := c.names.Name
	rels := []string{n(sqlname.JobTable), n(sqlname.LogTable), n(sqlname.StatisticsTable), n(sqlname.SchedulesTable)}
	for _, ix := range requiredIndexes {
		rels = append(rels, n(ix))
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	rows, err := q.GooseDefaultPgqRecords(ctx, wrapDB(c.names, tx), dbgen.GooseDefaultPgqRecordsParams{
		Versions: versions, SchemaName: schema, Relations: rels,
		TypeName: n(sqlname.StatusType), FunctionName: n(sqlname.Function), TriggerName: n(sqlname.Trigger),
	})
	if err != nil {
		return fmt.Errorf("pgq: reading %s: %w", gooseDefaultTable, err)
	}
	// pgq's goose migrations run one transaction each. One transaction
	// alone is an app's migration that ran pgq's SQL (the output of `pgq
	// sql install` pasted into it): that record is the app's.
	txids := map[string]bool{}
	for _, r := range rows {
		txids[r.Txid] = true
	}
	if len(txids) < 2 {
		return nil
	}
	store, err := database.NewStore(goose.DialectPostgres, versionTable(c.names))
	if err != nil {
		return err
	}
	ext, ok := store.(database.StoreExtender)
	if !ok {
		return fmt.Errorf("goose's %T cannot check whether %s exists", store, store.Tablename())
	}
	exists, err := ext.TableExists(ctx, tx)
	if err != nil {
		return err
	}
	if !exists {
		if err := createSchema(ctx, tx, c); err != nil {
			return err
		}
		if err := store.CreateVersionTable(ctx, tx); err != nil {
			return err
		}
		if err := store.Insert(ctx, tx, database.InsertRequest{Version: 0}); err != nil {
			return err
		}
	}
	var ids []int64
	var moved []string
	for _, r := range rows {
		ids = append(ids, int64(r.ID))
		if _, err := store.GetMigration(ctx, tx, r.VersionID); err == nil {
			continue // recorded in both: keep pgq's record
		} else if !errors.Is(err, database.ErrVersionNotFound) {
			return err
		}
		if err := store.Insert(ctx, tx, database.InsertRequest{Version: r.VersionID}); err != nil {
			return err
		}
		moved = append(moved, strconv.FormatInt(r.VersionID, 10))
	}
	if err := q.GooseDefaultDelete(ctx, wrapDB(c.names, tx), ids); err != nil {
		return fmt.Errorf("pgq: deleting pgq's records from %s: %w", gooseDefaultTable, err)
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	c.logger.InfoContext(ctx, "pgq: moved the records of pgq's migrations from goose_db_version to its own table",
		"versions", moved, "table", versionTable(c.names))
	return nil
}
