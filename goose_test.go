package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/pressly/goose/v3"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// appMigrations are an app's own goose migrations, numbered from 00001 as
// pgq's are. They are not idempotent: running one twice fails.
var appMigrations = fstest.MapFS{
	"00001_users.sql": {Data: []byte("-- +goose Up\nCREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);\n" +
		"-- +goose Down\nDROP TABLE users;\n")},
	"00002_orders.sql": {Data: []byte("-- +goose Up\nCREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users);\n" +
		"-- +goose Down\nDROP TABLE orders;\n")},
}

// eachBareProvider runs f, in parallel, for each driver on a new database
// with no pgq schema, with a test context and pgq's goose provider for it:
// for tests that walk the migrations up and down.
func eachBareProvider(t *testing.T, f func(t *testing.T, ctx context.Context, db *sql.DB, p *goose.Provider)) {
	t.Helper()
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			db, _ := pgqtest.NewDB(t, d, pgqtest.Bare())
			p, err := pgq.GooseProvider(db)
			if err != nil {
				t.Fatal(err)
			}
			f(t, testCtx(t), db, p)
		})
	}
}

// appProvider is the app's provider, with goose's default version table.
func appProvider(t *testing.T, db *sql.DB) *goose.Provider {
	t.Helper()
	p, err := goose.NewProvider(goose.DialectPostgres, db, appMigrations)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// up runs p up and returns the versions it applied.
func up(t *testing.T, ctx context.Context, what string, p *goose.Provider) []int64 {
	t.Helper()
	res, err := p.Up(ctx)
	if err != nil {
		t.Fatalf("%s up: %v", what, err)
	}
	var vs []int64
	for _, r := range res {
		vs = append(vs, r.Source.Version)
	}
	return vs
}

// recorded returns the versions table records as applied, in order.
func recorded(t *testing.T, db *sql.DB, table string) string {
	t.Helper()
	return scalar[string](t, db, "SELECT coalesce(string_agg(version_id::text, ',' ORDER BY version_id), '') FROM "+
		table+" WHERE is_applied AND version_id > 0")
}

// checkApp fails unless the app's tables exist.
func checkApp(t *testing.T, db *sql.DB, schema string) {
	t.Helper()
	for _, rel := range []string{"users", "orders"} {
		if !scalar[bool](t, db, "SELECT to_regclass($1) IS NOT NULL", schema+rel) {
			t.Errorf("the app's table %s is missing", rel)
		}
	}
}

// pgqVersions are pgq's migrations today.
var pgqVersions = []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}

const pgqVersionsText = "1,2,3,4,5,6,7,8,9,10,11,12,13"

func sameVersions(got []int64, want ...int64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestGooseProviderWithAppMigrations runs an app's own goose migrations and
// pgq's GooseProvider in one database, in both orders: each set runs once,
// in its own version table.
func TestGooseProviderWithAppMigrations(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		for _, order := range []string{"app first", "pgq first"} {
			t.Run(d+"/"+order, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				db, _ := pgqtest.NewDB(t, d, pgqtest.Bare())
				pgqP, err := pgq.GooseProvider(db)
				if err != nil {
					t.Fatal(err)
				}
				steps := []struct {
					what string
					p    *goose.Provider
					want []int64
				}{{"app", appProvider(t, db), []int64{1, 2}}, {"pgq", pgqP, pgqVersions}}
				if order == "pgq first" {
					steps[0], steps[1] = steps[1], steps[0]
				}
				for _, s := range steps {
					if got := up(t, ctx, s.what, s.p); !sameVersions(got, s.want...) {
						t.Fatalf("%s up applied %v, want %v", s.what, got, s.want)
					}
				}
				if err := pgq.Verify(ctx, db); err != nil {
					t.Fatalf("Verify: %v", err)
				}
				checkApp(t, db, "")
				if got := recorded(t, db, "goose_db_version"); got != "1,2" {
					t.Errorf("goose_db_version records %q, want the app's 1,2", got)
				}
				if got := recorded(t, db, pgq.MigrationsTable); got != pgqVersionsText {
					t.Errorf("%s records %q, want pgq's %s", pgq.MigrationsTable, got, pgqVersionsText)
				}
				// The next deploy runs both again: nothing to do.
				for _, s := range steps {
					if got := up(t, ctx, s.what, s.p); len(got) != 0 {
						t.Errorf("second %s up applied %v", s.what, got)
					}
				}
			})
		}
	}
}

