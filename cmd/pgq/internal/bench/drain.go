package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgq-dev/pgq"
)

// Entrypoint is the entrypoint of the no-op jobs the benchmarks enqueue.
// Each benchmark first removes leftover jobs of this entrypoint from the job
// table; jobs of other entrypoints are never touched.
const Entrypoint = "pgq_bench"

// Defaults of the drain benchmark.
const (
	DefaultJobs         = 100_000
	DefaultEnqueueBatch = 1000
	DefaultWorkers      = 1
)

// DrainConfig configures Drain. Zero fields take the defaults.
type DrainConfig struct {
	Jobs         int // jobs to enqueue and then work (default DefaultJobs)
	EnqueueBatch int // jobs per EnqueueBatch call (default DefaultEnqueueBatch)
	Workers      int // QueueManagers working the queue at once (default DefaultWorkers)
	BatchSize    int // pgq.WithBatchSize (default pgq.DefaultBatchSize)
	Concurrency  int // pgq.WithMaxConcurrentTasks (default pgq.DefaultMaxConcurrentTasks)
	// ListenDSN is given to the workers with pgq.WithListenDSN; a lib/pq
	// pool from sql.Open needs it to listen (one from pgq.Open does not).
	ListenDSN string
	Logger    *slog.Logger // the workers' logger (pgq.WithLogger); nil: quiet
	// Analyze runs ANALYZE on the job table between enqueuing and
	// processing, so the claim is planned with statistics of the full
	// queue rather than whatever autovacuum had gathered (stock behaviour
	// when false).
	Analyze bool
	// Vacuum runs VACUUM on the job table before enqueuing, so that the
	// dead rows an earlier run left behind (until autovacuum gets to them)
	// do not slow this one; River's own benchmark likewise starts with
	// TRUNCATE and VACUUM FULL of its job table.
	Vacuum bool
	// SyncClaims makes claims wait for their commit to reach disk
	// (pgq.WithSynchronousClaims).
	SyncClaims bool
	// SyncOutcomes makes outcome writes wait for their commit to reach
	// disk (pgq.WithSynchronousOutcomes).
	SyncOutcomes bool
	// NoConcurrencyTuning makes workers always run Concurrency handlers
	// at once (pgq.WithConcurrencyTuning(false)).
	NoConcurrencyTuning bool
	// Handler says what each job's handler does (default: nothing).
	Handler HandlerConfig
	// ConcurrencyLimit is the entrypoint's fleet-wide concurrency limit
	// (pgq.WithConcurrencyLimit); 0: none.
	ConcurrencyLimit int
	// Processes, when positive, runs the workers in that many OS
	// processes (Executable, `pgq bench drain-worker`), each with Workers
	// QueueManagers, on DSN with Driver, instead of in this process.
	Processes  int
	DSN        string
	Driver     string // "pgx" (default) or "postgres"
	Executable string // the pgq program; "" is this one (os.Executable)
	// WorkerGOMAXPROCS is the GOMAXPROCS of each worker process: 0 shares
	// the cores among them (runtime.NumCPU() ÷ Processes, at least 1), as
	// several worker processes on one host should be run; -1 leaves Go's
	// default (every process sized for every core).
	WorkerGOMAXPROCS int
}

func (c *DrainConfig) defaults() error {
	c.Jobs = orDefault(c.Jobs, DefaultJobs)
	c.EnqueueBatch = orDefault(c.EnqueueBatch, DefaultEnqueueBatch)
	c.Workers = orDefault(c.Workers, DefaultWorkers)
	c.BatchSize = orDefault(c.BatchSize, pgq.DefaultBatchSize)
	c.Concurrency = orDefault(c.Concurrency, pgq.DefaultMaxConcurrentTasks)
	if err := c.Handler.check(); err != nil {
		return err
	}
	if c.Driver == "" {
		c.Driver = "pgx"
	}
	switch {
	case c.Processes < 0:
		return fmt.Errorf("processes must not be negative, got %d", c.Processes)
	case c.Processes > 0 && c.DSN == "":
		return fmt.Errorf("%d worker processes need the DSN to connect to", c.Processes)
	case c.WorkerGOMAXPROCS < -1:
		return fmt.Errorf("worker GOMAXPROCS must be -1 (Go's default), 0 (share the cores) or more, got %d", c.WorkerGOMAXPROCS)
	}
	if c.Processes > 0 && c.WorkerGOMAXPROCS == 0 {
		c.WorkerGOMAXPROCS = max(1, runtime.NumCPU()/c.Processes)
	}
	return positives(map[string]int{"jobs": c.Jobs, "enqueue batch": c.EnqueueBatch, "workers": c.Workers,
		"batch size": c.BatchSize, "concurrency": c.Concurrency})
}

