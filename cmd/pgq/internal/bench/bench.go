// Package bench implements `pgq bench`, which measures pgq on a real
// PostgreSQL server: how fast a backlog drains, the throughput of producers
// and workers running together, the latency of one job through an idle
// queue, what the log's (job_id, status) index buys the completion
// watcher, and the plan of the claim statement on a deep queue.
//
// Each benchmark is also an exported function (Drain, Throughput, Latency,
// Index, ExplainClaim) for use from `go test -bench`. They need a database
// with the pgq schema (default names) and work only on jobs of their own
// entrypoint.
package bench

import (
	pgdsn "github.com/pgq-dev/pgq/internal/dsn"

	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	_ "github.com/lib/pq"              // the "postgres" driver

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/pgcluster"
)

// EnvDSN is the environment variable read when --dsn is not given.
const EnvDSN = "PGQ_DSN"

// options holds every flag; each benchmark registers the ones it uses.
type options struct {
	dsn, driver, durability string
	json, verbose           bool
	cpuProfile, memProfile  string
	timeout                 time.Duration
	maxIdleConns            int

	jobs, enqueueBatch, workers, producers, batchSize, concurrency int
	samples, lookupIDs, repeats, consume                           int
	logRows                                                        int64
	analyze, vacuum, syncClaims, syncOutcomes                      bool
	concurrencyTuning                                              bool
	duration, interval, warmup                                     time.Duration
	reportEvery, logRetention, statsInterval                       time.Duration
	handler, handlerWait                                           string
	rate                                                           float64
	handlerTime                                                    time.Duration
	concurrencyLimit                                               int
	statementTimes                                                 bool
	processes                                                      int
	workerGOMAXPROCS                                               int
}

// benchmark is one subcommand.
type benchmark struct {
	name, summary string
	flags         func(fs *flag.FlagSet, o *options)
	check         func(o *options) error
	run           func(ctx context.Context, e *env, o *options) (any, error)
}

