// Command fairbench measures fair share across tenants (docs/fairness.md):
// how long a small tenant's jobs wait while a big tenant's backlog drains,
// and what the keys cost the drain.
//
//	go run ./internal/cmd/withpg -- go run ./internal/cmd/fairbench [flags]
//
// It runs three phases on PGQ_TEST_DSN (or --dsn), each on an empty queue
// with one worker (pgx, or lib/pq with --driver postgres):
//
//   - idle: tenant B enqueues one job a second, nothing else is queued;
//   - keyed: tenant A's --backlog jobs are queued with fairness key
//     "tenant-a", then B enqueues with key "tenant-b" while they drain;
//   - plain: the same backlog and B's jobs without keys.
//
// For each it prints B's wait from its enqueue call to its handler's start
// (p50, p99, max; how much of it the enqueue call took; how many of the
// calls had to open a connection in B's pool, and the p99 of the others)
// and the backlog's drain rate (jobs per second from the worker's start to
// the backlog's last start). With --control it also times a bare one-row
// INSERT half a second after each of B's enqueues, which tells what the
// drain does to any write on the server from what it does to B's jobs;
// --samples keeps every one of B's jobs, so that runs can be pooled.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/lib/pq"

	"github.com/pgq-dev/pgq"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fairbench:", err)
		os.Exit(1)
	}
}

type options struct {
	dsn               string
	driver            string
	backlog           int
	idleSeconds       int
	batch, concurrent int
	phases            string
	syncOutcomes      bool
	samples           string
	control           bool
	bDSN              string
}