// DrainResult is what Drain measured. CPU times are deltas over each phase;
// the server's are 0 (and ServerCPUReadable false) when its processes are
// not readable in /proc. PeakRSSBytes is the whole process's high-water mark
// (getrusage), so it is the client's own only when the process did nothing
// else.
type DrainResult struct {
	Jobs                    int     `json:"jobs"`
	Seconds                 float64 `json:"seconds"` // enqueue + process
	EnqueueSeconds          float64 `json:"enqueue_seconds"`
	ProcessSeconds          float64 `json:"process_seconds"`
	EnqueueJobsPerSec       float64 `json:"enqueue_jobs_per_sec"`
	ProcessJobsPerSec       float64 `json:"process_jobs_per_sec"`
	ClientCPUSeconds        float64 `json:"client_cpu_seconds"` // enqueue + process
	ServerCPUSeconds        float64 `json:"server_cpu_seconds"` // enqueue + process
	EnqueueClientCPUSeconds float64 `json:"enqueue_client_cpu_seconds"`
	EnqueueServerCPUSeconds float64 `json:"enqueue_server_cpu_seconds"`
	ProcessClientCPUSeconds float64 `json:"process_client_cpu_seconds"`
	ProcessServerCPUSeconds float64 `json:"process_server_cpu_seconds"`
	ProcessClientUsPerJob   float64 `json:"process_client_cpu_us_per_job"`
	ProcessServerUsPerJob   float64 `json:"process_server_cpu_us_per_job"`
	ServerCPUReadable       bool    `json:"server_cpu_readable"`
	PeakRSSBytes            int64   `json:"peak_rss_bytes"`
	// ProcessDeciles is the process rate of each tenth of the jobs, in
	// order: a slow start (no statistics yet) or a slow end (dead rows)
	// shows here.
	ProcessDeciles []float64 `json:"process_deciles_jobs_per_sec"`
	// ProcessDecilesHeapInuse is the client's runtime.MemStats.HeapInuse
	// as each tenth of the jobs was done, and PeakHeapInuseBytes the
	// largest HeapInuse sampled every second over enqueue and process:
	// flat when the client keeps nothing per job. (Not measured with
	// Processes: this process then only waits.)
	ProcessDecilesHeapInuse []int64 `json:"process_deciles_heap_inuse_bytes,omitempty"`
	PeakHeapInuseBytes      int64   `json:"peak_heap_inuse_bytes,omitempty"`
	// HandlerWaitMeanMs is how long a handler's wait of Handler.Time took
	// on average, as the handler saw it (with --handler-time; not measured
	// with Processes): concurrency ÷ it is what the handler slots allow.
	HandlerWaitMeanMs float64 `json:"handler_wait_mean_ms,omitempty"`
	// JobTableAutovacuums and JobTableAutoanalyzes count autovacuum's
	// runs on the job table during the process phase (as far as the
	// statistics collector has reported them).
	// Claims and FinishBatches count the claim and finish statements
	// (from the log: one created timestamp per statement); AvgClaim and
	// AvgFinishBatch are jobs per statement.
	Claims               int64   `json:"claims"`
	AvgClaim             float64 `json:"avg_claim_jobs"`
	FinishBatches        int64   `json:"finish_batches"`
	AvgFinishBatch       float64 `json:"avg_finish_batch_jobs"`
	JobTableAutovacuums  int64   `json:"job_table_autovacuums"`
	JobTableAutoanalyzes int64   `json:"job_table_autoanalyzes"`
	// ClaimsPerSec is Claims over the process phase. ClaimStatements
	// counts every run of the claim statement in the process phase, empty
	// ones too, and EmptyClaims those that claimed nothing: both from
	// pg_stat_statements, -1 when it cannot be read (`pgq bench drain
	// --processes N` on a throwaway server loads it).
	ClaimsPerSec    float64 `json:"claims_per_sec"`
	ClaimStatements int64   `json:"claim_statements"`
	EmptyClaims     int64   `json:"empty_claims"`
	StatementTimes
	Settings Settings `json:"settings"`
}

