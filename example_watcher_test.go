package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/pgq-dev/pgq"
)

// A producer enqueues jobs and waits for their outcome, which a worker (in
// this example in the same process, usually elsewhere) records.
func ExampleCompletionWatcher() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Your database's DSN; here, the server that pgq's tests run against.
	db, err := sql.Open("pgx", testDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// A schema of its own keeps the example apart from other data.
	naming := pgq.WithSchema("example_watcher")
	if err := pgq.Install(ctx, db, naming); err != nil {
		log.Fatal(err)
	}
	defer pgq.Uninstall(ctx, db, naming)

	qm := pgq.NewQueueManager(db, naming)
	err = qm.Entrypoint("greet", func(ctx context.Context, job *pgq.Job) error {
		if len(job.Payload) == 0 {
			return errors.New("nobody to greet")
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var worker sync.WaitGroup
	worker.Go(func() { _ = qm.Run(runCtx) })
	defer func() { stop(); worker.Wait() }()

	// One watcher serves every wait of the process.
	w, err := pgq.NewCompletionWatcher(ctx, db, naming)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	q := pgq.NewQueries(db, naming)
	hello, err := q.Enqueue(ctx, "greet", []byte("world"))
	if err != nil {
		log.Fatal(err)
	}
	nobody, err := q.Enqueue(ctx, "greet", nil)
	if err != nil {
		log.Fatal(err)
	}

	statuses, err := w.WaitForAll(ctx, []pgq.JobID{hello, nobody})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("hello:", statuses[hello])
	fmt.Println("nobody:", statuses[nobody])
	// Output:
	// hello: successful
	// nobody: exception
}
