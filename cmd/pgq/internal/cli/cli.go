// Package cli implements the pgq command: schema management (install,
// upgrade, uninstall, verify, sql, migrations export), jobs (queue, failed, requeue, cancel,
// schedules), watching a queue (dashboard, listen), a demo and the
// benchmarks.
//
// Every command is an options struct with flags, validation and a run
// method that writes to the writers it is given, so that tests can run each
// command, including the ones that must fail, without a subprocess.
//
// Failures end with exactly one line on standard error that starts with
// "pgq: ". Usage errors (unknown command or flag, missing or bad argument)
// exit with code 2, runtime errors (connection, database, schema) with 1.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Exit codes of Main.
const (
	ExitOK      = 0 // success
	ExitFailure = 1 // a runtime error: connection, database, schema
	ExitUsage   = 2 // a usage error: unknown command or flag, bad or missing argument
)

// env is what a command may touch of the outside world.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one subcommand: its flags, its positional arguments and its run.
type command interface {
	// define registers the command's flags on fs; defaults may come from e.
	define(fs *flag.FlagSet, e *env)
	// validate takes the positional arguments and checks everything that can
	// be checked without a database. Its errors are usage errors.
	validate(args []string, e *env) error
	// run does the work.
	run(ctx context.Context, e *env) error
}

// spec describes a subcommand for dispatch and help.
type spec struct {
	name    string
	args    string // positional arguments, for the usage line
	summary string // one line for `pgq help`
	details string // paragraphs for `pgq CMD -h`
	group   string
	new     func() command
	// raw commands get their arguments unparsed (bench has its own flags).
	raw func(ctx context.Context, args []string, e *env) error
}

// The command groups of `pgq help`, in order.
const (
	groupSchema = "Schema"
	groupJobs   = "Jobs"
	groupWatch  = "Watch"
	groupTry    = "Try it"
)

