// Package chaos is the engine of `pgq chaos`: it runs worker processes and
// producers against one database for a while, injects faults at random
// (seeded, logged), and then checks the ledger the handlers wrote against
// the jobs the producers had acknowledged: nothing lost, nothing stuck,
// every repeated run inside a crash window, every canceled job canceled by
// someone. docs/chaos.md describes the method and the definitions.
package chaos

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lib/pq"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Kind is a kind of fault.
type Kind string

// The fault kinds.
const (
	Kill      Kind = "kill"      // SIGKILL a worker process, start a new one
	Stop      Kind = "stop"      // SIGSTOP a worker for longer than the heartbeat timeout, then SIGCONT
	Terminate Kind = "terminate" // pg_terminate_backend of pgq connections (claim, outcome, heartbeat, listener, handler, producer)
	Restart   Kind = "restart"   // PostgreSQL fast restart (a managed server only)
	Crash     Kind = "crash"     // PostgreSQL immediate restart: a crash (a managed server only)
	Cancel    Kind = "cancel"    // MarkJobAsCancelled of random running and queued jobs
)

// Kinds lists every fault kind, in report order.
var Kinds = []Kind{Kill, Stop, Terminate, Restart, Crash, Cancel}

// ParseKinds parses a comma-separated list of kinds ("all" for every one).
func ParseKinds(s string) ([]Kind, error) {
	if s == "all" {
		return slices.Clone(Kinds), nil
	}
	var out []Kind
	for part := range strings.SplitSeq(s, ",") {
		k := Kind(strings.TrimSpace(part))
		if !slices.Contains(Kinds, k) {
			return nil, fmt.Errorf("unknown fault kind %q: want some of kill, stop, terminate, restart, crash, cancel (or all)", k)
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out, nil
}

// Server is a PostgreSQL server that the run may restart: see
// pgcluster.Cluster.
type Server interface {
	Restart(ctx context.Context) error // fast shutdown, start, wait until ready
	Crash(ctx context.Context) error   // immediate shutdown (crash recovery), start, wait until ready
}

// Config is a chaos run's settings.
type Config struct {
	DSN    string // the database of the workers and producers
	Driver string // the producers' and checker's driver; workers alternate pgx and postgres
	Prefix string // pgq's object names (as --prefix, --schema)
	Schema string
	// Server, when set, is the server DSN points to; Restart and Crash
	// faults need it.
	Server Server

	Workers   int           // worker processes
	Producers int           // producer goroutines
	Duration  time.Duration // how long faults are injected
	Seed      uint64
	// FaultEvery is the mean time between faults (uniform in 0.5-1.5×).
	FaultEvery time.Duration
	// Calm, when positive, alternates storms (faults) and calms (none) of
	// this length, starting with a storm, so that throughput with and
	// without faults can be compared.
	Calm             time.Duration
	Kinds            []Kind
	HeartbeatTimeout time.Duration
	Concurrency      int           // jobs one worker runs at once
	Work             time.Duration // a handler works up to this long
	Backlog          int           // producers keep about this many jobs queued
	CompleteTx       bool          // handlers mark their job done in their transaction
	// Command returns a new command that runs WorkerMain (the pgq binary's
	// `pgq chaos worker`, or a test binary); the run adds the environment.
	Command func() *exec.Cmd
	// Log receives the fault log and progress; WorkerLog the workers'
	// standard error. nil discards.
	Log, WorkerLog io.Writer
}

func (c *Config) check() error {
	switch {
	case c.Workers < 1:
		return fmt.Errorf("workers must be at least 1, got %d", c.Workers)
	case c.Producers < 1:
		return fmt.Errorf("producers must be at least 1, got %d", c.Producers)
	case c.Duration <= 0:
		return fmt.Errorf("duration must be positive, got %v", c.Duration)
	case c.FaultEvery <= 0:
		return fmt.Errorf("fault interval must be positive, got %v", c.FaultEvery)
	case c.HeartbeatTimeout < 100*time.Millisecond:
		return fmt.Errorf("heartbeat timeout must be at least 100ms, got %v", c.HeartbeatTimeout)
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency must be at least 1, got %d", c.Concurrency)
	case c.Backlog < 1:
		return fmt.Errorf("backlog must be at least 1, got %d", c.Backlog)
	case c.Work < 0:
		return fmt.Errorf("work must not be negative, got %v", c.Work)
	case c.Command == nil:
		return errors.New("no worker command")
	}
	for _, k := range c.Kinds {
		if (k == Restart || k == Crash) && c.Server == nil {
			return fmt.Errorf("fault %s needs a server the run manages (run without a DSN)", k)
		}
	}
	return nil
}

// Fault is one injected fault, in the server's clock.
type Fault struct {
	Kind  Kind      `json:"kind"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"` // = Start for kill and terminate; SIGCONT for stop; server ready for restart, crash
	// Pids are the worker processes it hit (none for restart, crash and
	// cancel; terminate: the owners of the terminated backends, 0 for a
	// producer's).
	Pids   []int   `json:"pids,omitempty"`
	Target string  `json:"target,omitempty"` // terminate: claim, outcome, heartbeat, listener, handler, producer
	Jobs   []int64 `json:"jobs,omitempty"`   // cancel: the jobs canceled
	Err    string  `json:"error,omitempty"`
}

// server is the state shared by a run's goroutines.
type server struct {
	cfg    Config
	db     *sql.DB
	q      *pgq.Queries
	names  sqlname.Names
	runID  string
	ledger string // quoted, qualified
	log    io.Writer
	offset time.Duration // server clock - local clock

	mu       sync.Mutex
	faults   []Fault
	acked    []ack
	canceled map[int64]bool
	workers  []*worker
	qmPid    map[string]int // queue manager id → worker pid
	queued   atomic.Int64   // the monitor's last count of queued chaos jobs
}

type ack struct {
	id int64
	at time.Time // server clock
}

type worker struct {
	slot   int
	driver string
	cmd    *exec.Cmd
	pid    int
	exited chan struct{}
	// stopped: SIGSTOPped now (guarded by server.mu)
	stopped bool
}

// now is the server's clock, as estimated at the start.
func (s *server) now() time.Time { return time.Now().Add(s.offset) }

func (s *server) logf(format string, args ...any) {
	if s.log != nil {
		s.mu.Lock()
		fmt.Fprintf(s.log, "%s "+format+"\n", append([]any{s.now().UTC().Format("15:04:05.000")}, args...)...)
		s.mu.Unlock()
	}
}

// Run runs a chaos run and reports. An error means the run could not be
// made (or checked); a run that found lost jobs returns a Report whose
// Failures say so.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Driver == "" {
		cfg.Driver = "pgx"
	}
	connString, err := withAppName(cfg.DSN, producerApp)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open(cfg.Driver, connString)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxIdleConns(cfg.Producers + 4)
	s := &server{
		cfg: cfg, db: db, log: cfg.Log,
		names:    sqlname.Names{Prefix: cfg.Prefix, Schema: cfg.Schema},
		canceled: map[int64]bool{},
		qmPid:    map[string]int{},
	}
	var naming []pgq.Option
	var schemaOpts []pgq.SchemaOption
	if cfg.Prefix != "" {
		naming = append(naming, pgq.WithPrefix(cfg.Prefix))
		schemaOpts = append(schemaOpts, pgq.WithPrefix(cfg.Prefix))
	}
	if cfg.Schema != "" {
		naming = append(naming, pgq.WithSchema(cfg.Schema))
		schemaOpts = append(schemaOpts, pgq.WithSchema(cfg.Schema))
	}
	s.q = pgq.NewQueries(db, naming...)
	if err := pgq.Upgrade(ctx, db, schemaOpts...); err != nil {
		return nil, err
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	s.runID = hex.EncodeToString(id[:])
	s.ledger = s.names.Qualified("pgq_chaos_ledger")
	if err := s.setup(ctx); err != nil {
		return nil, err
	}
	s.logf("run %s: seed %d, %d workers, %d producers, %v, faults %v every %v on average, heartbeat timeout %v",
		s.runID, cfg.Seed, cfg.Workers, cfg.Producers, cfg.Duration, cfg.Kinds, cfg.FaultEvery, cfg.HeartbeatTimeout)

	// Workers, each with a supervisor that starts it again when it dies
	// (killed, or failed to start while the server was down).
	superCtx, stopSupers := context.WithCancel(ctx)
	var supers sync.WaitGroup
	s.workers = make([]*worker, cfg.Workers)
	ready := make(chan struct{}, cfg.Workers)
	for i := range s.workers {
		supers.Go(func() { s.supervise(superCtx, i, ready) })
	}
	stopAll := func() {
		stopSupers()
		supers.Wait()
	}
	for range cfg.Workers {
		select {
		case <-ready:
		case <-ctx.Done():
			stopAll()
			return nil, ctx.Err()
		case <-time.After(60 * time.Second):
			stopAll()
			return nil, errors.New("worker processes not ready within 60s")
		}
	}

	began := s.now()
	chaosCtx, endChaos := context.WithTimeout(ctx, cfg.Duration)
	defer endChaos()
	var bg sync.WaitGroup
	bg.Go(func() { s.monitor(chaosCtx) })
	for i := range cfg.Producers {
		bg.Go(func() { s.produce(chaosCtx, i) })
	}
	var faults sync.WaitGroup
	faults.Go(func() { s.inject(chaosCtx, &faults) })
	faults.Wait() // every stopped worker continued, every restart over
	bg.Wait()
	ended := s.now()
	if ctx.Err() != nil {
		stopAll()
		return nil, ctx.Err()
	}

	s.logf("faults over; draining")
	drained := s.drain(ctx)
	stopAll()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return s.check(ctx, began, ended, drained)
}

// setup creates the ledger table (the handlers' side effect) and the
// tables the check fills.
func (s *server) setup(ctx context.Context) error {
	for _, stmt := range []string{
		"CREATE TABLE IF NOT EXISTS " + s.ledger + ` (
			run text NOT NULL, job_id bigint NOT NULL, attempt int NOT NULL, pid int NOT NULL,
			at timestamptz NOT NULL DEFAULT clock_timestamp())`,
		"CREATE INDEX IF NOT EXISTS " + sqlname.QuoteIdent(s.names.Name("pgq_chaos_ledger_run_idx")) +
			" ON " + s.ledger + " (run, at)",
		"CREATE TABLE IF NOT EXISTS " + s.names.Qualified("pgq_chaos_acked") + ` (
			run text NOT NULL, id bigint NOT NULL, at timestamptz NOT NULL, canceled bool NOT NULL DEFAULT false)`,
	} {
		if _, err := s.db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("creating the chaos tables: %w", err)
		}
	}
	// The server's clock: fault times and acknowledgements are compared
	// with the ledger's and the log's timestamps.
	before := time.Now()
	var srv time.Time
	if err := s.db.QueryRowContext(ctx, "SELECT clock_timestamp()").Scan(&srv); err != nil {
		return err
	}
	rtt := time.Since(before)
	s.offset = srv.Sub(before.Add(rtt / 2))
	return nil
}

