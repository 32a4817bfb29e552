package pgq

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/notifier"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Defaults of the RunOptions.
const (
	DefaultBatchSize          = 100
	DefaultMaxConcurrentTasks = 100
	DefaultDequeueTimeout     = 5 * time.Second
	DefaultHeartbeatTimeout   = 30 * time.Second
	DefaultShutdownTimeout    = 30 * time.Second
	// DefaultPollInterval is how often a worker without a listener (a lib/pq
	// pool without WithListenDSN) looks for jobs.
	DefaultPollInterval = 250 * time.Millisecond
	// maxFinishBatch bounds the outcomes written by one statement.
	maxFinishBatch = 1000
)

type managerConfig struct {
	common
}

// QueueManager is a worker: it runs the handlers registered with
// Entrypoint on the jobs it claims. Any number of QueueManagers, in any
// number of processes, can share one queue; each job runs once.
type QueueManager struct {
	db    *sql.DB
	rdb   sqlname.DBTX // db with object names rewritten
	cfg   managerConfig
	q     *dbgen.Queries
	id    uuid.UUID
	mu    sync.Mutex
	eps   map[string]*entrypoint
	state int // 0 idle, 1 running
}

type entrypoint struct {
	name    string
	handler Handler
}

// EntrypointOption configures one entrypoint.
type EntrypointOption interface{ applyEntrypoint(*entrypoint) }

// NewQueueManager returns a worker that runs on db. Register handlers with
// Entrypoint, then call Run.
func NewQueueManager(db *sql.DB, opts ...ManagerOption) *QueueManager {
	cfg := managerConfig{common: newCommon()}
	for _, o := range opts {
		if o != nil {
			o.applyManager(&cfg)
		}
	}
	return &QueueManager{
		db:  db,
		rdb: sqlname.NewRewriter(cfg.names).Wrap(db),
		cfg: cfg,
		q:   dbgen.New(),
		id:  uuid.New(),
		eps: map[string]*entrypoint{},
	}
}

// ID returns the worker's id, the queue_manager_id of the jobs it holds.
func (qm *QueueManager) ID() uuid.UUID { return qm.id }

// Entrypoint registers h as the handler of the jobs enqueued for name. The
// worker only ever claims jobs of registered entrypoints.
func (qm *QueueManager) Entrypoint(name string, h Handler, opts ...EntrypointOption) error {
	if name == "" {
		return errors.New("pgq: entrypoint name is empty")
	}
	if h == nil {
		return fmt.Errorf("pgq: entrypoint %q: handler is nil", name)
	}
	ep := &entrypoint{name: name, handler: h}
	for _, o := range opts {
		if o != nil {
			o.applyEntrypoint(ep)
		}
	}
	qm.mu.Lock()
	defer qm.mu.Unlock()
	if qm.state != 0 {
		return fmt.Errorf("pgq: entrypoint %q: cannot register while Run is running", name)
	}
	if _, dup := qm.eps[name]; dup {
		return fmt.Errorf("pgq: entrypoint %q is already registered", name)
	}
	qm.eps[name] = ep
	return nil
}

// Mode says when Run returns.
type Mode int

const (
	// ModeContinuous runs until Run's ctx ends.
	ModeContinuous Mode = iota
	// ModeDrain returns nil once no job that the worker can run now is
	// queued and none is in flight.
	ModeDrain
)

// RunOption configures Run.
type RunOption func(*runConfig)

type runConfig struct {
	batchSize        int
	maxConcurrent    int
	dequeueTimeout   time.Duration
	heartbeatTimeout time.Duration
	shutdownTimeout  time.Duration
	pollInterval     time.Duration
	mode             Mode
	err              error
}

func (c *runConfig) check(err error) {
	if err != nil && c.err == nil {
		c.err = err
	}
}

// WithBatchSize sets how many jobs one claim takes at most (default
// DefaultBatchSize).
func WithBatchSize(n int) RunOption {
	return func(c *runConfig) {
		if n < 1 {
			c.check(fmt.Errorf("pgq: batch size must be at least 1, got %d", n))
		}
		c.batchSize = n
	}
}

