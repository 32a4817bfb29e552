package cli_test

import (
	"context"
	"database/sql"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/pgq-dev/pgq/pgqtest"
)

// writeApp writes an app's own goose migrations, numbered from 00001 as
// pgq's are, to a new directory. They are not idempotent: running one twice
// fails.
func writeApp(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "app")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"00001_users.sql":  "-- +goose Up\nCREATE TABLE users (id bigint PRIMARY KEY);\n-- +goose Down\nDROP TABLE users;\n",
		"00002_orders.sql": "-- +goose Up\nCREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint REFERENCES users);\n-- +goose Down\nDROP TABLE orders;\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// gooseCLI runs a goose command line (`goose -dir D -table T postgres DSN
// up`) through the goose library's entry point, as the goose command does:
// SetTableName, the dialect of the driver argument, RunWithOptionsContext.
// It runs on db instead of opening the DSN. goose's globals make it unfit
// for parallel tests.
func gooseCLI(t *testing.T, ctx context.Context, db *sql.DB, line string) {
	t.Helper()
	args := strings.Fields(line)
	if len(args) == 0 || args[0] != "goose" {
		t.Fatalf("not a goose command line: %q", line)
	}
	fs := flag.NewFlagSet("goose", flag.ContinueOnError)
	dir := fs.String("dir", ".", "")
	table := fs.String("table", goose.DefaultTablename, "")
	if err := fs.Parse(args[1:]); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	rest := fs.Args()
	if len(rest) != 3 {
		t.Fatalf("%q: want DRIVER DBSTRING COMMAND after the flags, got %q", line, rest)
	}
	goose.SetLogger(goose.NopLogger())
	goose.SetTableName(*table)
	defer goose.SetTableName(goose.DefaultTablename)
	if err := goose.SetDialect(rest[0]); err != nil {
		t.Fatal(err)
	}
	if err := goose.RunWithOptionsContext(ctx, rest[2], db, *dir, nil); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
}

// exportCommand runs `pgq migrations export` and returns the goose command
// line it prints.
func exportCommand(t *testing.T, args ...string) (string, result) {
	t.Helper()
	r := pgq(t, append([]string{"migrations", "export"}, args...)...).ok(t)
	for _, l := range strings.Split(r.stdout, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "goose ") {
			return l, r
		}
	}
	t.Fatalf("no goose command line in:\n%s", r.stdout)
	return "", r
}

func recordedVersions(t *testing.T, db *sql.DB, table string) string {
	t.Helper()
	var s string
	if err := db.QueryRow("SELECT coalesce(string_agg(version_id::text, ',' ORDER BY version_id), '') FROM " +
		table + " WHERE is_applied AND version_id > 0").Scan(&s); err != nil {
		t.Fatalf("%s: %v", table, err)
	}
	return s
}

// exportedVersions lists the versions of the migrations in dir: "1,2,3".
func exportedVersions(t *testing.T, dir string) string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.sql"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no migrations in %s (%v)", dir, err)
	}
	var vs []string
	for _, p := range paths {
		v, err := goose.NumericComponent(p)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, strconv.FormatInt(v, 10))
	}
	return strings.Join(vs, ",")
}

func checkAppTables(t *testing.T, db *sql.DB) {
	t.Helper()
	for _, rel := range []string{"users", "orders"} {
		var ok bool
		if err := db.QueryRow("SELECT to_regclass($1) IS NOT NULL", rel).Scan(&ok); err != nil || !ok {
			t.Errorf("the app's table %s is missing (%v)", rel, err)
		}
	}
}

// TestMigrationsExportWithGooseCLI runs the exported migrations with the
// goose command line it prints, next to an app's own migrations run by
// goose with its default table, in both orders, on both drivers, with the
// default names and with a prefix and schema. Not parallel: goose's
// command-line entry point works on package globals.
func TestMigrationsExportWithGooseCLI(t *testing.T) {
	ctx := context.Background()
	for _, driver := range pgqtest.Drivers() {
		for _, naming := range [][]string{nil, {"--prefix", "app_", "--schema", "jobs"}} {
			for _, order := range []string{"app first", "pgq first"} {
				t.Run(driver+"/"+strings.Join(naming, "")+"/"+order, func(t *testing.T) {
					db, dsn := pgqtest.NewDB(t, driver, pgqtest.Bare())
					appDir := writeApp(t)
					pgqDir := filepath.Join(t.TempDir(), "db", "pgq")
					line, r := exportCommand(t, append([]string{pgqDir}, naming...)...)
					table := "pgqueuer_pgq_version"
					if naming != nil {
						table = "jobs.app_pgqueuer_pgq_version"
						if !strings.Contains(r.stdout, "CREATE SCHEMA IF NOT EXISTS jobs") {
							t.Errorf("export --schema does not say to create the schema:\n%s", r.stdout)
						}
						if _, err := db.Exec("CREATE SCHEMA IF NOT EXISTS jobs"); err != nil {
							t.Fatal(err)
						}
					}
					if !strings.Contains(line, " -table "+table+" ") || !strings.Contains(line, "-dir "+pgqDir) {
						t.Fatalf("goose command line %q lacks -dir %s -table %s", line, pgqDir, table)
					}
					appLine := "goose -dir " + appDir + " postgres DSN up"
					lines := []string{appLine, line}
					if order == "pgq first" {
						lines[0], lines[1] = lines[1], lines[0]
					}
					for _, l := range lines {
						gooseCLI(t, ctx, db, l)
					}
					verify := append([]string{"verify", "--driver", driver, "--dsn", dsn}, naming...)
					if r := pgq(t, verify...).ok(t); !strings.HasPrefix(r.stdout, "schema OK") {
						t.Errorf("verify printed %q", r.stdout)
					}
					checkAppTables(t, db)
					if got := recordedVersions(t, db, "goose_db_version"); got != "1,2" {
						t.Errorf("goose_db_version records %q, want the app's 1,2", got)
					}
					if got, want := recordedVersions(t, db, table), exportedVersions(t, pgqDir); got != want {
						t.Errorf("%s records %q, want pgq's %s", table, got, want)
					}
					// Export again (an upgrade of pgq) and run both again:
					// nothing left to do, nothing fails.
					exportCommand(t, append([]string{pgqDir}, naming...)...)
					for _, l := range lines {
						gooseCLI(t, ctx, db, l)
					}
				})
			}
		}
	}
}

