package pgq_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/pgq-dev/pgq"
)

// A scheduler that runs one function every five minutes and, every night,
// enqueues a job for the workers. Start it in as many processes as you like:
// each tick runs once.
func ExampleSchedulerManager() {
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	sm := pgq.NewSchedulerManager(db)
	err = sm.Schedule("refresh_stats", "*/5 * * * *", func(ctx context.Context, s *pgq.Schedule) error {
		log.Printf("refreshing statistics for %v", s.Tick)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// At 02:30 UTC, a "nightly_report" job is enqueued; a QueueManager with
	// a handler for it runs it, with the queue's retries and log.
	if err := sm.Schedule("nightly_report", "30 2 * * *", nil, pgq.WithEnqueue(pgq.WithPriority(5))); err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := sm.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

func ExampleParseCron() {
	every15 := mustParseCron("*/15 9-17 * * mon-fri")
	t := time.Date(2025, 3, 14, 17, 40, 0, 0, time.UTC) // a Friday
	for range 3 {
		t = every15.Next(t)
		fmt.Println(t.Format(time.RFC3339))
	}

	// A sixth field is the seconds, last, as PGQueuer orders them.
	halfPast := mustParseCron("0 * * * * 30")
	fmt.Println(halfPast.Next(t).Format(time.RFC3339))

	_, err := pgq.ParseCron("0 25 * * *")
	fmt.Println(err)
	// Output:
	// 2025-03-14T17:45:00Z
	// 2025-03-17T09:00:00Z
	// 2025-03-17T09:15:00Z
	// 2025-03-17T10:00:30Z
	// pgq: cron expression "0 25 * * *": hour field "25": end of range (25) above maximum (23): 25
}

func mustParseCron(expr string) *pgq.Cron {
	c, err := pgq.ParseCron(expr)
	if err != nil {
		panic(err)
	}
	return c
}

// Schedules in a time zone: 09:00 in Oslo is 08:00 UTC in winter and 07:00
// UTC in summer. The zone is stored in the expression.
func ExampleWithLocation() {
	oslo, err := time.LoadLocation("Europe/Oslo")
	if err != nil {
		log.Fatal(err)
	}
	sm := pgq.NewSchedulerManager(nil) // a *sql.DB in real use
	err = sm.Schedule("report", "0 9 * * *", func(ctx context.Context, s *pgq.Schedule) error {
		return nil
	}, pgq.WithLocation(oslo))
	if err != nil {
		log.Fatal(err)
	}

	// The same schedule, written as an expression.
	morning := mustParseCron("CRON_TZ=Europe/Oslo 0 9 * * *")
	fmt.Println(morning)
	fmt.Println(morning.Next(time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)).Format(time.RFC3339))
	fmt.Println(morning.Next(time.Date(2026, 7, 10, 0, 0, 0, 0, time.UTC)).Format(time.RFC3339))
	// Output:
	// CRON_TZ=Europe/Oslo 0 9 * * *
	// 2026-01-10T08:00:00Z
	// 2026-07-10T07:00:00Z
}
