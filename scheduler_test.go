package pgq_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
	"github.com/pgq-dev/pgq/pgqtest"
)

func TestScheduleValidation(t *testing.T) {
	t.Parallel()
	sm := pgq.NewSchedulerManager(nil)
	fn := func(context.Context, *pgq.Schedule) error { return nil }
	err := sm.Schedule("x", "61 * * * *", fn)
	if want := `pgq: schedule "x": cron expression "61 * * * *": minute field "61": `; err == nil ||
		!strings.HasPrefix(err.Error(), want) {
		t.Errorf("bad expression: %v, want prefix %q", err, want)
	}
	if err := sm.Schedule("", "* * * * *", fn); err == nil {
		t.Error("empty entrypoint accepted")
	}
	if err := sm.Schedule("x", "* * * * *", nil); err == nil || !strings.Contains(err.Error(), "fn is nil") {
		t.Errorf("nil fn: %v", err)
	}
	if err := sm.Schedule("x", "* * * * *", fn, pgq.WithEnqueue()); err == nil {
		t.Error("fn with WithEnqueue accepted")
	}
	if err := sm.Schedule("x", "0 * * * *", fn); err != nil {
		t.Fatal(err)
	}
	// The same schedule, spelled differently, is a duplicate.
	if err := sm.Schedule("x", "@hourly", fn); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Errorf("duplicate: %v", err)
	}
	if err := sm.Schedule("x", "*/5 * * * *", fn); err != nil {
		t.Errorf("second expression for an entrypoint: %v", err)
	}
	if err := pgq.NewSchedulerManager(nil).Run(context.Background()); err == nil {
		t.Error("Run without schedules succeeded")
	}
	if err := sm.Run(context.Background(), pgq.WithHeartbeatTimeout(-time.Second)); err == nil {
		t.Error("bad run option accepted")
	}
	bad := pgq.NewSchedulerManager(nil, pgq.WithPrefix("Bad-Prefix"))
	_ = bad.Schedule("x", "* * * * *", fn)
	if err := bad.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Bad-Prefix") {
		t.Errorf("bad prefix: %v", err)
	}
}

// tickLog records the ticks that ran, with when and where.
type tickLog struct {
	mu  sync.Mutex
	ran []ranTick
}

type ranTick struct {
	who      string
	expr     string
	tick, at time.Time
}

func (l *tickLog) fn(who string) pgq.ScheduleFunc {
	return func(ctx context.Context, s *pgq.Schedule) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.ran = append(l.ran, ranTick{who: who, expr: s.Expression, tick: s.Tick, at: time.Now()})
		return nil
	}
}

func (l *tickLog) get() []ranTick {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ran)
}

// runScheduler starts sm.Run and returns a function that stops it and
// checks that it returned nil.
func runScheduler(t *testing.T, ctx context.Context, sm *pgq.SchedulerManager, opts ...pgq.SchedulerRunOption) (stop func()) {
	t.Helper()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sm.Run(runCtx, opts...) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func scheduleRow(t *testing.T, db *sql.DB, table, entrypoint, expr string) (status string, nextRun time.Time, lastRun sql.NullTime) {
	t.Helper()
	err := db.QueryRow(`SELECT status::text, next_run, last_run FROM `+table+` WHERE entrypoint = $1 AND expression = $2`,
		entrypoint, expr).Scan(&status, &nextRun, &lastRun)
	if err != nil {
		t.Fatalf("schedule row %s %q: %v", entrypoint, expr, err)
	}
	return status, nextRun, lastRun
}

// TestSchedulerFleetRunsEachTickOnce: two schedulers, each with its own
// pool (two processes), run the same every-second schedule for 5 s. Every
// tick runs once in the fleet, never before its time.
func TestSchedulerFleetRunsEachTickOnce(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			db, dsn := pgqtest.NewDB(t, d)
			testFleet(t, d, db, dsn)
		})
	}
}

