package pgq

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// ScheduleID identifies a schedule; it is the id column of the schedules
// table.
type ScheduleID int64

// Schedule is one tick of a schedule, handed to a ScheduleFunc.
type Schedule struct {
	ID         ScheduleID
	Entrypoint string
	Expression string    // as stored (see Cron.String)
	Tick       time.Time // the scheduled time this run is for, in UTC
	LastRun    time.Time // when the previous run finished; zero if none has
}

// ScheduleFunc runs one tick of a schedule. An error (or a panic) is logged;
// the schedule carries on with its next tick either way. ctx ends when the
// scheduler's shutdown grace period is over.
type ScheduleFunc func(ctx context.Context, s *Schedule) error

// ScheduleOption configures one schedule: WithCatchUp, WithEnqueue,
// WithLocation.
type ScheduleOption interface{ applySchedule(*scheduleEntry) }

type scheduleOption func(*scheduleEntry)

func (o scheduleOption) applySchedule(e *scheduleEntry) { o(e) }

// WithCatchUp changes what happens to a missed tick. A tick is missed when,
// by the time a scheduler claims it, the tick after it is due as well:
// every scheduler of the schedule was down, or the previous run lasted
// longer than the interval. By default a missed tick is skipped: the
// schedule moves on to the next tick in the future without running. With
// WithCatchUp the overdue tick runs once, late (however many ticks were
// missed), and the schedule then continues from the next tick in the
// future. A tick that is merely late, with the following one still ahead,
// always runs.
func WithCatchUp() ScheduleOption {
	return scheduleOption(func(e *scheduleEntry) { e.catchUp = true })
}

// WithEnqueue makes each tick enqueue a job for the schedule's entrypoint
// instead of running a function in the scheduler: the work then gets the
// queue's workers, retries, concurrency limits and log, and any QueueManager
// with a handler for the entrypoint runs it. Pass nil as the ScheduleFunc.
//
// opts configure the job (WithPriority, WithHeaders, WithExecuteAfter); its
// payload is empty and its dedupe key is "schedule:<id>:<tick as Unix
// seconds>" (a WithDedupeKey among opts is overridden), so that a tick is
// never enqueued twice. The job is enqueued in the same transaction that
// moves the schedule to its next tick.
func WithEnqueue(opts ...EnqueueOption) ScheduleOption {
	return scheduleOption(func(e *scheduleEntry) {
		e.enqueue = true
		e.enqueueOpts = slices.Clone(opts)
	})
}

// WithLocation reads the schedule's cron fields in loc instead of UTC: with
// time.LoadLocation("Europe/Oslo"), "0 9 * * *" runs at 09:00 Oslo time,
// summer and winter. It is the same as starting the expression with
// CRON_TZ=Europe/Oslo (see ParseCron for DST gaps and repeats, and how the
// zone is stored); an expression that names another zone is an error. loc
// must be an IANA zone that every process can load by its name (not
// time.Local, not a time.FixedZone): Schedule reports one that is not.
func WithLocation(loc *time.Location) ScheduleOption {
	return scheduleOption(func(e *scheduleEntry) {
		if loc == nil {
			e.locErr = fmt.Errorf("WithLocation(nil): pass a time zone, e.g. time.LoadLocation(\"Europe/Oslo\")")
			return
		}
		e.loc = loc
	})
}

// scheduleEntry is one registered schedule.
type scheduleEntry struct {
	entrypoint  string
	loc         *time.Location // WithLocation
	locErr      error
	cron        *Cron
	fn          ScheduleFunc
	catchUp     bool
	enqueue     bool
	enqueueOpts []EnqueueOption
}

type scheduleKey struct{ entrypoint, expression string }
