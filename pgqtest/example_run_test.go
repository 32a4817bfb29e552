package pgqtest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

// signUp is the code under test: it enqueues a welcome mail.
func signUp(ctx context.Context, q *pgq.Queries, email string) error {
	_, err := q.Enqueue(ctx, "mail.welcome", []byte(email))
	return err
}

// A test that checks what code enqueued, then runs that one job with the
// real handler and looks at its outcome. In a _test.go file it is a plain
// func TestSignUp(t *testing.T); the package's TestMain calls
// pgqtest.Main(m).
func ExampleRunOne() {
	testSignUp := func(t *testing.T) {
		ctx := t.Context()
		db, dsn := pgqtest.NewDB(t, "pgx")
		if err := signUp(ctx, pgq.NewQueries(db), "ada@example.com"); err != nil {
			t.Fatal(err)
		}
		pgqtest.RequireEnqueued(t, db, "mail.welcome", func(payload []byte) bool {
			return strings.HasSuffix(string(payload), "@example.com")
		})

		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("mail.welcome", func(ctx context.Context, job *pgq.Job) error {
			fmt.Printf("mailing %s\n", job.Payload)
			return nil
		})
		out := pgqtest.RunOne(ctx, t, db, qm)
		if out.Err != nil {
			t.Fatalf("job %d: %v", out.Job.ID, out.Err)
		}
	}
	_ = testSignUp
}

// Drain runs every job that is ready and returns the outcomes, for tests
// that check what a batch of work did.
func ExampleDrain() {
	testNightly := func(t *testing.T) {
		db, dsn := pgqtest.NewDB(t, "pgx")
		q := pgq.NewQueries(db)
		for _, p := range []string{"a", "b", "c"} {
			if _, err := q.Enqueue(t.Context(), "nightly", []byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		qm := pgq.NewQueueManager(db, pgq.WithListenDSN(dsn))
		_ = qm.Entrypoint("nightly", func(context.Context, *pgq.Job) error { return nil })
		for _, out := range pgqtest.Drain(t, qm) {
			if out.Err != nil {
				t.Errorf("job %d (%s): %v", out.Job.ID, out.Job.Payload, out.Err)
			}
		}
	}
	_ = testNightly
}