func testFleet(t *testing.T, driver string, db *sql.DB, dsn string) {
	ctx := testCtx(t)
	var log tickLog
	stops := make([]func(), 0, 2)
	for _, who := range []string{"a", "b"} {
		pool := db
		if who == "b" {
			var err error
			if pool, err = sql.Open(driver, dsn); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = pool.Close() })
		}
		sm := pgq.NewSchedulerManager(pool)
		if err := sm.Schedule("tick", "* * * * * *", log.fn(who)); err != nil {
			t.Fatal(err)
		}
		stops = append(stops, runScheduler(t, ctx, sm))
	}
	time.Sleep(5 * time.Second)
	for _, stop := range stops {
		stop()
	}

	ran := log.get()
	seen := map[int64]string{} // tick (Unix ns) -> who ran it
	who := map[string]int{}
	for _, r := range ran {
		if prev, dup := seen[r.tick.UnixNano()]; dup {
			t.Errorf("tick %v ran twice (by %s and %s)", r.tick, prev, r.who)
		}
		seen[r.tick.UnixNano()] = r.who
		who[r.who]++
		if r.at.Before(r.tick) {
			t.Errorf("tick %v ran early, at %v", r.tick, r.at)
		}
		if r.tick.Nanosecond() != 0 {
			t.Errorf("tick %v is not on a second", r.tick)
		}
	}
	t.Logf("%d ticks in 5 s; by scheduler: %v", len(ran), who)
	if len(ran) < 3 || len(ran) > 6 {
		t.Errorf("%d ticks ran in 5 s of an every-second schedule, want about 5", len(ran))
	}
	status, nextRun, lastRun := scheduleRow(t, db, "pgqueuer_schedules", "tick", "* * * * * *")
	if status != "queued" || !lastRun.Valid || len(ran) > 0 && !nextRun.After(ran[len(ran)-1].tick) {
		t.Errorf("row after the run: status %s, next_run %v, last_run %v", status, nextRun, lastRun)
	}
}

// TestSchedulerTakesOverStaleClaim: a schedule left picked by a scheduler
// that died (old heartbeat) runs on another; one whose scheduler is alive
// does not.
func TestSchedulerTakesOverStaleClaim(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		// Two spellings of "every 1 January": the current year's tick is
		// due, the next one is far away.
		const dead, alive = "0 0 1 1 *", "0 0 1 jan *"
		_, err := db.Exec(`INSERT INTO pgqueuer_schedules (expression, entrypoint, next_run, status, heartbeat)
			VALUES ($1, 'report', date_trunc('year', now()), 'picked', now() - interval '1 hour'),
			       ($2, 'report', date_trunc('year', now()), 'picked', now())`, dead, alive)
		if err != nil {
			t.Fatal(err)
		}
		tick := scalar[time.Time](t, db, `SELECT date_trunc('year', now())`)
		var log tickLog
		sm := pgq.NewSchedulerManager(db)
		for _, e := range []string{dead, alive} {
			if err := sm.Schedule("report", e, log.fn("b")); err != nil {
				t.Fatal(err)
			}
		}
		stop := runScheduler(t, ctx, sm)
		waitFor(t, 10*time.Second, "the stale schedule to run", func() bool {
			status, _, _ := scheduleRow(t, db, "pgqueuer_schedules", "report", dead)
			return status == "queued"
		})
		stop()
		ran := log.get()
		if len(ran) != 1 || ran[0].expr != dead || !ran[0].tick.Equal(tick) {
			t.Fatalf("ran %+v, want one run of %q for tick %v", ran, dead, tick)
		}
		_, nextRun, lastRun := scheduleRow(t, db, "pgqueuer_schedules", "report", dead)
		if !nextRun.Equal(tick.AddDate(1, 0, 0)) || !lastRun.Valid {
			t.Errorf("taken-over row: next_run %v (want %v), last_run %v", nextRun, tick.AddDate(1, 0, 0), lastRun)
		}
		if status, nextRun, _ := scheduleRow(t, db, "pgqueuer_schedules", "report", alive); status != "picked" ||
			!nextRun.Equal(tick) {
			t.Errorf("live claim was touched: status %s, next_run %v", status, nextRun)
		}
	})
}