func commands() []spec {
	return []spec{
		{name: "install", group: groupSchema,
			summary: "create pgq's tables, enum, indexes and trigger",
			details: "Creates the pgq schema (the tables PGQueuer uses, so Python and Go workers can share\n" +
				"the queue). Fails, changing nothing, when the job table already exists: use\n" +
				"`pgq upgrade` for that. With --dry-run it prints the SQL instead.",
			new: func() command { return &installCmd{verb: "install"} }},
		{name: "upgrade", group: groupSchema,
			summary: "bring the schema up to date (idempotent; adopts a PGQueuer schema)",
			details: "Creates whatever is missing and leaves the rest, so it is safe to run on every\n" +
				"deploy. It also adopts a schema created by Python's PGQueuer. Without\n" +
				"--durability the tables keep their current durability.",
			new: func() command { return &installCmd{verb: "upgrade"} }},
		{name: "uninstall", group: groupSchema,
			summary: "drop every pgq object, with all jobs and logs",
			details: "Drops pgq's tables (with their rows), enum, trigger and function.\n" +
				"With --dry-run it prints the SQL instead.",
			new: func() command { return &uninstallCmd{} }},
		{name: "verify", group: groupSchema,
			summary: "check that every pgq object exists",
			details: "Prints \"schema OK\", or lists the missing objects and exits with code 1.",
			new:     func() command { return &verifyCmd{} }},
		{name: "sql", args: "install|upgrade|uninstall|grants", group: groupSchema,
			summary: "print the SQL of install, upgrade or uninstall, or a role's grants (no database needed)",
			details: "Prints the SQL that install, upgrade or uninstall would run, for review or for\n" +
				"your own migration tool. upgrade prints the install SQL: every statement is\n" +
				"idempotent. grants --role ROLE --for producer|worker|watcher|admin prints the\n" +
				"GRANTs that give ROLE only what that part needs (run them as the owner of\n" +
				"pgq's objects, after install).",
			new: func() command { return &sqlCmd{} }},
		{name: "migrations", args: "export DIR", group: groupSchema,
			summary: "write pgq's goose migrations to DIR, for the goose command line",
			details: "Writes pgq's goose migration files to DIR (created if missing), rewritten for\n" +
				"--prefix and --schema, and prints the goose command that runs them. Run them\n" +
				"with pgq's own version table (the -table it prints), not goose's default\n" +
				"goose_db_version: pgq's migrations are numbered from 00001 like your app's, so\n" +
				"in a shared table goose would skip one set as applied. DIR must not hold other\n" +
				"migrations. From Go, use pgq.GooseProvider instead.",
			new: func() command { return &migrationsCmd{} }},
		{name: "queue", args: "ENTRYPOINT [PAYLOAD]", group: groupJobs,
			summary: "enqueue a job and print its id",
			details: "Enqueues a job for ENTRYPOINT with PAYLOAD as its bytes (\"-\" reads the payload\n" +
				"from standard input; without PAYLOAD the payload is NULL) and prints the new job\n" +
				"id, one per line with --count.",
			new: func() command { return &queueCmd{} }},
		{name: "failed", group: groupJobs,
			summary: "list the jobs held after failing, with their last error",
			details: "Lists the jobs that are held (status failed) after their last attempt failed,\n" +
				"most recently failed first, with the error of that attempt. `pgq requeue` puts\n" +
				"them back in the queue, `pgq cancel` drops them.",
			new: func() command { return &failedCmd{} }},
		{name: "requeue", args: "IDS...", group: groupJobs,
			summary: "put held (failed) jobs back in the queue",
			details: "Puts the held jobs with these ids back in the queue, due now, with their\n" +
				"attempt count reset to 0 (a fresh set of retries, as PGQueuer does), and prints\n" +
				"each id requeued. Ids may also be given as 1,2,3.\n" +
				"Exits with code 1, naming them, when some ids are not held jobs.",
			new: func() command { return &requeueCmd{} }},
		{name: "cancel", args: "IDS...", group: groupJobs,
			summary: "cancel jobs: queued, held or running",
			details: "Cancels the jobs with these ids: they are removed and logged canceled at once;\n" +
				"a worker running one cancels its handler's context. Prints each id canceled;\n" +
				"exits with code 1, naming them, when some ids had already finished or never\n" +
				"existed.",
			new: func() command { return &cancelCmd{} }},
		{name: "pause", args: "ENTRYPOINT", group: groupJobs,
			summary: "stop pgq's workers from claiming an entrypoint's jobs, fleet-wide",
			details: "Pauses ENTRYPOINT in the database: no pgq worker, in any process, claims its\n" +
				"jobs until `pgq resume`; running jobs finish and enqueueing goes on. The pause\n" +
				"survives restarts and shows in `pgq dashboard`. An entrypoint that does not\n" +
				"exist yet may be paused. PGQueuer's workers do not honour it.",
			new: func() command { return &pauseCmd{} }},
		{name: "resume", args: "ENTRYPOINT", group: groupJobs,
			summary: "undo `pgq pause`: workers claim the entrypoint's jobs again at once",
			details: "Resumes ENTRYPOINT and wakes idle workers with a notification on the queue's\n" +
				"channel. Resuming an entrypoint that is not paused changes nothing.",
			new: func() command { return &pauseCmd{resume: true} }},
		{name: "schedules", args: "[--remove ID|ENTRYPOINT ...]", group: groupJobs,
			summary: "list cron schedules, or remove some",
			details: "Lists the schedules of the schedules table (pgq's and PGQueuer's) with their\n" +
				"status, next run and last run, in UTC. With --remove it deletes the schedules\n" +
				"with the given ids or entrypoints instead, and exits with code 1 when one of\n" +
				"them matches no schedule.",
			new: func() command { return &schedulesCmd{} }},
		{name: "dashboard", group: groupWatch,
			summary: "show queue depth, throughput and recent errors, live",
			details: "Shows the jobs waiting by entrypoint, priority and status, how long the oldest\n" +
				"due job has waited, the status changes and jobs finished per second over the\n" +
				"last minute (the work of every worker, pgq's and PGQueuer's), and the latest\n" +
				"errors, refreshed every --interval until Ctrl-C. On a terminal each refresh\n" +
				"redraws the screen; otherwise each is printed after the last. --once prints\n" +
				"the tables once, with fixed columns, for scripts.",
			new: func() command { return &dashboardCmd{} }},
		{name: "listen", group: groupWatch,
			summary: "print the events on the queue's channel as they come",
			details: "Listens on the queue's NOTIFY channel (ch_pgqueuer, with --prefix) and prints\n" +
				"each event on one line: its type; the operation and table, the job ids or the\n" +
				"worker id; and when it was sent. A payload that is not a known event is\n" +
				"printed as it is after \"unparsed\". Runs until Ctrl-C. It connects with pgx\n" +
				"whatever --driver says.",
			new: func() command { return &listenCmd{} }},
		{name: "web", group: groupWatch,
			summary: "serve a live web dashboard: queue, jobs, held jobs, schedules, events",
			details: "Serves the dashboard of package pgqweb on --addr (127.0.0.1:8080): the queue by\n" +
				"entrypoint and status, jobs per second and errors over the last hour, workers,\n" +
				"jobs (filtered, paginated, one by one with their history), held jobs,\n" +
				"schedules and the queue's events, updated live. It is read-only unless\n" +
				"--allow-actions is given, which needs --auth user:password (or $PGQ_WEB_AUTH):\n" +
				"then operators may cancel, delete and requeue jobs, those ticked or all that\n" +
				"match a filter. Runs until Ctrl-C.",
			new: func() command { return &webCmd{} }},
		{name: "demo", group: groupTry,
			summary: "enqueue and run thousands of jobs on a throwaway PostgreSQL",
			details: "Enqueues --jobs jobs over a few demo entrypoints, works them with --workers\n" +
				"workers, waits for every job with a CompletionWatcher and prints the outcome.\n" +
				"Without --dsn or PGQ_DSN it starts a throwaway PostgreSQL server and deletes it\n" +
				"afterwards; with one, it installs (upgrades) the schema there and runs its jobs\n" +
				"under the entrypoints demo.*.",
			new: func() command { return &demoCmd{} }},
		{name: "chaos", group: groupTry,
			summary: "run workers and producers under injected faults; check nothing is lost",
			details: "Runs --workers worker processes (this program, again) and --producers producers\n" +
				"for --duration while injecting faults at random (seeded by --seed, each one\n" +
				"logged on standard error): SIGKILL and restart of a worker, SIGSTOP longer than\n" +
				"the heartbeat timeout, pg_terminate_backend of the workers' connections (claims,\n" +
				"outcome writes, heartbeats, listeners, handlers) and the producers', fast and\n" +
				"immediate (crash) server restarts, and cancellations of running jobs. Each\n" +
				"handler writes a ledger row in the transaction of its side effect. Then it\n" +
				"reports, per fault kind, the jobs acknowledged, finished, lost, stuck and run\n" +
				"more than once (and whether each repeat lies in a crash window), the throughput\n" +
				"with and without faults and the time to recover after a server restart; it\n" +
				"exits with code 1 when a job was lost or stuck, a repeat is unexplained, or a job\n" +
				"ended canceled that nobody canceled. Without --dsn or PGQ_DSN it starts a\n" +
				"throwaway server (the only one it restarts); with one, it installs (upgrades)\n" +
				"the schema there, runs only jobs of entrypoint pgq.chaos, terminates only its\n" +
				"own connections, and keeps its tables pgq_chaos_ledger and pgq_chaos_acked.\n" +
				"docs/chaos.md defines every figure.",
			new: func() command { return &chaosCmd{} }},
		{name: "bench", args: "[flags]", group: groupTry,
			summary: "measure enqueue and processing throughput",
			raw:     runBench},
	}
}

