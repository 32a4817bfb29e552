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

// Cron is a parsed cron expression. Its fields are read in its time zone
// (UTC unless the expression starts with CRON_TZ=, or the schedule has
// WithLocation); the times it returns are in UTC.
type Cron struct {
	expr   string // normalized: the text stored in the schedules table
	fields string // expr without its CRON_TZ= prefix
	loc    *time.Location
	sched  cron.Schedule
}

// cronTZPrefix starts an expression whose fields are read in a time zone
// other than UTC, as robfig/cron and cronie write it: "CRON_TZ=Europe/Oslo
// 0 9 * * *". "TZ=" is accepted too and stored as CRON_TZ=.
const cronTZPrefix = "CRON_TZ="

// loadZone loads the IANA time zone name; the error names it. "Local" is
// refused: it means a different zone in each process that shares the
// schedule.
func loadZone(name string) (*time.Location, error) {
	if name == "" {
		return nil, fmt.Errorf("empty time zone name")
	}
	if name == "Local" {
		return nil, fmt.Errorf("time zone %q differs between processes; name the zone (e.g. Europe/Oslo)", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q: %v", name, err)
	}
	return loc, nil
}

// ParseCron parses a cron expression as PGQueuer writes them, in UTC
// unless it starts with CRON_TZ=Zone (pgq only; see below):
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
//
// "CRON_TZ=Europe/Oslo 0 9 * * *" reads the fields in that IANA time zone
// (09:00 Oslo time, summer and winter), as robfig/cron does, DST included:
// a time that falls in the hour skipped when clocks go forward does not
// occur that day, so it does not run (02:30 daily skips the day clocks
// jump from 02:00 to 03:00), and a time that occurs twice when clocks go
// back runs at both instants (02:30 daily runs twice that night, an hour
// apart). Schedules that must run every day pick a time outside 02:00-03:00
// local, or stay in UTC. The zone is part of
// the stored expression (String), so the schedules table shows it and a
// zoned schedule is a row of its own; PGQueuer's scheduler, which claims
// only the expressions it registered, leaves such rows alone. CRON_TZ=UTC
// is stored as the bare expression, PGQueuer's.
func ParseCron(expr string) (*Cron, error) {
	c, err := parseCron(expr)
	if err != nil {
		return nil, fmt.Errorf("pgq: %w", err)
	}
	return c, nil
}

func parseCron(expr string) (*Cron, error) {
	return parseCronIn(expr, nil)
}

// parseCronIn parses expr with its fields in loc when loc is not nil (an
// expression with a CRON_TZ= prefix naming another zone is an error).
func parseCronIn(expr string, loc *time.Location) (*Cron, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("cron expression %q: %s", expr, fmt.Sprintf(format, args...))
	}
	text := strings.TrimSpace(expr)
	if head, rest, _ := strings.Cut(text, " "); len(head) >= 3 &&
		(strings.HasPrefix(strings.ToUpper(head), cronTZPrefix) || strings.HasPrefix(strings.ToUpper(head), "TZ=")) {
		_, name, _ := strings.Cut(head, "=")
		zone, err := loadZone(name)
		if err != nil {
			return nil, bad("%v", err)
		}
		if loc != nil && loc.String() != zone.String() {
			return nil, bad("names time zone %q, the schedule's location is %q", zone, loc)
		}
		loc, text = zone, rest
	}
	c, err := parseCronFields(text, bad)
	if err != nil {
		return nil, err
	}
	if loc == nil || loc.String() == "UTC" {
		return c, nil
	}
	ss, ok := c.sched.(*cron.SpecSchedule)
	if !ok {
		return nil, bad("a time zone has no effect on @every; drop CRON_TZ")
	}
	ss.Location = loc
	c.loc = loc
	c.expr = cronTZPrefix + loc.String() + " " + c.fields
	if c.Next(time.Now()).IsZero() {
		return nil, bad("matches no date in the next five years")
	}
	return c, nil
}

// parseCronFields parses the expression without a time zone, in UTC.
func parseCronFields(expr string, bad func(format string, args ...any) error) (*Cron, error) {
	// PGQueuer (croniter) stores the expression in lower case, fields
	// separated by single spaces, descriptors expanded: so does pgq.
	fields := strings.Fields(strings.ToLower(expr))
	if len(fields) == 0 {
		return nil, bad("empty")
	}
	if strings.HasPrefix(fields[0], "tz=") || strings.HasPrefix(fields[0], "cron_tz=") {
		return nil, bad("a time zone must come first, and once")
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
			return &Cron{expr: text, fields: text, loc: time.UTC, sched: s}, nil
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
	c := &Cron{expr: strings.Join(fields, " "), loc: time.UTC, sched: s}
	c.fields = c.expr
	if c.Next(time.Now()).IsZero() {
		return nil, bad("matches no date in the next five years")
	}
	return c, nil
}

// Location returns the time zone the expression's fields are read in (UTC
// unless CRON_TZ= or WithLocation said otherwise).
func (c *Cron) Location() *time.Location { return c.loc }

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
// An expression in a zone other than UTC starts with "CRON_TZ=Zone "
// (the zone's IANA name, as time.LoadLocation spells it).
func (c *Cron) String() string { return c.expr }
