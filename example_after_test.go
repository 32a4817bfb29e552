package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/pgq-dev/pgq"
)

// Jobs that wait for others: "report" runs once both "extract" jobs have
// finished successfully, whatever order the worker claims them in.
func ExampleWithAfter() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	db, err := sql.Open("pgx", testDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	naming := pgq.WithSchema("example_after")
	if err := pgq.Install(ctx, db, naming); err != nil {
		log.Fatal(err)
	}
	defer pgq.Uninstall(ctx, db, naming)

	q := pgq.NewQueries(db, naming)
	a, err := q.Enqueue(ctx, "extract", []byte("a"))
	if err != nil {
		log.Fatal(err)
	}
	b, err := q.Enqueue(ctx, "extract", []byte("b"))
	if err != nil {
		log.Fatal(err)
	}
	// The report waits, outside the claimable set, for a and b. A higher
	// priority changes nothing: it is not due yet.
	report, err := q.Enqueue(ctx, "report", nil, pgq.WithAfter(a, b), pgq.WithPriority(10))
	if err != nil {
		log.Fatal(err)
	}

	var mu sync.Mutex
	var order []string
	record := func(_ context.Context, job *pgq.Job) error {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, job.Entrypoint)
		return nil
	}
	qm := pgq.NewQueueManager(db, naming)
	_ = qm.Entrypoint("extract", record)
	_ = qm.Entrypoint("report", record)
	runCtx, stop := context.WithCancel(ctx)
	var worker sync.WaitGroup
	worker.Go(func() { _ = qm.Run(runCtx) })
	defer func() { stop(); worker.Wait() }()

	w, err := pgq.NewCompletionWatcher(ctx, db, naming)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	st, err := w.WaitFor(ctx, report)
	if err != nil {
		log.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Println(st, order)
	// Output: successful [extract extract report]
}
