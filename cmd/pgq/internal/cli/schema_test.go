package cli_test

import (
	"database/sql"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgq-dev/pgq/pgqtest"
)

func TestSQL(t *testing.T) {
	t.Parallel()
	install := pgq(t, "sql", "install").ok(t).stdout
	for _, w := range []string{"CREATE TABLE IF NOT EXISTS pgqueuer (", "CREATE TABLE IF NOT EXISTS pgqueuer_log", "pgqueuer_status"} {
		if !strings.Contains(install, w) {
			t.Errorf("sql install lacks %q", w)
		}
	}
	if up := pgq(t, "sql", "upgrade").ok(t).stdout; up != install {
		t.Errorf("sql upgrade differs from sql install")
	}
	if dry := pgq(t, "install", "--dry-run").ok(t).stdout; dry != install {
		t.Errorf("install --dry-run differs from sql install")
	}

	prefixed := pgq(t, "sql", "install", "--prefix", "x_").ok(t).stdout
	if !strings.Contains(prefixed, "CREATE TABLE IF NOT EXISTS x_pgqueuer (") || !strings.Contains(prefixed, "x_pgqueuer_status") {
		t.Errorf("sql install --prefix x_ does not create x_pgqueuer:\n%.2000s", prefixed)
	}
	// flags may also come before the argument
	if again := pgq(t, "sql", "--prefix", "x_", "install").ok(t).stdout; again != prefixed {
		t.Errorf("sql --prefix x_ install differs from sql install --prefix x_")
	}
	schema := pgq(t, "sql", "install", "--schema", "jobs").ok(t).stdout
	if !strings.Contains(schema, "CREATE SCHEMA IF NOT EXISTS jobs;") {
		t.Errorf("sql install --schema jobs does not create the schema:\n%.500s", schema)
	}

	uninstall := pgq(t, "sql", "uninstall", "--prefix", "x_").ok(t).stdout
	for _, w := range []string{"DROP TABLE IF EXISTS x_pgqueuer", "DROP TYPE IF EXISTS x_pgqueuer_status"} {
		if !strings.Contains(uninstall, w) {
			t.Errorf("sql uninstall --prefix x_ lacks %q:\n%s", w, uninstall)
		}
	}
	if dry := pgq(t, "uninstall", "--dry-run", "--prefix", "x_").ok(t).stdout; dry != uninstall {
		t.Errorf("uninstall --dry-run differs from sql uninstall")
	}
}

