package pgq

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"

	"github.com/pgq-dev/pgq/dbgen"
)

// Defaults of Stats.
const (
	// DefaultStatsWindow is the span of recent activity Stats counts.
	DefaultStatsWindow = time.Minute
	// DefaultStatsErrors is how many recent errors Stats returns.
	DefaultStatsErrors = 10
	// MaxStatsWindow and MaxStatsErrors bound WithStatsWindow and
	// WithStatsErrors.
	MaxStatsWindow = 24 * time.Hour
	MaxStatsErrors = 1000
)

// Stats is a picture of a queue: what waits in the job table, what happened
// recently (from the log and the statistics table, so it counts the work of
// every worker, pgq's and PGQueuer's), and the latest errors.
type Stats struct {
	// At is the database's clock when the picture was taken.
	At time.Time
	// Queue counts the jobs in the job table by entrypoint, priority
	// (highest first) and status (queued, picked, failed).
	Queue []QueueDepth
	// OldestQueued is how long the queued job that has been due the longest
	// has waited since it became due (its execute_after, which for a job
	// enqueued without a delay is when it was enqueued); 0 when no queued
	// job is due. Jobs delayed into the future are not late and not counted.
	OldestQueued time.Duration
	// Since is the start of the window of Recent: the start of the second
	// one window (see WithStatsWindow) before At.
	Since time.Time
	// Recent counts the status transitions since Since by entrypoint and
	// status (queued: enqueued or retried; picked: started; then the
	// outcomes). Each transition is counted once, whether a worker has
	// folded it into the statistics table yet or not.
	Recent []StatusCount
	// Finished is how many jobs reached a terminal status (successful,
	// exception, canceled, deleted) since Since, and JobsPerSecond that
	// number per second of the window.
	Finished      int64
	JobsPerSecond float64
	// Errors are the latest errors, newest first (see WithStatsErrors).
	Errors []JobError
	// Workers are the workers seen on the queue, by id: those holding jobs
	// and the running pgq workers, idle or not, which pgq finds by the
	// application_name it gives their claim and listener connections in
	// pg_stat_activity. A pgq worker without an open listener connection
	// polls (see QueueManager.Listening); PGQueuer's workers show as not
	// listening, since pgq cannot tell their listeners apart, and only
	// while they hold jobs. A worker whose pool is too small to spare it
	// connections of its own (SetMaxOpenConns below five; see Run) is
	// seen only by its listener or its jobs. Behind a transaction-mode pooler the
	// server's connections carry the names of the clients that used them
	// last: the list is approximate (see docs/pgbouncer.md).
	Workers []WorkerState
	// Watchers is how many CompletionWatchers listen on the queue's
	// channel.
	Watchers int64
	// Paused are the entrypoints paused fleet-wide (Queries.Pause), by
	// name.
	Paused []PausedEntrypoint
}

// WorkerState is a row of Stats.Workers.
type WorkerState struct {
	ID        uuid.UUID // the worker's id (QueueManager.ID), the queue_manager_id of its jobs
	Running   int64     // jobs it holds (picked)
	Listening bool      // its listener connection is open
	// LastHeartbeat is the latest heartbeat among the jobs it holds; zero
	// when it holds none.
	LastHeartbeat time.Time
}

// QueueDepth is a row of Stats.Queue.
type QueueDepth struct {
	QueueCount
	// OldestWait is, for queued jobs, how long the one that has been due the
	// longest has waited (see Stats.OldestQueued); 0 otherwise.
	OldestWait time.Duration
}

// StatusCount is how many transitions to Status the jobs of Entrypoint made
// in a Stats window.
type StatusCount struct {
	Entrypoint string
	Status     Status
	Count      int64
}

// JobError is an error a job's handler returned, from the log.
type JobError struct {
	JobID      JobID
	Entrypoint string
	// Status is what the error led to: StatusException (the job failed for
	// good), StatusFailed (it is held) or StatusQueued (it waits for a
	// retry; only the last error of a job still waiting for or running its
	// retry is listed).
	Status  Status
	Time    time.Time // when the error was logged
	Message string    // the traceback's exception_message
}

