package pgq

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pgq-dev/pgq/dbgen"
)

// PausedEntrypoint is an entrypoint paused with Queries.Pause.
type PausedEntrypoint struct {
	Entrypoint string
	Since      time.Time // when it was paused
}

// Pause pauses entrypoint fleet-wide: from the next claim on, no pgq
// worker in any process claims its jobs (each claim statement skips paused
// entrypoints, so a worker in the middle of a claim when Pause commits may
// still take one batch). Jobs already running finish as usual; Enqueue
// still adds jobs, which wait until Resume. The pause is stored in the
// database (the pgq-only table pgqueuer_pgq_paused, see docs/pgqueuer-compat.md),
// so it survives restarts of workers and of the server; Stats and `pgq
// dashboard` show it.
//
// Pausing an entrypoint that no worker handles and no job names is
// allowed: it is paused for when it appears. Pausing a paused entrypoint
// changes nothing (it keeps its first pause time).
//
// PGQueuer's workers sharing the queue do not honour the pause: they do
// not read pgq's table and go on claiming the entrypoint's jobs.
func (q *Queries) Pause(ctx context.Context, entrypoint string) error {
	if q.cfg.err != nil {
		return q.cfg.err
	}
	if entrypoint == "" {
		return fmt.Errorf("pgq: pause: empty entrypoint")
	}
	if err := q.q.PauseEntrypoints(ctx, q.db, []string{entrypoint}); err != nil {
		return fmt.Errorf("pgq: pause %q: %w", entrypoint, interpretError(err))
	}
	return nil
}

// Resume undoes Pause: the entrypoint's jobs are claimed again. A
// notification on the queue's channel wakes idle workers, so they claim at
// once rather than at their next poll. Resuming an entrypoint that is not
// paused changes nothing.
func (q *Queries) Resume(ctx context.Context, entrypoint string) error {
	if q.cfg.err != nil {
		return q.cfg.err
	}
	if entrypoint == "" {
		return fmt.Errorf("pgq: resume: empty entrypoint")
	}
	n, err := q.q.ResumeEntrypoints(ctx, q.db, []string{entrypoint})
	if err != nil {
		return fmt.Errorf("pgq: resume %q: %w", entrypoint, interpretError(err))
	}
	if n == 0 {
		return nil
	}
	// A table_changed_event, a type PGQueuer knows (an unknown type would
	// make its listener log a parse failure at CRITICAL): pgq's workers wake
	// and claim, PGQueuer's look at the queue once more, watchers refresh.
	payload, err := json.Marshal(newTableChangedEvent(q.names, "update"))
	if err != nil {
		return err
	}
	if err := q.q.Notify(ctx, q.db, dbgen.NotifyParams{Channel: q.names.Channel(), Payload: string(payload)}); err != nil {
		return fmt.Errorf("pgq: resume %q: notify: %w", entrypoint, interpretError(err))
	}
	return nil
}

// Paused returns the paused entrypoints, by name.
func (q *Queries) Paused(ctx context.Context) ([]PausedEntrypoint, error) {
	if q.cfg.err != nil {
		return nil, q.cfg.err
	}
	rows, err := q.q.PausedList(ctx, q.db)
	if err != nil {
		return nil, fmt.Errorf("pgq: paused: %w", interpretError(err))
	}
	return pausedFromRows(rows), nil
}