// TestSQLGrants checks that `pgq sql grants` prints the library's grants
// (GrantsSQL, tested against roles in the pgq package) for the naming
// given, and refuses PUBLIC.
func TestSQLGrants(t *testing.T) {
	t.Parallel()
	out := pgq(t, "sql", "grants", "--role", "app_producer", "--for", "producer", "--prefix", "x_", "--schema", "jobs").ok(t).stdout
	for _, w := range []string{"GRANT USAGE ON SCHEMA jobs TO app_producer;", "GRANT INSERT ON jobs.x_pgqueuer TO app_producer;"} {
		if !strings.Contains(out, w) {
			t.Errorf("sql grants lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "DELETE") || strings.Contains(out, "UPDATE") {
		t.Errorf("producer grants allow changes:\n%s", out)
	}
	pgq(t, "sql", "grants", "--role", "public", "--for", "watcher").fails(t, 1, `role "public" would grant to every role`)
}

// TestSQLPrefixFromEnv checks that PGQUEUER_PREFIX is the default of
// --prefix, and that --prefix overrides it.
func TestSQLPrefixFromEnv(t *testing.T) {
	t.Setenv("PGQUEUER_PREFIX", "envp_")
	if out := pgq(t, "sql", "install").ok(t).stdout; !strings.Contains(out, "CREATE TABLE IF NOT EXISTS envp_pgqueuer (") {
		t.Errorf("PGQUEUER_PREFIX=envp_: sql install does not create envp_pgqueuer")
	}
	if out := pgq(t, "sql", "install", "--prefix", "").ok(t).stdout; !strings.Contains(out, "CREATE TABLE IF NOT EXISTS pgqueuer (") {
		t.Errorf("--prefix '' does not override PGQUEUER_PREFIX")
	}
}

// relpersistence returns 'p' (logged) or 'u' (unlogged) for a table.
func relpersistence(t *testing.T, db *sql.DB, table string) string {
	t.Helper()
	var p string
	if err := db.QueryRow("SELECT relpersistence::text FROM pg_class WHERE oid = to_regclass($1)", table).Scan(&p); err != nil {
		t.Fatalf("relpersistence of %s: %v", table, err)
	}
	return p
}

func TestSchemaLifecycle(t *testing.T) {
	t.Parallel()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			db, dsn := pgqtest.NewDB(t, driver, pgqtest.Bare())
			conn := []string{"--driver", driver, "--dsn", dsn}
			cmd := func(args ...string) []string { return append(args, conn...) }

			r := pgq(t, cmd("verify")...).fails(t, 1, "incomplete", "run `pgq install`")
			if !strings.Contains(r.stdout, "missing table pgqueuer\n") || !strings.Contains(r.stdout, "missing table pgqueuer_log\n") {
				t.Errorf("verify on an empty database does not list the tables:\n%s", r.stdout)
			}

			if r := pgq(t, cmd("verify", "--expect", "absent")...).ok(t); r.stdout != "no pgq objects found\n" {
				t.Errorf("verify --expect absent printed %q", r.stdout)
			}

			r = pgq(t, cmd("install")...).ok(t)
			if r.stdout != "pgq schema installed, durability durable\n" {
				t.Errorf("install printed %q", r.stdout)
			}
			r = pgq(t, cmd("verify", "--expect", "absent")...).fails(t, 1, "still installed (6 found)", "pgq uninstall")
			if !strings.HasPrefix(r.stdout, "unexpected table pgqueuer\n") {
				t.Errorf("verify --expect absent printed %q", r.stdout)
			}
			if r := pgq(t, cmd("verify")...).ok(t); r.stdout != "schema OK\n" {
				t.Errorf("verify printed %q", r.stdout)
			}
			pgq(t, cmd("install")...).fails(t, 1, "install: schema already installed", "pgq upgrade")

			// PGQueuer's spelling: global flags before the command, -d.
			pgq(t, "--driver", driver, "--pg-dsn", dsn, "upgrade", "-d", "balanced").ok(t)
			if p := relpersistence(t, db, "pgqueuer_log"); p != "u" {
				t.Errorf("after upgrade --durability balanced, pgqueuer_log relpersistence = %q, want u", p)
			}
			if p := relpersistence(t, db, "pgqueuer"); p != "p" {
				t.Errorf("after upgrade --durability balanced, pgqueuer relpersistence = %q, want p", p)
			}
			// As PGQueuer's balanced mode: statistics unlogged, schedules logged.
			if p := relpersistence(t, db, "pgqueuer_statistics"); p != "u" {
				t.Errorf("after upgrade --durability balanced, pgqueuer_statistics relpersistence = %q, want u", p)
			}
			if p := relpersistence(t, db, "pgqueuer_schedules"); p != "p" {
				t.Errorf("after upgrade --durability balanced, pgqueuer_schedules relpersistence = %q, want p", p)
			}

			// An int4 id, as PGQueuer before 1.1.1 made it: --no-widen-id
			// leaves it and says so; a plain upgrade widens it and says so.
			if _, err := db.Exec("ALTER TABLE pgqueuer_schedules ALTER COLUMN id TYPE int"); err != nil {
				t.Fatal(err)
			}
			if r := pgq(t, cmd("upgrade", "--no-widen-id")...).ok(t); !strings.Contains(r.stdout, "left the int4 ids of pgqueuer_schedules as they are") {
				t.Errorf("upgrade --no-widen-id printed %q", r.stdout)
			}
			if r := pgq(t, cmd("upgrade")...).ok(t); !strings.HasPrefix(r.stdout, "widening the int4 ids of pgqueuer_schedules to bigint") {
				t.Errorf("upgrade of an int4 id printed %q", r.stdout)
			}
			var idType string
			if err := db.QueryRow("SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = 'pgqueuer_schedules'::regclass AND attname = 'id'").Scan(&idType); err != nil || idType != "bigint" {
				t.Errorf("schedules id after upgrade: %q, %v", idType, err)
			}
			if r := pgq(t, cmd("upgrade")...).ok(t); r.stdout != "pgq schema is up to date\n" {
				t.Errorf("upgrade printed %q", r.stdout)
			}
			if p := relpersistence(t, db, "pgqueuer_log"); p != "u" {
				t.Errorf("upgrade without --durability changed pgqueuer_log to %q", p)
			}

			// An incomplete schema, as an older PGQueuer leaves it (without
			// pgq's version table): upgrade, not install, is the fix.
			if _, err := db.Exec("DROP INDEX pgqueuer_log_job_id_status; DROP TABLE pgqueuer_pgq_version"); err != nil {
				t.Fatal(err)
			}
			r = pgq(t, cmd("verify")...).fails(t, 1, "incomplete (1 missing)", "run `pgq upgrade`")
			if r.stdout != "missing index pgqueuer_log_job_id_status\n" {
				t.Errorf("verify printed %q", r.stdout)
			}
			pgq(t, cmd("upgrade")...).ok(t)
			pgq(t, cmd("verify")...).ok(t)

			if r := pgq(t, cmd("uninstall")...).ok(t); r.stdout != "pgq schema uninstalled\n" {
				t.Errorf("uninstall printed %q", r.stdout)
			}
			pgq(t, cmd("verify")...).fails(t, 1, "run `pgq install`")
			pgq(t, cmd("verify", "--expect", "absent")...).ok(t)
			var n int
			if err := db.QueryRow("SELECT count(*) FROM pg_class WHERE relname LIKE 'pgqueuer%'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("%d pgqueuer relations left after uninstall", n)
			}
		})
	}
}