// StatsOption configures Stats: WithStatsWindow, WithStatsErrors.
type StatsOption interface{ applyStats(*statsConfig) }

type statsOption func(*statsConfig)

func (o statsOption) applyStats(c *statsConfig) { o(c) }

type statsConfig struct {
	window time.Duration
	errors int
	err    error
}

// WithStatsWindow sets the span of recent activity Stats counts, in whole
// seconds from one second to MaxStatsWindow (default DefaultStatsWindow).
func WithStatsWindow(d time.Duration) StatsOption {
	return statsOption(func(c *statsConfig) {
		if d < time.Second || d > MaxStatsWindow || d%time.Second != 0 {
			c.err = fmt.Errorf("pgq: stats window %v: want whole seconds from 1s to %v", d, MaxStatsWindow)
			return
		}
		c.window = d
	})
}

// WithStatsErrors sets how many of the latest errors Stats returns, from 0
// (none, and no query for them) to MaxStatsErrors (default
// DefaultStatsErrors).
func WithStatsErrors(n int) StatsOption {
	return statsOption(func(c *statsConfig) {
		if n < 0 || n > MaxStatsErrors {
			c.err = fmt.Errorf("pgq: stats errors %d: want 0 to %d", n, MaxStatsErrors)
			return
		}
		c.errors = n
	})
}

// Stats reads a picture of the queue: its depth by entrypoint, priority and
// status, how long the oldest due job has waited, the transitions of the
// last minute (and jobs finished per second), and the latest errors. It
// runs a few read-only statements, each served by an index of the log and
// statistics tables (the depth is one pass over the job table, which holds
// only live jobs), so it may be called every few seconds on a busy queue.
func (q *Queries) Stats(ctx context.Context, opts ...StatsOption) (Stats, error) {
	c := statsConfig{window: DefaultStatsWindow, errors: DefaultStatsErrors}
	for _, o := range opts {
		if o != nil {
			o.applyStats(&c)
		}
	}
	if q.cfg.err != nil {
		return Stats{}, q.cfg.err
	}
	if c.err != nil {
		return Stats{}, c.err
	}
	fail := func(err error) (Stats, error) { return Stats{}, fmt.Errorf("pgq: stats: %w", interpretError(err)) }

	clock, err := q.q.StatsClock(ctx, q.db, c.window.Seconds())
	if err != nil {
		return fail(err)
	}
	s := Stats{At: clock.Now.UTC(), Since: clock.Since.UTC()}

	depth, err := q.q.StatsQueueDepth(ctx, q.db)
	if err != nil {
		return fail(err)
	}
	s.Queue = make([]QueueDepth, len(depth))
	for i, r := range depth {
		wait := seconds(r.OldestWaitS)
		s.Queue[i] = QueueDepth{
			QueueCount: QueueCount{Entrypoint: r.Entrypoint, Priority: r.Priority, Status: Status(r.Status), Count: r.Count},
			OldestWait: wait,
		}
		s.OldestQueued = max(s.OldestQueued, wait)
	}

	recent, err := q.q.StatsRecent(ctx, q.db, clock.Since)
	if err != nil {
		return fail(err)
	}
	s.Recent = make([]StatusCount, len(recent))
	for i, r := range recent {
		s.Recent[i] = StatusCount{Entrypoint: r.Entrypoint, Status: Status(r.Status), Count: r.Count}
		if s.Recent[i].Status.Terminal() {
			s.Finished += r.Count
		}
	}
	if span := s.At.Sub(s.Since).Seconds(); span > 0 {
		s.JobsPerSecond = float64(s.Finished) / span
	}

	workers, err := q.q.StatsWorkers(ctx, q.db, q.cfg.names.Channel())
	if err != nil {
		return fail(err)
	}
	s.Workers = make([]WorkerState, len(workers))
	for i, r := range workers {
		s.Workers[i] = WorkerState{ID: r.ID, Running: r.Running, Listening: r.Listening}
		if r.Running > 0 {
			s.Workers[i].LastHeartbeat = r.LastHeartbeat.UTC()
		}
	}
	if s.Watchers, err = q.q.StatsWatchers(ctx, q.db, q.cfg.names.Channel()); err != nil {
		return fail(err)
	}
	paused, err := q.q.PausedList(ctx, q.db)
	if err != nil {
		return fail(err)
	}
	s.Paused = pausedFromRows(paused)

	if c.errors > 0 {
		rows, err := q.q.StatsRecentErrors(ctx, q.db, int32(c.errors))
		if err != nil {
			return fail(err)
		}
		s.Errors = make([]JobError, len(rows))
		for i, r := range rows {
			s.Errors[i] = JobError{JobID: JobID(r.JobID), Entrypoint: r.Entrypoint, Status: Status(r.Status),
				Time: r.Created.UTC(), Message: r.Message}
		}
	}
	return s, nil
}