// WithMaxConcurrentTasks bounds how many jobs this worker runs at once
// (default DefaultMaxConcurrentTasks).
func WithMaxConcurrentTasks(n int) RunOption {
	return func(c *runConfig) {
		if n < 1 {
			c.check(fmt.Errorf("pgq: max concurrent tasks must be at least 1, got %d", n))
		}
		c.maxConcurrent = n
	}
}

// WithDequeueTimeout sets how long the worker waits for a notification
// before it looks for jobs anyway (default DefaultDequeueTimeout). It
// bounds how late a job is found when a notification is lost.
func WithDequeueTimeout(d time.Duration) RunOption {
	return func(c *runConfig) { c.check(positive("dequeue timeout", d)); c.dequeueTimeout = d }
}

// WithHeartbeatTimeout sets after how long without a heartbeat a running
// job counts as abandoned (default DefaultHeartbeatTimeout).
func WithHeartbeatTimeout(d time.Duration) RunOption {
	return func(c *runConfig) { c.check(positive("heartbeat timeout", d)); c.heartbeatTimeout = d }
}

// WithShutdownTimeout sets how long Run, once its ctx ends, lets running
// handlers finish before it cancels their contexts (default
// DefaultShutdownTimeout).
func WithShutdownTimeout(d time.Duration) RunOption {
	return func(c *runConfig) { c.check(positive("shutdown timeout", d)); c.shutdownTimeout = d }
}

// WithPollInterval sets how often a worker that has no listener looks for
// jobs (default DefaultPollInterval).
func WithPollInterval(d time.Duration) RunOption {
	return func(c *runConfig) { c.check(positive("poll interval", d)); c.pollInterval = d }
}

// WithMode sets when Run returns: ModeContinuous (default) or ModeDrain.
func WithMode(m Mode) RunOption {
	return func(c *runConfig) {
		if m != ModeContinuous && m != ModeDrain {
			c.check(fmt.Errorf("pgq: unknown mode %d", int(m)))
		}
		c.mode = m
	}
}

// outcome is a finished job on its way to the log.
type outcome struct {
	id        JobID
	status    Status
	traceback string // JSON, for an exception
}

// Run claims and runs jobs until ctx ends (or, in ModeDrain, until the
// queue has nothing it can run). It wakes on the job table's notifications
// and also looks every dequeue timeout. When ctx ends it stops claiming,
// lets running handlers finish for up to the shutdown timeout, then cancels
// their contexts, writes every outcome, and returns nil. When it returns,
// every goroutine it started has ended.
func (qm *QueueManager) Run(ctx context.Context, opts ...RunOption) error {
	rc := runConfig{
		batchSize:        DefaultBatchSize,
		maxConcurrent:    DefaultMaxConcurrentTasks,
		dequeueTimeout:   DefaultDequeueTimeout,
		heartbeatTimeout: DefaultHeartbeatTimeout,
		shutdownTimeout:  DefaultShutdownTimeout,
		pollInterval:     DefaultPollInterval,
	}
	for _, o := range opts {
		if o != nil {
			o(&rc)
		}
	}
	if rc.err != nil {
		return rc.err
	}
	if qm.cfg.err != nil {
		return qm.cfg.err
	}
	qm.mu.Lock()
	if qm.state != 0 {
		qm.mu.Unlock()
		return errors.New("pgq: Run is already running on this QueueManager")
	}
	if len(qm.eps) == 0 {
		qm.mu.Unlock()
		return errors.New("pgq: no entrypoint registered; call Entrypoint before Run")
	}
	qm.state = 1
	eps := maps.Clone(qm.eps)
	qm.mu.Unlock()
	defer func() {
		qm.mu.Lock()
		qm.state = 0
		qm.mu.Unlock()
	}()

	if err := checkSchema(ctx, qm.db, qm.cfg.common); err != nil {
		return err
	}
	w := &run{
		qm:      qm,
		rc:      rc,
		eps:     eps,
		names:   slices.Sorted(maps.Keys(eps)),
		logger:  qm.cfg.logger.With("queue_manager_id", qm.id),
		wake:    make(chan struct{}, 1),
		done:    make(chan JobID, rc.maxConcurrent),
		results: make(chan outcome, rc.maxConcurrent),
	}
	return w.loop(ctx)
}