// TestGooseProviderForNaming runs the provider for a prefix and a schema
// that does not exist yet, next to the app's migrations.
func TestGooseProviderForNaming(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			db, _ := pgqtest.NewDB(t, d, pgqtest.Bare())
			naming := []pgq.NamingOption{pgq.WithPrefix("app_"), pgq.WithSchema("jobs")}
			table, err := pgq.MigrationsTableFor(naming...)
			if err != nil || table != "jobs.app_pgqueuer_pgq_version" {
				t.Fatalf("MigrationsTableFor = %q, %v", table, err)
			}
			up(t, ctx, "app", appProvider(t, db))
			p, err := pgq.GooseProviderFor(db, naming)
			if err != nil {
				t.Fatal(err)
			}
			if got := up(t, ctx, "pgq", p); !sameVersions(got, pgqVersions...) {
				t.Fatalf("pgq up applied %v, want %v", got, pgqVersions)
			}
			if err := pgq.Verify(ctx, db, naming[0], naming[1]); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			checkApp(t, db, "")
			if got := recorded(t, db, table); got != pgqVersionsText {
				t.Errorf("%s records %q", table, got)
			}
			// Install's and Upgrade's records are the provider's.
			if err := pgq.Upgrade(ctx, db, naming[0], naming[1]); err != nil {
				t.Fatal(err)
			}
			if got := up(t, ctx, "pgq", p); len(got) != 0 {
				t.Errorf("up after Upgrade applied %v", got)
			}
			if _, err := pgq.MigrationsTableFor(pgq.WithPrefix("Bad-")); err == nil {
				t.Error("MigrationsTableFor accepted an invalid prefix")
			}
			if _, err := pgq.GooseProviderFor(db, []pgq.NamingOption{pgq.WithSchema("x;y")}); err == nil {
				t.Error("GooseProviderFor accepted an invalid schema")
			}
		})
	}
}

