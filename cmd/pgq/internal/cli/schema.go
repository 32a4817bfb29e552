package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// noArgs rejects positional arguments.
func noArgs(args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

// installCmd is `pgq install` and `pgq upgrade`.
type installCmd struct {
	verb       string // "install" or "upgrade"
	conn       conn
	durability pgq.Durability
	dryRun     bool
	noWidenID  bool
}

func (c *installCmd) define(fs *flag.FlagSet, e *env) {
	c.conn.define(fs, e)
	help := "`mode` of the tables: durable (all logged), balanced (log and statistics tables unlogged) or volatile (all unlogged)"
	if c.verb == "install" {
		help += "; durable when not given"
	} else {
		help += "; unchanged when not given"
	}
	fs.Var(&durabilityFlag{&c.durability}, "durability", help)
	fs.Var(&durabilityFlag{&c.durability}, "d", "PGQueuer's short form of --durability")
	fs.BoolVar(&c.dryRun, "dry-run", false, "print the SQL instead of running it (needs no database)")
	if c.verb == "upgrade" {
		fs.BoolVar(&c.noWidenID, "no-widen-id", false,
			"leave int4 id columns and sequences (PGQueuer before 1.1.1) as they are: widening them rewrites each table under an ACCESS EXCLUSIVE lock")
	}
}

func (c *installCmd) validate(args []string, e *env) error {
	if err := noArgs(args); err != nil {
		return err
	}
	return c.conn.validate(e)
}

func (c *installCmd) opts() []pgq.SchemaOption {
	o := c.conn.schemaOpts()
	if c.durability != 0 {
		o = append(o, pgq.WithDurability(c.durability))
	}
	if c.noWidenID {
		o = append(o, pgq.WithoutIDWidening())
	}
	return o
}

func (c *installCmd) run(ctx context.Context, e *env) error {
	if c.dryRun {
		return printSQL(e.stdout, true, c.conn.schemaOpts())
	}
	db, err := c.conn.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	var narrow []string
	if c.verb == "install" {
		err = pgq.Install(ctx, db, c.opts()...)
	} else {
		if narrow, err = pgq.NarrowIDs(ctx, db, c.conn.schemaOpts()...); err != nil {
			return err
		}
		if len(narrow) > 0 && !c.noWidenID {
			fmt.Fprintf(e.stdout, "widening the int4 ids of %s to bigint: each table is rewritten under an ACCESS EXCLUSIVE lock\n",
				strings.Join(narrow, ", "))
		}
		err = pgq.Upgrade(ctx, db, c.opts()...)
	}
	if err != nil {
		return err
	}
	if len(narrow) > 0 && c.noWidenID {
		fmt.Fprintf(e.stdout, "left the int4 ids of %s as they are (--no-widen-id); run pgq upgrade without it to widen them\n",
			strings.Join(narrow, ", "))
	}
	d := c.durability
	if d == 0 && c.verb == "install" {
		d = pgq.Durable
	}
	msg := "pgq schema installed" + c.conn.describe()
	if c.verb == "upgrade" {
		msg = "pgq schema is up to date" + c.conn.describe()
	}
	if d != 0 {
		msg += ", durability " + d.String()
	}
	fmt.Fprintln(e.stdout, msg)
	return nil
}

// uninstallCmd is `pgq uninstall`.
type uninstallCmd struct {
	conn   conn
	dryRun bool
}

func (c *uninstallCmd) define(fs *flag.FlagSet, e *env) {
	c.conn.define(fs, e)
	fs.BoolVar(&c.dryRun, "dry-run", false, "print the SQL instead of running it (needs no database)")
}

func (c *uninstallCmd) validate(args []string, e *env) error {
	if err := noArgs(args); err != nil {
		return err
	}
	return c.conn.validate(e)
}

func (c *uninstallCmd) run(ctx context.Context, e *env) error {
	if c.dryRun {
		return printSQL(e.stdout, false, c.conn.schemaOpts())
	}
	db, err := c.conn.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := pgq.Uninstall(ctx, db, c.conn.schemaOpts()...); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "pgq schema uninstalled"+c.conn.describe())
	return nil
}

// verifyCmd is `pgq verify`.
type verifyCmd struct {
	conn   conn
	expect string // "present" or "absent", as PGQueuer's --expect
}

func (c *verifyCmd) define(fs *flag.FlagSet, e *env) {
	c.conn.define(fs, e)
	fs.StringVar(&c.expect, "expect", "present",
		"`state` to check for: present (every object exists) or absent (none does), as PGQueuer's --expect")
}

func (c *verifyCmd) validate(args []string, e *env) error {
	if err := noArgs(args); err != nil {
		return err
	}
	if c.expect != "present" && c.expect != "absent" {
		return usagef("invalid value %q for --expect: want present or absent", c.expect)
	}
	return c.conn.validate(e)
}