// run is the state of one Run call.
type run struct {
	qm      *QueueManager
	rc      runConfig
	eps     map[string]*entrypoint
	names   []string
	logger  *slog.Logger
	wake    chan struct{} // a notification said jobs may be waiting
	done    chan JobID    // a handler returned (its outcome is queued for writing)
	results chan outcome  // outcomes for the completer
}

func (w *run) loop(ctx context.Context) error {
	var bg sync.WaitGroup
	defer bg.Wait()

	// Handlers get their own context: it outlives ctx by the shutdown
	// grace period.
	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()

	listenCtx, stopListening := context.WithCancel(ctx)
	defer stopListening()
	poll := w.rc.dequeueTimeout
	if l := notifier.New(w.qm.db, w.qm.cfg.listenDSN, w.qm.cfg.names.Channel(), w.logger); l != nil {
		bg.Go(func() {
			_ = l.Run(listenCtx, notifier.Callbacks{
				Notify:    w.onNotify,
				Connected: w.signal,
			})
		})
	} else {
		poll = min(poll, w.rc.pollInterval)
	}

	completerDone := make(chan struct{})
	go func() {
		defer close(completerDone)
		w.complete()
	}()

	inFlight := 0
	want := true // look for jobs now
	threshold := max(1, min(w.rc.batchSize, w.rc.maxConcurrent)/4)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var claimErrWait time.Duration

	for ctx.Err() == nil {
		free := w.rc.maxConcurrent - inFlight
		if want && free >= threshold {
			want = false
			n := min(w.rc.batchSize, free)
			jobs, err := w.claim(ctx, n)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				claimErrWait = min(max(2*claimErrWait, 50*time.Millisecond), 5*time.Second)
				w.logger.Warn("pgq: claiming jobs failed; retrying", "err", err, "in", claimErrWait)
				resetTimer(timer, claimErrWait)
			} else {
				claimErrWait = 0
				for _, j := range jobs {
					inFlight++
					bg.Go(func() { w.execute(jobCtx, j) })
				}
				if len(jobs) == n {
					want = true // probably more waiting
					continue
				}
				if w.rc.mode == ModeDrain && len(jobs) == 0 && inFlight == 0 {
					break
				}
				resetTimer(timer, poll)
			}
		}
		select {
		case <-ctx.Done():
		case <-w.wake:
			want = true
		case <-timer.C:
			want = true
			timer.Reset(poll)
		case <-w.done:
			inFlight--
			if w.rc.mode == ModeDrain && inFlight == 0 {
				want = true
			}
		}
	}
	stopListening()

	// Shutdown: let running handlers finish within the grace period, then
	// cancel their contexts and wait for them.
	if inFlight > 0 {
		grace := time.NewTimer(w.rc.shutdownTimeout)
		for inFlight > 0 {
			select {
			case <-w.done:
				inFlight--
			case <-grace.C:
				w.logger.Warn("pgq: shutdown grace period over; canceling running jobs", "running", inFlight)
				cancelJobs()
			}
		}
		grace.Stop()
	}
	close(w.results)
	<-completerDone
	return nil
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

// signal asks the loop to look for jobs.
func (w *run) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *run) onNotify(payload string) {
	ev, ok := ParseEvent(payload)
	if !ok {
		return
	}
	if ev.Type == EventTableChanged && ev.Operation != "delete" {
		w.signal()
	}
}