// TestSchedulerMissedTicks: a schedule two hours overdue is skipped to the
// next hour by default, and run once (for the overdue tick) with
// WithCatchUp.
func TestSchedulerMissedTicks(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		_, err := db.Exec(`INSERT INTO pgqueuer_schedules (expression, entrypoint, next_run)
			VALUES ('0 * * * *', 'skip', date_trunc('hour', now()) - interval '2 hours'),
			       ('0 * * * *', 'catchup', date_trunc('hour', now()) - interval '2 hours')`)
		if err != nil {
			t.Fatal(err)
		}
		overdue := scalar[time.Time](t, db, `SELECT date_trunc('hour', now()) - interval '2 hours'`)
		var skipLog, catchLog tickLog
		sm := pgq.NewSchedulerManager(db)
		if err := sm.Schedule("skip", "0 * * * *", skipLog.fn("")); err != nil {
			t.Fatal(err)
		}
		if err := sm.Schedule("catchup", "0 * * * *", catchLog.fn(""), pgq.WithCatchUp()); err != nil {
			t.Fatal(err)
		}
		stop := runScheduler(t, ctx, sm)
		for _, ep := range []string{"skip", "catchup"} {
			waitFor(t, 10*time.Second, ep+" to move on", func() bool {
				_, nextRun, _ := scheduleRow(t, db, "pgqueuer_schedules", ep, "0 * * * *")
				return nextRun.After(overdue)
			})
		}
		stop()
		nextHour := scalar[time.Time](t, db, `SELECT date_trunc('hour', now()) + interval '1 hour'`)
		if ran := skipLog.get(); len(ran) != 0 {
			t.Errorf("skipped schedule ran: %+v", ran)
		}
		if _, nextRun, lastRun := scheduleRow(t, db, "pgqueuer_schedules", "skip", "0 * * * *"); !nextRun.Equal(nextHour) || lastRun.Valid {
			t.Errorf("skipped row: next_run %v (want %v), last_run %v (want NULL)", nextRun, nextHour, lastRun)
		}
		if ran := catchLog.get(); len(ran) != 1 || !ran[0].tick.Equal(overdue) {
			t.Errorf("catch-up ran %+v, want once for tick %v", ran, overdue)
		}
		if _, nextRun, lastRun := scheduleRow(t, db, "pgqueuer_schedules", "catchup", "0 * * * *"); !nextRun.Equal(nextHour) || !lastRun.Valid {
			t.Errorf("caught-up row: next_run %v (want %v), last_run %v", nextRun, nextHour, lastRun)
		}
	})
}

