package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "github.com/lib/pq"              // registers the "postgres" driver

	"github.com/pgq-dev/pgq"
)

// quickStart is the README's quick start after the pool is opened:
// enqueue, run a worker, wait for the outcome.
func quickStart(ctx context.Context, db *sql.DB, naming pgq.NamingOption) {
	if err := pgq.Install(ctx, db, naming); err != nil {
		log.Fatal(err)
	}
	defer pgq.Uninstall(ctx, db, naming)

	// Producer: enqueue, on db or inside your own *sql.Tx.
	id, err := pgq.NewQueries(db, naming).Enqueue(ctx, "send_email", []byte(`{"to":"a@b.c"}`))
	if err != nil {
		log.Fatal(err)
	}
	// Worker: register handlers, then Run until ctx ends.
	qm := pgq.NewQueueManager(db, naming)
	if err := qm.Entrypoint("send_email", func(ctx context.Context, job *pgq.Job) error {
		return nil // send it
	}); err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error)
	go func() { stopped <- qm.Run(runCtx) }()
	defer func() { stop(); <-stopped }()
	// Anyone: wait for the outcome.
	w, err := pgq.NewCompletionWatcher(ctx, db, naming)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	status, err := w.WaitFor(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(status)
	fmt.Println("watcher listening:", w.Listening())
}

// The quick start with lib/pq: pgq.Open opens the pool and remembers the
// DSN, so that workers and watchers on it get notifications in real time
// (lib/pq's pooled connections cannot wait for them).
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Your database's DSN; here, the server that pgq's tests run against.
	db, err := pgq.Open("postgres", testDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	quickStart(ctx, db, pgq.WithSchema("example_open_pq"))
	// Output:
	// successful
	// watcher listening: true
}

// The quick start with pgx: sql.Open serves, since pgq borrows one of the
// pool's connections for LISTEN (pgq.Open works too).
func Example_pgx() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := sql.Open("pgx", testDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	quickStart(ctx, db, pgq.WithSchema("example_open_pgx"))
	// Output:
	// successful
	// watcher listening: true
}