func (w *run) claim(ctx context.Context, n int) ([]*Job, error) {
	rows, err := w.qm.q.JobsClaim(ctx, w.qm.rdb, dbgen.JobsClaimParams{
		Entrypoints:    w.names,
		BatchSize:      int32(n),
		QueueManagerID: uuid.NullUUID{UUID: w.qm.id, Valid: true},
	})
	if err != nil {
		return nil, interpretError(err)
	}
	jobs := make([]*Job, len(rows))
	for i, r := range rows {
		jobs[i] = &Job{
			ID:           JobID(r.ID),
			Priority:     r.Priority,
			Entrypoint:   r.Entrypoint,
			Payload:      r.Payload,
			Headers:      decodeHeaders(r.Headers),
			Attempts:     r.Attempts,
			DedupeKey:    r.DedupeKey.String,
			Created:      r.Created,
			ExecuteAfter: r.ExecuteAfter,
		}
	}
	return jobs, nil
}

// execute runs one job's handler and hands its outcome to the completer.
func (w *run) execute(ctx context.Context, job *Job) {
	out := outcome{id: job.ID, status: StatusSuccessful}
	err := w.callHandler(ctx, job)
	if err != nil {
		out.status = StatusException
		out.traceback = tracebackJSON(job, w.qm.id, err)
	}
	w.results <- out
	w.done <- job.ID
}

// panicError is a handler panic turned into an error.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

func (w *run) callHandler(ctx context.Context, job *Job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &panicError{value: r, stack: debug.Stack()}
			w.logger.Error("pgq: handler panicked", "entrypoint", job.Entrypoint, "job_id", job.ID, "panic", r)
		}
	}()
	ep := w.eps[job.Entrypoint]
	if ep == nil {
		return fmt.Errorf("pgq: no handler registered for entrypoint %q", job.Entrypoint)
	}
	return ep.handler(ctx, job)
}

// tracebackJSON renders an error in the shape of PGQueuer's traceback
// record, so that its tools show pgq's failures too.
func tracebackJSON(job *Job, qmID uuid.UUID, err error) string {
	tb := err.Error()
	var pe *panicError
	if errors.As(err, &pe) {
		tb = fmt.Sprintf("%s\n\n%s", pe.Error(), pe.stack)
	}
	b, _ := json.Marshal(map[string]any{
		"job_id":            job.ID,
		"timestamp":         time.Now().UTC(),
		"exception_type":    fmt.Sprintf("%T", err),
		"exception_message": err.Error(),
		"traceback":         tb,
		"additional_context": map[string]any{
			"entrypoint":       job.Entrypoint,
			"queue_manager_id": qmID,
			"attempts":         job.Attempts,
		},
	})
	return string(b)
}

// complete writes outcomes to the database. It writes at once when idle and,
// while a write is in progress, gathers what arrives meanwhile into the next
// write: one statement per batch under load, no timer on an idle queue.
func (w *run) complete() {
	batch := make([]outcome, 0, maxFinishBatch)
	for {
		o, ok := <-w.results
		if !ok {
			return
		}
		batch = append(batch[:0], o)
	gather:
		for len(batch) < maxFinishBatch {
			select {
			case o, ok := <-w.results:
				if !ok {
					break gather
				}
				batch = append(batch, o)
			default:
				break gather
			}
		}
		w.finish(batch)
	}
}

// finish writes one batch of outcomes, retrying while the database is
// unreachable (for up to a minute; after that the jobs stay picked and are
// rescued by the heartbeat timeout).
func (w *run) finish(batch []outcome) {
	p := dbgen.JobsFinishParams{
		Ids:            make([]int64, len(batch)),
		Statuses:       make([]string, len(batch)),
		Tracebacks:     make([]string, len(batch)),
		QueueManagerID: uuid.NullUUID{UUID: w.qm.id, Valid: true},
	}
	for i, o := range batch {
		p.Ids[i], p.Statuses[i], p.Tracebacks[i] = int64(o.id), string(o.status), o.traceback
	}
	wait := 50 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := w.qm.q.JobsFinish(ctx, w.qm.rdb, p)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			w.logger.Error("pgq: writing job outcomes failed; giving up", "jobs", len(batch), "err", err)
			return
		}
		w.logger.Warn("pgq: writing job outcomes failed; retrying", "jobs", len(batch), "err", err, "in", wait)
		time.Sleep(wait)
		wait = min(2*wait, 2*time.Second)
	}
}