// TestMigrationsExportLeavesTheTrap: pgq's exported files once ran with
// goose's default table. App first: pgq's were skipped, and verify says
// why. pgq first: the app's were skipped; `pgq upgrade` moves pgq's
// records, and then both run with the printed command lines, each
// migration once.
func TestMigrationsExportLeavesTheTrap(t *testing.T) {
	ctx := context.Background()
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			db, dsn := pgqtest.NewDB(t, driver, pgqtest.Bare())
			conn := []string{"--driver", driver, "--dsn", dsn}
			appDir := writeApp(t)
			pgqDir := filepath.Join(t.TempDir(), "pgq")
			line, _ := exportCommand(t, pgqDir)
			// An earlier pgq's migrations (1 and 2) run with goose's default
			// table, goose_db_version.
			oldDir := filepath.Join(t.TempDir(), "oldpgq")
			if err := os.Mkdir(oldDir, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"00001_pgqueuer_schema.sql", "00002_autovacuum.sql"} {
				b, err := os.ReadFile(filepath.Join(pgqDir, name))
				if err == nil {
					err = os.WriteFile(filepath.Join(oldDir, name), b, 0o644)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			trapLine := "goose -dir " + oldDir + " postgres DSN up"
			appLine := "goose -dir " + appDir + " postgres DSN up"

			gooseCLI(t, ctx, db, appLine)
			gooseCLI(t, ctx, db, trapLine) // skipped: 1 and 2 are recorded
			r := pgq(t, append([]string{"verify"}, conn...)...).fails(t, 1,
				"pgq's migrations may have been recorded in goose_db_version by an app's own pipeline",
				"use pgq.GooseProvider / the pgqueuer_pgq_version table")
			if !strings.Contains(r.stdout, "missing table pgqueuer\n") {
				t.Errorf("verify printed %q", r.stdout)
			}
			gooseCLI(t, ctx, db, line)
			pgq(t, append([]string{"verify"}, conn...)...).ok(t)
			gooseCLI(t, ctx, db, appLine) // would fail if 00001_users ran again
			checkAppTables(t, db)

			// pgq first, in a fresh database.
			db, dsn = pgqtest.NewDB(t, driver, pgqtest.Bare())
			conn = []string{"--driver", driver, "--dsn", dsn}
			gooseCLI(t, ctx, db, trapLine)
			gooseCLI(t, ctx, db, appLine) // skipped: 1 and 2 are recorded
			var users bool
			if err := db.QueryRow("SELECT to_regclass('users') IS NOT NULL").Scan(&users); err != nil || users {
				t.Fatalf("the trap did not spring: users exists (%v)", err)
			}
			pgq(t, append([]string{"upgrade"}, conn...)...).ok(t)
			if got := recordedVersions(t, db, "goose_db_version"); got != "" {
				t.Errorf("after pgq upgrade, goose_db_version records %q", got)
			}
			if got := recordedVersions(t, db, "pgqueuer_pgq_version"); !strings.HasPrefix(got, "1,2") {
				t.Errorf("after pgq upgrade, pgqueuer_pgq_version records %q", got)
			}
			gooseCLI(t, ctx, db, line)
			gooseCLI(t, ctx, db, appLine)
			checkAppTables(t, db)
			pgq(t, append([]string{"verify"}, conn...)...).ok(t)
			if got := recordedVersions(t, db, "goose_db_version"); got != "1,2" {
				t.Errorf("goose_db_version records %q, want the app's 1,2", got)
			}
		})
	}
}

func TestMigrationsExportErrors(t *testing.T) {
	t.Parallel()
	pgq(t, "migrations").fails(t, 2, "missing what to do: export")
	pgq(t, "migrations", "import", "x").fails(t, 2, `unknown migrations command "import"`)
	pgq(t, "migrations", "export").fails(t, 2, "missing the directory")
	pgq(t, "migrations", "export", t.TempDir(), "--prefix", "Bad-").fails(t, 2, "invalid prefix")
	// The app's own migrations' directory is refused.
	dir := writeApp(t)
	pgq(t, "migrations", "export", dir).fails(t, 1, "holds other migrations (00001_users.sql, 00002_orders.sql)",
		"a directory of their own", "-table pgqueuer_pgq_version")
	if _, err := os.Stat(filepath.Join(dir, "00001_pgqueuer_schema.sql")); err == nil {
		t.Error("export wrote into the app's directory")
	}
}