func TestPrefixAndSchema(t *testing.T) {
	t.Parallel()
	db, dsn := pgqtest.NewDB(t, "pgx", pgqtest.Bare())
	names := []string{"--prefix", "x_", "--schema", "jobs", "--dsn", dsn}
	r := pgq(t, append([]string{"install", "--durability", "volatile"}, names...)...).ok(t)
	if want := "pgq schema installed (prefix \"x_\", schema \"jobs\"), durability volatile\n"; r.stdout != want {
		t.Errorf("install printed %q, want %q", r.stdout, want)
	}
	if p := relpersistence(t, db, "jobs.x_pgqueuer"); p != "u" {
		t.Errorf("volatile install: jobs.x_pgqueuer relpersistence = %q, want u", p)
	}
	pgq(t, append([]string{"verify"}, names...)...).ok(t)
	pgq(t, "verify", "--dsn", dsn).fails(t, 1, "incomplete", "run `pgq install`")
	pgq(t, "queue", "email", "--dsn", dsn).fails(t, 1, "not installed", "run `pgq install`")

	id := strings.TrimSpace(pgq(t, append([]string{"queue", "email", "hi"}, names...)...).ok(t).stdout)
	var entrypoint string
	if err := db.QueryRow("SELECT entrypoint FROM jobs.x_pgqueuer WHERE id = $1", id).Scan(&entrypoint); err != nil {
		t.Fatalf("job %s not in jobs.x_pgqueuer: %v", id, err)
	}
	pgq(t, append([]string{"uninstall"}, names...)...).ok(t)
	pgq(t, append([]string{"verify"}, names...)...).fails(t, 1, "run `pgq install --prefix x_ --schema jobs`")
}

// TestDSNFromEnvironment checks PGQ_DSN and, without it, libpq's PG*
// variables.
func TestDSNFromEnvironment(t *testing.T) {
	_, dsn := pgqtest.NewDB(t, "pgx")
	t.Setenv("PGQ_DSN", dsn)
	pgq(t, "verify").ok(t)
	pgq(t, "verify", "--driver", "postgres").ok(t)

	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGQ_DSN", "")
	t.Setenv("PGHOST", cfg.Host)
	t.Setenv("PGPORT", strconv.Itoa(int(cfg.Port)))
	t.Setenv("PGUSER", cfg.User)
	t.Setenv("PGDATABASE", cfg.Database)
	t.Setenv("PGSSLMODE", "disable")
	for _, driver := range pgqtest.Drivers() {
		pgq(t, "verify", "--driver", driver).ok(t)
	}

	// PGQueuer's --pg-* flags take precedence over the PG* variables.
	t.Setenv("PGDATABASE", "no_such_database")
	t.Setenv("PGHOST", "/nonexistent")
	for _, driver := range pgqtest.Drivers() {
		pgq(t, "--pg-host", cfg.Host, "--pg-database", cfg.Database, "verify", "--driver", driver).ok(t)
	}
	t.Setenv("PGHOST", cfg.Host)
	t.Setenv("PGDATABASE", "no_such_database")
	pgq(t, "verify").fails(t, 1, "cannot connect to PostgreSQL (DSN from the PG* environment variables)", "no_such_database")
}