// Drain enqueues cfg.Jobs no-op jobs with Queries.EnqueueBatch, then runs
// cfg.Workers QueueManagers in ModeDrain until the queue is empty, and
// checks that every job ran once and was logged successful. db must hold
// the pgq schema with default names.
func Drain(ctx context.Context, db *sql.DB, cfg DrainConfig) (DrainResult, error) {
	if err := cfg.defaults(); err != nil {
		return DrainResult{}, err
	}
	settings, err := readSettings(ctx, db, cfg.ListenDSN)
	if err != nil {
		return DrainResult{}, err
	}
	settings.Jobs, settings.EnqueueBatch, settings.Workers = cfg.Jobs, cfg.EnqueueBatch, cfg.Workers
	settings.BatchSize, settings.Concurrency = cfg.BatchSize, cfg.Concurrency
	settings.Analyze, settings.Vacuum, settings.SyncClaims = cfg.Analyze, cfg.Vacuum, cfg.SyncClaims
	settings.SyncOutcomes, settings.ConcurrencyTuning = cfg.SyncOutcomes, !cfg.NoConcurrencyTuning
	settings.setHandler(cfg.Handler)
	settings.Processes = cfg.Processes
	if cfg.Processes > 0 {
		settings.WorkerGOMAXPROCS = cfg.WorkerGOMAXPROCS
	}
	res := DrainResult{Jobs: cfg.Jobs, Settings: settings, ClaimStatements: -1, EmptyClaims: -1}
	if err := cfg.Handler.prepare(ctx, db); err != nil {
		return res, err
	}

	if err := purge(ctx, db); err != nil {
		return res, err
	}
	if cfg.Vacuum {
		if _, err := db.ExecContext(ctx, sqlVacuumQueue); err != nil {
			return res, fmt.Errorf("vacuum: %w", err)
		}
	}
	meter := newCPUMeter(ctx, db)
	res.ServerCPUReadable = meter.serverReadable()

	peakHeap := heapPeak(time.Second)
	defer peakHeap()
	s0, t0 := meter.sample(), time.Now()
	first, last, err := enqueueAll(ctx, pgq.NewQueries(db), cfg.Jobs, cfg.EnqueueBatch)
	if err != nil {
		return res, err
	}
	if cfg.Analyze {
		if _, err := db.ExecContext(ctx, sqlAnalyzeQueue); err != nil {
			return res, fmt.Errorf("analyze: %w", err)
		}
	}
	s1, t1 := meter.sample(), time.Now()

	av0, aa0, err := autovacuumCounts(ctx, db)
	if err != nil {
		return res, err
	}
	calls0, counted := claimStatements(ctx, db)
	var ran atomic.Int64
	var waited *waitTally // the handlers' waits, with Handler.Time in this process
	marks := newDeciles(cfg.Jobs)
	var workersCPU time.Duration // of the worker processes
	if cfg.Processes > 0 {
		var n int64
		var rss int64
		s1, t1, n, workersCPU, rss, err = runProcesses(ctx, &cfg, meter)
		if err != nil {
			return res, err
		}
		ran.Store(n)
		res.PeakRSSBytes = rss
	} else {
		// No per-job bookkeeping here: a job run twice shows in the log
		// (checkAllRan) and in the count, and a backlog of millions
		// must drain in flat memory.
		if cfg.Handler.Time > 0 {
			waited = new(waitTally)
		}
		handler := cfg.Handler.handler(db, nil, waited, func() { marks.mark(ran.Add(1)) })
		if err := runWorkers(ctx, db, cfg.Workers, workerOptions(cfg.ListenDSN, cfg.Logger), handler, cfg.ConcurrencyLimit,
			pgq.WithMode(pgq.ModeDrain), pgq.WithBatchSize(cfg.BatchSize), pgq.WithMaxConcurrentTasks(cfg.Concurrency),
			pgq.WithSynchronousClaims(cfg.SyncClaims), pgq.WithSynchronousOutcomes(cfg.SyncOutcomes),
			pgq.WithConcurrencyTuning(!cfg.NoConcurrencyTuning)); err != nil {
			return res, err
		}
	}
	s2, t2 := meter.sample(), time.Now()
	if peak := peakHeap(); cfg.Processes == 0 {
		res.PeakHeapInuseBytes = peak
		res.ProcessDecilesHeapInuse = marks.heaps()
	}
	calls1, _ := claimStatements(ctx, db)
	av1, aa1, err := autovacuumCounts(ctx, db)
	if err != nil {
		return res, err
	}
	res.JobTableAutovacuums, res.JobTableAutoanalyzes = av1-av0, aa1-aa0
	res.HandlerWaitMeanMs = waited.meanMs()
	res.ProcessDeciles = marks.rates(t1)

	enq, proc := s1.sub(s0), s2.sub(s1)
	if cfg.Processes > 0 {
		proc.client = workersCPU // this process only waited
	}
	res.EnqueueSeconds, res.ProcessSeconds, res.Seconds = seconds(t1.Sub(t0)), seconds(t2.Sub(t1)), seconds(t2.Sub(t0))
	res.EnqueueJobsPerSec = rate(int64(cfg.Jobs), t1.Sub(t0))
	res.ProcessJobsPerSec = rate(int64(cfg.Jobs), t2.Sub(t1))
	res.EnqueueClientCPUSeconds, res.EnqueueServerCPUSeconds = seconds(enq.client), seconds(enq.server)
	res.ProcessClientCPUSeconds, res.ProcessServerCPUSeconds = seconds(proc.client), seconds(proc.server)
	res.ClientCPUSeconds, res.ServerCPUSeconds = seconds(enq.client+proc.client), seconds(enq.server+proc.server)
	res.ProcessClientUsPerJob = round3(float64(proc.client.Microseconds()) / float64(cfg.Jobs))
	res.ProcessServerUsPerJob = round3(float64(proc.server.Microseconds()) / float64(cfg.Jobs))
	if cfg.Processes == 0 {
		res.PeakRSSBytes = peakRSS()
	}

	if n := ran.Load(); n != int64(cfg.Jobs) {
		return res, fmt.Errorf("drain: the handler ran %d times for %d jobs", n, cfg.Jobs)
	}
	if err := checkAllRan(ctx, db, first, last, cfg.Jobs); err != nil {
		return res, err
	}
	if err := db.QueryRowContext(ctx, sqlStatements, int64(first), int64(last), Entrypoint).Scan(
		&res.Claims, &res.FinishBatches); err != nil {
		return res, fmt.Errorf("counting claims: %w", err)
	}
	if res.Claims > 0 && res.FinishBatches > 0 {
		res.AvgClaim = round3(float64(cfg.Jobs) / float64(res.Claims))
		res.AvgFinishBatch = round3(float64(cfg.Jobs) / float64(res.FinishBatches))
	}
	res.ClaimsPerSec = rate(res.Claims, t2.Sub(t1))
	if counted {
		// The statements that read the counts are not the claim: only
		// the workers' claims are counted.
		res.ClaimStatements = calls1 - calls0
		res.EmptyClaims = max(0, res.ClaimStatements-res.Claims)
	}
	return res, nil
}

