package cli

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/pgcluster"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Defaults and limits of `pgq demo`.
const (
	demoDefaultJobs    = 5000
	demoDefaultEPs     = 4
	demoDefaultWorkers = 2
	demoMaxJobs        = 10_000_000
	demoMaxEPs         = 16
	demoMaxWorkers     = 64
	demoEnqueueBatch   = 1000
	// demoFailEvery: one job in this many of the failing entrypoint returns
	// an error, to show the exception status.
	demoFailEvery = 10
	// demoSettleTimeout bounds the wait for the last outcomes to be
	// recorded once the workers have drained the queue.
	demoSettleTimeout = 30 * time.Second
	// demoStallTimeout ends a demo in which no job finishes for this long
	// (the workers keep retrying what fails; the demo should not).
	demoStallTimeout = 30 * time.Second
	// demoShutdownTimeout is the workers' grace period on Ctrl-C.
	demoShutdownTimeout = 5 * time.Second
)

// The demo's entrypoints. They are named demo.* so that a demo pointed at a
// real database never runs that database's own jobs.
var demoEntrypoints = []string{"demo.email", "demo.resize", "demo.report", "demo.webhook"}

// demoFailing is the entrypoint of which some jobs fail on purpose.
const demoFailing = "demo.webhook"

// demoCmd is `pgq demo`.
type demoCmd struct {
	conn        conn
	jobs        int
	entrypoints int
	workers     int
	batchSize   int
}

func (c *demoCmd) define(fs *flag.FlagSet, e *env) {
	c.conn.define(fs, e)
	fs.Var(newIntFlag(&c.jobs, demoDefaultJobs, 1, demoMaxJobs), "jobs", "enqueue and run `N` jobs")
	fs.Var(newIntFlag(&c.entrypoints, demoDefaultEPs, 1, demoMaxEPs), "entrypoints",
		"spread the jobs over `N` entrypoints (demo.email, demo.resize, demo.report, demo.webhook, demo.task5…)")
	fs.Var(newIntFlag(&c.workers, demoDefaultWorkers, 1, demoMaxWorkers), "workers",
		"`N` QueueManagers working the queue concurrently")
	fs.Var(newIntFlag(&c.batchSize, pgq.DefaultBatchSize, 1, 10_000), "batch-size",
		"a worker claims up to `N` jobs per query")
}

func (c *demoCmd) validate(args []string, e *env) error {
	if err := noArgs(args); err != nil {
		return err
	}
	return c.conn.validate(e)
}

// demoJob is the payload of a demo job.
type demoJob struct {
	Seq    int    `json:"seq"` // position among its entrypoint's jobs
	Target string `json:"target"`
}

func demoNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		if i < len(demoEntrypoints) {
			names[i] = demoEntrypoints[i]
		} else {
			names[i] = fmt.Sprintf("demo.task%d", i+1)
		}
	}
	return names
}

// demoHandler does a little work (hashing the payload a few times, more for
// resize) and fails one demo.webhook job in demoFailEvery.
func demoHandler(name string, ran *atomic.Int64) pgq.Handler {
	rounds := 20
	if name == "demo.resize" {
		rounds = 200
	}
	return func(ctx context.Context, job *pgq.Job) error {
		defer ran.Add(1)
		var p demoJob
		if err := json.Unmarshal(job.Payload, &p); err != nil {
			return fmt.Errorf("bad payload: %w", err)
		}
		sum := sha256.Sum256(job.Payload)
		for range rounds {
			sum = sha256.Sum256(sum[:])
		}
		if name == demoFailing && p.Seq%demoFailEvery == demoFailEvery-1 {
			return fmt.Errorf("POST %s: 503 Service Unavailable (a simulated failure)", p.Target)
		}
		return nil
	}
}

