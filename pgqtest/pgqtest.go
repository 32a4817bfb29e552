// Package pgqtest gives tests their own PostgreSQL databases with the pgq
// schema installed, for pgq's own tests and for tests of code that uses
// pgq.
//
// Tests find the server in the environment variable PGQ_TEST_DSN: a
// key=value or URL connection string of a server where they may CREATE
// DATABASE. When it is unset, Main (called from TestMain) starts a private
// throwaway server for the test binary when the first test needs one, and
// stops it afterwards, using the
// PostgreSQL it finds installed (pg_config --bindir, /usr/lib/postgresql,
// PATH). It installs PostgreSQL with apt-get only when asked to, with
// PGQ_TEST_INSTALL=1 (and only as root):
//
//	func TestMain(m *testing.M) { pgqtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		for _, driver := range pgqtest.Drivers() {
//			t.Run(driver, func(t *testing.T) {
//				db, dsn := pgqtest.NewDB(t, driver)
//				...
//			})
//		}
//	}
//
// Each NewDB call creates a fresh database, cloned from a template that
// has the pgq schema installed once per test process, and drops it when the
// test ends. Tests that use NewDB may run in parallel.
//
// RequireEnqueued checks what code under test enqueued; RunOne runs one
// job with a QueueManager's handlers and returns its Outcome, Drain runs
// all that are ready (see the examples).
//
// A test in package pgq itself cannot import pgqtest (pgqtest imports pgq):
// such tests belong in the external test package pgq_test.
package pgqtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "github.com/lib/pq"              // registers the "postgres" driver

	"github.com/pgq-dev/pgq/internal/pgcluster"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// EnvDSN is the environment variable that holds the DSN of the test server.
const EnvDSN = "PGQ_TEST_DSN"

// EnvInstall is the environment variable that, set to 1, lets Main install
// PostgreSQL with apt-get when no server binaries are found.
const EnvInstall = "PGQ_TEST_INSTALL"

// adminDriver is the driver used for CREATE/DROP DATABASE and the template.
const adminDriver = "pgx"

const (
	startTimeout = 15 * time.Minute // may include installing PostgreSQL
	opTimeout    = 2 * time.Minute
)

// clusterSettings are the server settings of the private server Main starts:
// durability is traded for speed, which is fine for throwaway data.
var clusterSettings = map[string]string{
	"fsync":              "off",
	"synchronous_commit": "off",
	"full_page_writes":   "off",
}

// Main runs the tests of a package; call it from TestMain. If PGQ_TEST_DSN
// is unset, the first test that needs a database (NewDB, AdminDSN, DSN)
// starts a private PostgreSQL server (see package internal/pgcluster; as
// root, the server runs as OS user postgres) and sets PGQ_TEST_DSN for the
// process; tests that need none run without PostgreSQL. Main runs m.Run,
// drops the template database it made on a server it did not start, stops
// the server it started, and exits with the tests' exit code.
//
// If the server cannot be started, the tests that need it fail saying why.
// Progress lines are printed with go test -v.
func Main(m *testing.M) {
	os.Exit(run(m))
}

// private is the server Main may start on first use.
var private struct {
	mu      sync.Mutex
	allowed bool // Main runs and PGQ_TEST_DSN was unset
	tried   bool
	err     error
	cluster *pgcluster.Cluster
}

