package pgq

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// cronParser parses robfig/cron's six-field order (seconds first); parseCron
// feeds it PGQueuer's order (seconds last) rearranged.
var cronParser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// cronFields names the fields in robfig/cron's order.
var cronFields = [6]string{"second", "minute", "hour", "day-of-month", "month", "day-of-week"}

// cronAliases are the descriptors PGQueuer (croniter) knows, with the
// five-field text PGQueuer stores for each.
var cronAliases = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

// Cron is a parsed cron expression. Its times are in UTC.
type Cron struct {
	expr  string // normalized: the text stored in the schedules table
	sched cron.Schedule
}

// ParseCron parses a cron expression as PGQueuer writes them, in UTC:
//
//   - five fields: minute, hour, day of month, month, day of week
//     ("*/15 9-17 * * mon-fri");
//   - six fields: the same five and then seconds, last ("* * * * * */10"
//     is every ten seconds), as PGQueuer orders them;
//   - the descriptors @yearly (@annually), @monthly, @weekly, @daily
//     (@midnight) and @hourly, and "@every <duration>" (at least 1s; pgq
//     only: PGQueuer cannot run such a schedule).
//
// Fields accept numbers, ranges (1-5), steps (*/5, 10-30/5), lists (1,15)
// and month and weekday names (jan, mon). When both day fields are
// restricted, a day matching either one matches, as in classic cron. The
// error names the expression and, when it can, the bad field.
func ParseCron(expr string) (*Cron, error) {
	c, err := parseCron(expr)
	if err != nil {
		return nil, fmt.Errorf("pgq: %w", err)
	}
	return c, nil
}

func parseCron(expr string) (*Cron, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("cron expression %q: %s", expr, fmt.Sprintf(format, args...))
	}
	// PGQueuer (croniter) stores the expression in lower case, fields
	// separated by single spaces, descriptors expanded: so does pgq.
	fields := strings.Fields(strings.ToLower(expr))
	if len(fields) == 0 {
		return nil, bad("empty")
	}
	if strings.HasPrefix(fields[0], "tz=") || strings.HasPrefix(fields[0], "cron_tz=") {
		return nil, bad("time zones are not supported: schedules run in UTC")
	}
	if strings.HasPrefix(fields[0], "@") {
		text := strings.Join(fields, " ")
		if alias, ok := cronAliases[text]; ok {
			fields = strings.Fields(alias)
		} else if len(fields) == 2 && fields[0] == "@every" {
			d, err := time.ParseDuration(fields[1])
			if err != nil || d < time.Second {
				return nil, bad("@every needs a duration of at least 1s, got %q", fields[1])
			}
			s, err := cronParser.Parse(text)
			if err != nil {
				return nil, bad("%v", err)
			}
			return &Cron{expr: text, sched: s}, nil
		} else {
			return nil, bad("unknown descriptor %q: want @yearly, @annually, @monthly, @weekly, @daily, "+
				"@midnight, @hourly or \"@every <duration>\"", text)
		}
	}
	if len(fields) != 5 && len(fields) != 6 {
		return nil, bad("%d fields, want 5 (minute hour day-of-month month day-of-week) "+
			"or 6 (the same five, then second)", len(fields))
	}
	// robfig/cron wants the seconds first.
	spec := make([]string, 6)
	spec[0] = "0"
	if len(fields) == 6 {
		spec[0] = fields[5]
	}
	copy(spec[1:], fields[:5])
	s, err := cronParser.Parse(strings.Join(spec, " "))
	if err != nil {
		// Find the field robfig/cron objects to: parse each on its own.
		for i, f := range spec {
			probe := []string{"*", "*", "*", "*", "*", "*"}
			probe[i] = f
			if _, perr := cronParser.Parse(strings.Join(probe, " ")); perr != nil {
				return nil, bad("%s field %q: %v", cronFields[i], f, perr)
			}
		}
		return nil, bad("%v", err)
	}
	if ss, ok := s.(*cron.SpecSchedule); ok {
		ss.Location = time.UTC
	}
	c := &Cron{expr: strings.Join(fields, " "), sched: s}
	if c.Next(time.Now()).IsZero() {
		return nil, bad("matches no date in the next five years")
	}
	return c, nil
}

// Next returns the first time the expression matches strictly after t, in
// UTC, or the zero time if there is none within five years.
func (c *Cron) Next(t time.Time) time.Time {
	n := c.sched.Next(t.UTC())
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

// String returns the expression as pgq stores it in the schedules table,
// normalized the way PGQueuer normalizes it so that both find the same row:
// lower case, fields separated by single spaces, and the descriptors
// PGQueuer knows expanded to their five fields (@hourly is "0 * * * *").
func (c *Cron) String() string { return c.expr }
