package pgq_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

// TestScheduleLocation: WithLocation and CRON_TZ= give the same schedule,
// stored with its zone in the expression column; its next_run is the
// zone's 09:00; a zoned every-second schedule runs; UTC stays the default
// and bare.
func TestScheduleLocation(t *testing.T) {
	oslo, err := time.LoadLocation("Europe/Oslo")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	eachDriver(t, func(t *testing.T, db *sql.DB, dsn string) {
		ctx := testCtx(t)
		sm := pgq.NewSchedulerManager(db)
		fn := func(context.Context, *pgq.Schedule) error { return nil }
		if err := sm.Schedule("morning", "0 9 * * *", fn, pgq.WithLocation(oslo)); err != nil {
			t.Fatal(err)
		}
		// The same schedule spelled with CRON_TZ is a duplicate.
		if err := sm.Schedule("morning", "CRON_TZ=Europe/Oslo 0 9 * * *", fn); err == nil ||
			!strings.Contains(err.Error(), "already registered") {
			t.Fatalf("duplicate zoned schedule: %v", err)
		}
		if err := sm.Schedule("morning", "0 9 * * *", fn); err != nil { // UTC: a schedule of its own
			t.Fatal(err)
		}
		var log tickLog
		if err := sm.Schedule("often", "* * * * * *", log.fn("sm"), pgq.WithLocation(kolkata)); err != nil {
			t.Fatal(err)
		}
		stop := runScheduler(t, ctx, sm)
		waitFor(t, 20*time.Second, "a tick of the zoned every-second schedule", func() bool { return len(log.get()) > 0 })
		stop()
		if got := log.get()[0]; got.expr != "CRON_TZ=Asia/Kolkata * * * * * *" || got.tick.Location() != time.UTC {
			t.Errorf("tick %+v: want the zoned expression and a UTC tick", got)
		}

		rows, err := db.QueryContext(ctx, `SELECT expression, next_run FROM pgqueuer_schedules WHERE entrypoint = 'morning' ORDER BY expression`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []string
		for rows.Next() {
			var expr string
			var next time.Time
			if err := rows.Scan(&expr, &next); err != nil {
				t.Fatal(err)
			}
			got = append(got, expr)
			if want := "09:00"; expr == "CRON_TZ=Europe/Oslo 0 9 * * *" && next.In(oslo).Format("15:04") != want ||
				expr == "0 9 * * *" && next.UTC().Format("15:04") != want {
				t.Errorf("%q: next_run %v, want %s in its zone", expr, next, want)
			}
		}
		if strings.Join(got, "|") != "0 9 * * *|CRON_TZ=Europe/Oslo 0 9 * * *" {
			t.Fatalf("schedule rows %q", got)
		}
		list, err := pgq.NewQueries(db).ListSchedules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen := false
		for _, s := range list {
			seen = seen || s.Expression == "CRON_TZ=Europe/Oslo 0 9 * * *"
		}
		if !seen {
			t.Errorf("ListSchedules %+v: no zoned schedule", list)
		}
	})
}

// TestScheduleLocationBadInput: zones that other processes could not load
// by the same name, and an expression naming another zone, are refused
// with errors that name them.
func TestScheduleLocationBadInput(t *testing.T) {
	t.Parallel()
	oslo, err := time.LoadLocation("Europe/Oslo")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	sm := pgq.NewSchedulerManager(nil)
	fn := func(context.Context, *pgq.Schedule) error { return nil }
	for _, c := range []struct {
		expr string
		loc  *time.Location
		want string
	}{
		{"0 9 * * *", time.Local, `time zone "Local"`},
		{"0 9 * * *", time.FixedZone("Plus2", 2*3600), `unknown time zone "Plus2"`},
		{"0 9 * * *", nil, "WithLocation(nil)"},
		{"CRON_TZ=Asia/Tokyo 0 9 * * *", oslo, `names time zone "Asia/Tokyo", the schedule's location is "Europe/Oslo"`},
		{"CRON_TZ=Mars/Olympus 0 9 * * *", nil, `unknown time zone "Mars/Olympus"`},
		{"CRON_TZ=Europe/Oslo 0 9 * *", nil, "4 fields"},
	} {
		var opts []pgq.ScheduleOption
		if c.loc != nil || c.want == "WithLocation(nil)" {
			opts = append(opts, pgq.WithLocation(c.loc))
		}
		err := sm.Schedule("x", c.expr, fn, opts...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Schedule(%q, %v) = %v, want an error with %q", c.expr, c.loc, err, c.want)
		}
	}
}