// TestSchedulerEnqueue: with WithEnqueue a tick becomes a job (under a prefix
// and schema, to check the names), and the same tick is never enqueued
// twice.
func TestSchedulerEnqueue(t *testing.T) {
	for _, d := range pgqtest.Drivers() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			db, _ := pgqtest.NewDB(t, d, pgqtest.Bare())
			ctx := testCtx(t)
			naming := []pgq.NamingOption{pgq.WithPrefix("tp_"), pgq.WithSchema("sched")}
			if err := pgq.Install(ctx, db, naming[0], naming[1]); err != nil {
				t.Fatal(err)
			}
			schedules, jobs := "sched.tp_pgqueuer_schedules", "sched.tp_pgqueuer"
			const expr = "0 0 1 1 *"
			if _, err := db.Exec(`INSERT INTO `+schedules+` (expression, entrypoint, next_run)
				VALUES ($1, 'report', date_trunc('year', now()))`, expr); err != nil {
				t.Fatal(err)
			}
			tick := scalar[time.Time](t, db, `SELECT date_trunc('year', now())`)
			id := scalar[int64](t, db, `SELECT id FROM `+schedules)

			sm := pgq.NewSchedulerManager(db, naming[0], naming[1])
			err := sm.Schedule("report", expr, nil,
				pgq.WithEnqueue(pgq.WithPriority(7), pgq.WithHeaders(map[string]string{"from": "cron"})))
			if err != nil {
				t.Fatal(err)
			}
			stop := runScheduler(t, ctx, sm, pgq.WithPollInterval(20*time.Millisecond))
			moved := func() bool {
				_, nextRun, _ := scheduleRow(t, db, schedules, "report", expr)
				return nextRun.After(tick)
			}
			waitFor(t, 10*time.Second, "the tick to be enqueued", moved)

			wantKey := fmt.Sprintf("schedule:%d:%d", id, tick.Unix())
			check := func() {
				t.Helper()
				rows, err := db.Query(`SELECT id, entrypoint, priority, status::text, dedupe_key, headers->>'from' FROM ` + jobs)
				if err != nil {
					t.Fatal(err)
				}
				defer rows.Close()
				n := 0
				for rows.Next() {
					n++
					var jid int64
					var ep, status, key, from string
					var prio int32
					if err := rows.Scan(&jid, &ep, &prio, &status, &key, &from); err != nil {
						t.Fatal(err)
					}
					if ep != "report" || prio != 7 || status != "queued" || key != wantKey || from != "cron" {
						t.Errorf("job %d: entrypoint %s, priority %d, status %s, dedupe key %s, header %q", jid, ep, prio, status, key, from)
					}
					var logged string
					if err := db.QueryRow(`SELECT status::text FROM sched.tp_pgqueuer_log WHERE job_id = $1`, jid).Scan(&logged); err != nil || logged != "queued" {
						t.Errorf("job %d log: %q, %v", jid, logged, err)
					}
				}
				if err := rows.Err(); err != nil {
					t.Fatal(err)
				}
				if n != 1 {
					t.Errorf("%d jobs enqueued, want 1", n)
				}
			}
			check()

			// Replay the same tick (as after a crash between enqueue and
			// bookkeeping): the dedupe key keeps it to one job.
			if _, err := db.Exec(`UPDATE `+schedules+` SET next_run = $1`, tick); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the replayed tick", moved)
			stop()
			check()
			if status, _, lastRun := scheduleRow(t, db, schedules, "report", expr); status != "queued" || !lastRun.Valid {
				t.Errorf("row: status %s, last_run %v", status, lastRun)
			}
		})
	}
}

func TestListAndRemoveSchedules(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		q := pgq.NewQueries(db)
		if got, err := q.ListSchedules(ctx); err != nil || len(got) != 0 {
			t.Fatalf("empty table: %v, %v", got, err)
		}
		fn := func(context.Context, *pgq.Schedule) error { return nil }
		sm := pgq.NewSchedulerManager(db)
		for _, s := range [][2]string{{"a", "@hourly"}, {"a", "30 2 * * *"}, {"b", "*/5 * * * * 30"}} {
			if err := sm.Schedule(s[0], s[1], fn); err != nil {
				t.Fatal(err)
			}
		}
		before := scalar[time.Time](t, db, `SELECT now()`)
		stop := runScheduler(t, ctx, sm)
		var list []pgq.ScheduleInfo
		waitFor(t, 10*time.Second, "the schedules to be registered", func() bool {
			var err error
			list, err = q.ListSchedules(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return len(list) == 3
		})
		stop()
		want := []struct{ ep, expr string }{{"a", "0 * * * *"}, {"a", "30 2 * * *"}, {"b", "*/5 * * * * 30"}}
		for i, s := range list {
			if s.Entrypoint != want[i].ep || s.Expression != want[i].expr || s.Status != pgq.StatusQueued ||
				!s.NextRun.After(before) || !s.LastRun.IsZero() || s.ID == 0 || s.Created.IsZero() ||
				s.NextRun.Location() != time.UTC {
				t.Errorf("schedule %d: %+v, want %s %q queued, next run after %v, no last run", i, s, want[i].ep, want[i].expr, before)
			}
		}
		cr, _ := pgq.ParseCron("30 2 * * *")
		if next := cr.Next(before); !list[1].NextRun.Equal(next) {
			t.Errorf("next run %v, want %v", list[1].NextRun, next)
		}

		if n, err := q.RemoveSchedules(ctx, nil, nil); err != nil || n != 0 {
			t.Errorf("remove nothing: %d, %v", n, err)
		}
		n, err := q.RemoveSchedules(ctx, []pgq.ScheduleID{list[0].ID}, []string{"b", "unknown"})
		if err != nil || n != 2 {
			t.Fatalf("remove: %d, %v", n, err)
		}
		left, err := q.ListSchedules(ctx)
		if err != nil || len(left) != 1 || left[0].ID != list[1].ID {
			t.Fatalf("left %+v, %v", left, err)
		}
		if n, err := q.RemoveSchedules(ctx, nil, []string{"a"}); err != nil || n != 1 {
			t.Errorf("remove by entrypoint: %d, %v", n, err)
		}
	})
}