func (c *demoCmd) run(ctx context.Context, e *env) (err error) {
	dsn, source := c.conn.DSN, c.conn.source
	var cluster *pgcluster.Cluster
	if dsn == "" {
		fmt.Fprintln(e.stderr, "Starting a throwaway PostgreSQL server (use --dsn or PGQ_DSN for your own)...")
		cluster, err = pgcluster.Start(ctx, pgcluster.Options{Log: e.stderr, Install: true})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			first, detail, _ := strings.Cut(err.Error(), "\n")
			if detail != "" {
				fmt.Fprintln(e.stderr, detail)
			}
			return fmt.Errorf("cannot start a throwaway PostgreSQL server: %s "+
				"(use --dsn or PGQ_DSN to run the demo on a running server)", first)
		}
		defer func() {
			if serr := cluster.Stop(); serr != nil && err == nil {
				err = fmt.Errorf("stopping the throwaway server: %w", serr)
			}
		}()
		dsn, source = cluster.DSN("postgres"), "the throwaway server"
	}

	res, err := c.work(ctx, e, dsn, source)
	if err != nil {
		return err
	}

	fmt.Fprintf(e.stdout, "Ran %d jobs in %s: %.0f jobs/s.\n",
		c.jobs, roundDuration(res.elapsed), float64(c.jobs)/res.elapsed.Seconds())
	order := []pgq.Status{pgq.StatusSuccessful, pgq.StatusException}
	for _, st := range slices.Sorted(maps.Keys(res.counts)) {
		if !slices.Contains(order, st) {
			order = append(order, st)
		}
	}
	width := len(strconv.Itoa(c.jobs))
	for _, st := range order {
		n := res.counts[st]
		name := string(st)
		if st == "" {
			name = "unknown"
		}
		note := ""
		if st == pgq.StatusException && n > 0 && slices.Contains(res.names, demoFailing) {
			note = fmt.Sprintf("   (%s fails 1 job in %d on purpose)", demoFailing, demoFailEvery)
		}
		fmt.Fprintf(e.stdout, "  %-11s %*d%s\n", name, width, n, note)
	}

	if cluster == nil {
		n := sqlname.Names{Prefix: c.conn.Prefix, Schema: c.conn.Schema}
		fmt.Fprintf(e.stdout, "The jobs ran in the database of %s; their history is in table %s.\n",
			source, n.Qualified(sqlname.LogTable))
		return nil
	}
	if err := cluster.Stop(); err != nil {
		return fmt.Errorf("stopping the throwaway server: %w", err)
	}
	fmt.Fprintln(e.stdout, "That ran on a throwaway PostgreSQL server, now stopped and deleted.")
	fmt.Fprintln(e.stdout, "Next: give pgq your database (--dsn or PGQ_DSN), run `pgq install`, and see `pgq help`.")
	return nil
}

// demoResult is what the demo measured.
type demoResult struct {
	names   []string
	elapsed time.Duration // from the workers' start to the last job's outcome
	counts  map[pgq.Status]int
}