// oldPgqProvider is how earlier pgq documented its migrations: goose's
// default version table, shared with the app's. Earlier pgq had migrations
// 1 and 2 only.
func oldPgqProvider(t *testing.T, db *sql.DB) *goose.Provider {
	t.Helper()
	old := fstest.MapFS{}
	for _, name := range []string{"00001_pgqueuer_schema.sql", "00002_autovacuum.sql"} {
		b, err := fs.ReadFile(pgq.Migrations(), name)
		if err != nil {
			t.Fatal(err)
		}
		old[name] = &fstest.MapFile{Data: b}
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, old)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVerifyNamesGooseTrap: the app's migrations ran first and pgq's,
// through goose's default table, were skipped. Verify and Run say why and
// name the fix; the fix runs pgq's migrations once and the app's never
// again.
func TestVerifyNamesGooseTrap(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		for _, fix := range []string{"GooseProvider", "Upgrade"} {
			t.Run(d+"/"+fix, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				db, dsn := pgqtest.NewDB(t, d, pgqtest.Bare())
				up(t, ctx, "app", appProvider(t, db))
				if got := up(t, ctx, "old pgq", oldPgqProvider(t, db)); len(got) != 0 {
					t.Fatalf("the trap did not spring: old pgq up applied %v", got)
				}
				err := pgq.Verify(ctx, db)
				var se *pgq.SchemaError
				if !errors.As(err, &se) || !errors.Is(err, pgq.ErrSchemaMissing) {
					t.Fatalf("Verify = %v, want a *SchemaError", err)
				}
				for _, want := range []string{
					"pgq's migrations may have been recorded in goose_db_version by an app's own pipeline",
					"use pgq.GooseProvider / the pgqueuer_pgq_version table", "versions 1, 2",
				} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("Verify's error lacks %q:\n%v", want, err)
					}
				}
				if !sameVersions(se.GooseDefaultVersions, 1, 2) {
					t.Errorf("GooseDefaultVersions = %v", se.GooseDefaultVersions)
				}
				qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
				if err := qm.Entrypoint("e", func(context.Context, *pgq.Job) error { return nil }); err != nil {
					t.Fatal(err)
				}
				if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)); err == nil ||
					!strings.Contains(err.Error(), "pgq.GooseProvider") {
					t.Errorf("Run = %v, want the schema error naming pgq.GooseProvider", err)
				}

				if fix == "GooseProvider" {
					p, err := pgq.GooseProvider(db)
					if err != nil {
						t.Fatal(err)
					}
					if got := up(t, ctx, "pgq", p); !sameVersions(got, pgqVersions...) {
						t.Fatalf("pgq up applied %v, want %v", got, pgqVersions)
					}
				} else if err := pgq.Upgrade(ctx, db); err != nil {
					t.Fatalf("Upgrade: %v", err)
				}
				if err := pgq.Verify(ctx, db); err != nil {
					t.Fatalf("Verify after the fix: %v", err)
				}
				// The app's records stayed: its migrations do not run again
				// (they would fail: CREATE TABLE users exists).
				if got := recorded(t, db, "goose_db_version"); got != "1,2" {
					t.Errorf("goose_db_version records %q, want the app's 1,2", got)
				}
				if got := up(t, ctx, "app", appProvider(t, db)); len(got) != 0 {
					t.Errorf("app up after the fix applied %v", got)
				}
				checkApp(t, db, "")
				if got := recorded(t, db, pgq.MigrationsTable); got != pgqVersionsText {
					t.Errorf("%s records %q", pgq.MigrationsTable, got)
				}
			})
		}
	}
}

// TestMoveFromGooseDefaultTable: pgq's migrations ran first through
// goose's default table, so the app's 00001 and 00002 were skipped. Moving
// to pgq's table moves pgq's records without running pgq's migrations
// again, and the app's then run, once.
func TestMoveFromGooseDefaultTable(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		for _, fix := range []string{"GooseProvider", "Upgrade"} {
			t.Run(d+"/"+fix, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				db, _ := pgqtest.NewDB(t, d, pgqtest.Bare())
				if got := up(t, ctx, "old pgq", oldPgqProvider(t, db)); !sameVersions(got, 1, 2) {
					t.Fatalf("old pgq up applied %v", got)
				}
				if got := up(t, ctx, "app", appProvider(t, db)); len(got) != 0 {
					t.Fatalf("the trap did not spring: app up applied %v", got)
				}
				id, err := pgq.NewQueries(db).Enqueue(ctx, "kept", nil)
				if err != nil {
					t.Fatal(err)
				}

				if fix == "GooseProvider" {
					p, err := pgq.GooseProvider(db)
					if err != nil {
						t.Fatal(err)
					}
					if got := up(t, ctx, "pgq", p); !sameVersions(got, pgqVersions[2:]...) {
						t.Errorf("pgq up ran %v; want its records moved and only %v (newer than old pgq) run", got, pgqVersions[2:])
					}
				} else if err := pgq.Upgrade(ctx, db); err != nil {
					t.Fatalf("Upgrade: %v", err)
				}
				if got := recorded(t, db, pgq.MigrationsTable); got != pgqVersionsText {
					t.Errorf("%s records %q, want %s", pgq.MigrationsTable, got, pgqVersionsText)
				}
				if got := recorded(t, db, "goose_db_version"); got != "" {
					t.Errorf("goose_db_version still records %q", got)
				}
				if got := up(t, ctx, "app", appProvider(t, db)); !sameVersions(got, 1, 2) {
					t.Fatalf("app up applied %v, want its own 1 and 2", got)
				}
				checkApp(t, db, "")
				if err := pgq.Verify(ctx, db); err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if n := scalar[int](t, db, "SELECT count(*) FROM pgqueuer WHERE id = $1", int64(id)); n != 1 {
					t.Errorf("the queued job is gone: %d rows", n)
				}
				// Both pipelines are at rest now.
				p, err := pgq.GooseProvider(db)
				if err != nil {
					t.Fatal(err)
				}
				for what, p := range map[string]*goose.Provider{"pgq": p, "app": appProvider(t, db)} {
					if got := up(t, ctx, what, p); len(got) != 0 {
						t.Errorf("%s up applied %v at rest", what, got)
					}
				}
			})
		}
	}
}