var benchmarks = []benchmark{
	{
		name:    "drain",
		summary: "enqueue --jobs no-op jobs, then time workers draining them",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.IntVar(&o.jobs, "jobs", DefaultJobs, "jobs to enqueue and drain")
			fs.IntVar(&o.enqueueBatch, "enqueue-batch", DefaultEnqueueBatch, "jobs per EnqueueBatch call")
			fs.BoolVar(&o.analyze, "analyze", false, "ANALYZE the job table after enqueuing (default: leave statistics to autovacuum)")
			fs.BoolVar(&o.vacuum, "vacuum", true, "VACUUM the job table before enqueuing, clearing dead rows of earlier runs (as River's bench starts with VACUUM FULL)")
			fs.IntVar(&o.concurrencyLimit, "concurrency-limit", 0, "the entrypoint's fleet-wide concurrency limit (WithConcurrencyLimit; 0: none)")
			fs.IntVar(&o.processes, "processes", 0, "run the workers in this many OS processes (each with --workers QueueManagers; 0: in this one)")
			fs.IntVar(&o.workerGOMAXPROCS, "worker-gomaxprocs", 0,
				"GOMAXPROCS of each worker process with --processes (0: share the cores, cores ÷ processes; -1: Go's default, every core)")
			workerFlags(fs, o)
		},
		check: func(o *options) error {
			if o.concurrencyLimit < 0 {
				return fmt.Errorf("--concurrency-limit must be 0 or more, got %d", o.concurrencyLimit)
			}
			if o.processes < 0 {
				return fmt.Errorf("--processes must be 0 or more, got %d", o.processes)
			}
			if o.workerGOMAXPROCS < -1 {
				return fmt.Errorf("--worker-gomaxprocs must be -1, 0 or more, got %d", o.workerGOMAXPROCS)
			}
			return positives(map[string]int{"--jobs": o.jobs, "--enqueue-batch": o.enqueueBatch,
				"--workers": o.workers, "--batch-size": o.batchSize, "--concurrency": o.concurrency})
		},
		run: func(ctx context.Context, e *env, o *options) (any, error) {
			return ptr(Drain(ctx, e.db, DrainConfig{Jobs: o.jobs, EnqueueBatch: o.enqueueBatch, Workers: o.workers,
				BatchSize: o.batchSize, Concurrency: o.concurrency, ListenDSN: e.listenDSN, Logger: e.logger,
				Analyze: o.analyze, Vacuum: o.vacuum, SyncClaims: o.syncClaims, SyncOutcomes: o.syncOutcomes,
				NoConcurrencyTuning: !o.concurrencyTuning,
				ConcurrencyLimit:    o.concurrencyLimit,
				Handler:             HandlerConfig{Kind: o.handler, Time: o.handlerTime, Wait: o.handlerWait},
				Processes:           o.processes, DSN: e.dsn, Driver: o.driver, WorkerGOMAXPROCS: o.workerGOMAXPROCS}))
		},
	},
	{
		name:    "throughput",
		summary: "run --producers and --workers together for --duration",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.DurationVar(&o.duration, "duration", DefaultDuration, "how long to run")
			fs.DurationVar(&o.warmup, "warmup", 0,
				"run this long first, unmeasured (pools fill, caches warm; rates, latencies and --statement-times leave it out)")
			fs.IntVar(&o.producers, "producers", DefaultProducers, "goroutines enqueuing in a loop")
			fs.IntVar(&o.enqueueBatch, "enqueue-batch", DefaultEnqueueBatch, "jobs per EnqueueBatch call")
			fs.Float64Var(&o.rate, "rate", 0, "jobs enqueued per second, all producers together (0: as fast as they can)")
			fs.DurationVar(&o.reportEvery, "report-every", 0,
				"print a row every so long (rates, enqueue→start, table and index sizes, client memory), "+
					"and compare the first tenth of the run with the last (0: none)")
			fs.DurationVar(&o.logRetention, "log-retention", 0,
				"the workers delete log rows older than this (WithLogRetention; 0: the library's default, keep the log)")
			fs.DurationVar(&o.statsInterval, "stats-interval", 0,
				"the workers fold the log into the statistics this often (WithStatisticsInterval; 0: the library's default)")
			workerFlags(fs, o)
		},
		check: func(o *options) error {
			if o.duration <= 0 {
				return fmt.Errorf("--duration must be positive, got %v", o.duration)
			}
			if o.rate < 0 {
				return fmt.Errorf("--rate must not be negative, got %v", o.rate)
			}
			if o.warmup < 0 {
				return fmt.Errorf("--warmup must not be negative, got %v", o.warmup)
			}
			switch {
			case o.reportEvery < 0:
				return fmt.Errorf("--report-every must not be negative, got %v", o.reportEvery)
			case o.reportEvery > o.duration:
				return fmt.Errorf("--report-every %v is longer than --duration %v", o.reportEvery, o.duration)
			case o.logRetention < 0:
				return fmt.Errorf("--log-retention must not be negative, got %v", o.logRetention)
			case o.statsInterval < 0:
				return fmt.Errorf("--stats-interval must not be negative, got %v", o.statsInterval)
			}
			return positives(map[string]int{"--producers": o.producers, "--enqueue-batch": o.enqueueBatch,
				"--workers": o.workers, "--batch-size": o.batchSize, "--concurrency": o.concurrency})
		},
		run: func(ctx context.Context, e *env, o *options) (any, error) {
			return ptr(Throughput(ctx, e.db, ThroughputConfig{Duration: o.duration, Warmup: o.warmup, Producers: o.producers, Rate: o.rate,
				EnqueueBatch: o.enqueueBatch, Workers: o.workers, BatchSize: o.batchSize,
				Concurrency: o.concurrency, SyncClaims: o.syncClaims, SyncOutcomes: o.syncOutcomes, ListenDSN: e.listenDSN, Logger: e.logger,
				NoConcurrencyTuning: !o.concurrencyTuning,
				Handler:             HandlerConfig{Kind: o.handler, Time: o.handlerTime, Wait: o.handlerWait}, Warmed: e.markStatementLog,
				ReportEvery: o.reportEvery, Report: e.report, LogRetention: o.logRetention, StatsInterval: o.statsInterval}))
		},
	},
	{
		name:    "latency",
		summary: "one job at a time through an idle queue: enqueue→start and end→WaitFor",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.IntVar(&o.samples, "samples", DefaultSamples, "jobs to time")
			fs.DurationVar(&o.interval, "interval", 0, "pause between samples (0: back to back)")
			commitFlags(fs, o)
		},
		check: func(o *options) error {
			if o.interval < 0 {
				return fmt.Errorf("--interval must not be negative, got %v", o.interval)
			}
			return positives(map[string]int{"--samples": o.samples})
		},
		run: func(ctx context.Context, e *env, o *options) (any, error) {
			return ptr(Latency(ctx, e.db, LatencyConfig{Samples: o.samples, Interval: o.interval, SyncClaims: o.syncClaims, SyncOutcomes: o.syncOutcomes,
				ListenDSN: e.listenDSN, Logger: e.logger}))
		},
	},
	{
		name:    "index",
		summary: "time the watcher's status look-up with and without pgqueuer_log_job_id_status",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.Int64Var(&o.logRows, "log-rows", DefaultLogRows, "fill the log up to this many rows")
			fs.IntVar(&o.lookupIDs, "lookup-ids", DefaultLookupIDs, "job ids per look-up")
			fs.IntVar(&o.repeats, "repeats", DefaultRepeats, "timed look-ups per case")
		},
		check: func(o *options) error {
			if o.logRows < 1 {
				return fmt.Errorf("--log-rows must be at least 1, got %d", o.logRows)
			}
			return positives(map[string]int{"--lookup-ids": o.lookupIDs, "--repeats": o.repeats})
		},
		run: func(ctx context.Context, e *env, o *options) (any, error) {
			return ptr(Index(ctx, e.db, IndexConfig{LogRows: o.logRows, LookupIDs: o.lookupIDs, Repeats: o.repeats,
				RemoveFill: e.server != "throwaway"}))
		},
	},
	{
		name:    "explain",
		summary: "EXPLAIN (ANALYZE, BUFFERS) of the claim statement on a deep queue",
		flags: func(fs *flag.FlagSet, o *options) {
			fs.IntVar(&o.jobs, "jobs", DefaultExplainJobs, "queued jobs")
			fs.IntVar(&o.batchSize, "batch-size", pgq.DefaultBatchSize, "the claim's batch size")
			fs.IntVar(&o.consume, "consume", DefaultExplainConsume, "jobs to claim and finish before the third plan (-1: none)")
		},
		check: func(o *options) error {
			if o.consume < -1 {
				return fmt.Errorf("--consume must be -1 or more, got %d", o.consume)
			}
			return positives(map[string]int{"--jobs": o.jobs, "--batch-size": o.batchSize})
		},
		run: func(ctx context.Context, e *env, o *options) (any, error) {
			return ptr(ExplainClaim(ctx, e.db, ExplainConfig{Jobs: o.jobs, BatchSize: o.batchSize, Consume: o.consume}))
		},
	},
}