// supervise keeps worker slot i running until ctx ends, then stops it with
// SIGTERM (SIGKILL after 10 s).
func (s *server) supervise(ctx context.Context, i int, ready chan<- struct{}) {
	drivers := []string{"pgx", "postgres"}
	first := true
	for ctx.Err() == nil {
		w, err := s.startWorker(ctx, i, drivers[i%2])
		if err != nil {
			if ctx.Err() == nil {
				s.logf("worker %d: %v; starting again", i, err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		if first {
			first = false
			ready <- struct{}{}
		}
		up := time.Now()
		select {
		case <-w.exited:
			if ctx.Err() == nil {
				s.logf("worker %d pid %d exited (%v); starting again", i, w.pid, w.cmd.ProcessState)
			}
			if time.Since(up) < 2*time.Second {
				sleep(ctx, 500*time.Millisecond) // the server is down, most likely
			}
		case <-ctx.Done():
			_ = w.cmd.Process.Signal(syscall.SIGCONT)
			_ = w.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-w.exited:
			case <-time.After(10 * time.Second):
				_ = w.cmd.Process.Kill()
				<-w.exited
			}
		}
	}
}

// startWorker starts a worker process in slot i and waits until it is
// ready.
func (s *server) startWorker(ctx context.Context, i int, driver string) (*worker, error) {
	cmd := s.cfg.Command()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env,
		EnvWorker+"=1", envDSN+"="+s.cfg.DSN, envDriver+"="+driver,
		envPrefix+"="+s.cfg.Prefix, envSchema+"="+s.cfg.Schema,
		envRun+"="+s.runID, envLedger+"="+s.ledger,
		envHeartbeat+"="+s.cfg.HeartbeatTimeout.String(),
		envConcurrency+"="+strconv.Itoa(s.cfg.Concurrency),
		envWork+"="+s.cfg.Work.String())
	if s.cfg.CompleteTx {
		cmd.Env = append(cmd.Env, envCompleteTx+"=1")
	}
	cmd.Stderr = s.cfg.WorkerLog
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &worker{slot: i, driver: driver, cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{})}
	line := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		l, _ := r.ReadString('\n')
		line <- l
		_, _ = io.Copy(io.Discard, r)
	}()
	go func() {
		_ = cmd.Wait()
		close(w.exited)
	}()
	select {
	case l := <-line:
		qm, ok := strings.CutPrefix(strings.TrimSpace(l), "ready ")
		if !ok {
			_ = cmd.Process.Kill()
			<-w.exited
			return nil, fmt.Errorf("worker process %d did not start (said %q)", w.pid, l)
		}
		s.mu.Lock()
		s.workers[i] = w
		s.qmPid[qm] = w.pid
		s.mu.Unlock()
		return w, nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-w.exited
		return nil, ctx.Err()
	}
}

