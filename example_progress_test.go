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

// A handler reports how far it has come; a waiter elsewhere sees it live
// and then the job's outcome.
func ExampleReportProgress() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	db, err := sql.Open("pgx", testDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	naming := pgq.WithSchema("example_progress")
	if err := pgq.Install(ctx, db, naming); err != nil {
		log.Fatal(err)
	}
	defer pgq.Uninstall(ctx, db, naming)

	qm := pgq.NewQueueManager(db, naming)
	err = qm.Entrypoint("resize", func(ctx context.Context, job *pgq.Job) error {
		for i := 1; i <= 4; i++ {
			time.Sleep(300 * time.Millisecond) // a quarter of the work
			if err := pgq.ReportProgress(ctx, float64(i)/4, fmt.Sprintf("%d of 4 images", i)); err != nil {
				return err
			}
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

	w, err := pgq.NewCompletionWatcher(ctx, db, naming)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	id, err := pgq.NewQueries(db, naming).Enqueue(ctx, "resize", nil)
	if err != nil {
		log.Fatal(err)
	}
	// Reports that come faster than the waiter reads them are coalesced:
	// the waiter may skip some, never the last.
	var last pgq.Progress
	status, err := w.WatchProgress(ctx, id, func(p pgq.Progress) { last = p })
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s at %.0f%%: %s\n", status, last.Fraction*100, last.Note)
	// Output:
	// successful at 100%: 4 of 4 images
}
