// Command compare runs River, PGQueuer and pgq side by side on one
// throwaway PostgreSQL server and prints one table: `make compare` runs it.
//
//	go run . -pgq PATH [-rounds 9] [-jobs 100000] [-pgqueuer-env ENV.sh]
//
// Each round runs every system once, each on a fresh database created for
// it after a CHECKPOINT (and after autovacuum has gone idle), the drains in
// an order that rotates from round to round. The server has stock settings
// but for jit = off, which PGQueuer's asyncpg type look-ups need (with JIT
// each new connection spends about a second compiling one query).
//
// The systems (see docs/benchmarks.md for the method):
//
//   - River, through its public API as `river bench` sets it up (river.go):
//     a drain of -jobs jobs, and a run of -duration with continuous inserts
//     (`river bench --duration`), the throughput reference.
//   - pgq, as `pgq bench drain` at the settings in -pgq-drains, and
//     `pgq bench throughput`: unpaced for -duration (the maximum rate), then
//     paced at -load of that rate, reporting enqueue → start latency.
//   - PGQueuer, its tools/benchmark.py drain (-d apg, 5 dequeuers of batch
//     100), when -pgqueuer-env names the env.sh of ../shared/pgqueuer's
//     setup.sh; otherwise one line says why it is skipped.
//
// River's code lives only in this module (bench/compare has its own
// go.mod), so it stays out of pgq's.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type config struct {
	pgq         string // the pgq binary
	rounds      int    // alternating rounds
	jobs        int    // jobs per drain
	duration    time.Duration
	load        float64  // fraction of the maximum rate for the latency run
	pgqDrains   []string // pgq bench drain flag sets, ";"-separated on the command line
	pgqueuerEnv string   // env.sh of PGQueuer's setup; "" skips PGQueuer
	latencyArgs string   // extra flags of the paced throughput run
	markdown    bool
	verbose     bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "river-child" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := riverChildMain(ctx, os.Args[2:])
		stop()
		os.Exit(code)
	}
	var c config
	var drains string
	flag.StringVar(&c.pgq, "pgq", "", "path of the pgq binary (make compare builds bin/pgq)")
	flag.IntVar(&c.rounds, "rounds", 9, "alternating rounds")
	flag.IntVar(&c.jobs, "jobs", 100_000, "jobs per drain (river bench -n)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "length of the throughput runs (river bench --duration)")
	flag.Float64Var(&c.load, "load", 0.5, "the latency run's rate, as a fraction of the round's unpaced pgq throughput")
	flag.StringVar(&drains, "pgq-drains", "; --batch-size 2000 --concurrency 2000; --batch-size 2000 --concurrency 4000",
		"pgq bench drain flag sets, separated by ';' (an empty one: the library's defaults)")
	flag.StringVar(&c.latencyArgs, "latency-args", "--producers 4 --enqueue-batch 10",
		"extra flags of the paced `pgq bench throughput` run")
	flag.StringVar(&c.pgqueuerEnv, "pgqueuer-env", os.Getenv("PGQUEUER_ENV"),
		"env.sh written by ../shared/pgqueuer/setup.sh (default $PGQUEUER_ENV); empty: skip PGQueuer")
	flag.BoolVar(&c.verbose, "v", false, "print each run's figures as it ends")
	flag.Parse()
	for d := range strings.SplitSeq(drains, ";") {
		c.pgqDrains = append(c.pgqDrains, strings.TrimSpace(d))
	}
	if err := c.check(); err != nil {
		fmt.Fprintf(os.Stderr, "compare: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, &c, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "compare: %v\n", err)
		os.Exit(1)
	}
}

func (c *config) check() error {
	switch {
	case c.pgq == "":
		return fmt.Errorf("-pgq is required: the path of a pgq binary (go build -o bin/pgq ./cmd/pgq)")
	case c.rounds < 1:
		return fmt.Errorf("-rounds must be at least 1, got %d", c.rounds)
	case c.jobs < 1:
		return fmt.Errorf("-jobs must be at least 1, got %d", c.jobs)
	case c.duration <= 0:
		return fmt.Errorf("-duration must be positive, got %v", c.duration)
	case c.load <= 0 || c.load > 1:
		return fmt.Errorf("-load must be in (0, 1], got %v", c.load)
	}
	if _, err := os.Stat(c.pgq); err != nil {
		return fmt.Errorf("-pgq: %w", err)
	}
	return nil
}
