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
		{"TZ=Europe/Oslo 0 12 * * *", "time zones are not supported"},
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