func workerFlags(fs *flag.FlagSet, o *options) {
	fs.IntVar(&o.workers, "workers", DefaultWorkers, "QueueManagers")
	fs.IntVar(&o.batchSize, "batch-size", pgq.DefaultBatchSize, "jobs per claim (WithBatchSize)")
	fs.IntVar(&o.concurrency, "concurrency", pgq.DefaultMaxConcurrentTasks, "jobs run at once per worker (WithMaxConcurrentTasks)")
	fs.StringVar(&o.handler, "handler", HandlerNoop, "what each job's handler does: noop, or sql (one INSERT through the workers' own *sql.DB)")
	fs.DurationVar(&o.handlerTime, "handler-time", 0, "how long each handler waits (after its INSERT with --handler sql)")
	fs.StringVar(&o.handlerWait, "handler-wait", WaitSleep, "how a handler waits --handler-time: sleep (a Go timer, as time.Sleep; late by up to a millisecond) or io (blocked on a kernel timer's file descriptor, as on a socket; Linux)")
	fs.BoolVar(&o.concurrencyTuning, "concurrency-tuning", true, "workers may run fewer than --concurrency handlers while they saturate the database (WithConcurrencyTuning)")
	commitFlags(fs, o)
}

func commitFlags(fs *flag.FlagSet, o *options) {
	fs.BoolVar(&o.syncClaims, "sync-claims", false, "claims wait for their commit to reach disk (WithSynchronousClaims)")
	fs.BoolVar(&o.syncOutcomes, "sync-outcomes", false, "outcome writes wait for their commit to reach disk (WithSynchronousOutcomes)")
}

func commonFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.dsn, "dsn", "", "PostgreSQL connection string (default $"+EnvDSN+", else a throwaway server with stock settings)")
	fs.StringVar(&o.driver, "driver", "pgx", "database/sql driver: pgx or postgres (lib/pq)")
	fs.StringVar(&o.durability, "durability", "", "set the tables' durability first: durable, balanced or volatile (default: leave as is)")
	fs.BoolVar(&o.json, "json", false, "print one JSON object instead of a table")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the benchmark to this file")
	fs.StringVar(&o.memProfile, "memprofile", "", "write a heap profile taken after the benchmark to this file")
	fs.DurationVar(&o.timeout, "timeout", 0, "give up after this long (0: never)")
	fs.IntVar(&o.maxIdleConns, "max-idle-conns", 0, "sql.DB SetMaxIdleConns (0: database/sql's default, 2)")
	fs.BoolVar(&o.verbose, "v", false, "log progress (server start, worker messages) on stderr")
	fs.BoolVar(&o.statementTimes, "statement-times", false,
		"report the server's time for each of pgq's statements, from its log (throwaway server only)")
}

