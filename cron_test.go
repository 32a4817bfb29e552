package pgq_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgq-dev/pgq"
)

func TestParseCron(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 3, 14, 9, 26, 53, 500_000_000, time.UTC) // a Friday
	ok := []struct {
		expr, stored string
		want         time.Time // first match after at
	}{
		{"* * * * *", "* * * * *", time.Date(2025, 3, 14, 9, 27, 0, 0, time.UTC)},
		{"*/15 9-17 * * mon-fri", "*/15 9-17 * * mon-fri", time.Date(2025, 3, 14, 9, 30, 0, 0, time.UTC)},
		{"0 0 * * SAT", "0 0 * * sat", time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC)},
		// Six fields: seconds last, as PGQueuer writes them.
		{"* * * * * *", "* * * * * *", time.Date(2025, 3, 14, 9, 26, 54, 0, time.UTC)},
		{"* * * * * */10", "* * * * * */10", time.Date(2025, 3, 14, 9, 27, 0, 0, time.UTC)},
		{"30 9 * * * 15", "30 9 * * * 15", time.Date(2025, 3, 14, 9, 30, 15, 0, time.UTC)},
		{"27 9 14 3 * 5", "27 9 14 3 * 5", time.Date(2025, 3, 14, 9, 27, 5, 0, time.UTC)},
		// Case and spacing are normalized; PGQueuer's descriptors are stored
		// expanded.
		{"  0   12 * *  * ", "0 12 * * *", time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)},
		{"@HOURLY", "0 * * * *", time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)},
		{"@daily", "0 0 * * *", time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC)},
		{"@weekly", "0 0 * * 0", time.Date(2025, 3, 16, 0, 0, 0, 0, time.UTC)},
		{"@monthly", "0 0 1 * *", time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)},
		{"@yearly", "0 0 1 1 *", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"@every 90s", "@every 90s", time.Date(2025, 3, 14, 9, 28, 23, 0, time.UTC)},
	}
	for _, c := range ok {
		cr, err := pgq.ParseCron(c.expr)
		if err != nil {
			t.Errorf("ParseCron(%q): %v", c.expr, err)
			continue
		}
		if cr.String() != c.stored {
			t.Errorf("ParseCron(%q).String() = %q, want %q", c.expr, cr.String(), c.stored)
		}
		if got := cr.Next(at); !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("ParseCron(%q).Next(%v) = %v, want %v", c.expr, at, got, c.want)
		}
	}
	// Times are UTC whatever the zone of the argument: 12:30 at UTC+1 is
	// 11:30 UTC, before the day's 12:00 UTC.
	plusOne := time.FixedZone("UTC+1", 3600)
	cr, _ := pgq.ParseCron("0 12 * * *")
	if got, want := cr.Next(time.Date(2025, 3, 14, 12, 30, 0, 0, plusOne)), time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Next in another zone = %v, want %v", got, want)
	}

	bad := []struct{ expr, want string }{
		{"61 * * * *", `minute field "61"`},
		{"* 24 * * *", `hour field "24"`},
		{"* * 0 * *", `day-of-month field "0"`},
		{"* * * 13 *", `month field "13"`},
		{"* * * * funday", `day-of-week field "funday"`},
		{"* * * * * 60", `second field "60"`},
		{"*/0 * * * *", `minute field "*/0"`},
		{"* * * *", "4 fields"},
		{"* * * * * * *", "7 fields"},
		{"", "empty"},
		{"@often", "unknown descriptor"},
		{"@every 10ms", "at least 1s"},
		{"0 0 30 2 *", "matches no date"},
		{"CRON_TZ=Europe/Nowhere 0 12 * * *", `unknown time zone "Europe/Nowhere"`},
		{"CRON_TZ=Local 0 12 * * *", `time zone "Local" differs between processes`},
		{"CRON_TZ= 0 12 * * *", "empty time zone name"},
		{"CRON_TZ=Europe/Oslo 0 25 * * *", `hour field "25"`},
		{"CRON_TZ=Europe/Oslo", "empty"},
		{"CRON_TZ=Europe/Oslo @every 1h", "no effect on @every"},
		{"0 12 * * * CRON_TZ=Europe/Oslo", `second field "cron_tz=europe/oslo"`},
		{"CRON_TZ=Europe/Oslo CRON_TZ=UTC 0 12 * * *", "a time zone must come first"},
	}
	for _, c := range bad {
		_, err := pgq.ParseCron(c.expr)
		if err == nil {
			t.Errorf("ParseCron(%q) accepted a bad expression", c.expr)
			continue
		}
		prefix := fmt.Sprintf("pgq: cron expression %q: ", c.expr)
		if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseCron(%q) error %q: want prefix %q and %q", c.expr, err, prefix, c.want)
		}
	}
}

