package pgqtest

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"

	"github.com/pgq-dev/pgq"
)

// Outcome is what a handler did with one job in RunOne or Drain.
type Outcome struct {
	Job *pgq.Job // the job as its handler got it
	// Err is what the handler returned (nil: the job succeeded; a panic
	// comes back as an error). What became of the job then (retried, held,
	// failed for good) is the entrypoint's retry policy's: see JobStatus.
	Err error
}

// recorder is a Run middleware that keeps each job's outcome, innermost,
// so it sees the handler's own error.
type recorder struct {
	mu       sync.Mutex
	outcomes []Outcome
}

func (r *recorder) middleware(next pgq.Handler) pgq.Handler {
	return func(ctx context.Context, job *pgq.Job) (err error) {
		defer func() {
			p := recover()
			if p != nil {
				err = errors.New("pgqtest: the handler panicked")
			}
			r.mu.Lock()
			r.outcomes = append(r.outcomes, Outcome{Job: job, Err: err})
			r.mu.Unlock()
			if p != nil {
				panic(p) // the worker turns it into the job's failure
			}
		}()
		return next(ctx, job)
	}
}

func (r *recorder) get() []Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Outcome(nil), r.outcomes...)
}

// RunOne claims and runs exactly one job with qm's handlers (the one
// qm's claim takes first: highest priority, then oldest, among those due
// and not paused) and returns its outcome, once the outcome is written to
// the database. It fails the test when no job of qm's entrypoints was
// ready to run, saying how many jobs db holds for them, or when Run fails.
// qm must not be running.
func RunOne(ctx context.Context, t testing.TB, db *sql.DB, qm *pgq.QueueManager, opts ...pgq.RunOption) Outcome {
	t.Helper()
	rec := &recorder{}
	opts = append(opts, pgq.WithMode(pgq.ModeDrain), pgq.WithMaxJobs(1), pgq.WithBatchSize(1),
		pgq.WithMaxConcurrentTasks(1), pgq.WithMiddleware(rec.middleware))
	if err := qm.Run(ctx, opts...); err != nil {
		t.Fatalf("pgqtest.RunOne: Run: %v", err)
	}
	got := rec.get()
	if len(got) == 0 {
		var queued int64
		if sizes, err := pgq.NewQueries(db).QueueSize(ctx); err == nil {
			for _, s := range sizes {
				if s.Status == pgq.StatusQueued {
					queued += s.Count
				}
			}
		}
		t.Fatalf("pgqtest.RunOne: no job ran: none of the QueueManager's entrypoints had a job ready "+
			"(%d queued jobs in the database in all, of any entrypoint, due or not)", queued)
	}
	return got[0]
}

// Drain runs qm in drain mode (see pgq.ModeDrain) until none of the jobs
// of its entrypoints is ready to run, and returns the outcomes in the
// order the handlers returned. Retries that fall due while it runs run
// too. It fails the test when Run fails; it stops when the test ends.
func Drain(t testing.TB, qm *pgq.QueueManager, opts ...pgq.RunOption) []Outcome {
	t.Helper()
	rec := &recorder{}
	opts = append(opts, pgq.WithMode(pgq.ModeDrain), pgq.WithMiddleware(rec.middleware))
	if err := qm.Run(t.Context(), opts...); err != nil {
		t.Fatalf("pgqtest.Drain: Run: %v", err)
	}
	return rec.get()
}

// RequireEnqueued fails the test unless a job of entrypoint is queued in
// db whose payload satisfies match (nil matches any), and returns the
// first such job (the newest). The error lists how many queued jobs of
// entrypoint it looked at. It looks at up to pgq.MaxListLimit queued jobs;
// opts are NewQueries' (WithPrefix, WithSchema).
func RequireEnqueued(t testing.TB, db *sql.DB, entrypoint string, match func(payload []byte) bool, opts ...pgq.Option) *pgq.JobInfo {
	t.Helper()
	ctx := t.Context()
	q := pgq.NewQueries(db, opts...)
	page, err := q.ListJobs(ctx, pgq.JobFilter{Entrypoints: []string{entrypoint},
		Statuses: []pgq.Status{pgq.StatusQueued}, Limit: pgq.MaxListLimit})
	if err != nil {
		t.Fatalf("pgqtest.RequireEnqueued(%q): %v", entrypoint, err)
	}
	for _, j := range page.Jobs {
		payload := j.Payload
		if j.PayloadSize > len(payload) { // ListJobs gives the head only
			full, err := q.GetJob(ctx, j.ID)
			if err != nil {
				t.Fatalf("pgqtest.RequireEnqueued(%q): job %d: %v", entrypoint, j.ID, err)
			}
			payload = full.Payload
		}
		if match == nil || match(payload) {
			info := j
			info.Payload = payload
			return &info
		}
	}
	if match == nil {
		t.Fatalf("pgqtest.RequireEnqueued: no job of entrypoint %q is queued", entrypoint)
	} else {
		t.Fatalf("pgqtest.RequireEnqueued: none of the %d queued jobs of entrypoint %q has a matching payload",
			len(page.Jobs), entrypoint)
	}
	return nil
}
