package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/pgq-dev/pgq"
)

// exampleDB opens the server pgq's tests run against, with the schema
// installed in a schema of its own; your program opens its own database.
func exampleDB(ctx context.Context, schema string) (*sql.DB, pgq.NamingOption, func()) {
	db, err := sql.Open("pgx", testDSN())
	if err != nil {
		log.Fatal(err)
	}
	naming := pgq.WithSchema(schema)
	if err := pgq.Install(ctx, db, naming); err != nil {
		log.Fatal(err)
	}
	return db, naming, func() { _ = pgq.Uninstall(ctx, db, naming); db.Close() }
}

// Jobs enqueued inside the caller's transaction exist only if it commits.
func ExampleQueries_Enqueue() {
	ctx := context.Background()
	db, naming, cleanup := exampleDB(ctx, "example_enqueue")
	defer cleanup()

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	// ... the caller's own writes in tx ...
	q := pgq.NewQueries(tx, naming)
	if _, err := q.Enqueue(ctx, "send_receipt", []byte(`{"order": 42}`),
		pgq.WithPriority(10), pgq.WithDedupeKey("receipt:42")); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}

	// A second receipt for the same order is refused while the first waits.
	_, err = pgq.NewQueries(db, naming).Enqueue(ctx, "send_receipt", nil, pgq.WithDedupeKey("receipt:42"))
	fmt.Println(errors.Is(err, pgq.ErrDuplicateJob))

	sizes, err := pgq.NewQueries(db, naming).QueueSize(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range sizes {
		fmt.Println(s.Entrypoint, s.Status, s.Count)
	}
	// Output:
	// true
	// send_receipt queued 1
}

// A worker with a retry policy and a fleet-wide concurrency limit, run until
// the queue is empty.
func ExampleQueueManager() {
	ctx := context.Background()
	db, naming, cleanup := exampleDB(ctx, "example_worker")
	defer cleanup()

	q := pgq.NewQueries(db, naming)
	id, err := q.Enqueue(ctx, "resize", []byte("photo.jpg"))
	if err != nil {
		log.Fatal(err)
	}

	qm := pgq.NewQueueManager(db, naming)
	tries := 0
	err = qm.Entrypoint("resize", func(ctx context.Context, job *pgq.Job) error {
		tries++
		if job.Attempts == 0 {
			return errors.New("image service busy") // retried
		}
		return nil
	},
		pgq.WithRetry(pgq.RetryPolicy{MaxAttempts: 3, InitialDelay: 10 * time.Millisecond}),
		pgq.WithConcurrencyLimit(4),
	)
	if err != nil {
		log.Fatal(err)
	}
	// ModeDrain returns once nothing is left to run; a service runs
	// ModeContinuous (the default) until its ctx ends.
	for {
		if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)); err != nil {
			log.Fatal(err)
		}
		st, err := q.JobStatus(ctx, []pgq.JobID{id})
		if err != nil {
			log.Fatal(err)
		}
		if st[id].Terminal() {
			fmt.Println(st[id], "after", tries, "tries")
			break
		}
		time.Sleep(10 * time.Millisecond) // the retry is not due yet
	}
	// Output:
	// successful after 2 tries
}

// Handlers that use the worker's own pool need about as many connections
// as run at once: keep that many idle, next to WithMaxConcurrentTasks, and
// the worker never has to raise the pool's idle limit itself (pass
// WithPoolTuning(false) to forbid it; it then only logs the advice).
func ExampleWithPoolTuning() {
	ctx := context.Background()
	db, naming, cleanup := exampleDB(ctx, "example_pool_tuning")
	defer cleanup()

	const concurrency = 50
	db.SetMaxIdleConns(concurrency + 2)

	qm := pgq.NewQueueManager(db, naming)
	if err := qm.Entrypoint("record", func(ctx context.Context, job *pgq.Job) error {
		_, err := db.ExecContext(ctx, "SELECT $1::bigint", int64(job.ID)) // the handler's own statement
		return err
	}); err != nil {
		log.Fatal(err)
	}
	if _, err := pgq.NewQueries(db, naming).Enqueue(ctx, "record", nil); err != nil {
		log.Fatal(err)
	}
	err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain),
		pgq.WithMaxConcurrentTasks(concurrency), pgq.WithPoolTuning(false))
	fmt.Println(err)
	// Output: <nil>
}

// An operator's look at one job: its row while it waits or runs, then what
// the log keeps, and each status it went through.
func ExampleQueries_GetJob() {
	ctx := context.Background()
	db, naming, cleanup := exampleDB(ctx, "example_getjob")
	defer cleanup()

	q := pgq.NewQueries(db, naming)
	id, err := q.Enqueue(ctx, "resize", []byte(`{"image": 7}`))
	if err != nil {
		log.Fatal(err)
	}
	info, err := q.GetJob(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Entrypoint, info.Status, string(info.Payload))

	qm := pgq.NewQueueManager(db, naming)
	if err := qm.Entrypoint("resize", func(ctx context.Context, job *pgq.Job) error { return nil }); err != nil {
		log.Fatal(err)
	}
	if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain)); err != nil {
		log.Fatal(err)
	}
	if info, err = q.GetJob(ctx, id); err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Status, info.Finished)
	history, err := q.JobHistory(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range history {
		fmt.Println(e.Status)
	}
	// Output:
	// resize queued {"image": 7}
	// successful true
	// queued
	// picked
	// successful
}

// Pages of the queue, newest first: each page's Next is the cursor of the
// page after it.
func ExampleQueries_ListJobs() {
	ctx := context.Background()
	db, naming, cleanup := exampleDB(ctx, "example_listjobs")
	defer cleanup()

	q := pgq.NewQueries(db, naming)
	for i := range 5 {
		if _, err := q.Enqueue(ctx, "report", []byte(fmt.Sprintf(`{"n": %d}`, i))); err != nil {
			log.Fatal(err)
		}
	}
	f := pgq.JobFilter{Entrypoints: []string{"report"}, Statuses: []pgq.Status{pgq.StatusQueued}, Limit: 2}
	for {
		page, err := q.ListJobs(ctx, f)
		if err != nil {
			log.Fatal(err)
		}
		var payloads []string
		for _, job := range page.Jobs {
			payloads = append(payloads, string(job.Payload))
		}
		fmt.Println(strings.Join(payloads, " "))
		if page.Next == "" {
			break
		}
		f.Cursor = page.Next
	}
	// Output:
	// {"n": 4} {"n": 3}
	// {"n": 2} {"n": 1}
	// {"n": 0}
}

// Bulk actions take the same filter and work in batches on the server,
// however many jobs match.
func ExampleQueries_CancelJobs() {
	ctx := context.Background()
	db, naming, cleanup := exampleDB(ctx, "example_canceljobs")
	defer cleanup()

	q := pgq.NewQueries(db, naming)
	jobs := make([]pgq.NewJob, 2500)
	for i := range jobs {
		jobs[i] = pgq.NewJob{Entrypoint: []string{"email", "sms"}[i%2]}
	}
	if _, err := q.EnqueueBatch(ctx, jobs); err != nil {
		log.Fatal(err)
	}
	n, err := q.CancelJobs(ctx, pgq.JobFilter{Entrypoints: []string{"sms"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("canceled", n)
	n, err = q.DeleteJobs(ctx, pgq.JobFilter{}, pgq.WithBulkBatchSize(500))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("deleted", n)
	// Output:
	// canceled 1250
	// deleted 1250
}
