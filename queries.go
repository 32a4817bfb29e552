package pgq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
	"github.com/pgq-dev/pgq/internal/sqlname"
)

// Queries enqueues jobs and reads and changes their state. It runs on the
// DBTX it was made with: on a *sql.Tx, what it does becomes visible only
// when the caller commits. A Queries is safe for concurrent use when its
// DBTX is.
type Queries struct {
	db    sqlname.DBTX // wrapped to rewrite object names
	cfg   common
	q     *dbgen.Queries
	names sqlname.Names
}

// NewQueries returns a Queries that runs on db. Invalid options are
// reported by the first call.
func NewQueries(db DBTX, opts ...Option) *Queries {
	c := newCommon()
	for _, o := range opts {
		if o != nil {
			o.applyQueries(&c)
		}
	}
	return &Queries{
		db:    wrapDB(c.names, db),
		cfg:   c,
		q:     dbgen.New(),
		names: c.names,
	}
}

// NewJob describes one job for EnqueueBatch.
type NewJob struct {
	Entrypoint   string            // the handler name; required
	Payload      []byte            // opaque bytes, up to MaxPayloadSize; nil is stored as NULL
	Priority     int32             // higher runs first
	ExecuteAfter time.Duration     // not run before now + ExecuteAfter
	DedupeKey    string            // "" for none; see WithDedupeKey
	Headers      map[string]string // free-form metadata, e.g. trace context
	Timeout      time.Duration     // 0, or the job's own timeout: see WithJobTimeout
	MaxAttempts  int               // 0, or the job's own total tries: see WithMaxAttempts
	FairnessKey  string            // "" for none; see WithFairnessKey
	SerialKey    string            // "" for none; see WithSerialKey
	// After lists jobs enqueued earlier that this one waits for: see
	// WithAfter. Jobs of one batch cannot wait for each other.
	After []JobID
	// HoldOnDependencyFailure holds the job, rather than cancel it, when
	// a job of After fails: see WithHoldOnDependencyFailure.
	HoldOnDependencyFailure bool
}

// EnqueueOption configures Enqueue (and, for WithSkipDuplicates,
// EnqueueBatch).
type EnqueueOption interface{ applyEnqueue(*enqueueConfig) }

// BatchOption configures EnqueueBatch.
type BatchOption interface{ applyBatch(*enqueueConfig) }

type enqueueConfig struct {
	job            NewJob
	skipDuplicates bool
	err            error // a bad option (an empty key)
}

type enqueueOption func(*enqueueConfig)

func (o enqueueOption) applyEnqueue(c *enqueueConfig) { o(c) }

// WithPriority sets the job's priority; higher runs first. The default is 0.
func WithPriority(p int32) EnqueueOption {
	return enqueueOption(func(c *enqueueConfig) { c.job.Priority = p })
}

// WithExecuteAfter delays the job: no worker runs it before now + d.
func WithExecuteAfter(d time.Duration) EnqueueOption {
	return enqueueOption(func(c *enqueueConfig) { c.job.ExecuteAfter = d })
}

// WithDedupeKey gives the job a dedupe key: while a job with the same key is
// queued or running, enqueuing another fails with ErrDuplicateJob (or is
// skipped, with WithSkipDuplicates).
func WithDedupeKey(key string) EnqueueOption {
	return enqueueOption(func(c *enqueueConfig) { c.job.DedupeKey = key })
}

// WithHeaders attaches free-form metadata to the job (trace context, for
// instance); handlers see it in Job.Headers.
func WithHeaders(h map[string]string) EnqueueOption {
	return enqueueOption(func(c *enqueueConfig) { c.job.Headers = h })
}

// SkipDuplicatesOption is WithSkipDuplicates.
type SkipDuplicatesOption struct{}

func (SkipDuplicatesOption) applyEnqueue(c *enqueueConfig) { c.skipDuplicates = true }
func (SkipDuplicatesOption) applyBatch(c *enqueueConfig)   { c.skipDuplicates = true }

// WithSkipDuplicates makes an enqueue skip, rather than fail on, a job whose
// dedupe key is already held by a queued or running job. A skipped job gets
// id 0.
func WithSkipDuplicates() SkipDuplicatesOption { return SkipDuplicatesOption{} }