func lookup(name string) (spec, bool) {
	for _, s := range commands() {
		if s.name == name {
			return s, true
		}
	}
	return spec{}, false
}

// Main runs the pgq command with args (without the program name) and
// returns the process exit code: ExitOK, ExitFailure or ExitUsage. ctx
// should end on SIGINT/SIGTERM; commands then stop and clean up.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return report(e, dispatch(ctx, args, e))
}

func dispatch(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 {
		printUsage(e.stdout)
		return usagef("missing command: run `pgq help` for the list")
	}
	// Flags before the command (PGQueuer's global options: `pgq --pg-dsn
	// … install`) go to the command.
	lead, args := leadingFlags(args)
	if len(args) == 0 {
		if len(lead) > 0 && isHelp(lead[len(lead)-1]) {
			printUsage(e.stdout)
			return nil
		}
		return usagef("missing command after %s: run `pgq help` for the list", strings.Join(lead, " "))
	}
	name := args[0]
	rest := append(slices.Clone(lead), args[1:]...)
	if s, ok := lookup(name); ok && s.raw != nil {
		// A raw command parses its own arguments, which may begin with a
		// positional one (`bench drain`): flags given before go last.
		rest = append(slices.Clone(args[1:]), lead...)
	}
	switch name {
	case "help", "-h", "-help", "--help":
		if name == "help" && len(rest) > 0 {
			s, ok := lookup(rest[0])
			if !ok {
				return usagef("help: unknown command %q: run `pgq help` for the list", rest[0])
			}
			return runCommand(ctx, s, []string{"-h"}, e)
		}
		printUsage(e.stdout)
		return nil
	}
	s, ok := lookup(name)
	if !ok {
		return usagef("unknown command %q: run `pgq help` for the list", name)
	}
	return runCommand(ctx, s, rest, e)
}

func isHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

// leadingFlags splits off the flags before the command. A flag without
// "=" takes the next argument as its value, except --dry-run and help.
func leadingFlags(args []string) (lead, rest []string) {
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" && args[i] != "--" {
		a := args[i]
		name := strings.TrimLeft(a, "-")
		switch {
		case isHelp(a):
			return args[:i+1], nil
		case strings.Contains(a, "=") || name == "dry-run":
			i++
		default:
			i += 2
		}
	}
	i = min(i, len(args))
	return args[:i], args[i:]
}

func runCommand(ctx context.Context, s spec, args []string, e *env) error {
	if s.raw != nil {
		return s.raw(ctx, args, e)
	}
	cmd := s.new()
	fs := flag.NewFlagSet("pgq "+s.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	cmd.define(fs, e)
	pos, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		printCommandUsage(e.stdout, s, fs)
		return nil
	}
	if err != nil {
		return flagError(s.name, err)
	}
	if err := cmd.validate(pos, e); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			ue.msg = s.name + ": " + ue.msg + " (see `pgq " + s.name + " -h`)"
			return ue
		}
		return fmt.Errorf("%s: %w", s.name, err)
	}
	if err := cmd.run(ctx, e); err != nil {
		if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			return fmt.Errorf("%s: interrupted", s.name)
		}
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// usageError is a mistake in the command line; it exits with ExitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError ends the command with code and, unless msg is empty, one line.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// report prints err as one line on stderr and returns the exit code.
func report(e *env, err error) int {
	if err == nil {
		return ExitOK
	}
	code := ExitFailure
	var ue *usageError
	var xe *exitError
	switch {
	case errors.As(err, &ue):
		code = ExitUsage
	case errors.As(err, &xe):
		code = xe.code
		if xe.msg == "" {
			return code
		}
	}
	fmt.Fprintln(e.stderr, "pgq: "+oneLine(err.Error()))
	return code
}

// oneLine makes an error message one line without repeated "pgq: " prefixes
// (the library's errors carry their own).
func oneLine(msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	for strings.HasPrefix(msg, "pgq: ") {
		msg = strings.TrimPrefix(msg, "pgq: ")
	}
	return strings.ReplaceAll(msg, ": pgq: ", ": ")
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `pgq is a PostgreSQL job queue for Go, compatible with Python's PGQueuer.

Usage: pgq COMMAND [ARGUMENTS] [FLAGS]
`)
	group := ""
	for _, s := range commands() {
		if s.group != group {
			group = s.group
			fmt.Fprintf(w, "\n%s:\n", group)
		}
		fmt.Fprintf(w, "  %-11s %s\n", s.name, s.summary)
	}
	fmt.Fprint(w, "\n"+
		"Database commands connect with --dsn, else $PGQ_DSN, else libpq's PG* variables\n"+
		"(PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, PGSSLMODE). --driver picks pgx\n"+
		"(default) or postgres (lib/pq); --prefix and --schema (default $PGQUEUER_PREFIX,\n"+
		"$PGQUEUER_SCHEMA) name pgq's objects as PGQueuer does.\n"+
		"\n"+
		"New here? Run `pgq demo`. For a command's flags: pgq COMMAND -h\n")
}

func printCommandUsage(w io.Writer, s spec, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: pgq %s", s.name)
	if s.args != "" {
		fmt.Fprintf(w, " %s", s.args)
	}
	fmt.Fprintf(w, " [flags]\n\n%s.\n", upperFirst(s.summary))
	if s.details != "" {
		fmt.Fprintf(w, "\n%s\n", s.details)
	}
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if !hasFlags {
		return
	}
	fmt.Fprint(w, "\nFlags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		if aliasFlags[f.Name] {
			return
		}
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n      %s", line, usage)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
	var aliases []string
	fs.VisitAll(func(f *flag.Flag) {
		if aliasFlags[f.Name] {
			aliases = append(aliases, "-"+strings.Repeat("-", min(1, len(f.Name)-1))+f.Name)
		}
	})
	if len(aliases) > 0 {
		fmt.Fprintf(w, "\nPGQueuer's spellings work too: %s.\n", strings.Join(aliases, ", "))
	}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