// monitor counts the queued chaos jobs (for the producers' backlog).
func (s *server) monitor(ctx context.Context) {
	jobs := s.names.Qualified(sqlname.JobTable)
	for ctx.Err() == nil {
		var n int64
		err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM "+jobs+" WHERE entrypoint = $1 AND status = 'queued'", Entrypoint).Scan(&n)
		if err == nil {
			s.queued.Store(n)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// produce enqueues batches while fewer than the backlog are queued, and
// records the ids each acknowledged enqueue returned.
func (s *server) produce(ctx context.Context, i int) {
	const batchSize = 50
	batch := make([]pgq.NewJob, batchSize)
	for j := range batch {
		batch[j] = pgq.NewJob{Entrypoint: Entrypoint, Payload: []byte(strconv.Itoa(i))}
	}
	wait := 10 * time.Millisecond
	for ctx.Err() == nil {
		if s.queued.Load() >= int64(s.cfg.Backlog) {
			sleep(ctx, 20*time.Millisecond)
			continue
		}
		ids, err := s.q.EnqueueBatch(ctx, batch)
		if err != nil {
			// Not acknowledged (maybe committed: such jobs run, and are
			// not counted).
			sleep(ctx, wait)
			wait = min(2*wait, time.Second)
			continue
		}
		wait = 10 * time.Millisecond
		at := s.now()
		s.mu.Lock()
		for _, id := range ids {
			s.acked = append(s.acked, ack{id: int64(id), at: at})
		}
		s.queued.Add(int64(len(ids)))
		s.mu.Unlock()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// drain waits until none of the acknowledged jobs is left in the job
// table, or until their number has not fallen for the rescue period
// (twice the heartbeat timeout, and at least 15 s). It reports whether
// the queue drained.
func (s *server) drain(ctx context.Context) bool {
	s.mu.Lock()
	minID := int64(0)
	if len(s.acked) > 0 {
		minID = s.acked[0].id
		for _, a := range s.acked {
			minID = min(minID, a.id)
		}
	}
	s.mu.Unlock()
	jobs := s.names.Qualified(sqlname.JobTable)
	patience := max(2*s.cfg.HeartbeatTimeout+5*time.Second, 15*time.Second)
	last, since := int64(-1), time.Now()
	for ctx.Err() == nil {
		var n int64
		err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM "+jobs+" WHERE entrypoint = $1 AND id >= $2", Entrypoint, minID).Scan(&n)
		if err == nil {
			if n == 0 {
				return true
			}
			if last < 0 || n < last {
				last, since = n, time.Now()
			}
		}
		if time.Since(since) > patience {
			s.logf("%d jobs left, none finished for %v", last, patience)
			return false
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return false
}

// record adds a fault to the log.
func (s *server) record(f Fault) {
	s.mu.Lock()
	s.faults = append(s.faults, f)
	s.mu.Unlock()
	detail := ""
	if len(f.Pids) > 0 {
		detail += fmt.Sprintf(" pids %v", f.Pids)
	}
	if f.Target != "" {
		detail += " " + f.Target
	}
	if len(f.Jobs) > 0 {
		detail += fmt.Sprintf(" jobs %v", f.Jobs)
	}
	if !f.End.Equal(f.Start) {
		detail += fmt.Sprintf(" for %v", f.End.Sub(f.Start).Round(time.Millisecond))
	}
	if f.Err != "" {
		detail += " error: " + f.Err
	}
	s.logf("fault %s%s", f.Kind, detail)
}

// arrays for the checker's statements.
func int64s(v []int64) any { return pq.Array(v) }