// seconds converts a number of seconds from the database to a Duration,
// rounded to the microsecond (PostgreSQL's resolution).
func seconds(s float64) time.Duration {
	if s <= 0 || math.IsNaN(s) {
		return 0
	}
	if s >= math.MaxInt64/float64(time.Second) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(math.Round(s*1e6)) * time.Microsecond
}

// ActivityBucket is one span of Activity: the outcomes and holds logged in
// [Start, Start+step).
type ActivityBucket struct {
	Start time.Time
	// Counts by status: StatusSuccessful, StatusException, StatusCanceled,
	// StatusDeleted and StatusFailed (held); absent when 0.
	Counts map[Status]int64
}

// Finished is how many jobs reached a terminal status in the bucket.
func (b ActivityBucket) Finished() int64 {
	var n int64
	for s, c := range b.Counts {
		if s.Terminal() {
			n += c
		}
	}
	return n
}

// Errors is how many jobs failed in the bucket: for good (exception) or
// held (failed).
func (b ActivityBucket) Errors() int64 {
	return b.Counts[StatusException] + b.Counts[StatusFailed]
}

// Activity returns the outcomes of the last window in buckets of step,
// oldest first, every bucket present (the last one may be partial): what a
// chart of jobs per second and error rate draws. window and step are whole
// seconds; window is at most MaxStatsWindow and at most 10,000 steps. It
// reads what Stats reads for its Recent counts, so it counts the work of
// every worker, pgq's and PGQueuer's.
func (q *Queries) Activity(ctx context.Context, window, step time.Duration) ([]ActivityBucket, error) {
	if q.cfg.err != nil {
		return nil, q.cfg.err
	}
	if step < time.Second || step%time.Second != 0 || window < step || window > MaxStatsWindow ||
		window%time.Second != 0 || window/step > 10_000 {
		return nil, fmt.Errorf("pgq: activity: window %v in steps of %v: want whole seconds, 1s <= step <= window <= %v, at most 10000 steps",
			window, step, MaxStatsWindow)
	}
	clock, err := q.q.StatsClock(ctx, q.db, window.Seconds())
	if err != nil {
		return nil, fmt.Errorf("pgq: activity: %w", interpretError(err))
	}
	rows, err := q.q.StatsTimeline(ctx, q.db, dbgen.StatsTimelineParams{Since: clock.Since, StepS: step.Seconds()})
	if err != nil {
		return nil, fmt.Errorf("pgq: activity: %w", interpretError(err))
	}
	since := clock.Since.UTC()
	n := int(clock.Now.Sub(clock.Since)/step) + 1
	out := make([]ActivityBucket, n)
	for i := range out {
		out[i] = ActivityBucket{Start: since.Add(time.Duration(i) * step), Counts: map[Status]int64{}}
	}
	for _, r := range rows {
		if r.Bucket < 0 || int(r.Bucket) >= n {
			continue
		}
		out[r.Bucket].Counts[Status(r.Status)] += r.Count
	}
	return out, nil
}
