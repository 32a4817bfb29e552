package pgq_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/pgq-dev/pgq"
)

// TestPGQueuerAndAfter: PGQueuer 1.3.2's worker on a queue with waiting
// jobs: it does not claim a job before the job it waits for has finished
// (the waiting job is not due), and its own completion of that job
// releases the waiting one (the log's trigger), which it then runs.
func TestPGQueuerAndAfter(t *testing.T) {
	eachPGQueuerDriver(t, func(t *testing.T, ctx context.Context, db *sql.DB, dsn string) {
		q := pgq.NewQueries(db)
		a, err := q.Enqueue(ctx, "to_py", []byte("A"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := q.Enqueue(ctx, "to_py", []byte("B"), pgq.WithAfter(a))
		if err != nil {
			t.Fatal(err)
		}
		ran := 0
		for range 2 {
			out, _ := runPGQueuer(t, ctx, dsn, false, "-c", pyWorker, "to_py")
			switch out = strings.TrimSpace(out); out {
			case "1 ['A']", "1 ['B']", "2 ['A', 'B']":
				ran += int(out[0] - '0')
			case "0 []":
			default:
				t.Fatalf("PGQueuer's QueueManager: %q", out)
			}
			if ran == 2 {
				break
			}
		}
		st, err := q.JobStatus(ctx, []pgq.JobID{a, b})
		if err != nil || st[a] != pgq.StatusSuccessful || st[b] != pgq.StatusSuccessful {
			t.Fatalf("statuses %v, %v; want both successful", st, err)
		}
		// B was picked only after A's success was logged.
		if early := scalar[int](t, db, `SELECT count(*) FROM pgqueuer_log AS p, pgqueuer_log AS s
			WHERE p.job_id = $1 AND p.status = 'picked' AND s.job_id = $2 AND s.status = 'successful'
			  AND p.created < s.created`, int64(b), int64(a)); early != 0 {
			t.Fatalf("PGQueuer picked B before A succeeded")
		}
	})
}
