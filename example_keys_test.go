package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"strings"
	"sync"
	"time"

	"github.com/pgq-dev/pgq"
)

// One tenant's backlog does not hold up another's job: with fairness
// keys, each claim shares its batch across the tenants that have jobs.
func ExampleWithFairnessKey() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := sql.Open("pgx", testDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	naming := pgq.WithSchema("example_fairness")
	if err := pgq.Install(ctx, db, naming); err != nil {
		log.Fatal(err)
	}
	defer pgq.Uninstall(ctx, db, naming)

	q := pgq.NewQueries(db, naming)
	backlog := make([]pgq.NewJob, 500)
	for i := range backlog {
		backlog[i] = pgq.NewJob{Entrypoint: "report", FairnessKey: "tenant-a"}
	}
	if _, err := q.EnqueueBatch(ctx, backlog); err != nil {
		log.Fatal(err)
	}
	if _, err := q.Enqueue(ctx, "report", nil, pgq.WithFairnessKey("tenant-b")); err != nil {
		log.Fatal(err)
	}

	qm := pgq.NewQueueManager(db, naming)
	var started int
	var bStarted int
	err = qm.Entrypoint("report", func(ctx context.Context, job *pgq.Job) error {
		started++ // one job at a time (WithMaxConcurrentTasks(1))
		if job.FairnessKey == "tenant-b" {
			bStarted = started
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain), pgq.WithBatchSize(10), pgq.WithMaxConcurrentTasks(1)); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("tenant-b's job started among the first 10 of %d: %v\n", started, bStarted <= 10)
	// Output:
	// tenant-b's job started among the first 10 of 501: true
}

// Jobs with one serial key run one at a time, in enqueue order, however
// many workers there are; other keys run beside them.
func ExampleWithSerialKey() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := sql.Open("pgx", testDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	naming := pgq.WithSchema("example_serial")
	if err := pgq.Install(ctx, db, naming); err != nil {
		log.Fatal(err)
	}
	defer pgq.Uninstall(ctx, db, naming)

	q := pgq.NewQueries(db, naming)
	for _, step := range []string{"open", "deposit", "withdraw", "close"} {
		for _, account := range []string{"account-7", "account-8"} {
			if _, err := q.Enqueue(ctx, "ledger", []byte(step), pgq.WithSerialKey(account)); err != nil {
				log.Fatal(err)
			}
		}
	}

	var mu sync.Mutex
	steps := map[string][]string{}
	qm := pgq.NewQueueManager(db, naming)
	err = qm.Entrypoint("ledger", func(ctx context.Context, job *pgq.Job) error {
		mu.Lock()
		defer mu.Unlock()
		steps[job.SerialKey] = append(steps[job.SerialKey], string(job.Payload))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := qm.Run(ctx, pgq.WithMode(pgq.ModeDrain), pgq.WithMaxConcurrentTasks(8)); err != nil {
		log.Fatal(err)
	}
	for _, account := range []string{"account-7", "account-8"} {
		fmt.Println(account, strings.Join(steps[account], " "))
	}
	// Output:
	// account-7 open deposit withdraw close
	// account-8 open deposit withdraw close
}