func run(m *testing.M) int {
	if !flag.Parsed() {
		flag.Parse() // for testing.Verbose
	}
	private.mu.Lock()
	private.allowed = os.Getenv(EnvDSN) == ""
	private.mu.Unlock()

	code := m.Run()

	private.mu.Lock()
	defer private.mu.Unlock()
	if private.cluster != nil {
		// A server Main started goes away with its databases.
		if err := private.cluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgqtest: %v\n", err)
		}
		os.Unsetenv(EnvDSN)
		return code
	}
	if private.allowed {
		return code // no test needed a server
	}
	// On a server of the caller's, drop the template.
	if err := dropTemplate(); err != nil {
		fmt.Fprintf(os.Stderr, "pgqtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// DSN returns the DSN of the test server's maintenance database: the value
// of PGQ_TEST_DSN or, under Main without it, that of the private server
// Main starts the first time a test asks. It returns "" and no error when
// there is neither (the tests do not run under Main and PGQ_TEST_DSN is
// unset).
func DSN() (string, error) {
	private.mu.Lock()
	defer private.mu.Unlock()
	if dsn := os.Getenv(EnvDSN); dsn != "" || !private.allowed {
		return dsn, nil
	}
	if private.tried {
		return "", private.err
	}
	private.tried = true
	var log io.Writer
	if testing.Verbose() {
		log = os.Stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	install := os.Getenv(EnvInstall) == "1"
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: clusterSettings, Log: log, Install: install})
	if err != nil {
		hint := ""
		if !install {
			hint = fmt.Sprintf(", or %s=1 to let it install PostgreSQL with apt-get", EnvInstall)
		}
		private.err = fmt.Errorf("pgqtest: %s is unset and a private PostgreSQL server could not be started "+
			"(set %s to the DSN of a server where tests may CREATE DATABASE%s): %w", EnvDSN, EnvDSN, hint, err)
		return "", private.err
	}
	private.cluster = c
	dsn := c.DSN("postgres")
	if err := os.Setenv(EnvDSN, dsn); err != nil {
		private.err = fmt.Errorf("pgqtest: %w", err)
		return "", private.err
	}
	return dsn, nil
}

// Drivers returns the database/sql driver names that tests should cover:
// "postgres" (github.com/lib/pq) and "pgx" (github.com/jackc/pgx/v5/stdlib).
// Importing pgqtest registers both.
func Drivers() []string {
	return []string{"postgres", "pgx"}
}

// DBOption configures NewDB: Bare.
type DBOption interface{ apply(*dbConfig) }

type dbOption func(*dbConfig)

func (o dbOption) apply(c *dbConfig) { o(c) }

type dbConfig struct {
	bare bool
}

// Bare makes NewDB create an empty database, without the pgq schema, for
// tests of installation and upgrades.
func Bare() DBOption {
	return dbOption(func(c *dbConfig) { c.bare = true })
}

// AdminDSN returns the DSN of the test server's maintenance database, as
// DSN does. It skips the test when there is no server (not under Main, and
// PGQ_TEST_DSN unset) and fails it when Main's server cannot start.
func AdminDSN(t testing.TB) string {
	t.Helper()
	dsn, err := DSN()
	if err != nil {
		t.Fatal(err)
	}
	if dsn == "" {
		t.Skipf("pgqtest: %s is unset: set it to the DSN of a PostgreSQL server where tests may CREATE DATABASE, "+
			"call pgqtest.Main from TestMain, or run the tests under `go run ./internal/cmd/withpg -- go test ./...`", EnvDSN)
	}
	return dsn
}

// NewDB creates a fresh database for the test, with the pgq schema
// installed (unless Bare is given), and returns it opened with the named
// driver (one of Drivers) together with its DSN, which works with either
// driver (listeners need it). When the test ends, the *sql.DB is closed and
// the database dropped (DROP DATABASE … WITH (FORCE), so connections still
// open are ended).
//
// The database is cloned from a template database made once per test
// process; Main drops it at the end (without Main, it stays on the server).
// NewDB skips the test when PGQ_TEST_DSN is unset and fails it on any other
// error.
func NewDB(t testing.TB, driver string, opts ...DBOption) (*sql.DB, string) {
	t.Helper()
	var cfg dbConfig
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	admin := AdminDSN(t)
	if !slices.Contains(Drivers(), driver) {
		t.Fatalf("pgqtest: NewDB: unknown driver %q; use one of %q", driver, Drivers())
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()

	template := ""
	if !cfg.bare {
		var err error
		if template, err = ensureTemplate(admin); err != nil {
			t.Fatalf("pgqtest: NewDB: %v", err)
		}
	}
	name, err := createDatabase(ctx, admin, template)
	if err != nil {
		t.Fatalf("pgqtest: NewDB: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := dropDatabase(ctx, admin, name); err != nil {
			t.Errorf("pgqtest: %v", err)
		}
	})

	dsn, err := withDBName(admin, name)
	if err != nil {
		t.Fatalf("pgqtest: NewDB: %s: %v", EnvDSN, err)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("pgqtest: NewDB: open %s database %s: %v", driver, name, err)
	}
	t.Cleanup(func() { _ = db.Close() }) // runs before the drop above
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("pgqtest: NewDB: connect with %s to database %s: %v", driver, name, err)
	}
	return db, dsn
}