func TestMigrationsTableName(t *testing.T) {
	if pgq.MigrationsTable != "pgqueuer_pgq_version" {
		t.Fatalf("MigrationsTable = %q", pgq.MigrationsTable)
	}
	for _, c := range []struct {
		opts []pgq.NamingOption
		want string
	}{
		{nil, "pgqueuer_pgq_version"},
		{[]pgq.NamingOption{pgq.WithPrefix("app_")}, "app_pgqueuer_pgq_version"},
		{[]pgq.NamingOption{pgq.WithSchema("jobs")}, "jobs.pgqueuer_pgq_version"},
	} {
		if got, err := pgq.MigrationsTableFor(c.opts...); err != nil || got != c.want {
			t.Errorf("MigrationsTableFor = %q, %v; want %q", got, err, c.want)
		}
	}
}

// TestGooseProviderOptions: goose's options are added to pgq's; the ones
// that would move pgq's records elsewhere are refused.
func TestGooseProviderOptions(t *testing.T) {
	db, err := sql.Open("pgx", "host=/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := pgq.GooseProvider(db, goose.WithVerbose(true), goose.WithAllowOutofOrder(true)); err != nil {
		t.Errorf("GooseProvider with WithVerbose, WithAllowOutofOrder: %v", err)
	}
	for name, o := range map[string]goose.ProviderOption{
		"WithTableName": goose.WithTableName(goose.DefaultTablename),
		"WithStore":     goose.WithStore(nil),
	} {
		if _, err := pgq.GooseProvider(db, o); err == nil || !strings.HasPrefix(err.Error(), "pgq: goose provider: ") {
			t.Errorf("GooseProvider with %s = %v, want an error", name, err)
		}
	}
}

// TestAppMigrationWithPgqSQL: an app pasted `pgq sql install` into its
// own migration 00001 (as the README once suggested for a prefix). That
// record is the app's: GooseProvider leaves it, so 00001 never runs again.
func TestAppMigrationWithPgqSQL(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			db, _ := pgqtest.NewDB(t, d, pgqtest.Bare())
			install, err := pgq.InstallSQL(pgq.WithPrefix("app_"))
			if err != nil {
				t.Fatal(err)
			}
			app := fstest.MapFS{
				"00001_users_and_queue.sql": {Data: []byte("-- +goose Up\n-- +goose StatementBegin\n" +
					"CREATE TABLE users (id bigint PRIMARY KEY);\n" + install + "\n-- +goose StatementEnd\n")},
				"00002_orders.sql": appMigrations["00002_orders.sql"],
			}
			appP, err := goose.NewProvider(goose.DialectPostgres, db, app)
			if err != nil {
				t.Fatal(err)
			}
			if got := up(t, ctx, "app", appP); !sameVersions(got, 1, 2) {
				t.Fatalf("app up applied %v", got)
			}
			p, err := pgq.GooseProviderFor(db, []pgq.NamingOption{pgq.WithPrefix("app_")})
			if err != nil {
				t.Fatal(err)
			}
			up(t, ctx, "pgq", p)
			if got := recorded(t, db, "goose_db_version"); got != "1,2" {
				t.Errorf("goose_db_version records %q, want the app's 1,2", got)
			}
			if got := up(t, ctx, "app", appP); len(got) != 0 {
				t.Errorf("app up applied %v again", got)
			}
			if err := pgq.Verify(ctx, db, pgq.WithPrefix("app_")); err != nil {
				t.Fatal(err)
			}
		})
	}
}