func (c *verifyCmd) run(ctx context.Context, e *env) error {
	db, err := c.conn.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	err = pgq.Verify(ctx, db, c.conn.schemaOpts()...)
	var se *pgq.SchemaError
	if c.expect == "absent" {
		return c.checkAbsent(e, err)
	}
	if errors.As(err, &se) {
		for _, m := range se.Missing {
			fmt.Fprintln(e.stdout, "missing "+m)
		}
		if se.Hint != "" {
			return fmt.Errorf("schema %s is incomplete (%d missing%s); %s",
				se.Schema, len(se.Missing), c.conn.describe(), se.Hint)
		}
		fix := "pgq upgrade"
		if slices.Contains(se.Missing, "table "+c.conn.Prefix+sqlname.JobTable) {
			fix = "pgq install" // nothing of pgq is there
		}
		return fmt.Errorf("schema %s is incomplete (%d missing%s): run `%s%s`",
			se.Schema, len(se.Missing), c.conn.describe(), fix, flagsFor(&c.conn.naming))
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "schema OK"+c.conn.describe())
	return nil
}

// checkAbsent is `verify --expect absent`: it succeeds when none of pgq's
// tables, type and function exists (as after uninstall).
func (c *verifyCmd) checkAbsent(e *env, err error) error {
	var se *pgq.SchemaError
	if err != nil && !errors.As(err, &se) {
		return err
	}
	n := sqlname.Names{Prefix: c.conn.Prefix}
	var present []string
	for _, obj := range []string{
		"table " + n.Name(sqlname.JobTable), "table " + n.Name(sqlname.LogTable),
		"table " + n.Name(sqlname.StatisticsTable), "table " + n.Name(sqlname.SchedulesTable),
		"type " + n.Name(sqlname.StatusType), "function " + n.Name(sqlname.Function),
	} {
		if se == nil || !slices.Contains(se.Missing, obj) {
			present = append(present, obj)
		}
	}
	if len(present) > 0 {
		for _, p := range present {
			fmt.Fprintln(e.stdout, "unexpected "+p)
		}
		return fmt.Errorf("pgq objects are still installed%s (%d found): run `pgq uninstall%s` to remove them",
			c.conn.describe(), len(present), flagsFor(&c.conn.naming))
	}
	fmt.Fprintln(e.stdout, "no pgq objects found"+c.conn.describe())
	return nil
}

func flagsFor(n *naming) string {
	s := ""
	if n.Prefix != "" {
		s += " --prefix " + n.Prefix
	}
	if n.Schema != "" {
		s += " --schema " + n.Schema
	}
	return s
}

// sqlCmd is `pgq sql install|upgrade|uninstall|grants`.
type sqlCmd struct {
	naming naming
	what   string // install, uninstall or grants
	role   string // grants: the role to grant to
	kind   string // grants: producer, worker, watcher or admin
}

func (c *sqlCmd) define(fs *flag.FlagSet, e *env) {
	c.naming.define(fs, e)
	fs.StringVar(&c.role, "role", "", "grants: the database `role` to grant to")
	fs.StringVar(&c.kind, "for", "", "grants: what the role runs: producer, worker, watcher or admin")
}

func (c *sqlCmd) validate(args []string, e *env) error {
	if len(args) == 0 {
		return usagef("missing what to print: install, upgrade, uninstall or grants")
	}
	switch args[0] {
	case "install", "upgrade":
		c.what = "install"
	case "uninstall", "grants":
		c.what = args[0]
	default:
		return usagef("unknown SQL %q: want install, upgrade, uninstall or grants", args[0])
	}
	if err := noArgs(args[1:]); err != nil {
		return err
	}
	if c.what == "grants" {
		if c.role == "" {
			return usagef("sql grants: missing --role ROLE")
		}
		if c.kind == "" {
			return usagef("sql grants: missing --for producer|worker|watcher|admin")
		}
		if _, err := pgq.ParseRole(c.kind); err != nil {
			return usagef("sql grants: unknown --for %q: want producer, worker, watcher or admin", c.kind)
		}
	} else if c.role != "" || c.kind != "" {
		return usagef("--role and --for belong to sql grants, not sql %s", args[0])
	}
	return c.naming.validate()
}

func (c *sqlCmd) run(_ context.Context, e *env) error {
	if c.what == "grants" {
		kind, _ := pgq.ParseRole(c.kind)
		text, err := pgq.GrantsSQL(c.role, kind, c.naming.schemaOpts()...)
		if err != nil {
			return err
		}
		_, err = io.WriteString(e.stdout, text)
		return err
	}
	return printSQL(e.stdout, c.what == "install", c.naming.schemaOpts())
}

func printSQL(w io.Writer, up bool, opts []pgq.SchemaOption) error {
	text, err := pgq.InstallSQL(opts...)
	if !up {
		text, err = pgq.UninstallSQL(opts...)
	}
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, text)
	return err
}
