package pgq

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/pgq-dev/pgq/dbgen"
)

// ErrJobLost is the cause (context.Cause) with which a handler's ctx ends
// when its worker no longer holds the job: its heartbeat went stale and the
// job was put back in the queue (and maybe claimed again elsewhere), or it
// was removed. CompleteTx returns an error that matches it (errors.Is) for
// such a job. The job belongs to whoever holds it now; nothing this run of
// the handler reports about it is recorded.
var ErrJobLost = errJobLost

// errNotClaimed is CompleteTx's error for a Job that no worker handed out.
var errNotClaimed = errors.New("pgq: CompleteTx needs the *Job a QueueManager handed to the handler")

// CompleteTx marks job successful as part of tx, the handler's own
// transaction: it removes the job from the queue and writes its successful
// log row in tx, so that the job's success commits or rolls back together
// with whatever else tx writes (the job's result, say), and a
// CompletionWatcher hears of it when tx commits. This gives effects that
// happen exactly once: once tx has committed, the job never runs again,
// not even when the worker crashes before the handler returns.
//
// job must be the *Job the worker handed to the handler, and the worker
// must still hold it under that claim; otherwise (its heartbeat went stale
// and the job was put back in the queue, or it was canceled, or it has
// already been completed) CompleteTx changes nothing and returns an error
// naming the job that matches ErrJobLost: roll tx back, as someone else
// runs the job now or nobody should. Any error from CompleteTx leaves tx
// to be rolled back.
//
// Call it last in tx, just before tx.Commit, and commit or roll back before
// the handler returns: tx holds the job's row locked until then. Once tx
// has committed, the handler's return value no longer matters (return nil):
// the worker writes no second outcome. When tx rolls back instead, the
// handler's return value decides the outcome as usual (success, retry,
// exception…).
//
// tx may come from any *sql.DB on the same database; it need not be the
// worker's pool. The job table's names (WithPrefix, WithSchema) are those
// of the QueueManager that ran the job.
func CompleteTx(ctx context.Context, tx *sql.Tx, job *Job) error {
	if job == nil {
		return fmt.Errorf("%w: job is nil", errNotClaimed)
	}
	if tx == nil {
		return fmt.Errorf("pgq: CompleteTx of job %d: tx is nil", job.ID)
	}
	a := job.att
	if a == nil || a.qm == nil {
		return fmt.Errorf("%w (job %d was not)", errNotClaimed, job.ID)
	}
	qm := a.qm
	n, err := qm.q.JobsCompleteTx(ctx, wrapDB(qm.cfg.names, tx), dbgen.JobsCompleteTxParams{
		ID: int64(job.ID), ClaimToken: a.token, QueueManagerID: qm.id,
	})
	if err != nil {
		return fmt.Errorf("pgq: CompleteTx of job %d: %w", job.ID, interpretError(err))
	}
	if n == 0 {
		return fmt.Errorf("pgq: CompleteTx of job %d (%s): %w", job.ID, job.Entrypoint, ErrJobLost)
	}
	// The worker now knows that a missing row may be this commit's doing,
	// not a lost claim (see run.beat and run.finish). tx may still roll
	// back: then the row is there again, held as before.
	a.completedTx.Store(true)
	return nil
}