// enqueueAll enqueues n no-op jobs in batches and returns the first and last
// job id.
func enqueueAll(ctx context.Context, q *pgq.Queries, n, batch int) (first, last pgq.JobID, err error) {
	jobs := make([]pgq.NewJob, min(batch, n))
	for i := range jobs {
		jobs[i] = pgq.NewJob{Entrypoint: Entrypoint}
	}
	for done := 0; done < n; {
		k := min(batch, n-done)
		ids, err := q.EnqueueBatch(ctx, jobs[:k])
		if err != nil {
			return 0, 0, fmt.Errorf("enqueue (after %d of %d jobs): %w", done, n, err)
		}
		if first == 0 {
			first = ids[0]
		}
		last = ids[len(ids)-1]
		done += k
	}
	return first, last, nil
}

// runWorkers runs n QueueManagers with handler on Entrypoint until they all
// return, and returns their errors.
func runWorkers(ctx context.Context, db *sql.DB, n int, mopts []pgq.ManagerOption, h pgq.Handler, limit int, opts ...pgq.RunOption) error {
	errs := make([]error, n)
	var eopts []pgq.EntrypointOption
	if limit > 0 {
		eopts = append(eopts, pgq.WithConcurrencyLimit(limit))
	}
	var wg sync.WaitGroup
	for i := range n {
		qm := pgq.NewQueueManager(db, mopts...)
		if err := qm.Entrypoint(Entrypoint, h, eopts...); err != nil {
			return err
		}
		wg.Go(func() {
			if err := qm.Run(ctx, opts...); err != nil {
				errs[i] = fmt.Errorf("worker %d: %w", i+1, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// deciles records when each tenth of n jobs was done, and the client's
// HeapInuse then.
type deciles struct {
	n     int64
	times [10]atomic.Int64 // UnixNano
	heap  [10]atomic.Int64
}

func newDeciles(n int) *deciles { return &deciles{n: int64(n)} }

// mark notes that the done-th job finished.
func (d *deciles) mark(done int64) {
	// The k-th tenth ends with job ceil(k*n/10).
	for k := int64(1); k <= 10; k++ {
		if done == (k*d.n+9)/10 && d.times[k-1].CompareAndSwap(0, time.Now().UnixNano()) {
			d.heap[k-1].Store(heapInuse())
		}
	}
}

// rates returns the rate of each tenth that was completed, from start on.
func (d *deciles) rates(start time.Time) []float64 {
	var out []float64
	prevT, prevN := start.UnixNano(), int64(0)
	for k := int64(1); k <= 10; k++ {
		t := d.times[k-1].Load()
		if t == 0 {
			break
		}
		end := (k*d.n + 9) / 10
		out = append(out, rate(end-prevN, time.Duration(t-prevT)))
		prevT, prevN = t, end
	}
	return out
}

// heaps returns the HeapInuse at the end of each tenth that was completed.
func (d *deciles) heaps() []int64 {
	var out []int64
	for k := range d.heap {
		if d.times[k].Load() == 0 {
			break
		}
		out = append(out, d.heap[k].Load())
	}
	return out
}

// autovacuumCounts reads how often autovacuum has vacuumed and analyzed
// the job table.
func autovacuumCounts(ctx context.Context, db *sql.DB) (vacuums, analyzes int64, err error) {
	if err := db.QueryRowContext(ctx, sqlAutovacuumCounts).Scan(&vacuums, &analyzes); err != nil {
		return 0, 0, fmt.Errorf("reading autovacuum counts: %w", err)
	}
	return vacuums, analyzes, nil
}

// workerOptions are the QueueManager options for listenDSN and logger.
func workerOptions(listenDSN string, logger *slog.Logger) []pgq.ManagerOption {
	var opts []pgq.ManagerOption
	if listenDSN != "" {
		opts = append(opts, pgq.WithListenDSN(listenDSN))
	}
	if logger != nil {
		opts = append(opts, pgq.WithLogger(logger))
	}
	return opts
}

// checkAllRan checks that the jobs first..last (n of them) were each logged
// successful exactly once and that none is left in the job table.
func checkAllRan(ctx context.Context, db *sql.DB, first, last pgq.JobID, n int) error {
	var distinct, rows, left int64
	if err := db.QueryRowContext(ctx, sqlCountSuccessful, int64(first), int64(last), Entrypoint).Scan(&distinct, &rows); err != nil {
		return fmt.Errorf("counting successful jobs: %w", err)
	}
	if err := db.QueryRowContext(ctx, sqlCountLeft, Entrypoint).Scan(&left); err != nil {
		return fmt.Errorf("counting jobs left: %w", err)
	}
	switch {
	case distinct != int64(n):
		return fmt.Errorf("only %d of %d jobs (ids %d..%d) are logged successful; %d left in the job table",
			distinct, n, first, last, left)
	case rows != distinct:
		return fmt.Errorf("%d successful log rows for %d jobs: some jobs ran more than once", rows, distinct)
	case left != 0:
		return fmt.Errorf("%d jobs are left in the job table after the drain", left)
	}
	return nil
}

// purge removes leftover jobs of Entrypoint.
func purge(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, sqlPurgeJobs, Entrypoint); err != nil {
		return fmt.Errorf("removing leftover %s jobs: %w", Entrypoint, err)
	}
	return nil
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// positives checks that every named value is at least 1.
func positives(m map[string]int) error {
	for _, name := range slices.Sorted(maps.Keys(m)) {
		if m[name] < 1 {
			return fmt.Errorf("%s must be at least 1, got %d", name, m[name])
		}
	}
	return nil
}