func run() error {
	var o options
	flag.StringVar(&o.dsn, "dsn", os.Getenv("PGQ_TEST_DSN"), "PostgreSQL connection string")
	flag.StringVar(&o.driver, "driver", "pgx", "database/sql driver: pgx or postgres (lib/pq)")
	flag.IntVar(&o.backlog, "backlog", 1_000_000, "tenant A's queued jobs")
	flag.IntVar(&o.idleSeconds, "idle-seconds", 60, "how long the idle phase samples B")
	flag.IntVar(&o.batch, "batch-size", 100, "WithBatchSize")
	flag.IntVar(&o.concurrent, "concurrency", 100, "WithMaxConcurrentTasks")
	flag.StringVar(&o.phases, "phases", "idle,keyed,plain", "phases to run, in order")
	flag.BoolVar(&o.syncOutcomes, "sync-outcomes", false, "WithSynchronousOutcomes")
	flag.StringVar(&o.samples, "samples", "", "append B's samples to this file: phase, enqueue time (Unix ns), enqueue call, wait (ns), 1 when the call opened a connection")
	flag.BoolVar(&o.control, "control", false, "half a second after each of B's enqueues, time a plain one-row INSERT (its own table, a committing transaction of its own) through B's pool")
	flag.StringVar(&o.bDSN, "b-dsn", "", "connection string for B's enqueues and the control (a pool of their own; default: the worker's pool)")
	flag.Parse()
	ctx := context.Background()
	db, err := sql.Open(o.driver, o.dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := pgq.Upgrade(ctx, db); err != nil {
		return err
	}
	if o.control {
		if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS fairbench_control (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"); err != nil {
			return err
		}
	}
	bdb := db
	if o.bDSN != "" {
		if bdb, err = sql.Open(o.driver, o.bDSN); err != nil {
			return err
		}
		defer bdb.Close()
	}
	for _, phase := range splitComma(o.phases) {
		r, err := o.phase(ctx, db, bdb, phase)
		if err != nil {
			return fmt.Errorf("%s: %w", phase, err)
		}
		if err := o.writeSamples(phase, r); err != nil {
			return err
		}
		waits, afters, warm := r.waits()
		fmt.Printf("%-6s B jobs %4d  wait p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (enqueue call p50 %5.1f ms  p99 %6.1f ms;"+
			" from its return p50 %7.1f ms  p99 %7.1f ms; %d calls opened a connection, the others' wait p99 %7.1f ms)",
			phase, len(r.samples), ms(pct(waits, 0.50)), ms(pct(waits, 0.99)), ms(pct(waits, 1)),
			ms(pct(r.enqueues, 0.50)), ms(pct(r.enqueues, 0.99)), ms(pct(afters, 0.50)), ms(pct(afters, 0.99)),
			len(waits)-len(warm), ms(pct(warm, 0.99)))
		if o.control {
			fmt.Printf("  control INSERT p50 %5.1f ms  p99 %6.1f ms", ms(pct(r.controls, 0.50)), ms(pct(r.controls, 0.99)))
		}
		if r.backlog > 0 {
			fmt.Printf("  backlog %d in %.1f s: %.0f jobs/s", r.backlog, r.drain.Seconds(), float64(r.backlog)/r.drain.Seconds())
		}
		fmt.Println()
	}
	return nil
}

type result struct {
	samples  []sample        // B's jobs that started
	enqueues []time.Duration // B's enqueue calls
	controls []time.Duration // the control INSERTs (--control)
	backlog  int
	drain    time.Duration
}

func (o options) phase(ctx context.Context, db, bdb *sql.DB, phase string) (result, error) {
	if _, err := db.ExecContext(ctx, "TRUNCATE pgqueuer, pgqueuer_log"); err != nil {
		return result{}, err
	}
	q := pgq.NewQueries(db)
	keyA, keyB := "", ""
	backlog := o.backlog
	switch phase {
	case "idle":
		backlog = 0
	case "keyed":
		keyA, keyB = "tenant-a", "tenant-b"
	case "plain":
	default:
		return result{}, fmt.Errorf("unknown phase %q", phase)
	}
	for left := backlog; left > 0; {
		n := min(left, 5000)
		jobs := make([]pgq.NewJob, n)
		for i := range jobs {
			jobs[i] = pgq.NewJob{Entrypoint: "work", Payload: []byte{'a'}, FairnessKey: keyA}
		}
		if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
			return result{}, err
		}
		left -= n
	}
	if _, err := db.ExecContext(ctx, "VACUUM ANALYZE pgqueuer"); err != nil {
		return result{}, err
	}
	var (
		mu       sync.Mutex
		enqueues []time.Duration
		controls []time.Duration
		returned sync.Map // B's enqueue time (UnixNano) -> the call's return and whether it opened a connection
		samples  []sample
		started  atomic.Int64
		lastA    atomic.Int64
		warm     atomic.Int64
		warmID   pgq.JobID
	)
	// A lib/pq pool cannot lend a connection to LISTEN: the worker gets its
	// own DSN, as the pgq docs tell lib/pq users to (without it the worker
	// polls, and B's idle wait is the poll interval).
	var mopts []pgq.ManagerOption
	if o.driver == "postgres" {
		mopts = append(mopts, pgq.WithListenDSN(o.dsn))
	}
	qm := pgq.NewQueueManager(db, mopts...)
	if err := qm.Entrypoint("work", func(_ context.Context, j *pgq.Job) error {
		now := time.Now()
		switch string(j.Payload) {
		case "warm":
			warm.Store(1)
			return nil
		case "b-warm":
			return nil
		}
		if len(j.Payload) == 9 { // B: 'b' and the enqueue time
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(j.Payload[1:])))
			mu.Lock()
			smp := sample{sent: sent, wait: now.Sub(sent)}
			if c, ok := returned.Load(sent.UnixNano()); ok {
				smp.call = c.(call).returned.Sub(sent)
			}
			samples = append(samples, smp)
			mu.Unlock()
			return nil
		}
		if started.Add(1) == int64(backlog) {
			lastA.Store(now.UnixNano())
		}
		return nil
	}); err != nil {
		return result{}, err
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	begin := time.Now()
	go func() {
		done <- qm.Run(wctx, pgq.WithBatchSize(o.batch), pgq.WithMaxConcurrentTasks(o.concurrent),
			pgq.WithSynchronousOutcomes(o.syncOutcomes))
	}()
	var opts []pgq.EnqueueOption
	if keyB != "" {
		opts = append(opts, pgq.WithFairnessKey(keyB))
	}
	// B's samples start once the worker runs jobs: its start-up is not a
	// wait that fairness changes.
	for started.Load() == 0 && backlog > 0 || warm.Load() == 0 && backlog == 0 {
		if backlog == 0 && warmID == 0 {
			id, err := q.Enqueue(ctx, "work", []byte("warm"), opts...)
			if err != nil {
				stop()
				return result{}, err
			}
			warmID = id
		}
		select {
		case err := <-done: // Run gave up (a schema check, a connection): say so rather than wait forever
			stop()
			return result{}, fmt.Errorf("the worker stopped before it ran a job: %w", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	bq := pgq.NewQueries(bdb)
	// One unsampled enqueue of the phase's kind through B's pool first: B
	// enqueues all the time, so its connection has the statement prepared.
	// Without it each phase's first sample prepared it (the keyed one under
	// the drain in 15-27 ms), and with 30-60 samples a phase that one was
	// the p99.
	if _, err := bq.Enqueue(ctx, "work", []byte("b-warm"), opts...); err != nil {
		stop()
		return result{}, err
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 0; ; n++ {
		if backlog == 0 && n >= o.idleSeconds || backlog > 0 && started.Load() >= int64(backlog) {
			break
		}
		before := opened(bdb)
		sent := time.Now()
		payload := binary.BigEndian.AppendUint64([]byte{'b'}, uint64(sent.UnixNano()))
		if _, err := bq.Enqueue(ctx, "work", payload, opts...); err != nil {
			stop()
			return result{}, err
		}
		ret := time.Now()
		returned.Store(sent.UnixNano(), call{returned: ret, fresh: opened(bdb) != before})
		enqueues = append(enqueues, ret.Sub(sent))
		if o.control {
			time.Sleep(time.Until(sent.Add(500 * time.Millisecond)))
			began := time.Now()
			if _, err := bdb.ExecContext(ctx, "INSERT INTO fairbench_control DEFAULT VALUES"); err != nil {
				stop()
				return result{}, err
			}
			controls = append(controls, time.Since(began))
		}
		select {
		case <-tick.C:
		case err := <-done:
			stop()
			return result{}, fmt.Errorf("the worker stopped during the phase: %w", err)
		}
	}
	time.Sleep(2 * time.Second) // B's last job
	stop()
	if err := <-done; err != nil {
		return result{}, err
	}
	mu.Lock()
	// Whether a call opened a connection is known once it returned, which
	// may be after its job started (the slowest calls most of all): read
	// it for every sample now, when every call has returned.
	for i := range samples {
		if c, ok := returned.Load(samples[i].sent.UnixNano()); ok {
			samples[i].fresh = c.(call).fresh
		}
	}
	r := result{samples: samples, enqueues: enqueues, controls: controls, backlog: backlog}
	mu.Unlock()
	if backlog > 0 {
		r.drain = time.Unix(0, lastA.Load()).Sub(begin)
	}
	return r, nil
}

// sample is one of B's jobs.
type sample struct {
	sent       time.Time     // its enqueue call
	call, wait time.Duration // the call; from the call to its handler's start (call 0: unknown)
	fresh      bool          // the call opened a connection (B's pool had none idle)
}

// call is one of B's enqueue calls, as its job's handler learns of it.
type call struct {
	returned time.Time
	fresh    bool // it opened a connection
}

// opened counts the connections db has opened: those open and those it
// closed. Another goroutine's open between two readings counts too; in
// fairbench only the worker's upkeep shares B's pool.
func opened(db *sql.DB) int64 {
	st := db.Stats()
	return int64(st.OpenConnections) + st.MaxIdleClosed + st.MaxIdleTimeClosed + st.MaxLifetimeClosed
}

// waits returns each of B's waits from its enqueue call to its handler's
// start, from the call's return to the start (for the jobs whose call had
// returned when they started), and the waits of the jobs whose call found
// a connection idle in B's pool (warm).
func (r result) waits() (waits, afters, warm []time.Duration) {
	for _, s := range r.samples {
		waits = append(waits, s.wait)
		if s.call > 0 {
			afters = append(afters, s.wait-s.call)
		}
		if !s.fresh {
			warm = append(warm, s.wait)
		}
	}
	return waits, afters, warm
}

func (o options) writeSamples(phase string, r result) error {
	if o.samples == "" {
		return nil
	}
	f, err := os.OpenFile(o.samples, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, s := range r.samples {
		fresh := 0
		if s.fresh {
			fresh = 1
		}
		fmt.Fprintf(w, "%s,%d,%d,%d,%d\n", phase, s.sent.UnixNano(), s.call, s.wait, fresh)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}