// usageError is a mistake on the command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

// Main runs `pgq bench ARGS...` and returns the exit code: 0 on success, 1
// when a benchmark fails, 2 on a usage error. Results go to stdout; errors
// are one line on stderr starting with "pgq bench: ".
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdout, stderr)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "pgq bench: %s\n", oneLine(err))
		return 2
	default:
		fmt.Fprintf(stderr, "pgq bench: %s\n", oneLine(err))
		return 1
	}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func names() string {
	var n []string
	for _, b := range benchmarks {
		n = append(n, b.name)
	}
	return strings.Join(n[:len(n)-1], ", ") + " or " + n[len(n)-1]
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: pgq bench BENCHMARK [flags]\n\nbenchmarks:\n")
	for _, b := range benchmarks {
		fmt.Fprintf(w, "  %-11s %s\n", b.name, b.summary)
	}
	fmt.Fprintf(w, "\nRun `pgq bench BENCHMARK -h` for its flags.\n")
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{fmt.Errorf("missing benchmark: want %s (see pgq bench -h)", names())}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return nil
	case drainWorkerCommand: // one process of drain --processes
		return drainWorker(ctx, args[1:], os.Stdin, stdout)
	}
	var b *benchmark
	for i := range benchmarks {
		if benchmarks[i].name == args[0] {
			b = &benchmarks[i]
		}
	}
	if b == nil {
		return usageError{fmt.Errorf("unknown benchmark %q: want %s", args[0], names())}
	}
	var o options
	fs := flag.NewFlagSet("pgq bench "+b.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	commonFlags(fs, &o)
	b.flags(fs, &o)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: pgq bench %s [flags]\n\n%s.\n\nflags:\n", b.name, b.summary)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil
		}
		return usageError{fmt.Errorf("%s: %w (see pgq bench %s -h)", b.name, err, b.name)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q", b.name, fs.Arg(0))}
	}
	if err := checkCommon(&o); err != nil {
		return usageError{fmt.Errorf("%s: %w", b.name, err)}
	}
	if err := b.check(&o); err != nil {
		return usageError{fmt.Errorf("%s: %w", b.name, err)}
	}
	if o.statementTimes && b.name != "drain" && b.name != "throughput" {
		return usageError{fmt.Errorf("%s: --statement-times is reported by drain and throughput only", b.name)}
	}

	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	e, err := openEnv(ctx, &o, stderr)
	if err != nil {
		return fmt.Errorf("%s: %w", b.name, err)
	}
	defer e.close(stderr)
	// Rows printed as a run goes: on stdout before the table, on stderr
	// when stdout is to hold one JSON object.
	e.report = stdout
	if o.json {
		e.report = stderr
	}

	if o.statementTimes {
		e.markStatementLog()
	}
	result, err := profiled(&o, func() (any, error) { return b.run(ctx, e, &o) })
	if err != nil {
		return fmt.Errorf("%s: %w", b.name, err)
	}
	setServer(result, e.server, o.maxIdleConns)
	if o.statementTimes {
		times, err := readStatementTimes(e.cluster.LogFile(), e.logOffset)
		if err != nil {
			return fmt.Errorf("%s: --statement-times: %w", b.name, err)
		}
		setStatementTimes(result, times)
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(result)
	}
	return printTable(stdout, b.name, result)
}

func checkCommon(o *options) error {
	switch o.driver {
	case "pgx", "postgres":
	default:
		return fmt.Errorf("unknown --driver %q: want pgx or postgres (lib/pq)", o.driver)
	}
	if o.durability != "" {
		if _, err := pgq.ParseDurability(o.durability); err != nil {
			return fmt.Errorf("--durability: %w", err)
		}
	}
	if o.timeout < 0 {
		return fmt.Errorf("--timeout must not be negative, got %v", o.timeout)
	}
	if o.maxIdleConns < 0 {
		return fmt.Errorf("--max-idle-conns must not be negative, got %d", o.maxIdleConns)
	}
	if o.statementTimes && (o.dsn != "" || os.Getenv(EnvDSN) != "") {
		return fmt.Errorf("--statement-times reads the log of the throwaway server: drop --dsn and $%s", EnvDSN)
	}
	h := HandlerConfig{Kind: o.handler, Time: o.handlerTime, Wait: o.handlerWait}
	if err := h.check(); err != nil {
		return fmt.Errorf("--handler: %w", err)
	}
	return nil
}