// tpl is the per-process template database.
var tpl struct {
	once    sync.Once
	err     error      // result of making it; set by once
	mu      sync.Mutex // guards the fields below
	admin   string     // the admin DSN it was made with
	name    string     // set once CREATE DATABASE succeeded
	dropped bool
}

// ensureTemplate creates the template database with the pgq schema
// installed, once per process, and returns its name.
func ensureTemplate(admin string) (string, error) {
	tpl.once.Do(func() {
		tpl.err = makeTemplate(admin)
	})
	if tpl.err != nil {
		return "", tpl.err
	}
	tpl.mu.Lock()
	defer tpl.mu.Unlock()
	return tpl.name, nil
}

func makeTemplate(admin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	name := fmt.Sprintf("pgqtest_tpl_%d_%s", os.Getpid(), randomHex(4))
	if err := adminExec(ctx, admin, "CREATE DATABASE "+sqlname.QuoteIdent(name)); err != nil {
		return fmt.Errorf("create template database %s: %w", name, err)
	}
	tpl.mu.Lock()
	tpl.admin, tpl.name = admin, name
	tpl.mu.Unlock()
	err := installTemplate(ctx, admin, name)
	if err == nil {
		// Nobody may connect to the template any more: CREATE DATABASE …
		// TEMPLATE fails while the template has sessions.
		err = adminExec(ctx, admin, "ALTER DATABASE "+sqlname.QuoteIdent(name)+" WITH ALLOW_CONNECTIONS false")
	}
	if err != nil {
		if derr := dropTemplate(); derr != nil {
			err = errors.Join(err, derr)
		}
		return fmt.Errorf("template database %s: %w", name, err)
	}
	return nil
}

func installTemplate(ctx context.Context, admin, name string) error {
	dsn, err := withDBName(admin, name)
	if err != nil {
		return err
	}
	db, err := sql.Open(adminDriver, dsn)
	if err != nil {
		return err
	}
	// Closing the pool ends the template's sessions before it is cloned.
	defer db.Close()
	return install(ctx, db)
}

// dropTemplate drops the template database if this process made it.
func dropTemplate() error {
	tpl.mu.Lock()
	defer tpl.mu.Unlock()
	if tpl.name == "" || tpl.dropped {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := dropDatabase(ctx, tpl.admin, tpl.name); err != nil {
		return err
	}
	tpl.dropped = true
	return nil
}

// createDatabase creates a database with a new unique name, from template
// unless it is "", and returns the name.
func createDatabase(ctx context.Context, admin, template string) (string, error) {
	for attempt := 0; ; attempt++ {
		name := "pgqt_" + randomHex(4)
		stmt := "CREATE DATABASE " + sqlname.QuoteIdent(name)
		if template != "" {
			stmt += " TEMPLATE " + sqlname.QuoteIdent(template)
		}
		err := adminExec(ctx, admin, stmt)
		if err == nil {
			return name, nil
		}
		var pgErr *pgconn.PgError
		if attempt < 3 && errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
			continue
		}
		return "", fmt.Errorf("%s: %w", stmt, err)
	}
}

func dropDatabase(ctx context.Context, admin, name string) error {
	stmt := "DROP DATABASE IF EXISTS " + sqlname.QuoteIdent(name) + " WITH (FORCE)"
	if err := adminExec(ctx, admin, stmt); err != nil {
		return fmt.Errorf("%s: %w", stmt, err)
	}
	return nil
}

// adminExec runs one statement on the maintenance database. It opens and
// closes its own pool so that no goroutine outlives it (goleak-friendly).
func adminExec(ctx context.Context, admin, stmt string) error {
	db, err := sql.Open(adminDriver, admin)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	_, err = db.ExecContext(ctx, stmt)
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}