// work installs the schema, enqueues the jobs, runs the workers and waits
// for every job. Everything it opens is closed when it returns.
func (c *demoCmd) work(ctx context.Context, e *env, dsn, source string) (*demoResult, error) {
	db, err := openDB(ctx, c.conn.Driver, dsn, source)
	if err != nil {
		return nil, err
	}
	defer db.Close()

	if err := pgq.Upgrade(ctx, db, c.conn.schemaOpts()...); err != nil {
		return nil, err
	}

	// Enqueue, round robin over the entrypoints.
	names := demoNames(c.entrypoints)
	q := pgq.NewQueries(db, c.conn.queryOpts()...)
	began := time.Now()
	ids := make([]pgq.JobID, 0, c.jobs)
	perEP := make([]int, len(names))
	for len(ids) < c.jobs {
		batch := make([]pgq.NewJob, min(demoEnqueueBatch, c.jobs-len(ids)))
		for i := range batch {
			k := (len(ids) + i) % len(names)
			payload, err := json.Marshal(demoJob{Seq: perEP[k], Target: fmt.Sprintf("https://example.com/%s/%d", names[k], perEP[k])})
			if err != nil {
				return nil, err
			}
			perEP[k]++
			batch[i] = pgq.NewJob{Entrypoint: names[k], Payload: payload}
		}
		got, err := q.EnqueueBatch(ctx, batch)
		if err != nil {
			return nil, err
		}
		ids = append(ids, got...)
	}
	fmt.Fprintf(e.stdout, "Enqueued %d jobs over %s in %s.\n",
		c.jobs, strings.Join(names, ", "), roundDuration(time.Since(began)))

	// Workers and watcher.
	var ran atomic.Int64
	warnings := &warnRecorder{}
	logger := slog.New(warnings)
	mopts := append(c.conn.managerOpts(), pgq.WithLogger(logger))
	wopts := append(c.conn.watcherOpts(), pgq.WithLogger(logger))
	if c.conn.Driver == "postgres" {
		// A lib/pq pool cannot lend a connection for LISTEN; give the
		// listeners their own.
		mopts = append(mopts, pgq.WithListenDSN(dsn))
		wopts = append(wopts, pgq.WithListenDSN(dsn))
	}
	managers := make([]*pgq.QueueManager, c.workers)
	for i := range managers {
		managers[i] = pgq.NewQueueManager(db, mopts...)
		for _, name := range names {
			if err := managers[i].Entrypoint(name, demoHandler(name, &ran)); err != nil {
				return nil, err
			}
		}
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	watcher, err := pgq.NewCompletionWatcher(runCtx, db, wopts...)
	if err != nil {
		return nil, err
	}
	defer watcher.Close()

	fmt.Fprintf(e.stderr, "Running them with %d worker(s), batch size %d...\n", c.workers, c.batchSize)
	began = time.Now()
	var workers sync.WaitGroup
	workerErrs := make([]error, c.workers)
	for i, qm := range managers {
		workers.Go(func() {
			workerErrs[i] = qm.Run(runCtx,
				pgq.WithMode(pgq.ModeDrain),
				pgq.WithBatchSize(c.batchSize),
				pgq.WithShutdownTimeout(demoShutdownTimeout))
		})
	}
	workersDone := make(chan struct{})
	go func() { workers.Wait(); close(workersDone) }()
	defer func() { stopRun(); <-workersDone }()

	var statuses map[pgq.JobID]pgq.Status
	var waitErr error
	waitDone := make(chan struct{})
	go func() {
		defer close(waitDone)
		statuses, waitErr = watcher.WaitForAll(runCtx, ids)
	}()
	defer func() { stopRun(); <-waitDone }()

	bar := newProgress(e.stderr, c.jobs)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	drained := workersDone
	var settle <-chan time.Time
	lastCount, lastChange := int64(0), time.Now()
	for waiting := true; waiting; {
		select {
		case <-waitDone:
			waiting = false
		case <-drained:
			drained = nil
			if err := errors.Join(workerErrs...); err != nil {
				bar.abort()
				return nil, schemaHint(err, &c.conn.naming)
			}
			if ctx.Err() == nil {
				settle = time.After(demoSettleTimeout)
			}
		case <-settle:
			bar.abort()
			return nil, fmt.Errorf("the workers drained the queue but not every job reached a final status within %v",
				demoSettleTimeout)
		case <-tick.C:
			n := ran.Load()
			bar.set(n)
			if n != lastCount {
				lastCount, lastChange = n, time.Now()
			} else if time.Since(lastChange) > demoStallTimeout {
				bar.abort()
				msg := fmt.Sprintf("no job finished in the last %v (%d of %d done)", demoStallTimeout, n, c.jobs)
				if w, _ := warnings.last(); w != "" {
					msg += "; the workers report: " + w
				}
				return nil, errors.New(msg)
			}
		}
	}
	elapsed := time.Since(began)
	if waitErr != nil {
		bar.abort()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("waiting for the jobs: %w", waitErr)
	}
	bar.finish(ran.Load())
	if w, n := warnings.last(); n > 0 {
		fmt.Fprintf(e.stderr, "Note: the workers logged %d warning(s); the last: %s\n", n, w)
	}
	if len(statuses) != len(ids) {
		return nil, fmt.Errorf("the watcher reported %d of %d jobs", len(statuses), len(ids))
	}

	// Count the outcomes from the log.
	final, err := q.JobStatus(ctx, ids)
	if err != nil {
		return nil, err
	}
	counts := map[pgq.Status]int{}
	for _, id := range ids {
		counts[final[id]]++
	}
	return &demoResult{names: names, elapsed: elapsed, counts: counts}, nil
}

// roundDuration rounds d for people: 1.23s, 456ms.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}

// progress shows how many jobs have run: an animated bar on a terminal, a
// few plain lines otherwise.
type progress struct {
	bar   *progressbar.ProgressBar // nil when w is not a terminal
	w     io.Writer
	total int64
	quart int64 // plain mode: quarters printed so far
	begin time.Time
	done  bool
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: int64(total), begin: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(int64(total),
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("Running jobs"),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("jobs"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetRenderBlankState(true),
		)
	}
	return p
}

func (p *progress) set(n int64) {
	if p.done {
		return
	}
	n = min(n, p.total)
	if p.bar != nil {
		_ = p.bar.Set64(n)
		return
	}
	// One line each time a quarter (25%, 50%, 75%) is passed.
	// 100% is finish's line.
	if q := min(3, n*4/p.total); q > p.quart && n < p.total {
		p.quart = q
		fmt.Fprintf(p.w, "  %3d%%  %d/%d jobs  %s\n", n*100/p.total, n, p.total, roundDuration(time.Since(p.begin)))
	}
}

func (p *progress) finish(n int64) {
	if p.done {
		return
	}
	p.set(n)
	p.done = true
	if p.bar != nil {
		_ = p.bar.Finish()
		return
	}
	fmt.Fprintf(p.w, "  100%%  %d/%d jobs  %s\n", min(n, p.total), p.total, roundDuration(time.Since(p.begin)))
}

// abort leaves the bar where it is and ends its line.
func (p *progress) abort() {
	if p.done {
		return
	}
	p.done = true
	if p.bar != nil {
		_ = p.bar.Exit()
		fmt.Fprintln(p.w)
	}
}

// warnRecorder is the workers' and watcher's slog.Handler in the demo: it
// keeps their warnings off the terminal (the progress display owns it) and
// remembers the last one for the summary or the error.
type warnRecorder struct {
	mu    sync.Mutex
	count int
	text  string
}

func (w *warnRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (w *warnRecorder) Handle(_ context.Context, r slog.Record) error {
	text := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" || a.Key == "error" {
			text += ": " + a.Value.String()
		}
		return true
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	w.count++
	w.text = text
	return nil
}

func (w *warnRecorder) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnRecorder) WithGroup(string) slog.Handler      { return w }

// last returns the last warning and how many there were.
func (w *warnRecorder) last() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.text, w.count
}
