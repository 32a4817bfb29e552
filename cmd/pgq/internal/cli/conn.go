package cli

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "github.com/lib/pq"              // registers the "postgres" driver

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/dsn"
)

// Environment variables the commands read.
const (
	EnvDSN    = "PGQ_DSN"         // connection string when --dsn is not given
	EnvPrefix = "PGQUEUER_PREFIX" // default of --prefix, as in PGQueuer
	EnvSchema = "PGQUEUER_SCHEMA" // default of --schema, as in PGQueuer
)

// DefaultDriver is the database/sql driver used without --driver.
const DefaultDriver = "pgx"

// pingTimeout bounds the connection check every database command starts
// with, so that a bad DSN or an unreachable server fails fast.
const pingTimeout = 10 * time.Second

// naming holds --prefix and --schema, which every command that names pgq's
// objects takes.
type naming struct {
	Prefix, Schema string
}

func (n *naming) define(fs *flag.FlagSet, e *env) {
	fs.StringVar(&n.Prefix, "prefix", e.getenv(EnvPrefix),
		"`prefix` of every pgq object name, as PGQueuer's "+EnvPrefix+" (default $"+EnvPrefix+")")
	fs.StringVar(&n.Schema, "schema", e.getenv(EnvSchema),
		"PostgreSQL `schema` of pgq's objects, as PGQueuer's "+EnvSchema+" (default $"+EnvSchema+
			", else the connection's current schema)")
	fs.StringVar(&n.Schema, "pg-schema", e.getenv(EnvSchema), "PGQueuer's spelling of --schema")
}

func (n *naming) validate() error {
	// InstallSQL touches no database and checks both names.
	if _, err := pgq.InstallSQL(n.schemaOpts()...); err != nil {
		return usagef("%s", oneLine(err.Error()))
	}
	return nil
}

func (n *naming) opts() []pgq.NamingOption {
	var o []pgq.NamingOption
	if n.Prefix != "" {
		o = append(o, pgq.WithPrefix(n.Prefix))
	}
	if n.Schema != "" {
		o = append(o, pgq.WithSchema(n.Schema))
	}
	return o
}

func (n *naming) schemaOpts() []pgq.SchemaOption {
	var o []pgq.SchemaOption
	for _, x := range n.opts() {
		o = append(o, x)
	}
	return o
}

func (n *naming) queryOpts() []pgq.Option {
	var o []pgq.Option
	for _, x := range n.opts() {
		o = append(o, x)
	}
	return o
}

func (n *naming) managerOpts() []pgq.ManagerOption {
	var o []pgq.ManagerOption
	for _, x := range n.opts() {
		o = append(o, x)
	}
	return o
}

func (n *naming) watcherOpts() []pgq.WatcherOption {
	var o []pgq.WatcherOption
	for _, x := range n.opts() {
		o = append(o, x)
	}
	return o
}

