package pgqtest_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgq-dev/pgq/internal/sqlname"
	"github.com/pgq-dev/pgq/pgqtest"
)

func TestMain(m *testing.M) { pgqtest.Main(m) }

func queryString(t *testing.T, db *sql.DB, query string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s sql.NullString
	if err := db.QueryRowContext(ctx, query, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return s.String
}

func openAdmin(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", pgqtest.AdminDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func databaseExists(t *testing.T, admin *sql.DB, name string) bool {
	t.Helper()
	return queryString(t, admin, "SELECT count(*)::text FROM pg_database WHERE datname = $1", name) != "0"
}

func TestNewDBBare(t *testing.T) {
	admin := openAdmin(t)
	var names []string
	t.Run("isolation", func(t *testing.T) {
		dbs := map[string]*sql.DB{}
		for _, driver := range pgqtest.Drivers() {
			db, dsn := pgqtest.NewDB(t, driver, pgqtest.Bare())
			name := queryString(t, db, "SELECT current_database()")
			if dbs[name] != nil {
				t.Fatalf("NewDB gave database %s twice", name)
			}
			dbs[name] = db
			names = append(names, name)

			// The DSN works with both drivers.
			for _, other := range pgqtest.Drivers() {
				odb, err := sql.Open(other, dsn)
				if err != nil {
					t.Fatal(err)
				}
				if got := queryString(t, odb, "SELECT current_database()"); got != name {
					t.Errorf("%s on the DSN of %s: current_database() = %s", other, name, got)
				}
				odb.Close()
			}
			if got := queryString(t, db, "SELECT count(*)::text FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"); got != "0" {
				t.Errorf("%s: Bare database has %s tables", driver, got)
			}
		}
		first, second := dbs[names[0]], dbs[names[1]]
		if _, err := first.Exec("CREATE TABLE only_here (id int)"); err != nil {
			t.Fatal(err)
		}
		if got := queryString(t, first, "SELECT to_regclass('only_here')::text"); got != "only_here" {
			t.Errorf("table missing where it was made: %q", got)
		}
		if got := queryString(t, second, "SELECT to_regclass('only_here')::text"); got != "" {
			t.Errorf("table made in %s is visible in %s", names[0], names[1])
		}
		for _, name := range names {
			if !databaseExists(t, admin, name) {
				t.Errorf("database %s missing from pg_database during the test", name)
			}
		}
	})
	if len(names) != len(pgqtest.Drivers()) {
		t.Fatalf("got databases %v", names)
	}
	// The subtest's cleanups have run: its databases are gone.
	for _, name := range names {
		if databaseExists(t, admin, name) {
			t.Errorf("database %s still exists after its test", name)
		}
	}
}

// TestNewDBOpenConnections checks that the database is dropped even when the
// test leaves a connection open on it.
func TestNewDBOpenConnections(t *testing.T) {
	admin := openAdmin(t)
	var name string
	t.Run("leave open", func(t *testing.T) {
		_, dsn := pgqtest.NewDB(t, "postgres", pgqtest.Bare())
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() }) // runs after the drop
		name = queryString(t, db, "SELECT current_database()")
	})
	if databaseExists(t, admin, name) {
		t.Errorf("database %s still exists after its test", name)
	}
}

func TestNewDBWithSchema(t *testing.T) {
	for _, driver := range pgqtest.Drivers() {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			db, _ := pgqtest.NewDB(t, driver)
			if got := queryString(t, db, "SELECT to_regclass($1)::text", sqlname.JobTable); got != sqlname.JobTable {
				t.Errorf("database made by NewDB has no table %s: pgq schema missing", sqlname.JobTable)
			}
		})
	}
}

func TestNewDBParallel(t *testing.T) {
	for i := range 8 {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			db, _ := pgqtest.NewDB(t, pgqtest.Drivers()[i%2])
			queryString(t, db, "SELECT 1")
		})
	}
}

func TestNewDBSkipsWithoutDSN(t *testing.T) {
	t.Setenv(pgqtest.EnvDSN, "")
	var sub *testing.T
	t.Run("skipped", func(t *testing.T) {
		sub = t
		pgqtest.NewDB(t, "pgx")
		t.Error("NewDB did not skip")
	})
	if !sub.Skipped() {
		t.Errorf("NewDB without %s: test not skipped", pgqtest.EnvDSN)
	}
}

// TestNoLeak checks that no goroutine outlives a test that used NewDB with
// either driver.
func TestNoLeak(t *testing.T) {
	t.Run("use", func(t *testing.T) {
		for _, driver := range pgqtest.Drivers() {
			db, _ := pgqtest.NewDB(t, driver)
			queryString(t, db, "SELECT 1")
		}
	})
	goleak.VerifyNone(t)
}