// Enqueue adds one job and its 'queued' log row, and returns its id. The
// trigger on the job table notifies workers when the insert commits.
func (q *Queries) Enqueue(ctx context.Context, entrypoint string, payload []byte, opts ...EnqueueOption) (JobID, error) {
	c := enqueueConfig{job: NewJob{Entrypoint: entrypoint, Payload: payload}}
	for _, o := range opts {
		if o != nil {
			o.applyEnqueue(&c)
		}
	}
	if c.err != nil {
		return 0, c.err
	}
	ids, err := q.enqueue(ctx, []NewJob{c.job}, c.skipDuplicates)
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// EnqueueBatch adds jobs in one statement, with their 'queued' log rows, and
// returns their ids in input order. Either all are added or none (with
// WithSkipDuplicates, duplicates get id 0 and the rest are added).
func (q *Queries) EnqueueBatch(ctx context.Context, jobs []NewJob, opts ...BatchOption) ([]JobID, error) {
	var c enqueueConfig
	for _, o := range opts {
		if o != nil {
			o.applyBatch(&c)
		}
	}
	if len(jobs) == 0 {
		return nil, nil
	}
	return q.enqueue(ctx, jobs, c.skipDuplicates)
}

func validateJob(i int, j NewJob) error {
	switch {
	case j.Entrypoint == "":
		return fmt.Errorf("pgq: job %d: empty entrypoint", i)
	case len(j.Payload) > MaxPayloadSize:
		return fmt.Errorf("pgq: job %d (%s): payload of %d bytes is larger than MaxPayloadSize (%d)",
			i, j.Entrypoint, len(j.Payload), MaxPayloadSize)
	case j.ExecuteAfter < 0:
		return fmt.Errorf("pgq: job %d (%s): execute after %v is negative", i, j.Entrypoint, j.ExecuteAfter)
	case j.ExecuteAfter > MaxExecuteAfter:
		return fmt.Errorf("pgq: job %d (%s): execute after %v is more than MaxExecuteAfter (100 years)",
			i, j.Entrypoint, j.ExecuteAfter)
	}
	if err := checkControl(j); err != nil {
		return fmt.Errorf("pgq: job %d (%s): %w", i, j.Entrypoint, err)
	}
	if err := checkKeys(j); err != nil {
		return fmt.Errorf("pgq: job %d (%s): %w", i, j.Entrypoint, err)
	}
	if err := checkAfter(j); err != nil {
		return fmt.Errorf("pgq: job %d (%s): %w", i, j.Entrypoint, err)
	}
	return nil
}

// EnqueueFunc enqueues jobs and returns their ids in input order (0 for a
// skipped duplicate): the step an EnqueueHook wraps.
type EnqueueFunc func(ctx context.Context, jobs []NewJob) ([]JobID, error)

// EnqueueHook wraps every Enqueue and EnqueueBatch call of a Queries (one
// call of next per call, with all of a batch's jobs), for tracing, metrics
// or headers of your own: it may start a span around next, add headers to
// the jobs, look at the error. jobs is the caller's slice: a hook that
// changes jobs passes next a copy. Enqueue passes a slice of one job.
type EnqueueHook func(next EnqueueFunc) EnqueueFunc

type enqueueHookOption []EnqueueHook

func (o enqueueHookOption) applyQueries(c *common) { c.hooks = append(c.hooks, o...) }

// WithEnqueueHook makes every Enqueue and EnqueueBatch of the Queries go
// through hooks, in order (the first is outermost). Jobs enqueued in other
// ways (by a SchedulerManager, or a retry) do not.
func WithEnqueueHook(hooks ...EnqueueHook) Option { return enqueueHookOption(hooks) }

func (q *Queries) enqueue(ctx context.Context, jobs []NewJob, skipDuplicates bool) ([]JobID, error) {
	if q.cfg.err != nil {
		return nil, q.cfg.err
	}
	if len(q.cfg.hooks) == 0 {
		return q.insert(ctx, jobs, skipDuplicates)
	}
	next := EnqueueFunc(func(ctx context.Context, jobs []NewJob) ([]JobID, error) {
		return q.insert(ctx, jobs, skipDuplicates)
	})
	for i := len(q.cfg.hooks) - 1; i >= 0; i-- {
		if h := q.cfg.hooks[i]; h != nil {
			next = h(next)
		}
	}
	return next(ctx, jobs)
}

// insert validates jobs and enqueues them in one statement.
func (q *Queries) insert(ctx context.Context, jobs []NewJob, skipDuplicates bool) ([]JobID, error) {
	n := len(jobs)
	p := dbgen.JobsEnqueueParams{
		Priorities:     make([]int32, n),
		Entrypoints:    make([]string, n),
		Payloads:       make([][]byte, n),
		PayloadNulls:   make([]bool, n),
		ExecuteAfterUs: make([]int64, n),
		DedupeKeys:     make([]string, n),
		Headers:        make([]string, n),
	}
	var keys *jobKeys
	for i, j := range jobs {
		if err := validateJob(i, j); err != nil {
			return nil, err
		}
		p.Priorities[i] = j.Priority
		p.Entrypoints[i] = j.Entrypoint
		p.Payloads[i] = j.Payload
		p.PayloadNulls[i] = j.Payload == nil
		p.ExecuteAfterUs[i] = j.ExecuteAfter.Microseconds()
		p.DedupeKeys[i] = j.DedupeKey
		keys = keys.add(n, i, j)
		if headers := controlHeaders(j); headers != nil {
			h, err := json.Marshal(headers)
			if err != nil {
				return nil, fmt.Errorf("pgq: job %d (%s): headers: %w", i, j.Entrypoint, err)
			}
			p.Headers[i] = string(h)
		}
	}
	var rows []*dbgen.JobsEnqueueRow
	var err error
	waits := slices.ContainsFunc(jobs, func(j NewJob) bool { return len(j.After) > 0 })
	if waits && skipDuplicates {
		return nil, errors.New("pgq: enqueue: WithSkipDuplicates does not combine with WithAfter (NewJob.After)")
	}
	if waits {
		rows, err = q.insertAfter(ctx, jobs, p, keys)
		if err != nil {
			return nil, err
		}
		return matchIDs(jobs, rows, false)
	}
	if keys != nil {
		rows, err = q.insertKeyed(ctx, p, keys, skipDuplicates)
	} else if skipDuplicates {
		var srows []*dbgen.JobsEnqueueSkipDuplicatesRow
		srows, err = q.q.JobsEnqueueSkipDuplicates(ctx, q.db, dbgen.JobsEnqueueSkipDuplicatesParams(p))
		for _, r := range srows {
			rows = append(rows, (*dbgen.JobsEnqueueRow)(r))
		}
	} else {
		rows, err = q.q.JobsEnqueue(ctx, q.db, p)
	}
	if err != nil {
		return nil, fmt.Errorf("pgq: enqueue: %w", interpretError(err))
	}
	return matchIDs(jobs, rows, skipDuplicates)
}

// matchIDs puts the inserted ids (ascending, so in insertion order) back in
// input order. Without skipped rows that is position for position; with
// skipped duplicates, a job gets an id only if its dedupe key (or, without a
// key, its turn) matches the next inserted row.
func matchIDs(jobs []NewJob, rows []*dbgen.JobsEnqueueRow, skipped bool) ([]JobID, error) {
	ids := make([]JobID, len(jobs))
	if !skipped && len(rows) != len(jobs) {
		return nil, fmt.Errorf("pgq: enqueue: %d jobs given, %d inserted", len(jobs), len(rows))
	}
	r := 0
	for i, j := range jobs {
		if r >= len(rows) {
			break
		}
		key := ""
		if rows[r].DedupeKey.Valid {
			key = rows[r].DedupeKey.String
		}
		if key == j.DedupeKey {
			ids[i] = JobID(rows[r].ID)
			r++
		}
	}
	return ids, nil
}

// MarkJobAsCancelled cancels jobs: their rows are removed and they are
// logged 'canceled' at once, whatever their status. For running ones a
// cancellation_event is sent on the queue's channel, and the worker running
// each cancels its handler's context within milliseconds (or, should the
// notification be lost, at its next heartbeat). Unknown or finished ids are
// ignored.
func (q *Queries) MarkJobAsCancelled(ctx context.Context, ids []JobID) error {
	if q.cfg.err != nil {
		return q.cfg.err
	}
	if len(ids) == 0 {
		return nil
	}
	raw := toInt64s(ids)
	if _, err := q.q.JobsCancel(ctx, q.db, raw); err != nil {
		return fmt.Errorf("pgq: cancel: %w", interpretError(err))
	}
	// One event per maxEventIDs ids: a NOTIFY payload must stay under
	// PostgreSQL's 8000 bytes.
	for chunk := range slices.Chunk(ids, maxEventIDs) {
		payload, err := json.Marshal(newCancellationEvent(q.names.Channel(), chunk))
		if err != nil {
			return err
		}
		if err := q.q.Notify(ctx, q.db, dbgen.NotifyParams{Channel: q.names.Channel(), Payload: string(payload)}); err != nil {
			return fmt.Errorf("pgq: cancel: notify (%d bytes): %w", len(payload), interpretError(err))
		}
	}
	return nil
}

// maxEventIDs is the most job ids one cancellation event carries: 300 ids
// of up to 19 digits and the event's other fields take under 6,400 bytes,
// within the 8,000 bytes PostgreSQL allows a NOTIFY payload.
const maxEventIDs = 300

// JobStatus returns the latest status of each of ids, from the log. Ids
// with no log row are absent from the map.
func (q *Queries) JobStatus(ctx context.Context, ids []JobID) (map[JobID]Status, error) {
	if q.cfg.err != nil {
		return nil, q.cfg.err
	}
	rows, err := q.q.LogLatestStatus(ctx, q.db, toInt64s(ids))
	if err != nil {
		return nil, fmt.Errorf("pgq: job status: %w", interpretError(err))
	}
	out := make(map[JobID]Status, len(rows))
	for _, r := range rows {
		out[JobID(r.JobID)] = Status(r.Status)
	}
	return out, nil
}

// QueueCount is the number of jobs of one entrypoint, priority and status.
type QueueCount struct {
	Entrypoint string
	Priority   int32
	Status     Status
	Count      int64
}

// QueueSize counts the jobs in the job table by entrypoint, priority and
// status.
func (q *Queries) QueueSize(ctx context.Context) ([]QueueCount, error) {
	if q.cfg.err != nil {
		return nil, q.cfg.err
	}
	rows, err := q.q.JobsCountByStatus(ctx, q.db)
	if err != nil {
		return nil, fmt.Errorf("pgq: queue size: %w", interpretError(err))
	}
	out := make([]QueueCount, len(rows))
	for i, r := range rows {
		out[i] = QueueCount{Entrypoint: r.Entrypoint, Priority: r.Priority, Status: Status(r.Status), Count: r.Count}
	}
	return out, nil
}

func toInt64s(ids []JobID) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

func sortedIDs(ids []JobID) []JobID {
	s := slices.Clone(ids)
	slices.Sort(s)
	return slices.Compact(s)
}

// Requeue puts held (failed) jobs back in the queue, due now, with their
// attempts reset to 0 (a fresh set of retries, as PGQueuer does); it
// returns the ids that were held and are queued again.
func (q *Queries) Requeue(ctx context.Context, ids []JobID) ([]JobID, error) {
	if q.cfg.err != nil {
		return nil, q.cfg.err
	}
	rows, err := q.q.JobsRequeue(ctx, q.db, toInt64s(ids))
	if err != nil {
		return nil, fmt.Errorf("pgq: requeue: %w", interpretError(err))
	}
	out := make([]JobID, len(rows))
	for i, id := range rows {
		out[i] = JobID(id)
	}
	slices.Sort(out)
	return out, nil
}

// FailedJob is a job held after its last failed attempt (see Hold).
type FailedJob struct {
	Job
	Updated   time.Time // when it failed
	LastError string    // the error of its last attempt
}

// ListFailed returns up to limit held jobs, most recently failed first.
func (q *Queries) ListFailed(ctx context.Context, limit int) ([]FailedJob, error) {
	if q.cfg.err != nil {
		return nil, q.cfg.err
	}
	if limit < 1 {
		return nil, fmt.Errorf("pgq: list failed: limit must be at least 1, got %d", limit)
	}
	rows, err := q.q.JobsListFailed(ctx, q.db, int32(min(limit, 1<<30)))
	if err != nil {
		return nil, fmt.Errorf("pgq: list failed: %w", interpretError(err))
	}
	out := make([]FailedJob, len(rows))
	for i, r := range rows {
		out[i] = failedJobFromRow(r)
	}
	return out, nil
}