// describe says where the objects are, for messages: "" for the defaults.
func (n *naming) describe() string {
	var parts []string
	if n.Prefix != "" {
		parts = append(parts, fmt.Sprintf("prefix %q", n.Prefix))
	}
	if n.Schema != "" {
		parts = append(parts, fmt.Sprintf("schema %q", n.Schema))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// conn holds the connection flags of every database command.
type conn struct {
	naming
	DSN    string
	Driver string
	source string // where DSN came from, for messages
	// PGQueuer's --pg-host, --pg-port… flags, by libpq keyword; they make
	// a DSN when --dsn is not given.
	parts map[string]*string
}

// pgParts are PGQueuer's connection flags and the libpq keywords they set.
var pgParts = [][2]string{
	{"pg-host", "host"}, {"pg-port", "port"}, {"pg-user", "user"},
	{"pg-database", "dbname"}, {"pg-password", "password"},
}

// aliasFlags are other spellings of pgq's flags, accepted for PGQueuer's
// users and left out of the flag lists.
var aliasFlags = map[string]bool{
	"pg-dsn": true, "pg-schema": true, "pg-host": true, "pg-port": true, "pg-user": true,
	"pg-database": true, "pg-password": true, "d": true,
}

func (c *conn) define(fs *flag.FlagSet, e *env) {
	fs.StringVar(&c.DSN, "dsn", "",
		"PostgreSQL connection string (`DSN`), key=value or URL (default $"+EnvDSN+", else libpq's PG* variables)")
	fs.StringVar(&c.DSN, "pg-dsn", "", "PGQueuer's spelling of --dsn")
	fs.StringVar(&c.Driver, "driver", DefaultDriver,
		"database/sql `driver`: pgx (jackc/pgx) or postgres (lib/pq)")
	c.parts = map[string]*string{}
	for _, p := range pgParts {
		v := new(string)
		c.parts[p[1]] = v
		fs.StringVar(v, p[0], "", "PGQueuer's connection flag; sets "+p[1]+" when --dsn is not given")
	}
	c.naming.define(fs, e)
}

func (c *conn) validate(e *env) error {
	switch c.Driver {
	case "pgx", "postgres":
	default:
		return usagef("unknown --driver %q: want pgx or postgres", c.Driver)
	}
	if err := c.naming.validate(); err != nil {
		return err
	}
	var kv []string
	for _, p := range pgParts {
		if v := *c.parts[p[1]]; v != "" {
			kv = append(kv, p[1]+"="+dsn.Quote(v))
		}
	}
	switch {
	case c.DSN != "":
		c.source = "--dsn"
		if len(kv) > 0 {
			return usagef("give either --dsn or the --pg-host, --pg-port… flags, not both")
		}
	case len(kv) > 0:
		// Unset keywords still come from the PG* variables.
		c.DSN, c.source = strings.Join(kv, " "), "the --pg-* flags"
	case e.getenv(EnvDSN) != "":
		c.DSN, c.source = e.getenv(EnvDSN), "$"+EnvDSN
	default:
		c.source = "the PG* environment variables"
	}
	return nil
}

// open opens the database and checks the connection within pingTimeout.
func (c *conn) open(ctx context.Context) (*sql.DB, error) {
	return openDB(ctx, c.Driver, c.DSN, c.source)
}

func openDB(ctx context.Context, driver, connString, source string) (*sql.DB, error) {
	db, err := openUnredacted(ctx, driver, connString, source)
	// The drivers may quote the connection string in their errors.
	return db, dsn.RedactError(err, connString)
}

func openUnredacted(ctx context.Context, driver, connString, source string) (*sql.DB, error) {
	db, err := sql.Open(driver, connString)
	if err != nil {
		return nil, fmt.Errorf("cannot open a %s connection (DSN from %s): %w", driver, source, err)
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		_ = db.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("cannot connect to PostgreSQL (DSN from %s): no answer within %v", source, pingTimeout)
		}
		return nil, fmt.Errorf("cannot connect to PostgreSQL (DSN from %s): %w", source, err)
	}
	return db, nil
}

// schemaHint rewrites an error that says pgq's objects are missing into one
// that tells what to run. It still matches pgq.ErrSchemaMissing.
func schemaHint(err error, n *naming) error {
	if err == nil || !errors.Is(err, pgq.ErrSchemaMissing) {
		return err
	}
	var se *pgq.SchemaError
	if errors.As(err, &se) {
		return err
	}
	flags := flagsFor(n)
	return &hintError{err: err, msg: fmt.Sprintf(
		"the pgq schema is not installed in this database%s: run `pgq install%s` first "+
			"(or `pgq upgrade%s` if part of it exists)", n.describe(), flags, flags)}
}

// hintError replaces an error's text with advice, keeping it for errors.Is.
type hintError struct {
	msg string
	err error
}

func (e *hintError) Error() string { return e.msg }
func (e *hintError) Unwrap() error { return e.err }