// TestSchedulerStopsOnCancelWithoutLeaks: when ctx ends, Run waits for the
// running function (up to the shutdown timeout, then cancels it), records
// the next run, and leaves no goroutine behind.
func TestSchedulerStopsOnCancelWithoutLeaks(t *testing.T) {
	eachDriverLeakChecked(t, func(t *testing.T, db *sql.DB, _ string) {
		ctx := testCtx(t)
		const expr = "0 0 1 1 *"
		if _, err := db.Exec(`INSERT INTO pgqueuer_schedules (expression, entrypoint, next_run)
			VALUES ($1, 'slow', date_trunc('year', now())), ($1, 'stuck', date_trunc('year', now()))`, expr); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var events []string
		note := func(s string) { mu.Lock(); events = append(events, s); mu.Unlock() }
		started := make(chan struct{}, 2)
		sm := pgq.NewSchedulerManager(db)
		_ = sm.Schedule("slow", expr, func(ctx context.Context, s *pgq.Schedule) error {
			started <- struct{}{}
			time.Sleep(100 * time.Millisecond) // in flight when ctx ends
			note("slow finished")
			return nil
		})
		_ = sm.Schedule("stuck", expr, func(ctx context.Context, s *pgq.Schedule) error {
			started <- struct{}{}
			<-ctx.Done() // only the end of the grace period ends it
			note("stuck canceled")
			return ctx.Err()
		})
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- sm.Run(runCtx, pgq.WithShutdownTimeout(300*time.Millisecond)) }()
		<-started
		<-started
		cancelAndWait(t, cancel, done)
		note("Run returned")
		mu.Lock()
		got := slices.Clone(events)
		mu.Unlock()
		if want := []string{"slow finished", "stuck canceled", "Run returned"}; !slices.Equal(got, want) {
			t.Errorf("events %q, want %q", got, want)
		}
		for _, ep := range []string{"slow", "stuck"} {
			if status, nextRun, lastRun := scheduleRow(t, db, "pgqueuer_schedules", ep, expr); status != "queued" ||
				!lastRun.Valid || nextRun.Before(time.Now()) {
				t.Errorf("%s after shutdown: status %s, next_run %v, last_run %v", ep, status, nextRun, lastRun)
			}
		}
	})
}

// A scheduler's function error or panic is logged and the schedule goes on.
func TestScheduleFuncErrorAndPanic(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		const expr = "0 0 1 1 *"
		if _, err := db.Exec(`INSERT INTO pgqueuer_schedules (expression, entrypoint, next_run)
			VALUES ($1, 'fails', date_trunc('year', now())), ($1, 'panics', date_trunc('year', now()))`, expr); err != nil {
			t.Fatal(err)
		}
		sm := pgq.NewSchedulerManager(db)
		_ = sm.Schedule("fails", expr, func(context.Context, *pgq.Schedule) error { return errors.New("boom") })
		_ = sm.Schedule("panics", expr, func(context.Context, *pgq.Schedule) error { panic("kaboom") })
		stop := runScheduler(t, ctx, sm)
		for _, ep := range []string{"fails", "panics"} {
			waitFor(t, 10*time.Second, ep+" to move on", func() bool {
				status, nextRun, lastRun := scheduleRow(t, db, "pgqueuer_schedules", ep, expr)
				return status == "queued" && lastRun.Valid && nextRun.After(time.Now())
			})
		}
		stop()
	})
}