// TestCronTimeZones: CRON_TZ= reads the fields in the zone and is stored
// with its IANA name; UTC is stored bare. Across Oslo's DST transitions
// (2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00) it does what
// robfig/cron does: a time in the skipped hour does not run that day, a
// time that occurs twice runs at both instants.
func TestCronTimeZones(t *testing.T) {
	oslo, err := time.LoadLocation("Europe/Oslo")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	for _, c := range []struct{ in, stored string }{
		{"CRON_TZ=Europe/Oslo 0 9 * * *", "CRON_TZ=Europe/Oslo 0 9 * * *"},
		{"  tz=Europe/Oslo   0 9 * * MON  ", "CRON_TZ=Europe/Oslo 0 9 * * mon"},
		{"CRON_TZ=Europe/Oslo @daily", "CRON_TZ=Europe/Oslo 0 0 * * *"},
		{"CRON_TZ=UTC 0 9 * * *", "0 9 * * *"},
	} {
		got, err := pgq.ParseCron(c.in)
		if err != nil {
			t.Fatalf("ParseCron(%q): %v", c.in, err)
		}
		if got.String() != c.stored {
			t.Errorf("ParseCron(%q) stores %q, want %q", c.in, got, c.stored)
		}
		if again, err := pgq.ParseCron(got.String()); err != nil || again.String() != got.String() {
			t.Errorf("stored %q parses to %v, %v", got, again, err)
		}
	}
	at := func(loc *time.Location, s string) time.Time {
		t.Helper()
		v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return v.UTC()
	}
	for _, c := range []struct {
		expr  string
		from  time.Time
		ticks []time.Time // in UTC
	}{
		// 09:00 Oslo is 08:00 UTC in winter, 07:00 UTC in summer.
		{"CRON_TZ=Europe/Oslo 0 9 * * *", at(oslo, "2026-03-28 12:00"), []time.Time{
			at(time.UTC, "2026-03-29 07:00"), at(time.UTC, "2026-03-30 07:00")}},
		{"CRON_TZ=Europe/Oslo 0 9 * * *", at(oslo, "2026-10-24 12:00"), []time.Time{
			at(time.UTC, "2026-10-25 08:00"), at(time.UTC, "2026-10-26 08:00")}},
		// Spring forward: 02:30 does not exist on 2026-03-29, so that day
		// has no tick; the next is 02:30 CEST on the 30th (00:30 UTC).
		{"CRON_TZ=Europe/Oslo 30 2 * * *", at(oslo, "2026-03-28 12:00"), []time.Time{
			at(time.UTC, "2026-03-30 00:30"), at(time.UTC, "2026-03-31 00:30")}},
		// Fall back: 02:30 happens twice on 2026-10-25 (00:30 UTC in CEST,
		// 01:30 UTC in CET); it runs at both, then 02:30 CET on the 26th.
		{"CRON_TZ=Europe/Oslo 30 2 * * *", at(oslo, "2026-10-24 12:00"), []time.Time{
			at(time.UTC, "2026-10-25 00:30"), at(time.UTC, "2026-10-25 01:30"), at(time.UTC, "2026-10-26 01:30")}},
		// Hourly work is not bunched or lost: around the gap, 01:00 CET is
		// followed by 03:00 CEST one hour later.
		{"CRON_TZ=Europe/Oslo 0 * * * *", at(oslo, "2026-03-29 00:30"), []time.Time{
			at(time.UTC, "2026-03-29 00:00"), at(time.UTC, "2026-03-29 01:00"), at(time.UTC, "2026-03-29 02:00")}},
		// UTC stays the default.
		{"0 9 * * *", at(time.UTC, "2026-03-28 12:00"), []time.Time{
			at(time.UTC, "2026-03-29 09:00"), at(time.UTC, "2026-03-30 09:00")}},
	} {
		cr, err := pgq.ParseCron(c.expr)
		if err != nil {
			t.Fatal(err)
		}
		from := c.from
		for i, want := range c.ticks {
			got := cr.Next(from)
			if !got.Equal(want) || got.Location() != time.UTC {
				t.Errorf("%q: tick %d after %v = %v, want %v (UTC)", c.expr, i, from, got, want)
			}
			from = got
		}
	}
}
