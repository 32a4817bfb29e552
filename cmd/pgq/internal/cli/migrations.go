package cli

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// migrationsCmd is `pgq migrations export DIR`.
type migrationsCmd struct {
	naming naming
	dir    string
}

func (c *migrationsCmd) define(fs *flag.FlagSet, e *env) { c.naming.define(fs, e) }

func (c *migrationsCmd) validate(args []string, e *env) error {
	if len(args) == 0 {
		return usagef("missing what to do: export")
	}
	if args[0] != "export" {
		return usagef("unknown migrations command %q: want export", args[0])
	}
	if len(args) < 2 || args[1] == "" {
		return usagef("missing the directory to export to")
	}
	c.dir = args[1]
	if err := noArgs(args[2:]); err != nil {
		return err
	}
	return c.naming.validate()
}

func (c *migrationsCmd) run(_ context.Context, e *env) error {
	opts := c.naming.opts()
	fsys, err := pgq.MigrationsFor(opts...)
	if err != nil {
		return err
	}
	table, err := pgq.MigrationsTableFor(opts...)
	if err != nil {
		return err
	}
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return err
	}
	// pgq's migrations need a directory of their own: goose run on a
	// directory with the app's migrations too would record both sets in
	// one table.
	existing, err := filepath.Glob(filepath.Join(c.dir, "*.sql"))
	if err != nil {
		return err
	}
	var others []string
	for _, p := range existing {
		if !slices.Contains(names, filepath.Base(p)) {
			others = append(others, filepath.Base(p))
		}
	}
	if len(others) > 0 {
		return fmt.Errorf("%s holds other migrations (%s): export pgq's to a directory of their own, "+
			"run by goose with -table %s", c.dir, strings.Join(others, ", "), table)
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		path := filepath.Join(c.dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "wrote "+path)
	}
	fmt.Fprintf(e.stdout, "\nRun them with pgq's own version table, %s (not your app's goose_db_version):\n", table)
	if c.naming.Schema != "" {
		fmt.Fprintf(e.stdout, "  psql \"$DATABASE_URL\" -c 'CREATE SCHEMA IF NOT EXISTS %s'\n",
			sqlname.QuoteIdent(c.naming.Schema))
	}
	fmt.Fprintf(e.stdout, "  %s\n", gooseCommand(c.dir, table))
	fmt.Fprintf(e.stdout, "If an earlier pipeline ran pgq's migrations with goose_db_version, run\n"+
		"`pgq upgrade%s` once first: it moves their records to %s,\n"+
		"so that your own migrations with the same numbers run.\n", flagsFor(&c.naming), table)
	return nil
}

// gooseCommand is the goose command line that runs the migrations in dir
// with the version table.
func gooseCommand(dir, table string) string {
	return "goose -dir " + shellQuote(dir) + " -table " + table + " postgres \"$DATABASE_URL\" up"
}

// shellQuote quotes s for a POSIX shell unless it needs no quotes.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
