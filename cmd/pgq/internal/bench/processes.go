package bench

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgq-dev/pgq"
)

// drainWorkerCommand is the hidden `pgq bench drain-worker`: one worker
// process of `pgq bench drain --processes N`.
const drainWorkerCommand = "drain-worker"

// workerReady is the line a worker process prints once its workers are
// set up; it then waits for a line on its standard input before it starts
// them.
const workerReady = "ready"

// workerResult is what a worker process prints, as JSON, when its workers
// have drained the queue.
type workerResult struct {
	Ran          int64 `json:"ran"`
	CPUNs        int64 `json:"cpu_ns"` // from the go line to the end
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
	GOMAXPROCS   int   `json:"gomaxprocs"`
}

// processArgs are the flags of `pgq bench drain-worker` for cfg.
func processArgs(cfg *DrainConfig) []string {
	args := []string{"bench", drainWorkerCommand, "--dsn", cfg.DSN, "--driver", cfg.Driver,
		"--workers", strconv.Itoa(cfg.Workers), "--batch-size", strconv.Itoa(cfg.BatchSize),
		"--concurrency", strconv.Itoa(cfg.Concurrency), "--handler", cfg.Handler.Kind,
		"--handler-time", cfg.Handler.Time.String(), "--handler-wait", cfg.Handler.Wait,
		"--concurrency-limit", strconv.Itoa(cfg.ConcurrencyLimit)}
	if cfg.SyncClaims {
		args = append(args, "--sync-claims")
	}
	if cfg.SyncOutcomes {
		args = append(args, "--sync-outcomes")
	}
	if cfg.NoConcurrencyTuning {
		args = append(args, "--concurrency-tuning=false")
	}
	return args
}

// workerProcess is one running worker process.
type workerProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr strings.Builder
}

// runProcesses starts cfg.Processes worker processes (this program again,
// or cfg.Executable), waits until each has set its workers up, starts them
// all at once and waits until all have drained the queue. It returns the
// CPU sample and time taken as they were started, how many jobs they ran
// and their CPU time, and the largest peak RSS of one of them.
func runProcesses(ctx context.Context, cfg *DrainConfig, meter *cpuMeter) (s cpuSample, start time.Time, ran int64, cpu time.Duration, rss int64, err error) {
	exe := cfg.Executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return s, start, 0, 0, 0, err
		}
	}
	procs := make([]*workerProcess, cfg.Processes)
	defer func() {
		for _, p := range procs {
			if p != nil && p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Kill()
				_ = p.cmd.Wait()
			}
		}
	}()
	for i := range procs {
		p := &workerProcess{cmd: exec.CommandContext(ctx, exe, processArgs(cfg)...)}
		if cfg.WorkerGOMAXPROCS > 0 { // the last value of a key wins
			p.cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(cfg.WorkerGOMAXPROCS))
		}
		p.cmd.Stderr = &p.stderr
		if p.stdin, err = p.cmd.StdinPipe(); err != nil {
			return s, start, 0, 0, 0, err
		}
		out, err := p.cmd.StdoutPipe()
		if err != nil {
			return s, start, 0, 0, 0, err
		}
		p.stdout = bufio.NewReader(out)
		if err := p.cmd.Start(); err != nil {
			return s, start, 0, 0, 0, fmt.Errorf("worker process %d: %w", i+1, err)
		}
		procs[i] = p
	}
	for i, p := range procs {
		line, err := p.stdout.ReadString('\n')
		if strings.TrimSpace(line) != workerReady {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait() // stderr is complete after it
			return s, start, 0, 0, 0, fmt.Errorf("worker process %d did not start (%v): %s", i+1, err, words(p.stderr.String()))
		}
	}
	s, start = meter.sample(), time.Now()
	for _, p := range procs {
		if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
			return s, start, 0, 0, 0, err
		}
	}
	errs := make([]error, len(procs))
	results := make([]workerResult, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() {
			b, _ := io.ReadAll(p.stdout)
			if err := p.cmd.Wait(); err != nil {
				errs[i] = fmt.Errorf("worker process %d: %w: %s", i+1, err, words(p.stderr.String()))
				return
			}
			if err := json.Unmarshal(b, &results[i]); err != nil {
				errs[i] = fmt.Errorf("worker process %d's result %q: %w", i+1, b, err)
			} else if want := cfg.WorkerGOMAXPROCS; want > 0 && results[i].GOMAXPROCS != want {
				errs[i] = fmt.Errorf("worker process %d ran with GOMAXPROCS %d, want %d", i+1, results[i].GOMAXPROCS, want)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return s, start, 0, 0, 0, err
	}
	for _, r := range results {
		ran += r.Ran
		cpu += time.Duration(r.CPUNs)
		rss = max(rss, r.PeakRSSBytes)
	}
	return s, start, ran, cpu, rss, nil
}

// words is s on one line.
func words(s string) string { return strings.Join(strings.Fields(s), " ") }

// drainWorker is `pgq bench drain-worker`: it opens the database, sets its
// workers up, says so, waits for a line on stdin, runs them in ModeDrain
// and prints a workerResult.
func drainWorker(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("pgq bench "+drainWorkerCommand, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.dsn, "dsn", "", "")
	fs.StringVar(&o.driver, "driver", "pgx", "")
	fs.IntVar(&o.concurrencyLimit, "concurrency-limit", 0, "")
	workerFlags(fs, &o)
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Errorf("%s: %w", drainWorkerCommand, err)}
	}
	h := HandlerConfig{Kind: o.handler, Time: o.handlerTime, Wait: o.handlerWait}
	if err := h.check(); err != nil {
		return usageError{err}
	}
	open := sql.Open
	if o.driver == "postgres" {
		open = pgq.Open
	}
	db, err := open(o.driver, o.dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("connect with %s: %w", o.driver, err)
	}
	var ran atomic.Int64
	handler := h.handler(db, nil, nil, func() { ran.Add(1) }) // as in Drain: nothing per job
	if _, err := fmt.Fprintln(stdout, workerReady); err != nil {
		return err
	}
	if _, err := bufio.NewReader(stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the go line: %w", err)
	}
	cpu0 := clientCPU()
	if err := runWorkers(ctx, db, o.workers, nil, handler, o.concurrencyLimit,
		pgq.WithMode(pgq.ModeDrain), pgq.WithBatchSize(o.batchSize), pgq.WithMaxConcurrentTasks(o.concurrency),
		pgq.WithSynchronousClaims(o.syncClaims), pgq.WithSynchronousOutcomes(o.syncOutcomes),
		pgq.WithConcurrencyTuning(o.concurrencyTuning)); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(workerResult{Ran: ran.Load(), CPUNs: int64(clientCPU() - cpu0), PeakRSSBytes: peakRSS(),
		GOMAXPROCS: runtime.GOMAXPROCS(0)})
}

// claimStatements returns how often the claim statement has run, from
// pg_stat_statements; false when that view cannot be read.
func claimStatements(ctx context.Context, db *sql.DB) (int64, bool) {
	var n int64
	if err := db.QueryRowContext(ctx, sqlClaimCalls).Scan(&n); err != nil {
		return 0, false
	}
	return n, true
}