// profiled runs f, under the CPU profiler and followed by a heap profile
// when the options ask for them.
func profiled(o *options, f func() (any, error)) (any, error) {
	if o.cpuProfile != "" {
		pf, err := os.Create(o.cpuProfile)
		if err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	result, err := f()
	if err == nil && o.memProfile != "" {
		mf, ferr := os.Create(o.memProfile)
		if ferr != nil {
			return result, fmt.Errorf("--memprofile: %w", ferr)
		}
		defer mf.Close()
		runtime.GC()
		if werr := pprof.Lookup("heap").WriteTo(mf, 0); werr != nil {
			return result, fmt.Errorf("--memprofile: %w", werr)
		}
	}
	return result, err
}

// setServer records in a result's settings whether the server was
// throwaway, and the pool's idle connections (--max-idle-conns).
func setServer(result any, server string, maxIdle int) {
	if s := settingsOf(result); s != nil {
		s.Server = server
		s.MaxIdleConns = maxIdle
		if maxIdle == 0 {
			s.MaxIdleConns = 2 // database/sql's default
		}
	}
}

// env is the database a benchmark runs on.
type env struct {
	db        *sql.DB
	dsn       string // what db connects to
	listenDSN string // pgq.WithListenDSN for workers and watchers; "" (Main): none
	server    string // "throwaway" or "dsn"
	logger    *slog.Logger
	cluster   *pgcluster.Cluster
	logOffset int64     // where --statement-times starts reading the server log
	report    io.Writer // where rows printed as a run goes are written
}

// markStatementLog makes --statement-times read the server's log from here
// on: a benchmark calls it as its warm-up ends.
func (e *env) markStatementLog() {
	if e.cluster != nil {
		e.logOffset = fileSize(e.cluster.LogFile())
	}
}

// openEnv connects to --dsn, $PGQ_DSN or a throwaway server, and brings the
// schema up to date (with the durability asked for).
func openEnv(ctx context.Context, o *options, stderr io.Writer) (e *env, err error) {
	e = &env{server: "dsn"}
	var connString string
	defer func() {
		// The drivers may quote the connection string in their errors.
		err = pgdsn.RedactError(err, connString)
	}()
	if o.verbose {
		e.logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	defer func() {
		if err != nil {
			e.close(stderr)
		}
	}()
	dsn := o.dsn
	if dsn == "" {
		dsn = os.Getenv(EnvDSN)
	}
	if dsn == "" {
		var log io.Writer
		if o.verbose {
			log = stderr
		}
		// Stock settings: no Settings overrides (fsync on), but for the
		// statement log --statement-times reads.
		settings := map[string]string{}
		if o.statementTimes {
			maps.Copy(settings, statementLogSettings)
		}
		if o.processes > 0 { // to count the claims, empty ones too
			settings["shared_preload_libraries"] = "pg_stat_statements"
		}
		if e.cluster, err = pgcluster.Start(ctx, pgcluster.Options{Log: log, Install: true, Settings: settings}); err != nil {
			return e, err
		}
		dsn, e.server = e.cluster.DSN("postgres"), "throwaway"
	}
	connString, e.dsn = dsn, dsn
	// As the README's quick start: pgq.Open for lib/pq, whose pooled
	// connections cannot listen (pgq then listens on the DSN), sql.Open
	// for pgx (pgq borrows a pool connection to listen).
	open := sql.Open
	if o.driver == "postgres" {
		open = pgq.Open
	}
	if e.db, err = open(o.driver, dsn); err != nil {
		return e, fmt.Errorf("open %s: %w", o.driver, err)
	}
	if o.maxIdleConns > 0 {
		e.db.SetMaxIdleConns(o.maxIdleConns)
	}
	if err := e.db.PingContext(ctx); err != nil {
		return e, fmt.Errorf("connect with %s: %w", o.driver, err)
	}
	var sopts []pgq.SchemaOption
	if o.durability != "" {
		d, _ := pgq.ParseDurability(o.durability) // checked
		sopts = append(sopts, pgq.WithDurability(d))
	}
	if err := pgq.Upgrade(ctx, e.db, sopts...); err != nil {
		return e, err
	}
	if o.processes > 0 && e.cluster != nil {
		// Loaded above; elsewhere the claim statements are counted
		// where the server has pg_stat_statements, -1 where not.
		_, _ = e.db.ExecContext(ctx, sqlCreateStatStatements)
	}
	return e, nil
}

func (e *env) close(stderr io.Writer) {
	if e.db != nil {
		_ = e.db.Close()
	}
	if e.cluster != nil {
		if err := e.cluster.Stop(); err != nil {
			fmt.Fprintf(stderr, "pgq bench: stopping the throwaway server: %s\n", oneLine(err))
		}
	}
}
