package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/pgq-dev/pgq/internal/chaos"
	"github.com/pgq-dev/pgq/internal/dsn"
	"github.com/pgq-dev/pgq/internal/pgcluster"
)

// chaosCmd is `pgq chaos`, and `pgq chaos worker`, the worker processes it
// starts (reading their settings from the environment).
type chaosCmd struct {
	conn       conn
	worker     bool
	duration   time.Duration
	json       bool
	seed       uint64
	workers    int
	producers  int
	faultEvery time.Duration
	calm       time.Duration
	faults     string
	heartbeat  time.Duration
	conc       int
	work       time.Duration
	backlog    int
	completeTx bool
	workerLog  string
	quiet      bool
}

func (c *chaosCmd) define(fs *flag.FlagSet, e *env) {
	c.conn.define(fs, e)
	c.duration, c.faultEvery, c.calm, c.heartbeat, c.work = time.Minute, time.Second, 15*time.Second, 3*time.Second, 20*time.Millisecond
	fs.Var(&durationFlag{&c.duration}, "duration", "inject faults for `D`")
	fs.BoolVar(&c.json, "json", false, "print the report as JSON")
	fs.Uint64Var(&c.seed, "seed", 0, "seed of the random faults (default: from the clock; the report says it)")
	fs.Var(newIntFlag(&c.workers, 3, 1, 64), "workers", "`N` worker processes")
	fs.Var(newIntFlag(&c.producers, 2, 1, 64), "producers", "`N` producers")
	fs.Var(&durationFlag{&c.faultEvery}, "fault-every", "a fault every `D` on average during a storm")
	fs.Var(&durationFlag{&c.calm}, "calm", "alternate storms and calms (no faults) of `D` each; 0: faults throughout")
	fs.StringVar(&c.faults, "faults", "all", "fault `kinds`: kill,stop,terminate,restart,crash,cancel or all "+
		"(restart and crash only on the throwaway server)")
	fs.Var(&durationFlag{&c.heartbeat}, "heartbeat-timeout", "the workers' heartbeat timeout `D`")
	fs.Var(newIntFlag(&c.conc, 40, 1, 1000), "concurrency", "`N` jobs per worker at once")
	fs.Var(&durationFlag{&c.work}, "work", "a handler works up to `D` before its ledger write")
	fs.Var(newIntFlag(&c.backlog, 2000, 1, 1_000_000), "backlog", "producers keep about `N` jobs queued")
	fs.BoolVar(&c.completeTx, "complete-tx", false, "handlers mark their job done in their own transaction (pgq.CompleteTx)")
	fs.StringVar(&c.workerLog, "worker-log", "", "append the workers' logs to `FILE`")
	fs.BoolVar(&c.quiet, "quiet", false, "do not log each fault on standard error")
}

func (c *chaosCmd) validate(args []string, e *env) error {
	if len(args) == 1 && args[0] == "worker" {
		c.worker = true
		return nil
	}
	if err := noArgs(args); err != nil {
		return err
	}
	if c.duration <= 0 || c.faultEvery <= 0 {
		return usagef("--duration and --fault-every must be positive")
	}
	if c.heartbeat < 100*time.Millisecond {
		return usagef("--heartbeat-timeout must be at least 100ms")
	}
	kinds, err := chaos.ParseKinds(c.faults)
	if err != nil {
		return usagef("%s", err.Error())
	}
	if err := c.conn.validate(e); err != nil {
		return err
	}
	if c.conn.DSN != "" && c.faults != "all" {
		for _, k := range kinds {
			if k == chaos.Restart || k == chaos.Crash {
				return usagef("--faults %s: restart and crash need the throwaway server (run without --dsn and $PGQ_DSN)", k)
			}
		}
	}
	return nil
}

func (c *chaosCmd) run(ctx context.Context, e *env) (err error) {
	if c.worker {
		if code := chaos.WorkerMain(ctx, e.getenv, e.stdout, e.stderr); code != 0 {
			return &exitError{code: code}
		}
		return nil
	}
	kinds, _ := chaos.ParseKinds(c.faults)
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find the pgq program to start workers: %w", err)
	}
	cfg := chaos.Config{
		DSN: c.conn.DSN, Driver: c.conn.Driver, Prefix: c.conn.Prefix, Schema: c.conn.Schema,
		Workers: c.workers, Producers: c.producers, Duration: c.duration, Seed: c.seed,
		FaultEvery: c.faultEvery, Calm: c.calm, HeartbeatTimeout: c.heartbeat,
		Concurrency: c.conc, Work: c.work, Backlog: c.backlog, CompleteTx: c.completeTx,
		Command: func() *exec.Cmd { return exec.Command(exe, "chaos", "worker") },
	}
	if !c.quiet {
		cfg.Log = e.stderr
	}
	if c.workerLog != "" {
		f, err := os.OpenFile(c.workerLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.WorkerLog = f
	}
	if cfg.DSN == "" {
		fmt.Fprintln(e.stderr, "Starting a throwaway PostgreSQL server (use --dsn or PGQ_DSN for your own)...")
		cluster, err := pgcluster.Start(ctx, pgcluster.Options{Log: io.Discard, Install: true})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			first, _, _ := strings.Cut(err.Error(), "\n")
			return fmt.Errorf("cannot start a throwaway PostgreSQL server: %s", first)
		}
		defer func() {
			if serr := cluster.Stop(); serr != nil && err == nil {
				err = fmt.Errorf("stopping the throwaway server: %w", serr)
			}
		}()
		cfg.DSN, cfg.Server = cluster.DSN("postgres"), cluster
	} else {
		// Another program's server: no restarts.
		kinds = removeKinds(kinds, chaos.Restart, chaos.Crash)
	}
	cfg.Kinds = kinds
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		return dsn.RedactError(err, cfg.DSN)
	}
	if c.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.Print(e.stdout)
	}
	if !rep.OK() {
		return &exitError{code: ExitFailure, msg: strings.Join(rep.Failures, "; ")}
	}
	return nil
}

func removeKinds(ks []chaos.Kind, drop ...chaos.Kind) []chaos.Kind {
	out := ks[:0]
	for _, k := range ks {
		keep := true
		for _, d := range drop {
			keep = keep && k != d
		}
		if keep {
			out = append(out, k)
		}
	}
	return out
}
