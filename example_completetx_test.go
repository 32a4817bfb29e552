package pgq_test

import (
	"context"
	"fmt"
	"log"

	"github.com/pgq-dev/pgq"
)

// A handler whose effect happens exactly once: it writes its result and
// marks the job successful in one transaction. Once that commits, the job
// never runs again, even if the worker crashes before the handler returns;
// if it rolls back, nothing of it remains and the job is retried as usual.
func ExampleCompleteTx() {
	ctx := context.Background()
	db, naming, cleanup := exampleDB(ctx, "example_completetx")
	defer cleanup()
	if _, err := db.ExecContext(ctx,
		`CREATE TABLE example_completetx.invoices (order_id text PRIMARY KEY, job_id bigint NOT NULL)`); err != nil {
		log.Fatal(err)
	}
	defer db.ExecContext(ctx, `DROP TABLE example_completetx.invoices`)

	qm := pgq.NewQueueManager(db, naming)
	err := qm.Entrypoint("invoice", func(ctx context.Context, job *pgq.Job) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback() // a no-op after Commit
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO example_completetx.invoices (order_id, job_id) VALUES ($1, $2)`,
			string(job.Payload), int64(job.ID)); err != nil {
			return err
		}
		// Last in the transaction: fails (and so rolls everything back)
		// if this worker no longer holds the job.
		if err := pgq.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		return tx.Commit()
	})
	if err != nil {
		log.Fatal(err)
	}

	q := pgq.NewQueries(db, naming)
	id, err := q.Enqueue(ctx, "invoice", []byte("order-42"))
	if err != nil {
		log.Fatal(err)
	}
	if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)); err != nil {
		log.Fatal(err)
	}
	st, err := q.JobStatus(ctx, []pgq.JobID{id})
	if err != nil {
		log.Fatal(err)
	}
	var invoices int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM example_completetx.invoices`).Scan(&invoices); err != nil {
		log.Fatal(err)
	}
	fmt.Println(st[id], invoices)
	// Output:
	// successful 1
}
