package pgq

import (
	"context"
	"fmt"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
)

// ScheduleInfo is one row of the schedules table.
type ScheduleInfo struct {
	ID         ScheduleID
	Expression string
	Entrypoint string
	// Status is StatusQueued while the schedule waits for NextRun and
	// StatusPicked while a scheduler runs it ("" if the column is NULL).
	Status    Status
	NextRun   time.Time
	LastRun   time.Time // when the latest run finished; zero if none has
	Heartbeat time.Time // the running scheduler's latest sign of life
	Created   time.Time
	Updated   time.Time
}

// ListSchedules returns every schedule in the schedules table (pgq's and
// PGQueuer's alike), by entrypoint and expression. Times are in UTC.
func (q *Queries) ListSchedules(ctx context.Context) ([]ScheduleInfo, error) {
	if q.cfg.err != nil {
		return nil, q.cfg.err
	}
	rows, err := q.q.SchedulesList(ctx, q.db)
	if err != nil {
		return nil, fmt.Errorf("pgq: list schedules: %w", interpretError(err))
	}
	out := make([]ScheduleInfo, len(rows))
	for i, r := range rows {
		out[i] = scheduleInfoFromRow(r)
	}
	return out, nil
}

// RemoveSchedules deletes the schedules whose id is among ids or whose
// entrypoint is among entrypoints, and returns how many it deleted. A
// SchedulerManager that is running when its schedule is removed stops
// running it (a tick already running finishes), and adds it back the next
// time its Run starts, as PGQueuer's scheduler does.
func (q *Queries) RemoveSchedules(ctx context.Context, ids []ScheduleID, entrypoints []string) (int64, error) {
	if q.cfg.err != nil {
		return 0, q.cfg.err
	}
	if len(ids) == 0 && len(entrypoints) == 0 {
		return 0, nil
	}
	raw := make([]int64, len(ids))
	for i, id := range ids {
		raw[i] = int64(id)
	}
	if entrypoints == nil {
		entrypoints = []string{}
	}
	n, err := q.q.SchedulesDelete(ctx, q.db, dbgen.SchedulesDeleteParams{Ids: raw, Entrypoints: entrypoints})
	if err != nil {
		return 0, fmt.Errorf("pgq: remove schedules: %w", interpretError(err))
	}
	return n, nil
}
